"""The energy rollup benchmark of issue 7: a year of 30-second samples for three plugs, then the
day/week/month/year history and cost queries, each timed through the real API (target < 50 ms).

    .venv/bin/python -m bench.energy_rollup              # a year: ~3.15 million samples, a few minutes
    .venv/bin/python -m bench.energy_rollup --days 30    # quicker smoke run
    .venv/bin/python -m bench.energy_rollup --keep       # keep the temp DB and print its path

What happens, all in a temp directory:
1. Three plugs (a NAS that sleeps at night and works in bursts, a router, the Pi), and a
   time-of-use tariff from the start, are set up in a fresh BaluPi database.
2. Their samples are generated as a Tapo plug would report them: power, and integer Wh counters
   that reset at local midnight and on the 1st. They go through the production recorder
   (`Recorder.record`: samples, ledger, NAS power states, hourly/daily/monthly rollups), one
   transaction per plug and day, so the load time is the ingest cost too.
3. Retention runs as the hourly job would at the end (raw samples kept 7 days).
4. Each query is a GET through BaluPi's WSGI app in process (routing, SQL and JSON), repeated;
   the table shows the median and the slowest run.

Prints a markdown table for docs/performance.md. Exit status 1 if a query's median misses 50 ms.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from wsgiref.util import setup_testing_defaults
from zoneinfo import ZoneInfo

from balupi.app import BaluPi
from balupi.energy.model import Reading
from balupi.energy.recorder import PlugMeta
from balupi.settings import load_settings

TZ_NAME = "Europe/Berlin"
TZ = ZoneInfo(TZ_NAME)
STEP_S = 30
TARGET_MS = 50.0
REPEATS = 15


def nas_power(t: float) -> float:
    """Asleep 0:30-7:00 (1.5 W), bursts of work in the evening, idle otherwise."""
    local = datetime.fromtimestamp(t, TZ)
    minute = local.hour * 60 + local.minute
    if 30 <= minute < 420:
        return 1.5
    if 18 * 60 <= minute < 23 * 60 and (minute // 7) % 3 == 0:
        return 45.0
    return 21.0 + (minute % 5) * 0.3


PROFILES = {"NAS": ("nas", nas_power), "Router": ("monitor", lambda t: 8.0), "BaluPi": ("pi", lambda t: 3.4)}


class Meter:
    """Integer Wh counters per local day and month, as the plug keeps them."""

    def __init__(self) -> None:
        self.carry_wh = 0.0
        self.today_wh = 0
        self.month_wh = 0
        self.day = None

    def add(self, t: float, energy_wh: float) -> tuple[int, int, datetime]:
        local = datetime.fromtimestamp(t, TZ)
        if self.day is not None and local.date() != self.day:
            self.today_wh = 0
            if local.month != self.day.month:
                self.month_wh = 0
        self.day = local.date()
        self.carry_wh += energy_wh
        whole = math.floor(self.carry_wh)
        self.carry_wh -= whole
        self.today_wh += whole
        self.month_wh += whole
        return self.today_wh, self.month_wh, local


def call(app: BaluPi, path: str) -> tuple[int, bytes]:
    environ: dict = {}
    setup_testing_defaults(environ)
    path, _, query = path.partition("?")
    environ.update(REQUEST_METHOD="GET", PATH_INFO=path, QUERY_STRING=query, CONTENT_LENGTH="0", REMOTE_ADDR="127.0.0.1")
    environ["wsgi.input"] = io.BytesIO(b"")
    seen = {}

    def start_response(status: str, headers: list, exc_info=None) -> None:
        seen["status"] = int(status.split()[0])

    body = b"".join(app.wsgi(environ, start_response))
    return seen["status"], body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=365, help="days of samples to load (default 365)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="balupi-energy-bench-"))
    try:
        settings = load_settings(env={}, cwd=tmp, overrides={
            "data_dir": str(tmp / "data"), "cache_dir": str(tmp / "cache"), "host": "127.0.0.1", "port": 0,
            "energy_timezone": TZ_NAME, "nas_power_min_dwell_s": 60,
        })
        app = BaluPi(settings)
        end = datetime(2025, 1, 1, tzinfo=TZ).timestamp()
        start = (datetime(2025, 1, 1, tzinfo=TZ) - timedelta(days=args.days)).timestamp()
        app.energy.clock = lambda: end
        svc = app.energy
        with app.db.write() as d:
            for name, (role, _) in PROFILES.items():
                d.execute("INSERT INTO energy_plugs (name, role, host, config_json, timezone) VALUES (?, ?, '127.0.0.1', '{}', ?)",
                          (name, role, TZ_NAME))
        plugs = {r["name"]: r["id"] for r in app.db.query("SELECT id, name FROM energy_plugs")}
        svc.start()  # loads the plugs; nothing polls them (the scheduler is not started)
        svc.add_tariff({"name": "time of use", "valid_from": start, "price_cents_per_kwh": 34.0,
                        "standing_charge_cents_per_day": 45.0,
                        "windows": [{"from_hour": 22, "to_hour": 6, "price_cents_per_kwh": 24.0}]})
        svc.recorder.track_nas(plugs["NAS"])

        print(f"loading {args.days} days x {len(plugs)} plugs of {STEP_S} s samples ...", file=sys.stderr)
        load_started = time.perf_counter()
        meters = {name: Meter() for name in plugs}
        total = 0
        day_start = start
        while day_start < end:
            day_end = min(end, (datetime.fromtimestamp(day_start, TZ) + timedelta(days=1)).replace(
                hour=0, minute=0, second=0).timestamp())
            for name, plug_id in plugs.items():
                power_fn = PROFILES[name][1]
                meter = meters[name]
                batch = []
                t = day_start
                prev_power = power_fn(t)
                while t < day_end:
                    power = power_fn(t)
                    today, month, local = meter.add(t, (prev_power + power) / 2 * STEP_S / 3600 if batch or t > start else 0.0)
                    batch.append(Reading(plug_id, t, power, today, month, local, voltage_v=230.0,
                                         current_a=round(power / 230, 3), is_on=True))
                    prev_power = power
                    t += STEP_S
                svc.recorder.record(PlugMeta(plug_id, name == "NAS"), batch, svc.book)
                total += len(batch)
            day_start = day_end
            done = (day_start - start) / (end - start)
            if int(done * 100) % 10 == 0:
                print(f"  {done:4.0%}  {total:,} samples  {time.perf_counter() - load_started:6.1f} s", file=sys.stderr)
        load_s = time.perf_counter() - load_started
        retention_started = time.perf_counter()
        deleted = svc.apply_retention()
        retention_s = time.perf_counter() - retention_started
        app.db.raw().execute("PRAGMA optimize")
        db_path = settings.data_dir / "balupi.db"
        db_mb = (db_path.stat().st_size + (db_path.with_suffix(".db-wal").stat().st_size
                                           if db_path.with_suffix(".db-wal").exists() else 0)) / 1e6

        nas = plugs["NAS"]
        queries = [
            ("history day, hourly, one plug", f"/api/energy/history?device_id={nas}&period=day"),
            ("history day, raw 30 s, one plug", f"/api/energy/history?device_id={nas}&period=day&resolution=raw"),
            ("history week, hourly, one plug", f"/api/energy/history?device_id={nas}&period=week"),
            ("history month, daily, one plug", f"/api/energy/history?device_id={nas}&period=month"),
            ("history year, monthly, one plug", f"/api/energy/history?device_id={nas}&period=year"),
            ("history year, daily, one plug", f"/api/energy/history?device_id={nas}&period=year&resolution=day"),
            ("history week, hourly, all plugs", "/api/energy/history?period=week"),
            ("history year, daily, all plugs", "/api/energy/history?period=year&resolution=day"),
            ("costs day", "/api/energy/costs?period=day"),
            ("costs week", "/api/energy/costs?period=week"),
            ("costs month", "/api/energy/costs?period=month"),
            ("costs year", "/api/energy/costs?period=year"),
            ("summary", "/api/energy/summary"),
            ("savings month", "/api/energy/savings?period=month"),
            ("savings year", "/api/energy/savings?period=year"),
        ]
        rows = []
        missed = []
        for label, path in queries:
            status, body = call(app, path)  # warm-up
            if status != 200:
                print(f"{label}: HTTP {status}: {body[:200]!r}", file=sys.stderr)
                return 1
            answer = json.loads(body)
            points = len(answer.get("points") or answer.get("days") or [])
            times = []
            for _ in range(REPEATS):
                t0 = time.perf_counter()
                call(app, path)
                times.append((time.perf_counter() - t0) * 1000)
            median = statistics.median(times)
            if median >= TARGET_MS:
                missed.append(label)
            rows.append((label, points, median, max(times)))
        reprice_started = time.perf_counter()
        _, repriced = svc.add_tariff({"name": "new year", "valid_from": start, "price_cents_per_kwh": 36.0,
                                      "windows": [{"from_hour": 22, "to_hour": 6, "price_cents_per_kwh": 26.0}]})
        reprice_s = time.perf_counter() - reprice_started
        app.stop(timeout_s=2)

        load = os.getloadavg()
        print(f"\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"SQLite {__import__('sqlite3').sqlite_version}; load average {load[0]:.2f} at the end")
        print(f"Loaded {total:,} samples ({args.days} days x {len(plugs)} plugs) through the recorder in {load_s:.1f} s "
              f"({total / load_s:,.0f} samples/s); retention removed {deleted['energy_samples']:,} samples and "
              f"{deleted['energy_ledger']:,} ledger pieces in {retention_s:.1f} s; database {db_mb:.1f} MB. "
              f"A tariff change over the whole period repriced {repriced:,} hours in {reprice_s * 1000:.0f} ms.\n")
        print(f"| query (GET through the WSGI app) | points | median ms | slowest ms | < {TARGET_MS:g} ms |")
        print("|---|---:|---:|---:|---|")
        for label, points, median, slowest in rows:
            print(f"| {label} | {points} | {median:.1f} | {slowest:.1f} | {'yes' if median < TARGET_MS else 'NO'} |")
        if args.keep:
            print(f"\nkept: {tmp}", file=sys.stderr)
        return 1 if missed else 0
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
