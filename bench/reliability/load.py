"""Load: 64 clients from 16 loopback addresses, and cached reads while the NAS wakes.

- `load_mix`: 64 clients (127.0.0.1 .. 127.0.0.16, four each), each on its own keep-alive
  connection, mixing PROPFIND of a listed folder, cached GETs, misses, PUTs, MOVEs and LOCK/UNLOCK;
  every GET's bytes are checked. Figures: requests, statuses, connection errors (resets, closed
  without answer), the slowest request, requests slower than 0.9 s (a SYN retry takes 1 s), RSS and
  descriptors before and after (the long form samples RSS each minute for 10 minutes).
- `wake_burst`: the NAS asleep with an 8 s boot; 40 misses wait for the wake while another client
  reads cached files and lists a listed folder: those must not wait for the wake.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import random
import socket
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.reliability.harness import (PASSWORD, USER, BaluPiProcess, NasProcess, fd_kinds, listen_overflows,
                                      pending_changes, seed,
                                      wait_until)

CLIENTS = 64
ADDRESSES = 16
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SLOW_S = 0.9
LOCK_BODY = (b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
             b"</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>load</D:owner></D:lockinfo>")


def content_of(name: str, size: int) -> bytes:
    seed_bytes = hashlib.sha256(name.encode()).digest()
    return (seed_bytes * (size // len(seed_bytes) + 1))[:size]


class Client:
    """One client: one keep-alive connection from its own loopback address, reconnecting when closed."""

    def __init__(self, port: int, address: str):
        self.port, self.address = port, address
        self.conn: http.client.HTTPConnection | None = None
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.wrong_bytes = 0
        self.durations: list[float] = []
        self.by_method: dict[str, list[float]] = {}
        self.connects: list[float] = []  # seconds to establish each new connection

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                expect: bytes | None = None, label: str | None = None) -> tuple[int, bytes, dict]:
        all_headers = {"Authorization": AUTH, **(headers or {})}
        started = time.monotonic()
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60,
                                                       source_address=(self.address, 0))
                t0 = time.monotonic()
                try:
                    self.conn.connect()
                except OSError as exc:
                    self.errors[type(exc).__name__] += 1
                    self.conn = None
                    return 0, b"", {}
                self.connects.append(time.monotonic() - t0)
            try:
                self.conn.request(method, path, body=body, headers=all_headers)
                response = self.conn.getresponse()
                data = response.read()
            except (ConnectionError, http.client.HTTPException, socket.timeout, OSError) as exc:
                self.conn.close()
                self.conn = None
                reused = attempt == 1 and isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError))
                if reused:  # a keep-alive connection the server had closed: one retry, as clients do
                    continue
                self.errors[type(exc).__name__] += 1
                self._took(label or method, time.monotonic() - started)
                return 0, b"", {}
            if response.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
            break
        self._took(label or method, time.monotonic() - started)
        self.statuses[response.status] += 1
        if expect is not None and response.status == 200 and data != expect:
            self.wrong_bytes += 1
        return response.status, data, dict(response.getheaders())

    def _took(self, method: str, seconds: float) -> None:
        self.durations.append(seconds)
        self.by_method.setdefault(method, []).append(seconds)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _mix_worker(client: Client, number: int, stop: threading.Event, cached: list[str], misses: list[str],
                misses_lock: threading.Lock) -> None:
    rng = random.Random(number)
    mine: list[str] = []
    n = 0
    while not stop.is_set():
        n += 1
        roll = rng.random()
        if roll < 0.15:
            client.request("PROPFIND", "/dav/mix/", headers={"Depth": "1"})
        elif roll < 0.55:
            name = rng.choice(cached)
            client.request("GET", f"/dav/mix/{name}", expect=content_of(name, 16_384), label="GET cached")
        elif roll < 0.62:
            with misses_lock:
                name = misses.pop() if misses else None
            if name is not None:
                client.request("GET", f"/dav/cold/{name}", expect=content_of(name, 65_536), label="GET miss")
        elif roll < 0.80:
            path = f"/dav/up/c{number}/f{n}.bin"
            status, _, _ = client.request("PUT", path, body=content_of(path, rng.choice((4_096, 32_768, 131_072))))
            if status in (201, 204):
                mine.append(path)
        elif roll < 0.90 and mine:
            source = mine.pop(rng.randrange(len(mine)))
            target = source.replace(".bin", "-m.bin")
            status, _, _ = client.request("MOVE", source, headers={"Destination": f"http://127.0.0.1:{client.port}{target}",
                                                                  "Overwrite": "T"})
            if status in (201, 204):
                mine.append(target)
        elif mine:
            path = rng.choice(mine)
            status, body, headers = client.request("LOCK", path, body=LOCK_BODY,
                                                   headers={"Content-Type": "application/xml", "Timeout": "Second-60"})
            token = headers.get("Lock-Token")
            if status == 200 and token:
                client.request("UNLOCK", path, headers={"Lock-Token": token})


def load_mix(long: bool) -> dict:
    duration_s = 600.0 if long else 15.0
    sample_every_s = 60.0 if long else 5.0
    with tempfile.TemporaryDirectory(prefix="balupi-load-") as tmp:
        work = Path(tmp)
        cached = [f"c{i:03d}.bin" for i in range(200)]
        cold = [f"m{i:05d}.bin" for i in range(6000 if long else 600)]
        files = {f"/mix/{name}": content_of(name, 16_384) for name in cached}
        files.update({f"/cold/{name}": content_of(name, 65_536) for name in cold})
        seed(work / "nas", files)
        (work / "nas" / "up").mkdir()
        for i in range(CLIENTS):
            (work / "nas" / "up" / f"c{i}").mkdir()
        nas = NasProcess(work / "nas").start()
        balupi = BaluPiProcess(work / "pi", nas, prefetch_budget_mb=0, refresh_walk_budget_s=0, sync_interval_s=2)
        try:
            balupi.start()
            warm = Client(balupi.port, "127.0.0.1")
            for folder in ("/dav/", "/dav/mix/", "/dav/cold/", "/dav/up/"):
                assert warm.request("PROPFIND", folder, headers={"Depth": "1"})[0] == 207
            for i in range(CLIENTS):
                warm.request("PROPFIND", f"/dav/up/c{i}/", headers={"Depth": "1"})
            for name in cached:
                assert warm.request("GET", f"/dav/mix/{name}")[0] == 200
            warm.close()
            time.sleep(1.0)
            fds0, rss0, kinds0 = balupi.fds(), balupi.rss_mb(), fd_kinds(balupi.pid)
            clients = [Client(balupi.port, f"127.0.0.{1 + i % ADDRESSES}") for i in range(CLIENTS)]
            stop = threading.Event()
            misses_lock = threading.Lock()
            pending_misses = list(cold)
            threads = [threading.Thread(target=_mix_worker, args=(c, i, stop, cached, pending_misses, misses_lock),
                                        daemon=True) for i, c in enumerate(clients)]
            overflows0 = listen_overflows()
            started = time.monotonic()
            for thread in threads:
                thread.start()
            samples = []
            while time.monotonic() - started < duration_s:
                time.sleep(min(sample_every_s, duration_s - (time.monotonic() - started)))
                samples.append((round(time.monotonic() - started), round(balupi.rss_mb(), 1), balupi.fds(),
                                _pending(balupi)))
            stop.set()
            for thread in threads:
                thread.join(90)
            elapsed = time.monotonic() - started
            overflows = listen_overflows() - overflows0
            for c in clients:
                c.close()
            time.sleep(2.0)
            statuses: Counter[int] = Counter()
            errors: Counter[str] = Counter()
            durations: list[float] = []
            for c in clients:
                statuses.update(c.statuses)
                errors.update(c.errors)
                durations += c.durations
            durations.sort()
            per_method: dict[str, list[float]] = {}
            for c in clients:
                for method, values in c.by_method.items():
                    per_method.setdefault(method, []).extend(values)
            requests_done = len(durations)
            # the write-back catches up: every PUT and MOVE reaches the NAS
            pending_at_end = _pending(balupi)
            drain_started = time.monotonic()
            synced = wait_until(lambda: _pending(balupi) == 0, 600.0 if long else 120.0, 1.0)
            drain_s = time.monotonic() - drain_started
            return {
                "clients": CLIENTS, "addresses": ADDRESSES, "seconds": round(elapsed, 1),
                "requests": requests_done, "requests_per_s": round(requests_done / elapsed, 1),
                "statuses": dict(sorted(statuses.items())),
                "connection_errors": dict(errors),
                "listen_overflows": overflows,
                "connections_opened": sum(len(c.connects) for c in clients),
                "connect_max_ms": round(max((t for c in clients for t in c.connects), default=0) * 1000, 1),
                "connects_slower_than_0_9_s": sum(1 for c in clients for t in c.connects if t > SLOW_S),
                "wrong_bytes": sum(c.wrong_bytes for c in clients),
                "p50_ms": round(durations[len(durations) // 2] * 1000, 1) if durations else None,
                "p99_ms": round(durations[int(len(durations) * 0.99)] * 1000, 1) if durations else None,
                "max_ms": round(durations[-1] * 1000, 1) if durations else None,
                "slower_than_0_9_s": sum(1 for d in durations if d > SLOW_S),
                "ms_p50_max_by_method": {m: (round(sorted(v)[len(v) // 2] * 1000), round(max(v) * 1000))
                                         for m, v in sorted(per_method.items())},
                "rss_mb_before": round(rss0, 1), "rss_mb_after": round(balupi.rss_mb(), 1),
                "rss_samples_s_mb_fds_pending": samples,
                "fds_before": fds0, "fds_after": balupi.fds(),
                "fd_kinds_before": kinds0, "fd_kinds_after": fd_kinds(balupi.pid),
                "write_back_done": synced,
                "changes_pending_at_end": pending_at_end,
                "write_back_drain_s": round(drain_s, 1),
            }
        finally:
            balupi.stop()
            nas.stop()


def _pending(balupi: BaluPiProcess) -> int:
    """Changes not yet written back (read from BaluPi's database, read-only, as another process)."""
    return pending_changes(balupi.data_dir / "balupi.db")


def wake_burst(long: bool) -> dict:
    boot_s = 8.0
    waiting = 40
    with tempfile.TemporaryDirectory(prefix="balupi-wake-") as tmp:
        work = Path(tmp)
        files = {f"/hot/h{i}.bin": content_of(f"h{i}", 16_384) for i in range(20)}
        files.update({f"/cold/m{i}.bin": content_of(f"m{i}", 65_536) for i in range(waiting)})
        seed(work / "nas", files)
        nas = NasProcess(work / "nas", boot_delay_s=boot_s).start()
        balupi = BaluPiProcess(work / "pi", nas, prefetch_budget_mb=0, refresh_walk_budget_s=0,
                               nas_wake_timeout_s=30, nas_boot_time_s=boot_s, nas_wol_resend_s=30)
        try:
            balupi.start()
            warm = Client(balupi.port, "127.0.0.1")
            for folder in ("/dav/", "/dav/hot/", "/dav/cold/"):
                assert warm.request("PROPFIND", folder, headers={"Depth": "1"})[0] == 207
            for i in range(20):
                assert warm.request("GET", f"/dav/hot/h{i}.bin")[0] == 200
            warm.request("GET", "/api/auth/me")
            nas.control("suspend")  # BaluPi finds out at the first miss (connection refused), then wakes it
            time.sleep(0.5)
            missers = [Client(balupi.port, f"127.0.0.{2 + i % 8}") for i in range(waiting)]
            results: list[int] = []
            threads = [threading.Thread(target=lambda c=c, i=i: results.append(
                c.request("GET", f"/dav/cold/m{i}.bin", expect=content_of(f"m{i}", 65_536))[0]), daemon=True)
                for i, c in enumerate(missers)]
            for thread in threads:
                thread.start()
            time.sleep(1.0)  # the misses are waiting for the wake now
            reader = Client(balupi.port, "127.0.0.20")
            cached_s: list[float] = []
            wake_deadline = time.monotonic() + boot_s - 2
            while time.monotonic() < wake_deadline:
                for method, path, headers in (("GET", f"/dav/hot/h{len(cached_s) % 20}.bin", {}),
                                              ("HEAD", "/dav/hot/h1.bin", {}),
                                              ("PROPFIND", "/dav/hot/", {"Depth": "1"})):
                    t0 = time.monotonic()
                    status = reader.request(method, path, headers=headers)[0]
                    cached_s.append(time.monotonic() - t0)
                    assert status in (200, 207), (method, path, status)
                time.sleep(0.05)
            for thread in threads:
                thread.join(60)
            return {
                "boot_s": boot_s, "misses_waiting": waiting,
                "cached_requests_during_wake": len(cached_s),
                "cached_max_ms": round(max(cached_s) * 1000, 1),
                "misses_200": results.count(200), "misses_503": results.count(503),
                "misses_other": len(results) - results.count(200) - results.count(503),
                "wrong_bytes": sum(c.wrong_bytes for c in missers),
            }
        finally:
            balupi.stop()
            nas.stop()


SCENARIOS = [load_mix, wake_burst]
