"""Uploads only, A/B in one run: BaluPi and BaluPi-before side by side, PUTs alternating (issue 14).

    .venv/bin/python -m bench.put_bench --base-src /tmp/base [--pi-class] [--rounds 10] [--mib 64]

Both servers run at once (NAS logins on, the simulated NAS asleep after the first login, as in
bench/dav_bench.py), each in its own Pi-class cgroup with --pi-class, and the PUTs alternate between
them, so a busy moment of the shared machine falls on both. Per PUT: curl's MB/s and the server's
CPU seconds (psutil) and, with --pi-class, what the
cgroup's memory.stat says reclaim did meanwhile. The medians and all samples go to stdout as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench import pi_class
from bench.dav_bench import GB, MB, curl_get_timed, curl_put, first_login
from bench.dav_servers import BASE_SRC_ENV, KINDS_BY_KEY, RunningServer, SimNasProcess

# counters (deltas per PUT: names starting with "pg") and levels; v2 names, then v1's
MEMORY_KEYS = ("pgscan", "pgsteal", "file_dirty", "file_writeback", "file",
               "pgpgin", "pgpgout", "pgfault", "cache", "dirty", "writeback")


def cgroup_memory(cgroup: pi_class.PiClassCgroup) -> dict[str, int]:
    memory_dir = cgroup.dirs[0] if cgroup.version == 2 else cgroup.dirs[1]
    stat = dict(line.split() for line in (memory_dir / "memory.stat").read_text().splitlines())
    return {key: int(stat[key]) for key in MEMORY_KEYS if key in stat}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-src", required=True, help="a source tree of BaluPi to measure as balupi-base")
    parser.add_argument("--pi-class", action="store_true", help="each server in a cgroup with a tenth of one core")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--tmpdir", default="/var/tmp")
    parser.add_argument("--only", default="balupi,balupi-base")
    parser.add_argument("--get-after", type=int, default=0, metavar="N",
                        help="GET each file N times right after its PUT (the first from the disk where the upload"
                             " bypassed the page cache, then from the page cache)")
    args = parser.parse_args(argv)
    os.environ[BASE_SRC_ENV] = str(Path(args.base_src).resolve())

    work = Path(tempfile.mkdtemp(prefix="put-bench-", dir=args.tmpdir))
    source = work / "put.bin"
    with open(source, "wb") as f:
        for _ in range(args.mib):
            f.write(os.urandom(1 << 20))
    keys = args.only.split(",")
    running, samples = {}, {key: [] for key in keys}
    try:
        for key in keys:
            kind = KINDS_BY_KEY[key]
            cgroup = pi_class.PiClassCgroup(key) if args.pi_class else None
            nas = SimNasProcess(work / key / "nas-root", work / key)
            server = RunningServer(kind, work / "data", work / key, cgroup=cgroup, nas=nas)
            running[key] = (server, nas, cgroup)
            server.wait_ready()
            first_login(server)
            nas.suspend()
            curl_put(server.url("warm.bin"), source, server.auth)
            if cgroup is not None:
                cgroup.limit()
        for round_no in range(args.rounds):
            for key in (keys if round_no % 2 == 0 else keys[::-1]):
                server, _, cgroup = running[key]
                cpu_before = server.cpu_times()
                memory_before = cgroup_memory(cgroup) if cgroup else {}
                speed = curl_put(server.url(f"put-{round_no}.bin"), source, server.auth)
                cpu_after = server.cpu_times()
                memory_after = cgroup_memory(cgroup) if cgroup else {}
                gb = source.stat().st_size / GB
                get_after = {}
                if args.get_after:
                    speeds, cpus = [], []
                    for _ in range(args.get_after):
                        cpu_get = server.cpu_times()
                        got = curl_get_timed(server.url(f"put-{round_no}.bin"), source.stat().st_size, server.auth)
                        cpu_got = server.cpu_times()
                        speeds.append(round(got["speed"] / MB, 1))
                        cpus.append(round((sum(cpu_got) - sum(cpu_get)) / gb, 3))
                    get_after = {"get_after_mb_s": speeds[0], "get_after_cpu_s_per_gb": cpus[0],
                                 "get_again_mb_s": speeds[1:], "get_again_cpu_s_per_gb": cpus[1:]}
                samples[key].append({
                    "mb_s": round(speed / MB, 1),
                    "cpu_s_per_gb": round((sum(cpu_after) - sum(cpu_before)) / gb, 3),
                    "user_s_per_gb": round((cpu_after[0] - cpu_before[0]) / gb, 3),
                    "system_s_per_gb": round((cpu_after[1] - cpu_before[1]) / gb, 3),
                    "memory": {k: memory_after[k] - memory_before.get(k, 0) if k.startswith("pg") else memory_after[k]
                               for k in memory_after},
                    "rss_mb": round(server.rss_bytes() / MB, 1),
                    **get_after,
                })
                print(key, json.dumps(samples[key][-1]), file=sys.stderr, flush=True)
    finally:
        for server, nas, cgroup in running.values():
            server.stop()
            nas.stop()
            if cgroup is not None:
                cgroup.remove()
        shutil.rmtree(work, ignore_errors=True)
    summary = {key: {"mb_s_median": statistics.median(s["mb_s"] for s in runs),
                     "cpu_s_per_gb_median": statistics.median(s["cpu_s_per_gb"] for s in runs),
                     "cpu_s_per_gb_min": min(s["cpu_s_per_gb"] for s in runs),
                     "system_s_per_gb_median": statistics.median(s["system_s_per_gb"] for s in runs),
                     **({"get_after_mb_s_median": statistics.median(s["get_after_mb_s"] for s in runs),
                         "get_after_cpu_s_per_gb_median": statistics.median(s["get_after_cpu_s_per_gb"] for s in runs),
                         **({"get_again_mb_s_median": statistics.median(x for s in runs for x in s["get_again_mb_s"]),
                             "get_again_cpu_s_per_gb_median": statistics.median(
                                 x for s in runs for x in s["get_again_cpu_s_per_gb"])} if args.get_after > 1 else {})}
                        if args.get_after else {})}
               for key, runs in samples.items() if runs}
    print(json.dumps({"pi_class": args.pi_class, "mib": args.mib, "summary": summary, "samples": samples}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
