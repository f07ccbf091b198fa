"""A cache miss streamed from an awake NAS: time to first byte and MB/s, BaluPi beside rclone (issue 14).

    .venv/bin/python -m bench.miss_bench [--quick] [--pi-class] [--only balupi,rclone] [--profile]
    .venv/bin/python -m bench.miss_bench --only balupi,balupi-base --base-src /tmp/base   # before and after

Each server gets its own simulated NAS (`python -m balupi.sim.nas`, its own process, awake, never
in the Pi-class cgroup: it stands for another machine) holding a warm-up file and `--runs` files of
`--size-mib` MiB of random bytes, and nothing else. BaluPi (`balupi serve`, NAS logins on, prefetch
and the walk after a wake off) and `rclone serve webdav :webdav: --vfs-cache-mode full` (a webdav
remote on the same kind of NAS) each list the NAS's root first (a PROPFIND Depth 1, as a client
opening the folder would) and fetch the warm-up file; then each measured file is fetched once
with curl: a miss, streamed from the NAS to the client while the server writes it to its cache.
Reported: the median time to first byte and MB/s (curl's), the server's CPU seconds per GB, and
its RSS. `--pi-class` puts each server in a cgroup with a tenth of one core and 1 GiB
(bench/pi_class.py). See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import pi_class
from bench import pyspy_top
from bench.dav_bench import GB, MB, BenchError, curl_get_timed, first_login, run_tool
from bench.dav_servers import (
    KINDS_BY_KEY,
    NAS_PASSWORD,
    NAS_USER,
    BASE_SRC_ENV,
    Launch,
    RunningServer,
    ServerFailed,
    ServerKind,
    SimNasProcess,
    _clean_env,
)
from bench.servers import free_port

RESULTS_DIR = Path(__file__).resolve().parent / "results"
WARM_BYTES = 1 << 20
CHUNK_BYTES = 1 << 20
MISS_TARGET_MB_S = 40.0  # issue 14, Pi-class
RCLONE = ServerKind("rclone", "rclone VFS full", "/", ("rclone",), ("rclone",))
KEYS = ("balupi", "balupi-base", "rclone")


def make_nas_files(root: Path, runs: int, size_bytes: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "warm.bin").write_bytes(os.urandom(WARM_BYTES))
    for i in range(runs):
        with open(root / f"miss-{i}.bin", "wb") as f:
            for _ in range(size_bytes // CHUNK_BYTES):
                f.write(os.urandom(CHUNK_BYTES))


def rclone_launch(port: int, nas: SimNasProcess, work: Path) -> Launch:
    obscured = run_tool(["rclone", "obscure", NAS_PASSWORD], 30).strip()
    (work / "rclone.conf").write_text("")
    env = _clean_env(RCLONE_CONFIG=str(work / "rclone.conf"), RCLONE_WEBDAV_URL=nas.dav_url,
                     RCLONE_WEBDAV_VENDOR="other", RCLONE_WEBDAV_USER=NAS_USER, RCLONE_WEBDAV_PASS=obscured,
                     HOME=str(work / "home"))
    argv = ["rclone", "serve", "webdav", ":webdav:", "--addr", f"127.0.0.1:{port}",
            "--vfs-cache-mode", "full", "--cache-dir", str(work / "rclone-cache")]
    return Launch(argv, env, work)


def list_root(server: RunningServer) -> None:
    if server.auth:
        first_login(server)  # BaluPi: the login checked with the NAS, the root listed from it
    else:
        out = run_tool(["curl", "-s", "--noproxy", "*", "-X", "PROPFIND", "-H", "Depth: 1", "-o", os.devnull,
                        "-w", "%{http_code}", server.url("")], 60)
        if out != "207":
            raise BenchError(f"PROPFIND {server.url('')}: {out}, expected 207")


def bench_server(key: str, args, work: Path) -> dict:
    started = time.monotonic()
    result: dict = {}
    nas = cgroup = None
    try:
        cgroup = pi_class.PiClassCgroup(f"miss-{key}", period_us=args.cfs_period_ms * 1000) if args.pi_class else None
        make_nas_files(work / "nas-root", args.runs, args.size_bytes)
        nas = SimNasProcess(work / "nas-root", work)
        if key in ("balupi", "balupi-base"):
            server_cm = RunningServer(KINDS_BY_KEY[key], work / "nas-root", work, cgroup=cgroup, nas=nas)
        else:
            port = free_port()
            server_cm = RunningServer(RCLONE, work / "nas-root", work, cgroup=cgroup,
                                      launch=rclone_launch(port, nas, work), port=port)
        with server_cm as server:
            server.wait_ready()
            list_root(server)
            warm = curl_get_timed(server.url("warm.bin"), WARM_BYTES, server.auth)
            result["warm_first_byte_ms"] = round(warm["first_byte_s"] * 1000, 1)
            if cgroup is not None:
                if server.process.pid not in cgroup.members():
                    raise BenchError(f"the server (pid {server.process.pid}) is not in its cgroup")
                cgroup.limit()
                result["cgroup"] = cgroup.describe()
            rss_before = server.rss_bytes() / MB
            counters_before = nas.counters()

            def misses(first: int, count: int) -> list[dict]:
                return [curl_get_timed(server.url(f"miss-{i}.bin"), args.size_bytes, server.auth)
                        for i in range(first, first + count)]

            cpu_before = sum(server.cpu_times())
            runs = misses(0, args.measured)
            cpu_s = sum(server.cpu_times()) - cpu_before
            result["status"] = "ok"
            result["first_byte_ms"] = statistics.median(r["first_byte_s"] for r in runs) * 1000
            result["mb_s"] = statistics.median(r["speed"] for r in runs) / MB
            result["runs"] = [{"first_byte_ms": round(r["first_byte_s"] * 1000, 1), "mb_s": round(r["speed"] / MB, 1)}
                              for r in runs]
            result["cpu_s_per_gb"] = cpu_s / (args.size_bytes * args.measured / GB)
            result["rss_mb_before"] = round(rss_before, 1)
            result["rss_mb"] = server.rss_bytes() / MB
            counters = nas.counters()
            result["nas_counters_during"] = {k: v for k, v in counters.items()
                                             if isinstance(v, (int, float)) and v != counters_before.get(k)}
            if args.profile and key.startswith("balupi") and args.runs > args.measured:
                raw = args.results / f"pyspy-{args.stamp}-miss-balupi.txt"
                load_s = pyspy_top.record(server.process.pid, raw, lambda: misses(args.measured,
                                                                                 args.runs - args.measured), gil=False)
                result["profile"] = {"raw": str(raw), "load_s": round(load_s, 2), **pyspy_top.top_frames(raw)}
            if cgroup is not None:
                result["cgroup_stats"] = cgroup.stats()
    except (ServerFailed, BenchError, OSError, ValueError, pi_class.CgroupUnavailable) as exc:
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        if nas is not None:
            nas.stop()
        if cgroup is not None:
            cgroup.remove()
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


ROWS = (
    ("first_byte_ms", "time to first byte of a miss, ms", "{:.0f}"),
    ("mb_s", "miss streamed from the NAS, MB/s", "{:.0f}"),
    ("cpu_s_per_gb", "server CPU seconds per GB of misses", "{:.2f}"),
    ("rss_mb", "server RSS after the misses, MB", "{:.0f}"),
)


def markdown(report: dict) -> str:
    servers = report["servers"]
    labels = {"balupi": "BaluPi (logins on)", "balupi-base": "BaluPi before (logins on)", "rclone": "rclone VFS full"}
    lines = [f"Miss benchmark {report['date']} on {report['machine']['cpus']} CPUs, load average "
             f"{report['machine']['load_before']} before, {report['machine']['load_after']} after; "
             f"{report['size_mib']} MiB files, median of {report['measured']}"
             + (", Pi-class: each server in a cgroup with a tenth of one core and 1 GiB" if report["pi_class"] else ""),
             "", "| metric | " + " | ".join(labels[k] for k in servers) + " |", "|---|" + "---:|" * len(servers)]
    for key, label, fmt in ROWS:
        cells = [fmt.format(res[key]) if res.get("status") == "ok" else "failed" for res in servers.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for key, res in servers.items():
        if res.get("status") != "ok":
            lines.append(f"\n- {labels[key]} failed: {res['error']}")
    balupi = servers.get("balupi", {})
    if report["pi_class"] and balupi.get("status") == "ok":
        met = balupi["mb_s"] >= MISS_TARGET_MB_S
        lines.append(f"\n- BaluPi miss, MB/s: {balupi['mb_s']:.1f} (target >= {MISS_TARGET_MB_S:g}): "
                     + ("met" if met else "MISSED"))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 MiB files, 2 runs")
    parser.add_argument("--size-mib", type=int, default=None, help="size of each missed file (default 128)")
    parser.add_argument("--runs", type=int, default=None, help="misses measured (default 3)")
    parser.add_argument("--only", default="balupi,rclone", help="comma-separated: balupi,balupi-base,rclone")
    parser.add_argument("--base-src", type=Path, default=None,
                        help="a source tree of BaluPi to measure as balupi-base (before a change), e.g. from git archive")
    parser.add_argument("--pi-class", action="store_true", help="each server in a cgroup: a tenth of one core, 1 GiB")
    parser.add_argument("--cfs-period-ms", type=int, default=pi_class.CPU_PERIOD_US // 1000)
    parser.add_argument("--profile", action="store_true", help="then py-spy on BaluPi during further misses")
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    args.keys = [k for k in KEYS if k in args.only.split(",")]
    if "balupi-base" in args.keys and args.base_src is None:
        parser.error("--only balupi-base needs --base-src")
    if args.base_src is not None:
        os.environ[BASE_SRC_ENV] = str(args.base_src.resolve())
    args.size_bytes = (args.size_mib or (32 if args.quick else 128)) << 20
    args.measured = args.runs or (2 if args.quick else 3)
    args.runs = args.measured + (2 if args.profile else 0)
    return args


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cgroup_note = ""
    if args.pi_class:
        try:
            cgroup_note = pi_class.check(args.cfs_period_ms * 1000)
        except pi_class.CgroupUnavailable as exc:
            print(f"miss_bench: --pi-class needs a cgroup it can limit, and cannot make one here: {exc}", file=sys.stderr)
            return 2
    if args.profile and not pyspy_top.available():
        print("miss_bench: --profile needs py-spy (pip install py-spy)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    now = dt.datetime.now().astimezone()
    args.stamp = now.strftime("%Y-%m-%d-%H%M%S")
    args.results.mkdir(parents=True, exist_ok=True)
    report = {"date": now.isoformat(timespec="seconds"), "pi_class": args.pi_class, "cgroup": cgroup_note,
              "size_mib": args.size_bytes >> 20, "measured": args.measured,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_before": [round(x, 2) for x in os.getloadavg()]}, "servers": {}}
    try:
        for key in args.keys:
            print(f"miss_bench: {key} ...", file=sys.stderr, flush=True)
            with tempfile.TemporaryDirectory(prefix="miss-bench-", dir=args.tmpdir) as tmp:
                res = report["servers"][key] = bench_server(key, args, Path(tmp))
            print(f"miss_bench: {key}: " + (res.get("error") or f"first byte {res['first_byte_ms']:.0f} ms, "
                  f"{res['mb_s']:.0f} MB/s, {res['cpu_s_per_gb']:.2f} CPU s/GB, runs {res['runs']}"),
                  file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("miss_bench: interrupted; servers stopped and temporary files removed", file=sys.stderr)
        return 130
    report["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out = args.results / f"miss-{args.stamp}{'-pi' if args.pi_class else ''}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    for key, res in report["servers"].items():
        prof = res.get("profile")
        if prof:
            print(f"\npy-spy (running threads), {key}, during misses: {prof['samples']} samples in {prof['load_s']} s ({prof['raw']})")
            print("  self%  frame")
            print("\n".join(f"  {pct:5.1f}  {frame}" for frame, pct in prof["self"][:12]))
            print("  total%  frame")
            print("\n".join(f"  {pct:5.1f}  {frame}" for frame, pct in prof["total"][:12]))
    print(f"\n(all samples: {out})", file=sys.stderr)
    return 0 if all(r.get("status") == "ok" for r in report["servers"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
