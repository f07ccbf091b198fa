"""4 KiB GETs of BaluPi variants side by side, alternating: CPU, context switches and throttling per request.

    .venv/bin/python -m bench.small_ab --pi-class --rounds 3 --wrk-seconds 20 \
        --variant new= --variant base=@/tmp/base --variant gate2=BALUPI_X=2 ...

A variant is `label=` (this tree), `label=@/path/to/tree` (another source tree, as dav_bench's
--base-src) and/or settings `NAME=VALUE` separated by commas after the `=`
(`gate=@/tmp/base,BALUPI_SERVER_THREADS=4`). Each round starts every variant afresh, in turn
(the order rotates per round), with logins on and the NAS asleep (every GET a cache hit with a
remembered Basic login, as dav_bench), and runs wrk on one 4 KiB file, or with `--thumbs N` over N
distinct 4 KiB files in turn (dav_bench's photo-grid load). For A/Bs of one request path on a
shared machine; the full table is dav_bench's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import pi_class
from bench.dav_bench import (Plan, curl_get, first_login, thumb_names, upload, warm_files, wrk_under_watch,
                              write_round_robin_script, SMALL_FILE_BYTES, RESULTS_DIR)
from bench.dav_servers import KINDS_BY_KEY, BASE_SRC_ENV, RunningServer, SimNasProcess


def parse_variant(text: str) -> tuple[str, str | None, dict[str, str]]:
    label, _, rest = text.partition("=")
    source, env = None, {}
    for item in filter(None, rest.split(",")):
        if item.startswith("@"):
            source = item[1:]
        else:
            name, eq, value = item.partition("=")
            if not eq:
                raise SystemExit(f"--variant {text}: {item!r} is not NAME=VALUE")
            env[name] = value
    return label, source, env


def one(label: str, source: str | None, env: dict[str, str], plan: Plan, data: Path, work: Path,
        period_us: int | None, connections: int, thumbs: int = 0) -> dict:
    kind = KINDS_BY_KEY["balupi-base" if source else "balupi"]
    if source:
        os.environ[BASE_SRC_ENV] = source
    cgroup = pi_class.PiClassCgroup(label, period_us=period_us) if period_us else None
    nas = SimNasProcess(work / "nas-root", work)
    try:
        with RunningServer(kind, data, work, env, cgroup=cgroup, nas=nas) as server:
            server.wait_ready()
            first_login(server)
            nas.suspend()
            upload(server, data)
            if cgroup is not None:
                cgroup.limit()
            url = server.url("small.bin")
            curl_get(url, SMALL_FILE_BYTES, server.auth)
            script = None
            if thumbs:
                rels = thumb_names(thumbs)
                warm_files(server, rels, SMALL_FILE_BYTES)
                script = write_round_robin_script([kind.root_path + rel for rel in rels], plan.wrk_threads,
                                                  work / "thumbs.lua")
                url = server.url(rels[0])
            nas_before = nas.counters()["request_count"]
            wrk = wrk_under_watch(server, url, dataclasses.replace(plan, wrk_connections=connections),
                                  server.auth_headers()["Authorization"], script)
            wrk["nas_requests_during"] = nas.counters()["request_count"] - nas_before
            wrk["rss_mb"] = round(server.rss_bytes() / 1e6, 1)
            return wrk
    finally:
        nas.stop()
        if cgroup is not None:
            cgroup.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wrk-seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--thumbs", type=int, default=0,
                        help="wrk over this many distinct 4 KiB files in turn instead of one file")
    parser.add_argument("--pi-class", action="store_true")
    parser.add_argument("--perf", action="store_true")
    parser.add_argument("--tmpdir", default="/var/tmp")
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant]
    plan = dataclasses.replace(Plan.quick(), wrk_duration_s=args.wrk_seconds, perf_stat=args.perf)
    period = pi_class.CPU_PERIOD_US if args.pi_class else None
    results: dict[str, list[dict]] = {label: [] for label, _, _ in variants}
    with tempfile.TemporaryDirectory(prefix="small-ab-", dir=args.tmpdir) as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        (data / "small.bin").write_bytes(os.urandom(SMALL_FILE_BYTES))
        if args.thumbs:
            (data / "thumbs").mkdir()
            for name in thumb_names(args.thumbs):
                (data / name).write_bytes(os.urandom(SMALL_FILE_BYTES))
        for r in range(args.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for label, source, env in order:
                work = Path(tmp) / f"{label}-{r}"
                try:
                    res = one(label, source, env, plan, data, work, period, args.connections, args.thumbs)
                except Exception as exc:  # noqa: BLE001 - a failed variant is a result too
                    res = {"error": f"{type(exc).__name__}: {exc}"}
                res["load"] = round(os.getloadavg()[0], 2)
                results[label].append(res)
                print(f"round {r} {label}: " + (res["error"] if "error" in res else
                      f"{res['requests_per_s']:.0f}/s, {res['server_cpu_us_per_request']:.0f} us, "
                      f"{res['switches_per_request']:.1f} sw ({res['voluntary_switches_per_request']:.1f} vol), "
                      f"thr {res.get('throttled_us_per_request', 0):.0f} us, RSS {res['rss_mb']} MB, "
                      f"NAS requests {res['nas_requests_during']}, load {res['load']}"), flush=True)
    print()
    for label, runs in results.items():
        ok = [x for x in runs if "error" not in x]
        if not ok:
            print(f"{label}: all failed")
            continue
        cpu = [x["server_cpu_us_per_request"] for x in ok]
        rate = [x["requests_per_s"] for x in ok]
        sw = [x["switches_per_request"] for x in ok]
        print(f"{label}: GETs/s median {statistics.median(rate):.0f} {sorted(rate)}; CPU us median "
              f"{statistics.median(cpu):.0f} {sorted(cpu)}; switches median {statistics.median(sw):.1f}; "
              f"failed {len(runs) - len(ok)}")
    out = RESULTS_DIR / f"small-ab-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
    RESULTS_DIR.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1) + "\n")
    print(f"(all samples: {out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
