"""From what the client saw and what the simulated NAS recorded to hit rates, NAS requests and wakes.

Attribution: the client plays one operation at a time, so each has a time window [t0, t1]. A NAS
request (the sim's `RequestRecord`: arrival time, method, path) is *caused by* an operation when it
arrived inside that window and concerns the operation's path: the path itself or one of its
ancestor collections (a listing of a parent that had to be learned), and for writes and renames
also a PUT or MOVE of a sibling (an upload through a temporary name); a listing (PROPFIND) counts
only if it also ended inside the window (the operation waited for it). An operation is a *hit* when
it caused no NAS request. Bytes hit: the bytes of a read that did not come from the NAS (its size
minus the bytes of the GETs it caused); `byte_hit_rate_strict` counts a read's bytes as hit only
if the read caused no NAS request at all. Requests that concern no operation's path (prefetch, namespace refresh,
write-back long after the write) are *background*. A background request that happens to concern an
operation's path while it runs is counted against the operation (conservative).

Wakes are the sim's own counters: boots after a magic packet (suspend mode, BaluPi) plus wake-ups
from soft sleep by a request (soft mode, rclone), both counted only from the start of the trace.
"""

from __future__ import annotations

import bisect
from collections import Counter

from bench.replay.trace import Trace

DAV_PREFIX = "/dav"
CONTAIN_SLACK_S = 0.005


def nas_path(raw: str) -> str | None:
    """The sim's request path as a trace path ("/" for the root); None for non-WebDAV (REST) requests."""
    if raw != DAV_PREFIX and not raw.startswith(DAV_PREFIX + "/"):
        return None
    path = raw[len(DAV_PREFIX):].rstrip("/")
    return path or "/"


def parent_of(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def ancestors(path: str) -> set[str]:
    out = {"/", path}
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        out.add("/" + "/".join(parts[:i]))
    return out


def path_ids(trace: Trace) -> dict[str, int]:
    """Every path a file ever had -> its file id (names are never reused in a trace)."""
    ids = {path: i for i, (path, _) in enumerate(trace.files)}
    for op in trace.ops:
        if op.kind == "write" and op.new_file:
            ids[op.path] = op.file_id
        elif op.kind == "rename":
            ids[op.dest] = op.file_id
    return ids


def _relevant(op, method: str, path: str) -> bool:
    if op.kind in ("list", "read"):
        return path in ancestors(op.path)
    targets = [op.path] + ([op.dest] if op.kind == "rename" else [])
    for target in targets:
        if path in ancestors(target):
            return True
        if method in ("PUT", "MOVE") and parent_of(path) == parent_of(target):
            return True
    return False


def _inside(req: dict, t1: float) -> bool:
    """A listing counts against an operation only if the operation waited for it: it ended before the
    operation did. (A namespace refresh listing an ancestor while a cached file is read overlaps the
    read but is not contained in it; a listing the read needed is.)"""
    if req["method"] != "PROPFIND" or req.get("duration_s") is None:
        return True
    return req["time_s"] + req["duration_s"] <= t1 + CONTAIN_SLACK_S


def analyse(trace: Trace, results: list[dict], counters: dict, t_start: float, t_end: float) -> dict:
    ops = {op.index: op for op in trace.ops}
    reqs = sorted((r for r in counters["requests"] if t_start <= r["time_s"] <= t_end), key=lambda r: r["time_s"])
    times = [r["time_s"] for r in reqs]
    caused_by: dict[int, list[int]] = {}
    attributed: set[int] = set()
    for res in results:
        op = ops[res["index"]]
        lo = bisect.bisect_left(times, res["t0"])
        hi = bisect.bisect_right(times, res["t1"])
        mine = []
        for k in range(lo, hi):
            path = nas_path(reqs[k]["path"])
            if path is not None and _relevant(op, reqs[k]["method"], path) and _inside(reqs[k], res["t1"]):
                mine.append(k)
        caused_by[res["index"]] = mine
        attributed.update(mine)

    per_kind = {kind: {"ops": 0, "hits": 0, "failed": 0} for kind in ("list", "read", "write", "rename")}
    read_bytes = hit_bytes = strict_hit_bytes = 0
    later = {"reads": 0, "read_hits": 0, "lists": 0, "list_hits": 0, "read_bytes": 0, "hit_bytes": 0}
    by_burst: dict[int, dict] = {}
    miss_kinds: Counter[str] = Counter()
    ids = path_ids(trace)
    listed_at = _first_times(reqs, "PROPFIND")
    fetched_at = _first_fetch_times(reqs, ids)
    failures: list[dict] = []
    read_outcomes: list[list[int]] = []  # [op index, hit, bytes fetched from the NAS]
    for res in results:
        op = ops[res["index"]]
        hit = not caused_by[res["index"]]
        stats = per_kind[op.kind]
        stats["ops"] += 1
        stats["hits"] += int(hit)
        if not res["ok"]:
            stats["failed"] += 1
            if len(failures) < 20:
                failures.append({"index": op.index, "kind": op.kind, "path": op.path, "status": res["status"],
                                 "error": res["error"][:200]})
        burst = by_burst.setdefault(op.burst, {"ops": 0, "misses": 0, "read_misses": 0, "list_misses": 0})
        burst["ops"] += 1
        burst["misses"] += int(not hit)
        if op.kind == "read":
            fetched = min(op.size, sum(reqs[k].get("bytes_sent") or 0 for k in caused_by[res["index"]]
                                       if reqs[k]["method"] == "GET"))
            read_outcomes.append([op.index, int(hit), fetched])
            read_bytes += op.size
            hit_bytes += op.size - fetched
            strict_hit_bytes += op.size if hit else 0
            burst["read_misses"] += int(not hit)
            if not hit:
                fetched_any = any(reqs[k]["method"] == "GET" for k in caused_by[res["index"]])
                kind = (_read_miss_kind(op, res["t0"], listed_at, fetched_at) if fetched_any
                        else "listings only, content from the cache")
                miss_kinds["read: " + kind] += 1
        if op.kind == "list" and not hit:
            burst["list_misses"] += 1
            first = listed_at.get(op.path)
            miss_kinds["list: " + ("first listing of the folder" if first is None or first >= res["t0"]
                                   else "listed before (listed again)")] += 1
        if op.burst > 0 and op.kind in ("read", "list"):
            key = "reads" if op.kind == "read" else "lists"
            later[key] += 1
            later["read_hits" if op.kind == "read" else "list_hits"] += int(hit)
            if op.kind == "read":
                later["read_bytes"] += op.size
                later["hit_bytes"] += op.size - fetched

    folders = ["/"] + trace.folders
    listed_all = max((listed_at.get(f, float("inf")) for f in folders), default=None)
    fetched_all = max((fetched_at[i] for i in range(len(trace.files)) if i in fetched_at), default=None)
    n_ops = len(results)
    methods = Counter(r["method"] for r in reqs)
    background = [r for k, r in enumerate(reqs) if k not in attributed]
    wakes = counters.get("boot_count", 0) + counters.get("wake_count", 0)
    hits = sum(s["hits"] for s in per_kind.values())
    return {
        "ops": n_ops,
        "per_kind": per_kind,
        "request_hit_rate": _ratio(hits, n_ops),
        "read_hit_rate": _ratio(per_kind["read"]["hits"], per_kind["read"]["ops"]),
        "list_hit_rate": _ratio(per_kind["list"]["hits"], per_kind["list"]["ops"]),
        "byte_hit_rate": _ratio(hit_bytes, read_bytes),
        "byte_hit_rate_strict": _ratio(strict_hit_bytes, read_bytes),
        "read_bytes": read_bytes,
        "hit_bytes": hit_bytes,
        "after_first_burst": {
            "read_hit_rate": _ratio(later["read_hits"], later["reads"]),
            "list_hit_rate": _ratio(later["list_hits"], later["lists"]),
            "byte_hit_rate": _ratio(later["hit_bytes"], later["read_bytes"]),
            "reads": later["reads"], "lists": later["lists"],
        },
        "miss_kinds": dict(miss_kinds.most_common()),
        "nas_requests": len(reqs),
        "nas_requests_per_1000_ops": _per_1000(len(reqs), n_ops),
        "nas_requests_caused": len(attributed),
        "nas_requests_caused_per_1000_ops": _per_1000(len(attributed), n_ops),
        "nas_requests_background": len(background),
        "nas_requests_by_method": dict(methods.most_common()),
        "background_by_method": dict(Counter(r["method"] for r in background).most_common()),
        "background_get_bytes": sum(r.get("bytes_sent") or 0 for r in background if r["method"] == "GET"),
        "nas_get_bytes": sum(r.get("bytes_sent") or 0 for r in reqs if r["method"] == "GET"),
        "boots": counters.get("boot_count", 0),
        "soft_wakes": counters.get("wake_count", 0),
        "wakes": wakes,
        "wakes_per_1000_ops": _per_1000(wakes, n_ops),
        "magic_packets": counters.get("magic_packet_count", 0),
        "wake_times": _wake_times(counters, reqs),
        "by_burst": [by_burst[b] for b in sorted(by_burst)],
        "folders_listed": sum(1 for f in folders if f in listed_at),
        "folders": len(folders),
        "all_folders_listed_at": listed_all if listed_all != float("inf") else None,
        "tree_files_fetched": sum(1 for i in range(len(trace.files)) if i in fetched_at),
        "tree_files": len(trace.files),
        "whole_tree_fetched_at": fetched_all,  # the first GET of the last tree file the NAS ever sent
        "failed_ops": sum(s["failed"] for s in per_kind.values()),
        "read_outcomes": read_outcomes,
        "failures": failures,
    }


def _read_miss_kind(op, t0: float, listed_at: dict[str, float], fetched_at: dict[int, float]) -> str:
    listed = listed_at.get(parent_of(op.path))
    if listed is None or listed >= t0:
        return "folder not listed before"
    fetched = fetched_at.get(op.file_id)
    if fetched is None or fetched >= t0:
        return "folder listed, file not fetched before"
    return "fetched before (evicted or dropped since)"


def _first_times(reqs: list[dict], method: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in reqs:
        path = nas_path(r["path"])
        if r["method"] == method and path is not None and path not in out:
            out[path] = r["time_s"]
    return out


def _first_fetch_times(reqs: list[dict], ids: dict[str, int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for r in reqs:
        path = nas_path(r["path"])
        if r["method"] == "GET" and path in ids and ids[path] not in out and r.get("status") in (200, 206):
            out[ids[path]] = r["time_s"]
    return out


def _wake_times(counters: dict, reqs: list[dict]) -> list[float]:
    """When the NAS woke: magic packets that booted it, or the first request finding it in soft sleep."""
    times = [p["time_s"] for p in counters.get("magic_packets", []) if p.get("acted")]
    last = -1e9
    for r in reqs:
        if r.get("state") == "soft_sleep" and r["time_s"] - last > 1.0:
            times.append(r["time_s"])
            last = r["time_s"]
    return sorted(times)


def locate(t: float, trace: Trace, results: list[dict]) -> str:
    """Where in the trace a moment falls: 'burst N' or 'gap after burst N'."""
    ops = {op.index: op for op in trace.ops}
    last_burst = None
    for res in results:
        if res["t0"] > t:
            break
        last_burst = ops[res["index"]].burst
        if res["t1"] >= t:
            return f"burst {last_burst}"
    return f"after burst {last_burst}" if last_burst is not None else "before the trace"


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _per_1000(a: float, n: int) -> float | None:
    return round(1000.0 * a / n, 1) if n else None
