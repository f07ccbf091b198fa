"""Issue 5, item 8: a workload replay against BaluPi and rclone, each in front of a simulated NAS that sleeps.

    .venv/bin/python -m bench.replay            # full run: 2000 files, ~1500 operations, about 7 minutes
    .venv/bin/python -m bench.replay --quick    # smoke run: 300 files, ~250 operations, under 2 minutes
    .venv/bin/python -m bench.replay --reanalyse bench/results/replay-....json   # evaluate a run again
    .venv/bin/python -m bench.replay --only balupi --seed 7 --scenarios b

One seeded trace (`bench.replay.trace`: a tree with log-normal sizes, Zipf popularity, listings, reads,
writes and renames in bursts separated by idle gaps longer than the NAS's idle timer) is played, in
each scenario, against BaluPi and against `rclone serve webdav --vfs-cache-mode full`, each with its
own simulated NAS (`python -m balupi.sim.nas`) and its own fresh copy of the tree, both at once:

- scenario a: the cache can hold the whole tree (twice the bytes of the tree and of every write);
- scenario b: the cache holds a fifth of the bytes the trace touches (see `capacities`).

BaluPi's NAS sleeps in suspend mode (its port refuses; BaluPi wakes it with a magic packet to the
sim's UDP port); rclone cannot send magic packets, so its NAS sleeps in soft-sleep mode, where any
request wakes it, after the same delay. Both count their wakes the same way (sim counters: boots +
soft-sleep wake-ups). Offline models (`bench.replay.offline`) compute Belady's greedy optimum, LRU and
BaluPi's heat policy on the same trace. Output: a table on stdout, every number in
bench/results/replay-<date>-<time>[-quick].json, and the section "Workload replay (issue 5)" of
docs/performance.md (unless --no-docs). Exit status: 0 when every run completed (targets missed
or not), 1 when a run failed, 2 when rclone is missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.replay import offline
from bench.replay import report
from bench.replay.analysis import analyse, locate
from bench.replay.systems import (
    IDLE_SUSPEND_S, BaluPiProc, Client, RcloneProc, ReplayError, SimNasProc, balupi_settings, play,
    rclone_flags, snapshot_source, stop_all,
)
from bench.replay.trace import Trace, TracePlan, generate, make_pattern, write_tree

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "bench" / "results"
DOC = REPO / "docs" / "performance.md"
TIME_SCALE = 300.0  # one trace second stands for five real minutes
ASLEEP_WAIT_S = 20.0
RUN_SLACK_S = 300.0
FLUSH_S = 30.0  # BaluPi writes counted hits into the heat every 30 s of wall time (app.py)
HALF_LIVES_H = (6.0, 24.0, 72.0, 168.0, 720.0)
SIZE_WEIGHTS = (0.0, 0.125, 0.25, 0.5, 1.0)
ROBUSTNESS_SEEDS = 5
CACHE_SAMPLE_S = 0.5


class Interrupted(Exception):
    pass


def _interrupt(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- scenario sizes


def footprint_bytes(trace: Trace) -> int:
    """Bytes the trace touches: the last size of every file read or written."""
    last: dict[int, int] = {}
    for op in trace.ops:
        if op.kind in ("read", "write"):
            last[op.file_id] = op.size
    return sum(last.values())


def capacities(trace: Trace) -> dict[str, int]:
    written = sum(op.size for op in trace.ops if op.kind == "write")
    return {"a": 2 * (trace.tree_bytes + written), "b": footprint_bytes(trace) // 5}


# ---------------------------------------------------------------- offline models


def offline_models(trace: Trace, scale: float, capacity_b: int) -> dict:
    events = offline.events_of(trace)  # trace (compressed) seconds, like the live run's clock
    half_life_s = 72 * 3600 / scale
    pf = offline.Prefetch(tuple(size for _, size in trace.files))
    out = {
        "capacity_bytes": capacity_b,
        "belady": offline.belady(events, capacity_b).as_dict(),
        "belady_bypass": offline.belady(events, capacity_b, bypass=True).as_dict(),
        "lru": offline.lru(events, capacity_b).as_dict(),
        "heat": offline.heat(events, capacity_b, half_life_s, 0.25).as_dict(),
        "heat_as_live": offline.heat(events, capacity_b, half_life_s, 0.25, flush_s=FLUSH_S, prefetch=pf,
                                     name="heat_as_live").as_dict(),
        "demand_bound": offline.demand_bound(events).as_dict(),
    }
    tree_fifth = trace.tree_bytes // 5
    out["at_tree_fifth"] = {
        "capacity_bytes": tree_fifth,
        "belady": offline.belady(events, tree_fifth).as_dict(),
        "lru": offline.lru(events, tree_fifth).as_dict(),
        "heat": offline.heat(events, tree_fifth, half_life_s, 0.25).as_dict(),
    }
    grid = []
    for hl in HALF_LIVES_H:
        for w in SIZE_WEIGHTS:
            plain = offline.heat(events, capacity_b, hl * 3600 / scale, w)
            live = offline.heat(events, capacity_b, hl * 3600 / scale, w, flush_s=FLUSH_S, prefetch=pf)
            grid.append({"half_life_h": hl, "size_weight": w,
                         "byte_hit_rate": round(plain.byte_hit_rate, 4), "hit_rate": round(plain.hit_rate, 4),
                         "byte_hit_rate_as_live": round(live.byte_hit_rate, 4), "hit_rate_as_live": round(live.hit_rate, 4)})
    out["grid"] = grid
    default = lambda g: (g["half_life_h"], g["size_weight"]) == (72.0, 0.25)  # noqa: E731 - wins ties
    out["best_bytes"] = max(grid, key=lambda g: (g["byte_hit_rate_as_live"], g["byte_hit_rate"], default(g)))
    out["best_requests"] = max(grid, key=lambda g: (g["hit_rate_as_live"], g["hit_rate"], default(g)))
    return out


def live_vs_model(trace: Trace, live: dict, scale: float, capacity_b: int) -> dict:
    """Read by read: where the live BaluPi and the offline model of its policy (as the server runs it)
    disagree, and how many bytes that is; the same against Belady."""
    events = offline.events_of(trace)
    pf = offline.Prefetch(tuple(size for _, size in trace.files))
    model = offline.heat(events, capacity_b, 72 * 3600 / scale, 0.25, flush_s=FLUSH_S, prefetch=pf).per_read
    belady = offline.belady(events, capacity_b).per_read
    reads = [op for op in trace.ops if op.kind == "read"]
    outcome = {o[0]: (bool(o[1]), o[2]) for o in live["read_outcomes"]}
    out = {}
    for label, flags in (("model", model), ("belady", belady)):
        both = only_live = only_other = 0
        only_live_bytes = only_other_bytes = 0
        for op, other in zip(reads, flags):
            if op.index not in outcome:
                continue
            mine = outcome[op.index][0]
            both += int(mine and other)
            if mine and not other:
                only_live, only_live_bytes = only_live + 1, only_live_bytes + op.size
            if other and not mine:
                only_other, only_other_bytes = only_other + 1, only_other_bytes + op.size
        out[label] = {"both_hit": both, "only_live": only_live, "only_live_bytes": only_live_bytes,
                      "only_" + label: only_other, "only_" + label + "_bytes": only_other_bytes}
    return out


def writeback_wakes(change_times: list[float], natural_wakes: list[float], max_delay_s: float, t_end: float) -> int:
    """How many wakes BaluPi's write-back policy adds: a change that waited `max_delay_s` with the NAS
    asleep wakes it; every wake (natural or not) writes back everything pending."""
    changes = sorted(change_times)
    wakes = sorted(natural_wakes)
    count = i = 0
    while i < len(changes):
        due = changes[i] + max_delay_s
        natural = next((w for w in wakes if w >= changes[i]), None)
        if natural is not None and natural <= due:
            at = natural
        elif due <= t_end:
            at, count = due, count + 1
        else:
            break
        while i < len(changes) and changes[i] <= at:
            i += 1
    return count


def wake_floor(trace: Trace, analysis: dict, raw: dict, scale: float) -> dict:
    """BaluPi's fewest wakes in scenario a if the first wake had cached and listed everything: that
    wake, plus what the write-back policy adds on this trace's writes and renames."""
    kinds = {op.index: op.kind for op in trace.ops}
    changes = [o[1] for o in raw["ops"] if kinds[o[0]] in ("write", "rename")]
    times = analysis["wake_times"]
    if not times:
        return {}
    from bench.replay.systems import _default

    max_delay_s = _default("sync_max_delay_minutes") * 60 / scale
    t_end = raw["span"][1]
    floor = 1 + writeback_wakes(changes, times[:1], max_delay_s, t_end)
    return {"max_delay_s": max_delay_s, "wakes_if_first_wake_filled_all": floor,
            "writeback_wakes_modelled_with_live_wakes": writeback_wakes(changes, times, max_delay_s, t_end)}


def robustness(plan: TracePlan, seed: int, scale: float, best: dict) -> list[dict]:
    """The policies on other seeds of the same plan (offline only), so one trace's luck shows."""
    rows = []
    for s in range(seed, seed + ROBUSTNESS_SEEDS):
        trace = generate(plan, s)
        events = offline.events_of(trace)
        cap = capacities(trace)["b"]
        pf = offline.Prefetch(tuple(size for _, size in trace.files))
        rows.append({
            "seed": s, "capacity_bytes": cap,
            "belady": round(offline.belady(events, cap).byte_hit_rate, 4),
            "lru": round(offline.lru(events, cap).byte_hit_rate, 4),
            "heat": round(offline.heat(events, cap, 72 * 3600 / scale, 0.25, flush_s=FLUSH_S, prefetch=pf).byte_hit_rate, 4),
            "heat_best": round(offline.heat(events, cap, best["half_life_h"] * 3600 / scale, best["size_weight"],
                                            flush_s=FLUSH_S, prefetch=pf).byte_hit_rate, 4),
        })
    return rows


# ---------------------------------------------------------------- live runs


def wake_categories(causes: list[dict]) -> dict[str, int]:
    """BaluPi's wake reasons ("wake: <reason>") grouped: a client's request, a login, the write-back."""
    out = {"client request": 0, "login check": 0, "write-back": 0, "other": 0}
    for c in causes:
        reason = c["cause"].removeprefix("wake: ")
        if reason.startswith("sync:"):
            out["write-back"] += 1
        elif "/api/auth" in reason:
            out["login check"] += 1
        elif reason.split(" ", 1)[0] in ("GET", "HEAD", "PROPFIND", "PUT", "MOVE", "COPY", "DELETE", "MKCOL"):
            out["client request"] += 1
        else:
            out["other"] += 1
    return {k: v for k, v in out.items() if v}


def balupi_facts(work: Path, t_start: float) -> dict:
    """From BaluPi's database and log after it stopped: why it woke the NAS, what it cached."""
    facts: dict = {"wake_causes": [], "prefetch_runs": [], "log_errors": 0}
    db_path = work / "data" / "balupi.db"
    if db_path.exists():
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            facts["wake_causes"] = [
                {"at": at, "cause": cause} for at, cause in con.execute(
                    "SELECT at, cause FROM nas_transitions WHERE to_state = 'waking' AND at >= ? ORDER BY at", (t_start,))]
            facts["transitions"] = [
                {"at": at, "from": f, "to": t, "cause": c} for at, f, t, c in con.execute(
                    "SELECT at, from_state, to_state, cause FROM nas_transitions WHERE at >= ? ORDER BY at", (t_start,))]
            row = con.execute("SELECT count(*), coalesce(sum(size), 0) FROM entries WHERE cache_key IS NOT NULL AND is_dir = 0").fetchone()
            facts["cached_files"], facts["cached_bytes"] = row
            row = con.execute("SELECT count(*), sum(listed) FROM entries WHERE is_dir = 1").fetchone()
            facts["collections"], facts["collections_listed"] = row
            facts["journal_pending"] = con.execute("SELECT count(*) FROM journal WHERE state = 'pending'").fetchone()[0]
        finally:
            con.close()
    facts["wakes_by_cause"] = wake_categories(facts["wake_causes"])
    log_path = work / "balupi.log"
    if log_path.exists():
        for line in log_path.read_text(errors="replace").splitlines():
            if "prefetch:" in line and "file(s)" in line:
                facts["prefetch_runs"].append(line.split("prefetch:", 1)[1].strip())
            if " ERROR " in line or "Traceback" in line:
                facts["log_errors"] += 1
    return facts


def run_scenario(name: str, trace: Trace, systems: list[str], cache_bytes: int, scale: float, tmp: Path,
                 pattern: bytes, rclone_max_age_h: float, stop: threading.Event) -> dict:
    out: dict = {}
    sims: dict[str, SimNasProc] = {}
    servers: dict = {}
    try:
        for system in systems:
            work = tmp / f"{name}-{system}"
            work.mkdir(parents=True)
            write_tree(trace, work / "nas", pattern)
            sims[system] = SimNasProc(f"nas-{system}", work / "nas", work, soft=(system == "rclone"))
        for system in systems:
            work = tmp / f"{name}-{system}"
            if system == "balupi":
                env, notes = balupi_settings(scale, cache_bytes)
                servers[system] = BaluPiProc(work, sims[system], env)
                out.setdefault("notes", []).extend(notes)
                out["balupi_env"] = env
            else:
                flags = rclone_flags(scale, cache_bytes, rclone_max_age_h)
                servers[system] = RcloneProc(work, sims[system], flags)
                out["rclone_argv"] = servers[system].argv
        for system in systems:
            if not sims[system].wait_asleep(ASLEEP_WAIT_S):
                raise ReplayError(f"{name}/{system}: the simulated NAS did not fall asleep before the trace")
            sims[system].control("POST", "/reset-counters")
        deadline = time.time() + trace.summary()["nominal_duration_s"] * 3 + RUN_SLACK_S
        results: dict[str, list] = {}
        spans: dict[str, tuple[float, float]] = {}
        counters: dict[str, dict] = {}
        errors: dict[str, Exception] = {}

        samples: dict[str, list] = {s: [] for s in systems}
        cache_dirs = {s: tmp / f"{name}-{s}" / ("cache" if s == "balupi" else "rclone-cache") for s in systems}

        def sampler() -> None:
            while not stop.is_set() and any(s not in spans for s in systems):
                for s in systems:
                    if s not in spans:
                        samples[s].append(disk_bytes(cache_dirs[s]))
                stop.wait(CACHE_SAMPLE_S)

        def worker(system: str) -> None:
            server = servers[system]
            client = Client(server.port, server.root_path, server.auth, pattern)
            t0 = time.time()

            def progress(burst, res):
                failed = sum(1 for r in res if not r.ok)
                log(f"  {name}/{system}: burst {burst + 1}/{len(trace.gaps_s)} done, {len(res)} ops, {failed} failed")

            try:
                results[system] = play(trace, client, deadline, stop, progress)
                spans[system] = (t0, time.time())
                counters[system] = sims[system].counters()  # at once: the other system may still be playing
            except Exception as exc:  # reported by the main thread
                errors[system] = exc

        threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in systems]
        threads.append(threading.Thread(target=sampler, daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
        if stop.is_set():
            raise Interrupted("stopped")
        for system, exc in errors.items():
            raise ReplayError(f"{name}/{system}: {type(exc).__name__}: {exc}")
        for system in systems:
            servers[system].stop()
            raw = raw_record(spans[system], [r.__dict__ for r in results[system]], counters[system])
            raw["cache_limit_bytes"] = cache_bytes
            raw["cache_disk_bytes_max"] = max(samples[system], default=0)
            raw["cache_disk_bytes_mean"] = int(sum(samples[system]) / len(samples[system])) if samples[system] else 0
            if system == "balupi":
                raw["balupi"] = balupi_facts(tmp / f"{name}-balupi", spans[system][0])
            out[system + "_raw"] = raw
            out[system] = evaluate(trace, raw)
    finally:
        for server in servers.values():
            server.stop()
        for sim in sims.values():
            sim.stop()
        for system in systems:
            shutil.rmtree(tmp / f"{name}-{system}" / "nas", ignore_errors=True)
    return out


def disk_bytes(root: Path) -> int:
    """Bytes allocated on disk under `root` (st_blocks: sparse files count what they hold)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


def raw_record(span: tuple[float, float], results: list[dict], counters: dict) -> dict:
    """What a live run leaves behind, compactly, so that `--reanalyse` can evaluate it again."""
    return {
        "span": list(span),
        "ops": [[r["index"], r["t0"], r["t1"], r["status"], int(r["ok"]), r["bytes"], r["error"]] for r in results],
        "nas": [[q["method"], q["path"], q["time_s"], q.get("duration_s"), q.get("status"), q.get("bytes_sent") or 0,
                 q.get("state")] for q in counters["requests"]],
        "boot_count": counters.get("boot_count", 0), "wake_count": counters.get("wake_count", 0),
        "magic_packet_count": counters.get("magic_packet_count", 0),
        "magic_packets": [{"time_s": p["time_s"], "acted": p["acted"]} for p in counters.get("magic_packets", [])],
    }


def evaluate(trace: Trace, raw: dict) -> dict:
    t_start, t_end = raw["span"]
    results = [{"index": o[0], "t0": o[1], "t1": o[2], "status": o[3], "ok": bool(o[4]), "bytes": o[5], "error": o[6]}
               for o in raw["ops"]]
    counters = {
        "requests": [{"method": q[0], "path": q[1], "time_s": q[2], "duration_s": q[3], "status": q[4],
                      "bytes_sent": q[5], "state": q[6]} for q in raw["nas"]],
        "boot_count": raw["boot_count"], "wake_count": raw["wake_count"],
        "magic_packet_count": raw["magic_packet_count"], "magic_packets": raw["magic_packets"],
    }
    analysis = analyse(trace, results, counters, t_start, t_end)
    analysis["wake_locations"] = [locate(t, trace, results) for t in analysis["wake_times"]]
    for key in ("all_folders_listed_at", "whole_tree_fetched_at"):
        if analysis[key] is not None:
            analysis[key.replace("_at", "_in")] = locate(analysis[key], trace, results)
    analysis["duration_s"] = round(t_end - t_start, 1)
    analysis["complete"] = len(results) == len(trace.ops)
    for key in ("cache_limit_bytes", "cache_disk_bytes_max", "cache_disk_bytes_mean"):
        analysis[key] = raw.get(key)
    if "balupi" in raw:
        analysis["balupi"] = raw["balupi"]
    return analysis


# ---------------------------------------------------------------- environment


def environment() -> dict:
    def run(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    status = subprocess.run(["git", "status", "--porcelain", "--", "balupi"], capture_output=True, text=True,
                            timeout=30, cwd=REPO).stdout
    dirty = [line[3:] for line in status.splitlines() if len(line) > 3]
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "commit": run(["git", "rev-parse", "--short", "HEAD"]),
        "balupi_uncommitted": dirty,
        "rclone": run(["rclone", "version"]).splitlines()[0] if shutil.which("rclone") else None,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_before": os.getloadavg(),
    }


def finish(result: dict, trace: Trace, out_path: Path, write_docs: bool) -> None:
    """Evaluate the raw runs, compute the verdicts, print the table, write the JSON and the docs."""
    scale = result["time_scale"]
    caps = result["capacities"]
    result["offline"] = offline_models(trace, scale, caps["b"])
    result["offline"]["robustness"] = robustness(trace.plan, trace.seed, scale, result["offline"]["best_bytes"])
    for name, scen in result["scenarios"].items():
        for system in ("balupi", "rclone"):
            raw = scen.get(system + "_raw")
            if raw:
                scen[system] = evaluate(trace, raw)
        if name == "a" and scen.get("balupi_raw"):
            scen["balupi"]["wake_floor"] = wake_floor(trace, scen["balupi"], scen["balupi_raw"], scale)
    live_b = result["scenarios"].get("b", {}).get("balupi")
    if live_b:
        result["offline"]["live_vs_model"] = live_vs_model(trace, live_b, scale, caps["b"])
    result["targets"] = report.targets(result)
    print(report.table(result))
    out_path.write_text(json.dumps(result, indent=None, separators=(",", ":")))
    log(f"results: {out_path}")
    if write_docs:
        report.update_doc(DOC, report.section(result, out_path.name))
        log(f"updated {DOC}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller tree, fewer operations (smoke run)")
    parser.add_argument("--only", choices=("balupi", "rclone"), help="play against one system only")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenarios", default="a,b", help="a (cache holds the tree), b (a fifth), or a,b")
    parser.add_argument("--time-scale", type=float, default=TIME_SCALE, help="real seconds per trace second")
    parser.add_argument("--rclone-max-age-h", type=float, default=720.0,
                        help="rclone --vfs-cache-max-age in real hours (scaled like every timer)")
    parser.add_argument("--tmpdir", help="where the NAS trees, caches and logs go (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, BaluPi's database)")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    parser.add_argument("--reanalyse", metavar="JSON", help="evaluate a results file again (no servers are run)")
    parser.add_argument("--balupi-source", choices=("head", "worktree"), default="head",
                        help="run BaluPi (and the sim) from the committed tree (default) or the working tree as it is")
    args = parser.parse_args(argv)

    if args.reanalyse:
        path = Path(args.reanalyse)
        result = json.loads(path.read_text())
        plan = TracePlan.quick() if result["quick"] else TracePlan.full()
        finish(result, generate(plan, result["trace"]["seed"]), path, not args.no_docs)
        return 0

    systems = [args.only] if args.only else ["balupi", "rclone"]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if any(s not in ("a", "b") for s in scenarios):
        parser.error("--scenarios takes a, b or a,b")
    if "rclone" in systems and shutil.which("rclone") is None:
        log("rclone is missing: apt-get install -y rclone (or --only balupi)")
        return 2

    plan = TracePlan.quick() if args.quick else TracePlan.full()
    trace = generate(plan, args.seed)
    caps = capacities(trace)
    summary = trace.summary()
    log(f"trace: {summary['files']} files in {summary['folders']} folders, {summary['tree_bytes'] / 1e6:.0f} MB, "
        f"{summary['ops']} operations in {summary['bursts']} bursts, {summary['idle_s']:.0f} s of idle gaps")
    pattern = make_pattern(args.seed)
    result: dict = {"environment": environment(), "trace": summary, "time_scale": args.time_scale,
                    "idle_suspend_s": IDLE_SUSPEND_S, "capacities": caps, "quick": args.quick,
                    "systems": systems, "scenarios": {}}

    stop = threading.Event()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="balupi-replay-", dir=args.tmpdir))
    status = 0
    try:
        result["environment"]["balupi_source"] = snapshot_source(REPO, tmp / "src", args.balupi_source)
        for name in scenarios:
            log(f"scenario {name}: cache {caps[name] / 1e6:.1f} MB, {', '.join(systems)} ...")
            try:
                result["scenarios"][name] = run_scenario(name, trace, systems, caps[name], args.time_scale, tmp,
                                                         pattern, args.rclone_max_age_h, stop)
            except ReplayError as exc:
                log(f"scenario {name} failed: {exc}")
                result["scenarios"][name] = {"error": str(exc)}
                status = 1
    except (Interrupted, KeyboardInterrupt) as exc:
        stop.set()
        log(f"interrupted ({exc}); stopping everything")
        status = 130
    finally:
        stop.set()
        stop_all()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if status == 130:
        return status

    result["environment"]["load_after"] = os.getloadavg()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    log("offline models ...")
    finish(result, trace, RESULTS_DIR / f"replay-{stamp}{'-quick' if args.quick else ''}.json", not args.no_docs)
    if any(not result["scenarios"].get(s, {}).get(sys_, {}).get("complete", False)
           for s in scenarios for sys_ in systems):
        status = status or 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
