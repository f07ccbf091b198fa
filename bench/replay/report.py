"""The replay benchmark's verdicts, its table, and its section of docs/performance.md."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from bench.replay.systems import _default

HEADING = "## Workload replay (issue 5)"
READ_TARGET = 0.95
LIST_TARGET = 1.0
WAKE_RATIO_TARGET = 0.1
BELADY_FRACTION = 0.9
PREFETCH_BATCH = 200  # balupi/cache/prefetch.py CANDIDATE_BATCH, named when the runs show it

SCENARIO_TITLES = {"a": "a: cache holds the whole tree", "b": "b: cache holds a fifth of the bytes touched"}


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def targets(result: dict) -> list[dict]:
    out = []
    a = result["scenarios"].get("a", {})
    b = result["scenarios"].get("b", {})
    bal_a, rcl_a = a.get("balupi"), a.get("rclone")
    if bal_a:
        out.append(_verdict("a", f"BaluPi serves >= {READ_TARGET:.0%} of reads without the NAS (all reads, the first wake included)",
                            bal_a["read_hit_rate"], lambda v: v is not None and v >= READ_TARGET, _pct))
        out.append(_verdict("a", "BaluPi serves 100% of listings without the NAS",
                            bal_a["list_hit_rate"], lambda v: v is not None and v >= LIST_TARGET, _pct))
        if rcl_a:
            ratio = bal_a["wakes"] / rcl_a["wakes"] if rcl_a["wakes"] else None
            causes = bal_a.get("balupi", {}).get("wakes_by_cause", {})
            detail = ", ".join(f"{n} {c}" for c, n in causes.items())
            out.append(_verdict("a", f"BaluPi's NAS wakes <= {WAKE_RATIO_TARGET:g} x rclone's "
                                     f"({bal_a['wakes']} vs {rcl_a['wakes']}" + (f"; BaluPi's by cause: {detail}" if detail else "") + ")",
                                ratio, lambda v: v is not None and v <= WAKE_RATIO_TARGET, lambda v: _num(v, 2)))
    bal_b = b.get("balupi")
    if bal_b:
        belady = result["offline"]["belady"]["byte_hit_rate"]
        fraction = bal_b["byte_hit_rate"] / belady if belady else None
        out.append(_verdict("b", f"BaluPi's byte hit rate >= {BELADY_FRACTION:g} x Belady's "
                                 f"({_pct(bal_b['byte_hit_rate'])} vs {_pct(belady)})",
                            fraction, lambda v: v is not None and v >= BELADY_FRACTION, lambda v: _num(v, 3)))
    return out


def _verdict(scenario: str, text: str, value, ok, fmt) -> dict:
    return {"scenario": scenario, "target": text, "value": value, "shown": fmt(value), "met": bool(ok(value))}


def live_rows(result: dict) -> list[str]:
    rows = ["| scenario | system | ops | reads hit | bytes hit | listings hit | all ops hit | NAS requests / 1000 ops "
            "(caused by ops) | NAS wakes | wakes / 1000 ops | failed ops |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, scen in result["scenarios"].items():
        for system in ("balupi", "rclone"):
            r = scen.get(system)
            if not r:
                continue
            rows.append(
                f"| {SCENARIO_TITLES[name]} | {'BaluPi' if system == 'balupi' else 'rclone'} | {r['ops']} | "
                f"{_pct(r['read_hit_rate'])} | {_pct(r['byte_hit_rate'])} | {_pct(r['list_hit_rate'])} | "
                f"{_pct(r['request_hit_rate'])} | {_num(r['nas_requests_per_1000_ops'])} "
                f"({_num(r['nas_requests_caused_per_1000_ops'])}) | {r['wakes']} | {_num(r['wakes_per_1000_ops'])} | "
                f"{r['failed_ops']} |")
    return rows


def policy_rows(result: dict) -> list[str]:
    off = result["offline"]
    rows = ["| policy (cache of scenario b) | reads hit | bytes hit | bytes hit / Belady's |",
            "|---|---:|---:|---:|"]
    belady = off["belady"]["byte_hit_rate"]

    def row(label, hit, byte_hit):
        rel = byte_hit / belady if belady and byte_hit is not None else None
        rows.append(f"| {label} | {_pct(hit)} | {_pct(byte_hit)} | {_num(rel, 3)} |")

    row("Belady, greedy farthest-next-use (offline)", off["belady"]["hit_rate"], belady)
    row("Belady, greedy, the missed file may be left out (offline)", off["belady_bypass"]["hit_rate"],
        off["belady_bypass"]["byte_hit_rate"])
    live = result["scenarios"].get("b", {}).get("balupi")
    if live:
        row("**BaluPi, live**", live["read_hit_rate"], live["byte_hit_rate"])
    rcl = result["scenarios"].get("b", {}).get("rclone")
    if rcl:
        row("rclone VFS full, live", rcl["read_hit_rate"], rcl["byte_hit_rate"])
    row("BaluPi's heat policy alone, offline (hits counted at once, no prefetch)", off["heat"]["hit_rate"],
        off["heat"]["byte_hit_rate"])
    row("BaluPi's heat policy as the server runs it, offline (hits counted every 30 s, prefetch at each wake)",
        off["heat_as_live"]["hit_rate"], off["heat_as_live"]["byte_hit_rate"])
    best = off["best_bytes"]
    row(f"the same with half-life {best['half_life_h']:g} h, SIZE_WEIGHT {best['size_weight']:g} (best of the grid)",
        best["hit_rate_as_live"], best["byte_hit_rate_as_live"])
    row("LRU (offline)", off["lru"]["hit_rate"], off["lru"]["byte_hit_rate"])
    row("unlimited cache filled on demand (offline)", off["demand_bound"]["hit_rate"], off["demand_bound"]["byte_hit_rate"])
    return rows


def table(result: dict) -> str:
    lines = live_rows(result) + [""] + policy_rows(result) + [""]
    for t in result["targets"]:
        lines.append(f"({t['scenario']}) {t['target']}: {t['shown']} -> {'met' if t['met'] else 'MISSED'}")
    return "\n".join(lines)


def _bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def explain(result: dict) -> list[str]:
    """Facts that explain the numbers, read off the data (miss kinds, wake causes, prefetch)."""
    lines = []
    for name, scen in result["scenarios"].items():
        for system in ("balupi", "rclone"):
            r = scen.get(system)
            if not r:
                continue
            who = "BaluPi" if system == "balupi" else "rclone"
            kinds = ", ".join(f"{k} {v}" for k, v in r["miss_kinds"].items()) or "none"
            locations = r.get("wake_locations", [])
            every_burst = [f"burst {b}" for b in range(result["trace"]["bursts"])]
            where = "once in every burst" if locations == every_burst else (", ".join(locations) or "none")
            lines.append(f"- **{name} / {who}**: misses by kind: {kinds}. Wakes: {where}.")
            lines.append(f"  After the first burst: reads hit {_pct(r['after_first_burst']['read_hit_rate'])}, "
                         f"bytes {_pct(r['after_first_burst']['byte_hit_rate'])}, listings "
                         f"{_pct(r['after_first_burst']['list_hit_rate'])}. NAS requests by method: "
                         f"{', '.join(f'{m} {n}' for m, n in r['nas_requests_by_method'].items()) or 'none'}; "
                         f"background (no operation's path): "
                         f"{', '.join(f'{m} {n}' for m, n in r['background_by_method'].items()) or 'none'}, "
                         f"{_bytes(r['background_get_bytes'])} fetched in the background.")
            lines.append(f"  The NAS listed {r['folders_listed']} of {r['folders']} folders"
                         + (f" (the last of them first listed: {r['all_folders_listed_in']})" if r.get("all_folders_listed_in") else "")
                         + f" and sent {r['tree_files_fetched']} of the {r['tree_files']} files of the tree"
                         + (f" (the last of them first sent: {r['whole_tree_fetched_in']})." if r.get("whole_tree_fetched_in") else "."))
            if r.get("cache_disk_bytes_max") is not None and r.get("cache_limit_bytes"):
                lines.append(f"  Cache on disk during the run: at most {_bytes(r['cache_disk_bytes_max'])} "
                             f"(mean {_bytes(r['cache_disk_bytes_mean'])}) for a limit of {_bytes(r['cache_limit_bytes'])}.")
            floor = r.get("wake_floor")
            if floor:
                rcl = scen.get("rclone")
                ratio = f" ({floor['wakes_if_first_wake_filled_all'] / rcl['wakes']:.2f} of rclone's {rcl['wakes']})" if rcl and rcl["wakes"] else ""
                lines.append(f"  Had the first wake cached and listed the whole tree, BaluPi would still wake the NAS "
                             f"{floor['wakes_if_first_wake_filled_all']} time(s){ratio}: that wake plus the write-back "
                             f"policy's (a change waiting {floor['max_delay_s']:.0f} s in the run wakes the NAS) "
                             f"on this trace's writes and renames; with the live run's wakes the policy model gives "
                             f"{floor['writeback_wakes_modelled_with_live_wakes']} write-back wake(s).")
            facts = r.get("balupi")
            if facts:
                causes = "; ".join(f"{n} {c}" for c, n in facts.get("wakes_by_cause", {}).items()) or "none"
                runs = [_prefetch_run(line) for line in facts["prefetch_runs"]]
                runs_text = (f"{len(runs)} logged prefetch runs fetched {sum(f for f, _ in runs)} files, "
                             f"{sum(mb for _, mb in runs):.1f} MB (per run: {', '.join(str(f) for f, _ in runs)} files)"
                             if runs else "no prefetch run logged")
                lines.append(f"  BaluPi's own account: wakes caused by: {causes}. "
                             f"{facts.get('collections_listed', 0)} of {facts.get('collections', 0)} collections "
                             f"listed, {facts.get('cached_files', 0)} files ({_bytes(facts.get('cached_bytes', 0))}) "
                             f"cached, {facts.get('journal_pending', 0)} changes pending at the end; {runs_text}.")
                full_runs = sum(1 for f, _ in runs if f == PREFETCH_BATCH)
                if name == "a" and full_runs >= 2:
                    lines.append(f"  {full_runs} of the {len(runs)} prefetch runs stopped at exactly {PREFETCH_BATCH} "
                                 f"files: each run takes at most {PREFETCH_BATCH} candidates per phase "
                                 "(`CANDIDATE_BATCH` in balupi/cache/prefetch.py, chosen when the run starts, from "
                                 "the folders listed by then) and a run starts only when the NAS wakes (or hourly), "
                                 f"so filling the tree's {r['tree_files']} files took {len(runs)} wakes, and reads of "
                                 "files not fetched yet woke the NAS in between.")
    cmp = result["offline"].get("live_vs_model")
    if cmp:
        m, b = cmp["model"], cmp["belady"]
        lines.append(f"- **b, read by read**: the live BaluPi and the offline model of its policy (as the server runs it) "
                     f"both hit {m['both_hit']} reads; {m['only_model']} reads ({_bytes(m['only_model_bytes'])}) hit only in "
                     f"the model and {m['only_live']} ({_bytes(m['only_live_bytes'])}) only live. Against Belady: "
                     f"{b['only_belady']} reads ({_bytes(b['only_belady_bytes'])}) hit only with Belady, "
                     f"{b['only_live']} ({_bytes(b['only_live_bytes'])}) only live.")
    return lines


def _prefetch_run(line: str) -> tuple[int, float]:
    """(files, MB) of a BaluPi log line's tail "N file(s), X MB[ (stopped: ...)]"."""
    match = re.search(r"(\d+) file\(s\), ([\d.]+) MB", line)
    return (int(match.group(1)), float(match.group(2))) if match else (0, 0.0)


def section(result: dict, json_name: str) -> str:
    s = result["trace"]
    env = result["environment"]
    caps = result["capacities"]
    scale = result["time_scale"]
    off = result["offline"]
    source = env.get("balupi_source", {})
    if source.get("source") == "head":
        what = f"BaluPi as committed at {source.get('commit')} (a snapshot of HEAD, so edits to the shared tree during the run do not count)"
    else:
        what = f"BaluPi from the working tree at {env['commit']}" + (
            f" with uncommitted changes in {len(env['balupi_uncommitted'])} file(s) of balupi/" if env["balupi_uncommitted"] else "")
    env_line = (f"Run of {env['date'][:10]} on the development machine ({env['machine']}, Python {env['python']}, "
                f"{env['rclone'] or 'rclone missing'}), {what}"
                + f"; load average {env['load_before'][0]:.1f} before, {env.get('load_after', [0])[0]:.1f} after. "
                f"Raw numbers: `bench/results/{json_name}` (not committed).")
    grid_best = off["best_bytes"]
    parts = [
        HEADING,
        "",
        "Targets (issue 5, item 8): (a) when the cache holds the whole tree, >= 95% of reads and 100% of listings "
        "are served without the NAS from the first wake on, and BaluPi causes at most a tenth of rclone's NAS wakes; "
        "(b) when the cache holds a fifth of the bytes, BaluPi's byte hit rate is within 10% of Belady's offline "
        "optimum (read here as: at least 0.9 times it), reported beside LRU.",
        "",
        "    .venv/bin/python -m bench.replay            # full run, about 7 minutes",
        "    .venv/bin/python -m bench.replay --quick    # smoke run, under 2 minutes",
        "    .venv/bin/python -m bench.replay --only balupi --scenarios b --seed 7",
        "",
        "**Trace** (`bench/replay/trace.py`, seeded): "
        f"{s['files']} files in {s['folders']} folders ({_bytes(s['tree_bytes'])}, log-normal sizes, median 24 kB, "
        f"largest {_bytes(s['largest_file_bytes'])}), Zipf popularity (s = {s['plan']['zipf_s']:g}), "
        f"{s['ops']} operations ({', '.join(f'{n} {k}' for k, n in s['ops_by_kind'].items())}: listings are PROPFIND "
        f"Depth 1, writes half overwrites and half new files, renames within a folder) in {s['bursts']} bursts "
        f"separated by idle gaps of {s['plan']['gap_min_s']:g}-{s['plan']['gap_max_s']:g} s. The reads ask for "
        f"{s['distinct_files_read']} distinct files, {_bytes(s['read_bytes'])} in all.",
        "",
        f"**Time** is compressed {scale:g} times: one trace second stands for {scale / 60:g} real minutes. The "
        f"simulated NAS falls asleep after {result['idle_suspend_s']:g} s without requests ({result['idle_suspend_s'] * scale / 60:g} "
        f"real minutes), so every gap ({s['plan']['gap_min_s'] * scale / 60:g}-{s['plan']['gap_max_s'] * scale / 60:g} "
        f"real minutes) puts it to sleep; it boots {0.5:g} s after a magic packet. The trace covers "
        f"{s['nominal_duration_s'] * scale / 3600:.0f} real hours. Every timer of both servers is divided by the same "
        "factor (minimums clamp it where a setting has one):",
        "",
        "| timer | real | in the run |",
        "|---|---|---|",
        f"| BaluPi `cache_heat_half_life_hours` | {_default('cache_heat_half_life_hours'):g} h | {_default('cache_heat_half_life_hours') / scale * 3600:.0f} s |",
        f"| BaluPi `sync_max_delay_minutes` (write-back wakes the NAS) | {_default('sync_max_delay_minutes'):g} min | {_default('sync_max_delay_minutes') * 60 / scale:.0f} s |",
        "| BaluPi `sync_interval_s`, `nas_probe_interval_s` | 15 s, 60 s | 1 s, 1 s (their minimum) |",
        "| BaluPi `nas_ready_poll_s`, `nas_wol_resend_s` | 1 s, 10 s | 0.1 s, 1 s |",
        f"| rclone `--dir-cache-time` | 5 min (default) | {300 / scale:g} s |",
        f"| rclone `--vfs-cache-poll-interval`, `--poll-interval` | 1 min (defaults) | {60 / scale:g} s |",
        f"| rclone `--vfs-write-back` | 5 s (default) | {5000 / scale:.0f} ms |",
        f"| rclone `--vfs-cache-max-age` | 30 days (default 1 h; set long so that the size limit decides, as for BaluPi) | {720 * 3600 / scale:.0f} s |",
        "",
        "Not scaled, because they are constants in BaluPi's code: the namespace refresh tick (10 s), hit counting "
        "into the heat (every 30 s; modelled offline below), the periodic prefetch (hourly) and cache sweep (5 min). "
        "Left at its default on purpose: `auth_recheck_s` (300 s; login checks are not what is measured). "
        "Throughput (loopback, no bandwidth cap) is not scaled either.",
        "",
        "**Setup** (everything on 127.0.0.1, subprocesses in their own process groups, stopped on exit or Ctrl-C): per "
        "scenario and system, a simulated NAS (`python -m balupi.sim.nas`) over a fresh copy of the tree, with an "
        "admin user, idle suspend 3 s, boot and spin-up 0.5 s, starting asleep. BaluPi (`balupi serve`) uses it as "
        "its NAS with Wake-on-LAN to the sim's UDP port; its NAS sleeps in *suspend* mode (the port refuses until a "
        "magic packet boots it). rclone (`rclone serve webdav :webdav: --vfs-cache-mode full`, the `:webdav:` remote "
        "on the sim's WebDAV) cannot send magic packets, so to give it the same chance its NAS sleeps in *soft-sleep* "
        "mode: any request wakes it after the same 0.5 s. NAS wakes are the sim's counters in both cases (boots + "
        "soft-sleep wake-ups), from the start of the trace. BaluPi runs with `auth_wake_nas_for_unknown` on: the "
        "NAS is asleep at the start and no login has been checked yet, so the first request's login check is the "
        "first wake (otherwise BaluPi would refuse it). BaluPi and rclone play the same trace at the same time, "
        "each against its own NAS, one operation at a time. Cache sizes: scenario a "
        f"{_bytes(caps['a'])} (twice the tree and every write); scenario b {_bytes(caps['b'])}, a fifth of the "
        f"{_bytes(caps['b'] * 5)} the trace touches (reads and writes). A fifth of the *tree* "
        f"({_bytes(off['at_tree_fifth']['capacity_bytes'])}) would hold every byte this one-day trace touches: "
        f"Belady, LRU and heat then all score {_pct(off['at_tree_fifth']['belady']['byte_hit_rate'])} of bytes, the "
        "on-demand bound, so that test would not tell policies apart.",
        "",
        "**Hits** come from the sim's request log (`bench/replay/analysis.py`): an operation is served without "
        "the NAS when no NAS request concerning its path (the path, an ancestor collection, or for writes a "
        "sibling upload) arrived while it ran; a listing counts only if it also ended before the operation did "
        "(the operation waited for it, unlike a namespace refresh passing by). *Bytes hit* are the bytes of reads "
        "that did not come from the NAS (a read's size minus the bytes of the GETs it caused; for rclone a read "
        "that only re-listed its folder still served its bytes from the cache). Requests concerning no running "
        "operation (prefetch, namespace refresh, write-back) are *background*; both kinds count in NAS requests "
        "per 1000 operations (those caused by operations in brackets).",
        "",
        env_line,
        "",
        *live_rows(result),
        "",
        "Offline models on the same trace (`bench/replay/offline.py`): Belady is the standard greedy variant for "
        "files of different sizes (a missed file is admitted, and the "
        "cached files whose next read is farthest in the future leave first until the missed file fits; a "
        "second line lets the missed file itself be left out, a stronger reference BaluPi cannot follow since it "
        "always admits); LRU; BaluPi's heat policy is `balupi/cache/heat.py`'s key with the run's half-life, "
        "alone, and as the server runs it: hits reach the key every 30 s, and at each wake (the first miss of a "
        "burst) the prefetch fills free room with the hottest uncached files, then recent ones below 90% full, "
        "each counted as one use.",
        "",
        *policy_rows(result),
        "",
        "Verdicts:",
        "",
        *[f"- ({t['scenario']}) {t['target']}: {t['shown']}, **{'met' if t['met'] else 'missed'}**" for t in result["targets"]],
        "",
        "What explains the numbers (read off the sim's log and BaluPi's database):",
        "",
        *explain(result),
        "",
        f"Heat parameters (offline, scenario b cache, modelled as the server runs it): the best byte hit rate of the grid (half-lives "
        f"{', '.join(f'{h:g}' for h in sorted({g['half_life_h'] for g in off['grid']}))} h x SIZE_WEIGHT "
        f"{', '.join(f'{w:g}' for w in sorted({g['size_weight'] for g in off['grid']}))}) is "
        f"{_pct(grid_best['byte_hit_rate_as_live'])} at half-life {grid_best['half_life_h']:g} h and SIZE_WEIGHT "
        f"{grid_best['size_weight']:g}, against {_pct(off['heat_as_live']['byte_hit_rate'])} with the defaults (72 h, 0.25). "
        "The same comparison on other seeds of the plan (offline only, byte hit rates):",
        "",
        "| seed | cache | Belady | LRU | heat (defaults) | heat (best above) |",
        "|---:|---:|---:|---:|---:|---:|",
        *[f"| {r['seed']} | {_bytes(r['capacity_bytes'])} | {_pct(r['belady'])} | {_pct(r['lru'])} | {_pct(r['heat'])} | "
          f"{_pct(r['heat_best'])} |" for r in off.get("robustness", [])],
        "",
    ]
    return "\n".join(_wrap(line) for line in parts)


def _wrap(line: str, width: int = 110) -> str:
    """Prose wrapped like the rest of docs/performance.md; tables and code blocks left alone."""
    if not line or line.startswith(("|", "    ", "#")):
        return line
    indent = "  " if line.startswith(("- ", "  ")) else ""
    return textwrap.fill(line.strip() if indent and line.startswith("  ") else line, width=width,
                         initial_indent=indent if line.startswith("  ") else "", subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


def update_doc(path: Path, text: str) -> None:
    """Add or replace this benchmark's section, keeping every other section as it is."""
    doc = path.read_text() if path.exists() else "# Performance\n\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(doc):
        doc = pattern.sub(lambda _m: text.rstrip() + "\n\n", doc, count=1)
    else:
        doc = doc.rstrip() + "\n\n" + text.rstrip() + "\n"
    path.write_text(doc.rstrip() + "\n")
