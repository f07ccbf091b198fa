"""A locked database: another process holds SQLite's write lock on balupi.db for longer than
BaluPi's busy timeout (10 s), as a long `sqlite3` session or a stuck backup script would.

Clients keep reading and writing meanwhile: reads are answered (WAL), writes that cannot get the
lock are `503` with `Retry-After` (never `500`), each logged once in BaluPi's own log with its
cause, and once the lock is gone writes succeed again.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.reliability.harness import BaluPiProcess

PAYLOAD = b"written while the database was locked\n" * 100


def locked_database(long: bool) -> dict:
    lock_s = 30.0 if long else 13.0
    with tempfile.TemporaryDirectory(prefix="balupi-locked-") as tmp:
        work = Path(tmp)
        balupi = BaluPiProcess(work / "pi", None)
        try:
            balupi.start()
            http = balupi.session()
            assert http.put(balupi.url + "/dav/before.txt", data=b"cached").status_code in (201, 204)
            holder = sqlite3.connect(str(balupi.data_dir / "balupi.db"), timeout=30, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # the write lock, held by another process (this one)
            locked_at = time.monotonic()
            statuses: dict[str, Counter] = {"PUT": Counter(), "GET cached": Counter(), "PROPFIND": Counter()}
            retry_after: set[str] = set()
            slowest: dict[str, float] = {}

            def client(method: str, n: int) -> None:
                session = balupi.session()
                i = 0
                while time.monotonic() - locked_at < lock_s - 1:
                    i += 1
                    started = time.monotonic()
                    if method == "PUT":
                        answer = session.put(f"{balupi.url}/dav/locked-{n}-{i}.txt", data=PAYLOAD, timeout=60)
                    elif method == "GET cached":
                        answer = session.get(balupi.url + "/dav/before.txt", timeout=60)
                    else:
                        answer = session.request("PROPFIND", balupi.url + "/dav/", headers={"Depth": "1"}, timeout=60)
                    took = time.monotonic() - started
                    slowest[method] = max(slowest.get(method, 0.0), took)
                    statuses[method][answer.status_code] += 1
                    if answer.status_code == 503:
                        retry_after.add(answer.headers.get("Retry-After", ""))
                    time.sleep(0.2)

            threads = [threading.Thread(target=client, args=(m, n)) for m in statuses for n in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(lock_s + 60)
            held_s = time.monotonic() - locked_at
            holder.execute("ROLLBACK")
            holder.close()
            after = http.put(balupi.url + "/dav/after.txt", data=PAYLOAD)
            log_lines = [line for line in balupi.log().splitlines() if "database is locked" in line]
            return {
                "lock_held_s": round(held_s, 1),
                "statuses": {m: dict(c) for m, c in statuses.items()},
                "retry_after": sorted(retry_after),
                "slowest_s": {m: round(v, 1) for m, v in slowest.items()},
                "put_after_release": after.status_code,
                "refusals": sum(c[503] for c in statuses.values()),
                "refusal_log_lines": len(log_lines),
                "refusal_log_example": log_lines[0][:200] if log_lines else None,
                "database_tracebacks_in_log": sum(1 for block in balupi.log().split("Traceback")[1:]
                                                  if "sqlite3" in block or "locked" in block.split("\n\n")[0]),
            }
        finally:
            balupi.stop()


SCENARIOS = [locked_database]
