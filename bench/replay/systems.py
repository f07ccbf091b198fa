"""The processes of the replay benchmark and the client that plays the trace against them.

Each system under test is a pair of subprocesses on 127.0.0.1: a simulated NAS
(`python -m balupi.sim.nas`, its storage a fresh copy of the trace's tree) and the server in front
of it (`balupi serve`, or `rclone serve webdav --vfs-cache-mode full` with a `:webdav:` remote on
the NAS's WebDAV). Every subprocess runs in its own process group and is registered in `PROCESSES`;
`stop_all()` ends whatever is left (SIGTERM, then SIGKILL of the group), on any exit path.

Time is compressed by `time_scale` (trace second = `time_scale` real seconds): the timers of both
servers are divided by it (see `balupi_env` and `rclone_argv`), and the report says which ones.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bench.replay.trace import Op, Trace, content_blocks, content_header
from bench.servers import free_port, read_ready_line, stop_process_group, wait_until_answers

NAS_USER = NAS_PASSWORD = "admin"
NAS_MAC = "02:ba:1b:05:00:51"
BOOT_DELAY_S = 0.5  # the sim's boot after a magic packet, and its spin-up from soft sleep
IDLE_SUSPEND_S = 3.0  # the sim falls asleep after this long without requests
START_TIMEOUT_S = 40.0
STOP_TIMEOUT_S = 10.0
OP_TIMEOUT_S = 120.0
CONTROL_TIMEOUT_S = 30.0
READ_BLOCK = 1 << 20
PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>\n'
    b'<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getcontentlength/><D:getlastmodified/>'
    b"<D:getetag/><D:getcontenttype/></D:prop></D:propfind>\n"
)

SOURCE: dict[str, str] = {}  # {"pythonpath": dir}: BaluPi's source snapshot the subprocesses import

PROCESSES: list["Proc"] = []
_PROCESSES_LOCK = threading.Lock()


class ReplayError(Exception):
    """A process did not start or answer as expected; the message says why."""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BALUPI_", "RCLONE_")) and "proxy" not in k.lower() and k != "PYTHONPATH"}
    if SOURCE.get("pythonpath"):
        env["PYTHONPATH"] = SOURCE["pythonpath"]
    env.update(extra)
    return env


def snapshot_source(repo: Path, dest: Path, which: str) -> dict:
    """Copy BaluPi's package where the subprocesses import it from, so that edits to the shared tree
    during a run (other engineers work in it) cannot change the server mid-measurement.
    `which`: "head" (the committed tree, `git archive HEAD`) or "worktree" (as the files are now)."""
    dest.mkdir(parents=True)
    if which == "head":
        archive = subprocess.run(["git", "archive", "HEAD", "balupi"], cwd=repo, capture_output=True, check=True,
                                 timeout=60).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
    else:
        import shutil

        shutil.copytree(repo / "balupi", dest / "balupi", ignore=shutil.ignore_patterns("__pycache__"))
    SOURCE["pythonpath"] = str(dest)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                            timeout=30).stdout.strip()
    return {"source": which, "commit": commit}


class Proc:
    """A subprocess in its own process group, logging to a file, stopped by `stop()` or `stop_all()`."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path,
                 stdout_pipe: bool = False):
        self.name, self.log_path = name, log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE if stdout_pipe else self._log,
                                        stderr=self._log, start_new_session=True)
        with _PROCESSES_LOCK:
            PROCESSES.append(self)

    def log_tail(self, n: int = 1500) -> str:
        self._log.flush()
        return self.log_path.read_bytes()[-n:].decode("utf-8", "replace").strip()

    def read_line(self, timeout_s: float) -> str:
        """One line of stdout (the sim's ready line), waiting at most `timeout_s`."""
        return read_ready_line(self.process, timeout_s=timeout_s, name=self.name,
                               log_tail=lambda: self.log_tail(600), error=ReplayError)

    def stop(self) -> None:
        stop_process_group(self.process, STOP_TIMEOUT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()
        with _PROCESSES_LOCK:
            if self in PROCESSES:
                PROCESSES.remove(self)


def stop_all() -> None:
    with _PROCESSES_LOCK:
        procs = list(PROCESSES)
    for proc in reversed(procs):
        proc.stop()


def http_json(port: int, method: str, path: str, body: dict | None = None, timeout_s: float = CONTROL_TIMEOUT_S) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise ReplayError(f"{method} {path} on port {port}: {response.status} {payload[:200]!r}")
        return json.loads(payload)
    finally:
        conn.close()


# ---------------------------------------------------------------- the simulated NAS


class SimNasProc:
    """`python -m balupi.sim.nas` over `root`; `soft`: soft sleep (any request wakes it), else suspend."""

    def __init__(self, name: str, root: Path, work: Path, soft: bool):
        self.soft = soft
        argv = [sys.executable, "-m", "balupi.sim.nas", "--root", str(root), "--mac", NAS_MAC,
                "--user", f"{NAS_USER}:{NAS_PASSWORD}:admin", "--boot-delay-s", str(BOOT_DELAY_S),
                "--spinup-delay-s", str(BOOT_DELAY_S), "--sleep-mode", "soft" if soft else "suspend",
                "--idle-suspend-s", str(IDLE_SUSPEND_S),
                "--initial-state", "soft_sleep" if soft else "suspended", "--threads", "16"]
        self.proc = Proc(name, argv, clean_env(PYTHONUNBUFFERED="1"), work, work / f"{name}.log", stdout_pipe=True)
        ready = json.loads(self.proc.read_line(START_TIMEOUT_S))
        self.port, self.wol_port, self.control_port = ready["port"], ready["wol_port"], ready["control_port"]
        self.dav_url, self.base_url = ready["dav_url"], ready["base_url"]

    @property
    def sleep_state(self) -> str:
        return "soft_sleep" if self.soft else "suspended"

    def control(self, method: str, path: str, body: dict | None = None) -> dict:
        return http_json(self.control_port, method, path, body)

    def wait_asleep(self, timeout_s: float) -> bool:
        return bool(self.control("POST", "/wait", {"state": self.sleep_state, "timeout_s": timeout_s})["ok"])

    def counters(self) -> dict:
        return self.control("GET", "/counters")

    def stop(self) -> None:
        self.proc.stop()


# ---------------------------------------------------------------- the servers


def _scaled(real_s: float, scale: float, floor_s: float = 0.0) -> float:
    return max(floor_s, real_s / scale)


def _default(name: str):
    """A BaluPi setting's default, from its one definition (balupi.settings.SETTINGS)."""
    from balupi.settings import SETTINGS_BY_NAME

    return SETTINGS_BY_NAME[name].default


def balupi_settings(scale: float, cache_bytes: int) -> tuple[dict[str, str], list[str]]:
    """BaluPi's settings for the run: its time-based defaults divided by `scale` (clamped at each
    setting's minimum), the cache size of the scenario, and loopback-only wake/discovery targets."""
    settings_py = Path(SOURCE["pythonpath"]) / "balupi" / "settings.py" if SOURCE.get("pythonpath") else None
    known_text = settings_py.read_text() if settings_py and settings_py.exists() else ""
    notes = []
    env = {
        "BALUPI_CACHE_MAX_SIZE_GB": f"{cache_bytes / 1e9:.6f}",
        "BALUPI_CACHE_MIN_FREE_GB": "0",
        "BALUPI_CACHE_HEAT_HALF_LIFE_HOURS": f"{_default('cache_heat_half_life_hours') / scale:.4f}",
        "BALUPI_SYNC_MAX_DELAY_MINUTES": f"{_default('sync_max_delay_minutes') / scale:.4f}",
        "BALUPI_SYNC_INTERVAL_S": f"{_scaled(15.0, scale, 1.0):g}",
        "BALUPI_NAS_PROBE_INTERVAL_S": f"{_scaled(60.0, scale, 1.0):g}",
        "BALUPI_NAS_READY_POLL_S": "0.1",
        "BALUPI_NAS_WOL_RESEND_S": "1",
        "BALUPI_NAS_BOOT_TIME_S": "1",
    }
    if 15.0 / scale < 1.0:
        notes.append("BaluPi sync_interval_s: 15 s / scale is below its minimum, 1 s used")
    if 60.0 / scale < 1.0:
        notes.append("BaluPi nas_probe_interval_s: 60 s / scale is below its minimum, 1 s used")
    if '"auth_wake_nas_for_unknown"' in known_text:
        # The run starts with the NAS asleep and no login ever checked: the first request's login
        # may wake the NAS (it is the first wake anyway), as a household's first visit would.
        env["BALUPI_AUTH_WAKE_NAS_FOR_UNKNOWN"] = "true"
    return env, notes


class BaluPiProc:
    def __init__(self, work: Path, nas: SimNasProc, settings_env: dict[str, str]):
        self.port = free_port()
        config = work / "balupi.toml"
        config.write_text("")
        env = clean_env(
            BALUPI_CONFIG=str(config), BALUPI_HOST="127.0.0.1", BALUPI_PORT=str(self.port),
            BALUPI_DATA_DIR=str(work / "data"), BALUPI_CACHE_DIR=str(work / "cache"),
            BALUPI_NAS_WEBDAV_URL=nas.dav_url, BALUPI_NAS_URL=nas.base_url,
            BALUPI_NAS_USERNAME=NAS_USER, BALUPI_NAS_PASSWORD=NAS_PASSWORD, BALUPI_NAS_MAC_ADDRESS=NAS_MAC,
            BALUPI_WOL_ADDRESS="127.0.0.1", BALUPI_WOL_PORT=str(nas.wol_port),
            BALUPI_TAPO_DISCOVERY_TARGET="127.0.0.1", BALUPI_LOG_LEVEL="INFO",
            HOME=str(work / "home"), XDG_DATA_HOME=str(work / "xdg-data"), PYTHONUNBUFFERED="1",
            **settings_env,
        )
        # As bench/dav_servers.py: `balupi serve` without "balupi serve" on the command line, so a
        # `pkill -f "balupi serve"` elsewhere on the machine does not end the benchmark's server.
        argv = [sys.executable, "-c", "import sys; from balupi.cli import main; sys.exit(main(['serve']))"]
        self.proc = Proc("balupi", argv, env, work, work / "balupi.log")
        self.data_dir = work / "data"
        self.root_path = "/dav/"
        self.auth = ("Authorization", "Basic " + _b64(f"{NAS_USER}:{NAS_PASSWORD}"))
        _wait_http(self.port, "GET", "/api/health", self.proc)

    def stop(self) -> None:
        self.proc.stop()


class RcloneProc:
    def __init__(self, work: Path, nas: SimNasProc, argv_tail: list[str]):
        self.port = free_port()
        obscured = subprocess.run(["rclone", "obscure", NAS_PASSWORD], capture_output=True, text=True,
                                  timeout=30, check=True).stdout.strip()
        env = clean_env(RCLONE_CONFIG=str(work / "rclone.conf"), RCLONE_WEBDAV_URL=nas.dav_url,
                        RCLONE_WEBDAV_VENDOR="other", RCLONE_WEBDAV_USER=NAS_USER, RCLONE_WEBDAV_PASS=obscured,
                        HOME=str(work / "home"))
        (work / "rclone.conf").write_text("")
        argv = ["rclone", "serve", "webdav", ":webdav:", "--addr", f"127.0.0.1:{self.port}",
                "--vfs-cache-mode", "full", "--cache-dir", str(work / "rclone-cache"), *argv_tail]
        self.argv = argv
        self.proc = Proc("rclone", argv, env, work, work / "rclone.log")
        self.root_path = "/"
        self.auth = None
        _wait_http(self.port, "OPTIONS", "/", self.proc)

    def stop(self) -> None:
        self.proc.stop()


def rclone_flags(scale: float, cache_bytes: int, max_age_h: float) -> list[str]:
    """rclone's timers divided by `scale` (defaults: dir cache 5 min, polls 1 min, write-back 5 s);
    the cache age limit set long (`max_age_h`, real hours) so that, as for BaluPi, the size limit decides."""
    def dur(real_s: float) -> str:
        return f"{max(0.001, real_s / scale) * 1000:.0f}ms"

    return ["--dir-cache-time", dur(300), "--poll-interval", dur(60), "--vfs-cache-poll-interval", dur(60),
            "--vfs-write-back", dur(5), "--vfs-cache-max-age", dur(max_age_h * 3600),
            "--vfs-cache-max-size", f"{max(1, cache_bytes // 1024)}k", "--log-level", "INFO"]


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def _wait_http(port: int, method: str, path: str, proc: Proc) -> None:
    wait_until_answers(port, method=method, path=path, process=proc.process, timeout_s=START_TIMEOUT_S,
                       name=proc.name, log_tail=lambda: proc.log_tail(800), error=ReplayError)


# ---------------------------------------------------------------- the client


@dataclass
class OpResult:
    index: int
    t0: float
    t1: float
    status: int
    ok: bool
    bytes: int = 0
    error: str = ""


class Client:
    """Plays operations over one keep-alive connection, reconnecting after errors."""

    def __init__(self, port: int, root_path: str, auth: tuple[str, str] | None, pattern: bytes):
        self.port, self.root_path, self.auth, self.pattern = port, root_path, auth, pattern
        self.conn: http.client.HTTPConnection | None = None

    def url(self, path: str, collection: bool = False) -> str:
        rel = quote(path.strip("/"))
        return self.root_path + rel + ("/" if collection and rel else "")

    def _headers(self, **extra: str) -> dict:
        headers = dict(extra)
        if self.auth:
            headers[self.auth[0]] = self.auth[1]
        return headers

    def run(self, op: Op) -> OpResult:
        t0 = time.time()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=OP_TIMEOUT_S)
            status, ok, nbytes, error = getattr(self, "_" + op.kind)(op)
        except (OSError, http.client.HTTPException) as exc:
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            status, ok, nbytes, error = 0, False, 0, f"{type(exc).__name__}: {exc}"
        return OpResult(op.index, t0, time.time(), status, ok, nbytes, error)

    def _finish(self) -> tuple[int, bytes]:
        assert self.conn is not None
        response = self.conn.getresponse()
        body = response.read()
        if response.will_close:
            self.conn.close()
            self.conn = None
        return response.status, body

    def _list(self, op: Op):
        self.conn.request("PROPFIND", self.url(op.path, collection=True), body=PROPFIND_BODY,
                          headers=self._headers(Depth="1", **{"Content-Type": "application/xml; charset=utf-8"}))
        status, body = self._finish()
        return status, status == 207, len(body), "" if status == 207 else body[:120].decode("utf-8", "replace")

    def _read(self, op: Op):
        self.conn.request("GET", self.url(op.path), headers=self._headers())
        response = self.conn.getresponse()
        head = b""
        total = 0
        while True:
            block = response.read(READ_BLOCK)
            if not block:
                break
            if len(head) < 32:
                head += block[:32]
            total += len(block)
        if response.will_close:
            self.conn.close()
            self.conn = None
        if response.status != 200:
            return response.status, False, total, head[:120].decode("utf-8", "replace")
        want = content_header(op.file_id, op.version)
        if total != op.size or not head.startswith(want[:total]):
            got = head.split(b"\n", 1)[0][:20]
            return response.status, False, total, f"stale or wrong content: {total} bytes, header {got!r}, expected {op.size} bytes, {want.strip()!r}"
        return response.status, True, total, ""

    def _write(self, op: Op):
        self.conn.request("PUT", self.url(op.path), body=content_blocks(op.file_id, op.version, op.size, self.pattern),
                          headers=self._headers(**{"Content-Length": str(op.size), "Content-Type": "application/octet-stream"}))
        status, body = self._finish()
        ok = status in (200, 201, 204)
        return status, ok, op.size if ok else 0, "" if ok else body[:120].decode("utf-8", "replace")

    def _rename(self, op: Op):
        dest = f"http://127.0.0.1:{self.port}{self.url(op.dest)}"
        self.conn.request("MOVE", self.url(op.path), headers=self._headers(Destination=dest, Overwrite="F"))
        status, body = self._finish()
        ok = status in (201, 204)
        return status, ok, 0, "" if ok else body[:120].decode("utf-8", "replace")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def play(trace: Trace, client: Client, deadline: float, stop: threading.Event,
         progress=None) -> list[OpResult]:
    """The trace, burst by burst; each idle gap counted from the end of its burst."""
    results: list[OpResult] = []
    bursts = len(trace.gaps_s)
    try:
        for burst in range(bursts):
            first = trace.burst_starts[burst]
            last = trace.burst_starts[burst + 1] if burst + 1 < bursts else len(trace.ops)
            for op in trace.ops[first:last]:
                if stop.is_set() or time.time() > deadline:
                    return results
                results.append(client.run(op))
            if progress:
                progress(burst, results)
            if stop.wait(trace.gaps_s[burst]):
                return results
        return results
    finally:
        client.close()
