"""NAS faults through a TCP fault proxy of our own (`harness.FaultProxy`) between BaluPi and the NAS.

- `nas_faults_reads`: misses and ranged misses while the proxy cuts the NAS's answer after N bytes,
  resets it (RST), or stalls it (shorter and longer than BaluPi's 15 s client read timeout). A client
  gets the right bytes or an error, never wrong bytes; a second GET afterwards gets the right bytes.
- `nas_faults_write_back`: acknowledged uploads whose write-back to the NAS is cut, reset and
  stalled: every one reaches the NAS with the right bytes.
- `frozen_nas`: the NAS process stopped (SIGSTOP; its socket still accepts): a miss ends in an
  error well within a client's 30 s, cached reads go on, uploads made meanwhile reach the NAS after
  SIGCONT.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import tempfile
import time
from pathlib import Path

from bench.reliability.harness import (PASSWORD, USER, BaluPiProcess, Fault, FaultProxy, NasProcess, pending_changes,
                                       seed, wait_until)

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
FILE_BYTES = 2 * 1024 * 1024


def body_of(name: str, size: int = FILE_BYTES) -> bytes:
    block = hashlib.sha256(name.encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def fetch(port: int, path: str, headers: dict | None = None, timeout_s: float = 60.0) -> tuple[str, int, bytes, float]:
    """(outcome, status, body, seconds): outcome "complete" (the whole announced body), "cut" (the
    connection ended early) or "error" (no answer)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={**AUTH, **(headers or {})})
        response = conn.getresponse()
        try:
            body = response.read()
            outcome = "complete"
        except http.client.IncompleteRead as exc:
            body, outcome = exc.partial, "cut"
        return outcome, response.status, body, time.monotonic() - started
    except (OSError, http.client.HTTPException):
        return "error", 0, b"", time.monotonic() - started
    finally:
        conn.close()


def _stack(work: Path, files: dict[str, bytes], **settings) -> tuple[NasProcess, FaultProxy, BaluPiProcess]:
    seed(work / "nas", files)
    nas = NasProcess(work / "nas").start()
    proxy = FaultProxy(nas.port)
    balupi = BaluPiProcess(work / "pi", nas, nas_port=proxy.port, prefetch_budget_mb=0, refresh_walk_budget_s=0,
                           refresh_min_age_minutes=100000, **settings)
    balupi.start()
    return nas, proxy, balupi


def _list(balupi: BaluPiProcess, folder: str) -> None:
    answer = balupi.session().request("PROPFIND", f"{balupi.url}/dav{folder}", headers={"Depth": "1"}, timeout=60)
    assert answer.status_code == 207, answer.status_code


ATTEMPTS = 3  # per case, until its fault was applied (nas_faults_reads)
READ_FAULTS = [
    ("cut after 300 KB", Fault("cut", 300_000)),
    ("RST after 600 KB", Fault("rst", 600_000)),
    ("RST before the head", Fault("rst", 0)),
    ("stall 4 s after 100 KB", Fault("stall", 100_000, stall_s=4)),
    ("stall 25 s after 200 KB", Fault("stall", 200_000, stall_s=25)),
]


def nas_faults_reads(long: bool) -> dict:
    rounds = 3 if long else 1
    # A fault goes to the first NAS answer that carries content, which is not always the one the
    # case's GET caused (a download still going from the case before takes it, or it is cleared
    # before the ranged GET's download starts): a case tries again, on a new file, until its fault
    # was applied, at most ATTEMPTS times.
    names = [f"f{i}.bin" for i in range(len(READ_FAULTS) * rounds * 2 * ATTEMPTS)]
    with tempfile.TemporaryDirectory(prefix="balupi-faults-") as tmp:
        nas, proxy, balupi = _stack(Path(tmp), {f"/r/{n}": body_of(n) for n in names})
        try:
            _list(balupi, "/")
            _list(balupi, "/r")
            results: dict[str, list] = {}
            wrong = 0
            it = iter(names)
            for _ in range(rounds):
                for label, fault in READ_FAULTS:
                    for ranged in (False, True):
                        for _attempt in range(ATTEMPTS):
                            name = next(it)
                            expected = body_of(name)
                            headers = {"Range": "bytes=1000000-1499999"} if ranged else {}
                            want = expected[1_000_000:1_500_000] if ranged else expected
                            applied_before = len(proxy.applied)
                            proxy.add(Fault(fault.action, fault.after_bytes, stall_s=fault.stall_s))
                            outcome, status, body, took = fetch(balupi.port, f"/dav/r/{name}", headers)
                            proxy.clear()
                            if outcome == "complete" and status in (200, 206) and body != want:
                                wrong += 1
                            if outcome == "cut" and not want.startswith(body):
                                wrong += 1  # even a cut answer must be a true prefix
                            # afterwards: the right bytes (from the NAS again, or from the cache)
                            again = fetch(balupi.port, f"/dav/r/{name}", headers)
                            if again[0] != "complete" or again[1] not in (200, 206) or again[2] != want:
                                wrong += 1
                            key = f"{label}{' (ranged)' if ranged else ''}"
                            results.setdefault(key, []).append(f"{outcome} {status} in {took:.1f} s; again {again[1]}")
                            if len(proxy.applied) > applied_before:
                                break
            time.sleep(1.0)
            return {"cases": results, "wrong_bytes_or_bad_retry": wrong, "faults_applied": len(proxy.applied)}
        finally:
            balupi.stop()
            proxy.close()
            nas.stop()


WRITE_FAULTS = [Fault("cut", 100_000, direction="up"), Fault("rst", 50_000, direction="up"),
                Fault("stall", 80_000, direction="up", stall_s=4), Fault("rst", 0, direction="down")]


def nas_faults_write_back(long: bool) -> dict:
    count = 24 if long else 8
    with tempfile.TemporaryDirectory(prefix="balupi-wb-") as tmp:
        work = Path(tmp)
        (work / "nas" / "w").mkdir(parents=True)
        nas, proxy, balupi = _stack(work, {}, sync_interval_s=1)
        try:
            _list(balupi, "/")
            _list(balupi, "/w")
            http = balupi.session()
            for fault in WRITE_FAULTS * (3 if long else 1):
                proxy.add(Fault(fault.action, fault.after_bytes, fault.direction, fault.stall_s))
            started = time.monotonic()
            acknowledged = []
            for i in range(count):
                name = f"/w/up{i}.bin"
                answer = http.put(f"{balupi.url}/dav{name}", data=body_of(name, 300_000), timeout=60)
                if answer.status_code in (201, 204):
                    acknowledged.append(name)
            done = wait_until(lambda: pending_changes(balupi.data_dir / "balupi.db") == 0, 180.0, 0.5)
            took = time.monotonic() - started
            on_nas = sum(1 for name in acknowledged
                         if (work / "nas" / name.lstrip("/")).is_file()
                         and (work / "nas" / name.lstrip("/")).read_bytes() == body_of(name, 300_000))
            return {
                "uploads_acknowledged": len(acknowledged), "uploads": count,
                "on_nas_with_right_bytes": on_nas, "write_back_done": done, "seconds": round(took, 1),
                "faults_applied": proxy.applied,
                "stray_files_on_nas": sorted(p.name for p in (work / "nas" / "w").iterdir()
                                             if p.name not in {Path(n).name for n in acknowledged}),
            }
        finally:
            balupi.stop()
            proxy.close()
            nas.stop()


def frozen_nas(long: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="balupi-frozen-") as tmp:
        work = Path(tmp)
        files = {"/z/hot.bin": body_of("hot", 100_000), "/z/cold.bin": body_of("cold")}
        nas, proxy, balupi = _stack(work, files, sync_interval_s=1)
        try:
            _list(balupi, "/")
            _list(balupi, "/z")
            assert fetch(balupi.port, "/dav/z/hot.bin")[2] == files["/z/hot.bin"]
            nas.freeze()
            frozen_at = time.monotonic()
            try:
                outcome, status, body, took = fetch(balupi.port, "/dav/z/cold.bin")
                cached = [fetch(balupi.port, "/dav/z/hot.bin") for _ in range(5)]
                put = balupi.session().put(balupi.url + "/dav/z/while-frozen.bin", data=body_of("wf", 200_000), timeout=30)
            finally:
                frozen_s = time.monotonic() - frozen_at
                nas.thaw()
            synced = wait_until(lambda: pending_changes(balupi.data_dir / "balupi.db") == 0, 150.0, 0.5)
            landed = work / "nas" / "z" / "while-frozen.bin"
            after = fetch(balupi.port, "/dav/z/cold.bin")
            return {
                "miss_while_frozen": f"{outcome} {status}", "miss_error_after_s": round(took, 1),
                "cached_while_frozen": [f"{c[1]} in {c[3] * 1000:.0f} ms" for c in cached],
                "cached_right_bytes": all(c[2] == files["/z/hot.bin"] for c in cached),
                "put_while_frozen": put.status_code, "frozen_s": round(frozen_s, 1),
                "upload_reached_nas_after_thaw": synced and landed.is_file()
                and landed.read_bytes() == body_of("wf", 200_000),
                "miss_after_thaw": f"{after[1]} right={after[2] == files['/z/cold.bin']}",
            }
        finally:
            balupi.stop()
            proxy.close()
            nas.stop()


SCENARIOS = [nas_faults_reads, nas_faults_write_back, frozen_nas]
