"""Issue 4, behaviour 7 at full size: a 4 GiB file through BaluPi with flat memory.

    .venv/bin/python -m bench.large_file [--size-gib 4] [--no-miss] [--limit-mib 64] [--keep]

BaluPi runs as its own process (`balupi serve`, as the console script runs it) on 127.0.0.1, with a
simulated NAS (in this process) as its NAS, so the server's memory is measured alone. Three phases,
each streaming a file of `--size-gib` GiB made on the fly (never held whole by this client either),
checked by SHA-256 at the end:

1. upload: PUT with Content-Length, the NAS asleep (a write lands on the Pi only);
2. hit: GET of that file, from the SSD cache;
3. miss: GET of another file of the same size that is only on the NAS (it wakes the NAS, streams
   to the client while it is written to the cache); skipped with --no-miss. The NAS being awake,
   the write-back uploads the file of phase 1 to it at the same time.

The server's RSS (its whole process tree) is sampled every 50 ms: the table shows the RSS before
each phase, the peak during it, the growth, and the throughput (bound by this client's SHA-256 and
Python reads, so not a speed figure: `dav_bench.py` measures speed). Exit status 1 if any phase grew the
server's RSS by more than --limit-mib (default 64 MiB), 0 otherwise. Needs about 3 x size of free
disk in the temp directory (1 x with --no-miss).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from balupi.sim.nas import DEFAULT_MAC, PowerState, SimNas
from bench.servers import free_port, wait_until_answers

MIB = 1 << 20
GIB = 1 << 30
PERIOD_BYTES = MIB + 7  # the repeating pattern of the test files (not a power of two)
SEND_BYTES = MIB
SAMPLE_S = 0.05
START_TIMEOUT_S = 30.0
NAS_USER, NAS_PASSWORD = "bench", "bench-pw"


class Pattern:
    """`size` bytes of a repeating random pattern, produced block by block, with their SHA-256."""

    def __init__(self, size: int, seed: bytes):
        self.size = size
        self.unit = memoryview(seed * 2)  # any PERIOD_BYTES-long window is a slice of this

    def blocks(self, block: int = SEND_BYTES):
        sent = 0
        while sent < self.size:
            offset = sent % PERIOD_BYTES
            n = min(block, self.size - sent, PERIOD_BYTES)
            yield self.unit[offset:offset + n]
            sent += n

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for block in self.blocks():
            digest.update(block)
        return digest.hexdigest()

    def write_to(self, path: Path) -> None:
        with open(path, "wb") as f:
            for block in self.blocks():
                f.write(block)


class RssSampler:
    """Samples the RSS of a process tree in a thread; phases record their start and peak."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.current = self._rss()
        self.peak = self.current
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        try:
            procs = [self.process, *self.process.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs)
        except psutil.NoSuchProcess:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.current = self._rss()
            self.peak = max(self.peak, self.current)

    def reset_peak(self) -> int:
        self.current = self._rss()
        self.peak = self.current
        return self.current

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class PhaseResult:
    name: str
    size_bytes: int
    seconds: float
    rss_before_bytes: int
    rss_peak_bytes: int
    ok: bool
    note: str = ""

    @property
    def growth_bytes(self) -> int:
        return self.rss_peak_bytes - self.rss_before_bytes

    def row(self) -> str:
        rate = self.size_bytes / self.seconds / 1e6 if self.seconds else 0.0
        return (f"| {self.name} | {self.size_bytes / GIB:.2f} | {rate:.0f} | {self.rss_before_bytes / MIB:.1f} | "
                f"{self.rss_peak_bytes / MIB:.1f} | {self.growth_bytes / MIB:.1f} | {'ok' if self.ok else 'FAILED'} "
                f"{self.note} |")


def start_balupi(work: Path, port: int, nas: SimNas) -> subprocess.Popen:
    config = work / "balupi.toml"
    config.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALUPI_") and "proxy" not in k.lower()}
    env.update(
        BALUPI_CONFIG=str(config), BALUPI_HOST="127.0.0.1", BALUPI_PORT=str(port),
        BALUPI_DATA_DIR=str(work / "data"), BALUPI_CACHE_DIR=str(work / "cache"),
        BALUPI_NAS_WEBDAV_URL=nas.dav_url, BALUPI_NAS_URL=nas.base_url,
        BALUPI_NAS_USERNAME=NAS_USER, BALUPI_NAS_PASSWORD=NAS_PASSWORD,
        BALUPI_NAS_MAC_ADDRESS=DEFAULT_MAC, BALUPI_WOL_ADDRESS="127.0.0.1", BALUPI_WOL_PORT=str(nas.wol_port),
        BALUPI_NAS_BOOT_TIME_S="1", BALUPI_NAS_READY_POLL_S="0.05", BALUPI_NAS_PROBE_INTERVAL_S="3600",
        # The write-back must not wake the NAS for the 4 GiB backlog before the miss phase does;
        # once the NAS is awake it uploads the file (in the miss phase: measured along with it).
        BALUPI_SYNC_MAX_PENDING_MB="0", BALUPI_SYNC_MAX_DELAY_MINUTES="0",
        BALUPI_TAPO_DISCOVERY_TARGET="127.0.0.1", BALUPI_LOG_LEVEL="WARNING",
        HOME=str(work / "home"), XDG_DATA_HOME=str(work / "xdg-data"), PYTHONUNBUFFERED="1",
    )
    log = open(work / "server.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from balupi.cli import main; sys.exit(main(['serve']))"],
        cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def wait_ready(port: int, process: subprocess.Popen, log_path: Path) -> None:
    wait_until_answers(port, path="/api/health", process=process, accept=lambda status: status == 200,
                       timeout_s=START_TIMEOUT_S, name="BaluPi",
                       log_tail=lambda: "its log:\n" + log_path.read_text(errors="replace")[-1500:], error=SystemExit)


def request(port: int, method: str, path: str, body=None, headers: dict | None = None, timeout_s: float = 60.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    conn.request(method, path, body=body, headers=headers or {})
    return conn, conn.getresponse()


def upload(port: int, path: str, pattern: Pattern) -> tuple[bool, str]:
    headers = {"Content-Length": str(pattern.size), "Content-Type": "application/octet-stream"}
    conn, response = request(port, "PUT", path, body=pattern.blocks(), headers=headers, timeout_s=600)
    try:
        response.read()
        return response.status in (201, 204), f"PUT {response.status}"
    finally:
        conn.close()


def download(port: int, path: str, expected_sha256: str, size: int) -> tuple[bool, str]:
    conn, response = request(port, "GET", path, timeout_s=600)
    try:
        if response.status != 200:
            return False, f"GET {response.status}"
        digest = hashlib.sha256()
        received = 0
        while block := response.read(SEND_BYTES):
            digest.update(block)
            received += len(block)
        if received != size:
            return False, f"got {received} of {size} bytes"
        if digest.hexdigest() != expected_sha256:
            return False, "content differs"
        return True, ""
    finally:
        conn.close()


def run_phase(name: str, size: int, sampler: RssSampler, fn) -> PhaseResult:
    before = sampler.reset_peak()
    started = time.monotonic()
    ok, note = fn()
    seconds = time.monotonic() - started
    time.sleep(2 * SAMPLE_S)
    result = PhaseResult(name, size, seconds, before, sampler.peak, ok, note)
    print(result.row(), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=4.0, help="file size in GiB (default 4)")
    parser.add_argument("--no-miss", action="store_true", help="skip the cache-miss phase (needs 1 x size of disk)")
    parser.add_argument("--limit-mib", type=float, default=64.0, help="largest acceptable RSS growth per phase")
    parser.add_argument("--workdir", type=Path, default=None, help="where the data goes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    size = int(args.size_gib * GIB)
    work = Path(tempfile.mkdtemp(prefix="balupi-large-", dir=args.workdir))
    needed = size * (1 if args.no_miss else 3)
    free = shutil.disk_usage(work).free
    if free < needed * 1.05:
        raise SystemExit(f"need {needed / GIB:.1f} GiB free in {work}, have {free / GIB:.1f} GiB")
    upload_pattern = Pattern(size, os.urandom(PERIOD_BYTES))
    nas_pattern = Pattern(size, os.urandom(PERIOD_BYTES))
    nas = SimNas(work / "nas", users={NAS_USER: (NAS_PASSWORD, "admin")}, wol_port=free_port(socket.SOCK_DGRAM),
                 control_port=None, boot_delay_s=0.3)
    process = None
    results: list[PhaseResult] = []
    try:
        if not args.no_miss:
            print(f"writing {size / GIB:.2f} GiB onto the simulated NAS ...", flush=True)
            nas.root.mkdir(parents=True, exist_ok=True)
            (nas.root / "bench").mkdir(exist_ok=True)
            nas_pattern.write_to(nas.root / "bench" / "on-nas.bin")
        nas.start()
        port = free_port()
        process = start_balupi(work, port, nas)
        wait_ready(port, process, work / "server.log")
        for path in ("/dav/", "/dav/bench/"):  # list the tree while the NAS is awake
            conn, response = request(port, "PROPFIND", path, headers={"Depth": "1"})
            response.read()
            conn.close()
        nas.suspend()
        nas.wait_for_state(PowerState.SUSPENDED)
        sampler = RssSampler(process.pid)
        print(f"\nBaluPi pid {process.pid}, RSS at start {sampler.current / MIB:.1f} MiB\n")
        print("| phase | GiB | MB/s | RSS before, MiB | RSS peak, MiB | growth, MiB | result |")
        print("|---|---|---|---|---|---|---|", flush=True)
        upload_sha = upload_pattern.sha256()
        results.append(run_phase("upload (PUT, NAS asleep)", size, sampler,
                                 lambda: upload(port, "/dav/bench/uploaded.bin", upload_pattern)))
        results.append(run_phase("download (GET, cache hit)", size, sampler,
                                 lambda: download(port, "/dav/bench/uploaded.bin", upload_sha, size)))
        if not args.no_miss:
            nas_sha = nas_pattern.sha256()
            results.append(run_phase("download (GET, miss: wakes the NAS)", size, sampler,
                                     lambda: download(port, "/dav/bench/on-nas.bin", nas_sha, size)))
        sampler.stop()
        print(f"\nthe NAS got {nas.magic_packet_count} magic packet(s) and "
              f"{nas.request_count('GET', '/dav/bench/on-nas.bin')} GET(s) of on-nas.bin; "
              f"it saw {nas.request_count('PUT')} PUT(s)")
        print(f"\nserver RSS after the run: {sampler.current / MIB:.1f} MiB, overall peak {sampler.peak / MIB:.1f} MiB")
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        nas.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")

    if args.json:
        args.json.write_text(json.dumps([{**r.__dict__, "growth_bytes": r.growth_bytes} for r in results], indent=2))
    bad = [r for r in results if not r.ok or r.growth_bytes > args.limit_mib * MIB]
    for r in bad:
        print(f"FAIL: {r.name}: {'grew RSS by %.1f MiB' % (r.growth_bytes / MIB) if r.ok else r.note}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
