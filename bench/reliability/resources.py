"""Resources over time: descriptors and memory stay where they started.

- `idle_day`: BaluPi with the simulated NAS awake and every scheduled job running, its intervals
  divided so that a short run covers a whole day of job runs, under a low `RLIMIT_NOFILE`;
- `misses`: a thousand cache misses, one after another (each a download thread).
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.reliability.harness import BaluPiProcess, NasProcess, fd_kinds, seed

IDLE_NOFILE = 128  # low on purpose: a leak of one descriptor per job run exhausts it in seconds
DAY_S = 86_400


def idle_day(long: bool) -> dict:
    wall_s = 300.0 if long else 20.0
    speedup = DAY_S / wall_s
    with tempfile.TemporaryDirectory(prefix="balupi-idle-") as tmp:
        work = Path(tmp)
        seed(work / "nas", {f"/docs/f{i}.txt": b"x" * 2000 for i in range(20)})
        nas = NasProcess(work / "nas").start()
        balupi = BaluPiProcess(work / "pi", nas, nofile=IDLE_NOFILE, job_speedup=speedup)
        try:
            balupi.start()
            time.sleep(3.0)  # start-up work (first probe, first refresh, prefetch) settles
            fds0, rss0, threads0 = _settled_fds(balupi), balupi.rss_mb(), balupi.threads()
            runs0 = sum(job["runs"] for job in (_attempt(balupi.jobs) or {}).values())
            fds_max = fds0
            deadline = time.monotonic() + wall_s
            while time.monotonic() < deadline and balupi.alive():
                time.sleep(1.0)
                fds_max = max(fds_max, balupi.fds())
            alive = balupi.alive()
            health = _attempt(lambda: balupi.session().get(balupi.url + "/api/health", timeout=10).status_code)
            jobs = _attempt(balupi.jobs) or {}
            return {
                "simulated_hours": round(wall_s * speedup / 3600, 1),
                "nofile_limit": IDLE_NOFILE,
                "job_runs": sum(job["runs"] for job in jobs.values()) - runs0,
                "alive": alive,
                "health_status": health,
                "fds_before": fds0,
                "fds_after": _settled_fds(balupi) if alive else None,
                "fds_max": fds_max,
                "threads_before": threads0,
                "threads_after": balupi.threads() if alive else None,
                "rss_mb_before": round(rss0, 1),
                "rss_mb_after": round(balupi.rss_mb(), 1) if alive else None,
                "log_errors": [line for line in balupi.log().splitlines() if "Too many open files" in line][:3],
            }
        finally:
            balupi.stop()
            nas.stop()


def misses(long: bool) -> dict:
    """Two equal rounds of misses: the first warms what is bounded (every worker's connection, the
    content store's 256 directory descriptors), the second must leave everything where it was."""
    per_round = 2500 if long else 500
    with tempfile.TemporaryDirectory(prefix="balupi-misses-") as tmp:
        work = Path(tmp)
        seed(work / "nas", {f"/m/f{i:05d}.bin": i.to_bytes(4, "big") * 256 for i in range(2 * per_round)})
        nas = NasProcess(work / "nas").start()
        balupi = BaluPiProcess(work / "pi", nas, prefetch_budget_mb=0, refresh_walk_budget_s=0)
        try:
            balupi.start()
            http = balupi.session()
            listing = http.request("PROPFIND", balupi.url + "/dav/m/", headers={"Depth": "1"}, timeout=60)
            assert listing.status_code == 207, listing.status_code

            def get(i: int) -> bool:
                answer = http.get(f"{balupi.url}/dav/m/f{i:05d}.bin", timeout=60)
                return answer.status_code == 200 and answer.content == i.to_bytes(4, "big") * 256

            figures: dict = {"misses": 2 * per_round, "fds_start": balupi.fds()}
            ok = 0
            with ThreadPoolExecutor(4) as pool:
                for round_no in (1, 2):
                    started = time.monotonic()
                    ok += sum(pool.map(get, range((round_no - 1) * per_round, round_no * per_round)))
                    figures[f"round{round_no}_s"] = round(time.monotonic() - started, 1)
                    time.sleep(1.0)  # the last downloads' threads end
                    threads_before = balupi.threads()  # a download's thread may still be ending: its
                    figures[f"fds_after_round{round_no}"] = balupi.fds()  # connection counts until it has
                    figures[f"fd_kinds_after_round{round_no}"] = fd_kinds(balupi.pid)
                    figures[f"threads_at_round{round_no}"] = max(threads_before, balupi.threads())
                    figures[f"rss_mb_after_round{round_no}"] = round(balupi.rss_mb(), 1)
            figures["served_right"] = ok
            figures["threads_after"] = balupi.threads()
            return figures
        finally:
            balupi.stop()
            nas.stop()


def _settled_fds(balupi: BaluPiProcess) -> int:
    """Open descriptors without the moment's job runs: the least of a few samples over a second
    (a probe's socket or a job thread's connection open just now is not growth)."""
    samples = []
    for _ in range(5):
        samples.append(balupi.fds())
        time.sleep(0.2)
    return min(samples)


def _attempt(fn):
    """fn(), or None when BaluPi does not answer (that is a figure too)."""
    try:
        return fn()
    except Exception:  # noqa: BLE001 - a timeout, a reset: reported as None
        return None


SCENARIOS = [idle_day, misses]
