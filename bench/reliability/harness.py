"""The parts every reliability scenario uses, all real and all on 127.0.0.1:

- `NasProcess`: the simulated NAS (`python -m balupi.sim.nas`) as its own process, so a scenario can
  freeze it with SIGSTOP the way a hung NAS behaves (the socket open, nothing answered);
- `FaultProxy`: a TCP proxy of our own between BaluPi and the NAS that cuts a connection after N
  bytes, resets it (RST), or stalls it, in either direction;
- `BaluPiProcess`: `balupi serve` as its own process, optionally under a low `RLIMIT_NOFILE` and
  with shortened job intervals, whose open descriptors and RSS are read from /proc.

The scenarios' subprocesses load the loopback guard of tests/ when the checkout has it, so nothing
they start sends a packet anywhere but 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.servers import free_port, read_ready_line, wait_until_answers

REPO = Path(__file__).resolve().parents[2]
GUARD_SITE = REPO / "tests" / "guard_site"
USER, PASSWORD = "alice", "alice-pw"
START_TIMEOUT_S = 30.0
MAC = "02:00:00:ba:10:01"


def child_env(home: Path, **env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BALUPI_") and k != "JOURNAL_STREAM"}
    paths = [str(REPO)] + ([str(GUARD_SITE)] if GUARD_SITE.is_dir() else [])
    clean.update(HOME=str(home), XDG_DATA_HOME=str(home / "xdg"), PYTHONPATH=os.pathsep.join(paths),
                 PYTHONUNBUFFERED="1", BALUPI_CONFIG="")
    clean.update(env)
    return clean


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int) -> dict[str, int]:
    """Open descriptors by kind: socket, pipe, anon (epoll, eventfd), dir, db (SQLite files), file."""
    kinds: dict[str, int] = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith(("socket:", "pipe:")):
            kind = target.split(":")[0]
        elif target.startswith("anon_inode:"):
            kind = "anon"
        elif ".db" in target:
            kind = "db"
        elif os.path.isdir(target):
            kind = "dir"
        else:
            kind = "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


# -- the NAS ---------------------------------------------------------------------------------------

class NasProcess:
    def __init__(self, root: Path, *, boot_delay_s: float = 0.3, threads: int = 16):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.boot_delay_s, self.threads = boot_delay_s, threads
        self.process: subprocess.Popen | None = None
        self.info: dict = {}

    def start(self) -> "NasProcess":
        log = open(self.root.parent / "nas.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "balupi.sim.nas", "--root", str(self.root), "--user", f"{USER}:{PASSWORD}:admin",
             "--mac", MAC, "--boot-delay-s", str(self.boot_delay_s), "--threads", str(self.threads)],
            env=child_env(self.root.parent), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        line = read_ready_line(self.process, name="the simulated NAS", log_tail=lambda: "see nas.log",
                               error=RuntimeError)
        self.info = json.loads(line)
        return self

    @property
    def pid(self) -> int:
        return self.info["pid"]

    @property
    def port(self) -> int:
        return self.info["port"]

    def control(self, action: str) -> None:
        requests.post(f"{self.info['control_url']}/{action}", timeout=10).raise_for_status()

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- the fault proxy -------------------------------------------------------------------------------

@dataclass
class Fault:
    """What the proxy does to the next `times` streams of bytes in `direction`.

    direction "down": bytes from the NAS to BaluPi (responses); "up": BaluPi to the NAS (uploads).
    action "cut": close both sides after `after_bytes`; "rst": the same with an RST (SO_LINGER 0);
    "stall": stop forwarding after `after_bytes` for `stall_s`, then carry on.
    """

    action: str
    after_bytes: int = 0
    direction: str = "down"
    stall_s: float = 0.0
    times: int = 1


class FaultProxy:
    """Forwards 127.0.0.1:port to the NAS. `add(fault)` arms a fault; the next bytes flowing in its
    direction (on whichever connection carries them: BaluPi keeps connections alive) take it."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.applied: list[str] = []
        self.connections = 0
        self._closed = False
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> int:
        with self._lock:
            return sum(f.times for f in self._faults)

    def _take(self, direction: str, data: bytes) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.direction == direction and _carries_content(direction, data, fault.after_bytes):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
            return None

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            pair = (client, upstream)
            threading.Thread(target=self._pump, args=(upstream, client, "down", pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, upstream, "up", pair), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str, pair) -> None:
        fault: Fault | None = None
        sent = 0  # bytes forwarded since `fault` was taken
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if fault is None:
                    fault = self._take(direction, data)
                    sent = 0
                if fault is not None and sent + len(data) > fault.after_bytes:
                    keep = max(fault.after_bytes - sent, 0)
                    if keep:
                        dst.sendall(data[:keep])
                    self.applied.append(f"{fault.action}@{fault.after_bytes}:{direction}")
                    if fault.action == "stall":
                        time.sleep(fault.stall_s)
                        dst.sendall(data[keep:])
                        fault = None
                        continue
                    for sock in pair:
                        (_reset if fault.action == "rst" else _close)(sock)
                    return
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._closed = True
        self._listener.close()


def _carries_content(direction: str, data: bytes, after_bytes: int) -> bool:
    """Whether `data` starts what a fault is meant for: file content (a GET's 200/206 answer longer
    than `after_bytes`, downwards; a PUT, upwards), not a HEAD, PROPFIND or MKCOL."""
    if direction == "up":
        return data.startswith(b"PUT ")
    if not (data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.1 206")):
        return False
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1]) > after_bytes
    return False


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# -- BaluPi ----------------------------------------------------------------------------------------

class BaluPiProcess:
    """`balupi serve` in its own process. `job_speedup` divides every scheduled job's interval (and
    the scheduler's tick) so that a short run covers a long stretch of idle time."""

    def __init__(self, work: Path, nas: NasProcess | None, *, nas_port: int | None = None, nofile: int | None = None,
                 job_speedup: float = 1.0, **settings):
        self.work = work
        self.data_dir, self.cache_dir = work / "data", work / "cache"
        self.nas, self.nofile, self.job_speedup = nas, nofile, job_speedup
        self.port = free_port()
        env = {
            "BALUPI_HOST": "127.0.0.1", "BALUPI_PORT": str(self.port),
            "BALUPI_DATA_DIR": str(self.data_dir), "BALUPI_CACHE_DIR": str(self.cache_dir),
            "BALUPI_ENERGY_ENABLED": "false", "BALUPI_LOG_LEVEL": "INFO",
            "BALUPI_WOL_ADDRESS": "127.0.0.1", "BALUPI_TAPO_DISCOVERY_TARGET": "127.0.0.1",
            "BALUPI_WOL_PORT": str(nas.info["wol_port"] if nas else free_port(socket.SOCK_DGRAM)),
            "BALUPI_CACHE_MIN_FREE_GB": "0",
        }
        if nas is not None:
            port = nas_port or nas.port
            env.update({
                "BALUPI_NAS_WEBDAV_URL": f"http://127.0.0.1:{port}/dav/",
                "BALUPI_NAS_URL": f"http://127.0.0.1:{port}",
                "BALUPI_NAS_USERNAME": USER, "BALUPI_NAS_PASSWORD": PASSWORD,
                "BALUPI_NAS_MAC_ADDRESS": MAC, "BALUPI_NAS_WAKE_TIMEOUT_S": "10", "BALUPI_NAS_BOOT_TIME_S": "1",
                "BALUPI_NAS_READY_POLL_S": "0.05", "BALUPI_NAS_WOL_RESEND_S": "1",
            })
        env.update({f"BALUPI_{k.upper()}": str(v) for k, v in settings.items()})
        self.env = child_env(work, **env)
        self.process: subprocess.Popen | None = None
        self.log_path = work / "balupi.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _preexec(self) -> None:
        os.setsid()
        if self.nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def start(self) -> "BaluPiProcess":
        self.work.mkdir(parents=True, exist_ok=True)
        boot = "import sys\n"
        if self.job_speedup != 1.0:
            boot += (
                "import balupi.scheduler as s\n"
                f"k = {self.job_speedup!r}\n"
                "s.TICK_S = min(s.TICK_S, max(0.002, 0.2 / k))\n"
                "_every = s.Scheduler.every\n"
                "s.Scheduler.every = lambda self, i, name, fn, run_now=False: _every(self, i / k, name, fn, run_now)\n"
            )
        boot += "from balupi.cli import main\nsys.exit(main(['serve']))\n"
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-c", boot], cwd=self.work, env=self.env,
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        preexec_fn=self._preexec)
        wait_until_answers(self.port, path="/api/health", process=self.process, accept=lambda status: status == 200,
                           timeout_s=START_TIMEOUT_S, name="balupi serve", log_tail=lambda: "\n" + self.log()[-2000:],
                           error=RuntimeError)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def fds(self) -> int:
        return open_fds(self.pid)

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def threads(self) -> int:
        return thread_count(self.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def session(self) -> requests.Session:
        http = requests.Session()
        http.trust_env = False
        http.auth = (USER, PASSWORD)
        return http

    def jobs(self) -> dict[str, dict]:
        answer = self.session().get(self.url + "/api/system/jobs", timeout=10)
        answer.raise_for_status()
        return {job["name"]: job for job in answer.json()["jobs"]}

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def seed(root: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (all sockets of
    this network namespace: run alone for an exact figure)."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            return int(table.get("ListenOverflows", 0))
    return 0


def pending_changes(db_path: Path) -> int:
    """Journal rows not yet written back, read as another process would (read-only; WAL: no waiting)."""
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute("SELECT count(*) FROM journal WHERE state = 'pending'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return -1


def wait_until(predicate, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()
