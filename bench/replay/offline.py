"""Offline cache models over the replay trace: Belady's optimum, LRU, and BaluPi's heat policy.

All models see the same events, in trace order: reads (a hit if the file's current version is cached)
and writes (new content of a file; always admitted, as BaluPi always takes writes). Renames keep a
file's identity, so they change nothing here. A model caches whole files and counts bytes with the
file's size at the time of the read.

- `belady`: the standard greedy farthest-next-use variant for files of different sizes: a missed
  file is admitted, and the cached files whose next read is farthest in the future leave first until
  it fits. With equal sizes this is Belady's optimum; with variable sizes the exact optimum is
  NP-hard and this greedy rule is the usual reference, not a proven bound. A file whose next event
  is a write has no next read of this content: it is the first to go. `bypass=True` lets the
  missed file itself be the one left out (not admitted) when its next read is the farthest: a
  stronger reference, which BaluPi (it always admits) cannot follow.
- `lru`: admit on a miss, evict the least recently used until it fits.
- `heat`: BaluPi's policy (`balupi.cache.heat`): the key log2(heat) + t/H - w log2(size/1 MiB),
  heat = decayed count of uses (+1 per read or write; kept for evicted files, as BaluPi keeps
  the index entry), admission always (a miss evicts the lowest keys until it fits).
  `flush_s` > 0 models BaluPi's batching of hits: hits only reach the key at the next flush
  (every 30 s of wall time in the server; misses and writes count at once). `prefetch` adds
  BaluPi's prefetch at each wake (see `Prefetch`).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from dataclasses import dataclass, field

from bench.replay.trace import Trace

SIZE_UNIT_BYTES = 1 << 20
INF = float("inf")


@dataclass(frozen=True)
class Event:
    t_s: float
    file_id: int
    size: int
    is_read: bool
    burst: int = 0


@dataclass
class ModelResult:
    name: str
    reads: int = 0
    hits: int = 0
    read_bytes: int = 0
    hit_bytes: int = 0
    per_read: list[bool] = field(default_factory=list, repr=False)  # hit or not, for each read in order

    @property
    def hit_rate(self) -> float:
        return self.hits / self.reads if self.reads else 0.0

    @property
    def byte_hit_rate(self) -> float:
        return self.hit_bytes / self.read_bytes if self.read_bytes else 0.0

    def as_dict(self) -> dict:
        return {"name": self.name, "reads": self.reads, "hits": self.hits, "hit_rate": round(self.hit_rate, 4),
                "read_bytes": self.read_bytes, "hit_bytes": self.hit_bytes,
                "byte_hit_rate": round(self.byte_hit_rate, 4)}


def events_of(trace: Trace, time_scale: float = 1.0) -> list[Event]:
    """Reads and writes in order, with trace times (optionally multiplied by `time_scale`)."""
    return [Event(op.t_nominal_s * time_scale, op.file_id, op.size, op.kind == "read", op.burst)
            for op in trace.ops if op.kind in ("read", "write")]


def _count(result: ModelResult, event: Event, hit: bool) -> None:
    result.reads += 1
    result.read_bytes += event.size
    result.per_read.append(hit)
    if hit:
        result.hits += 1
        result.hit_bytes += event.size


def next_reads(events: list[Event]) -> list[float]:
    """For each event: the index of the next read of the same content (INF if a write or nothing comes first)."""
    out = [INF] * len(events)
    upcoming: dict[int, float] = {}
    for i in range(len(events) - 1, -1, -1):
        e = events[i]
        out[i] = upcoming.get(e.file_id, INF)
        upcoming[e.file_id] = i if e.is_read else INF
    return out


def belady(events: list[Event], capacity_bytes: int, bypass: bool = False) -> ModelResult:
    result = ModelResult("belady, may leave the missed file out" if bypass else "belady")
    nxt = next_reads(events)
    cached: dict[int, int] = {}  # file id -> size
    next_use: dict[int, float] = {}
    heap: list[tuple[float, int]] = []  # (-next use, file id); stale entries skipped
    used = 0
    for i, e in enumerate(events):
        hit = e.is_read and e.file_id in cached
        if e.is_read:
            _count(result, e, hit)
        if e.file_id in cached and not (hit and cached[e.file_id] == e.size):
            used -= cached.pop(e.file_id)  # a write replaces the content
        next_use[e.file_id] = nxt[i]
        if hit:
            heapq.heappush(heap, (-nxt[i], e.file_id))
            continue
        if e.size > capacity_bytes:
            continue
        forced = not (bypass and e.is_read)  # writes are always admitted; reads too unless bypass
        victims: list[tuple[float, int]] = []
        chosen: set[int] = set()
        freed = 0
        while used - freed + e.size > capacity_bytes:
            while heap:
                neg, victim = heap[0]
                if victim in cached and victim not in chosen and next_use[victim] == -neg:
                    break
                heapq.heappop(heap)
            if not heap or (not forced and -heap[0][0] <= nxt[i]):
                break  # what is left is read sooner than the missed file
            victims.append(heapq.heappop(heap))
            chosen.add(victims[-1][1])
            freed += cached[victims[-1][1]]
        if used - freed + e.size > capacity_bytes:
            for item in victims:  # the missed file is the one read last: it stays out
                heapq.heappush(heap, item)
            continue
        for _, victim in victims:
            used -= cached.pop(victim)
        cached[e.file_id] = e.size
        used += e.size
        heapq.heappush(heap, (-nxt[i], e.file_id))
    return result


def lru(events: list[Event], capacity_bytes: int) -> ModelResult:
    result = ModelResult("lru")
    cached: OrderedDict[int, int] = OrderedDict()
    used = 0
    for e in events:
        hit = e.is_read and e.file_id in cached
        if e.is_read:
            _count(result, e, hit)
        if hit:
            cached.move_to_end(e.file_id)
            continue
        if e.file_id in cached:
            used -= cached.pop(e.file_id)
        if e.size > capacity_bytes:
            continue
        while used + e.size > capacity_bytes and cached:
            _, size = cached.popitem(last=False)
            used -= size
        cached[e.file_id] = e.size
        used += e.size
    return result


def heat_key(heat: float, t: float, size: int, half_life_s: float, size_weight: float) -> float:
    return (math.log2(max(heat, 1e-9)) + t / half_life_s
            - size_weight * math.log2(max(size, SIZE_UNIT_BYTES) / SIZE_UNIT_BYTES))


@dataclass(frozen=True)
class Prefetch:
    """BaluPi's prefetch at each wake (balupi/cache/prefetch.py), for the heat model: the NAS wakes at
    the first miss of a burst and sleeps in the gap after it; at each wake, uncached files with heat
    (hottest first) are fetched if they fit without evicting, then, while the cache is below 90%
    full, the rest of the tree, most recently changed first (here: highest file id first, the order
    the tree was written in); at most `batch` candidates per phase and run. A fetched file counts
    one use at the time of the wake, as `Index.mark_cached` does."""

    tree_sizes: tuple[int, ...]
    batch: int = 200
    free_fraction: float = 0.9


def heat(events: list[Event], capacity_bytes: int, half_life_s: float, size_weight: float,
         flush_s: float = 0.0, name: str = "heat", prefetch: Prefetch | None = None) -> ModelResult:
    result = ModelResult(name)
    h: dict[int, float] = {}
    last: dict[int, float] = {}
    key: dict[int, float] = {}
    cached: dict[int, int] = {}
    heap: list[tuple[float, int]] = []
    pending: dict[int, tuple[int, float]] = {}  # hits not flushed yet: file id -> (count, last time)
    sizes: dict[int, int] = dict(enumerate(prefetch.tree_sizes)) if prefetch else {}
    next_flush = flush_s
    used = 0
    awake_burst = -1

    def use(file_id: int, n: int, t: float, size: int) -> None:
        old = h.get(file_id, 0.0)
        then = last.get(file_id)
        decayed = old * 2.0 ** (-(max(0.0, t - then)) / half_life_s) if old and then is not None else 0.0
        h[file_id] = decayed + n
        last[file_id] = t
        key[file_id] = heat_key(h[file_id], t, size, half_life_s, size_weight)
        if file_id in cached:
            heapq.heappush(heap, (key[file_id], file_id))

    def flush() -> None:
        for file_id, (n, t) in pending.items():
            use(file_id, n, t, sizes[file_id])  # evicted meanwhile: BaluPi still updates the entry
        pending.clear()

    def admit(file_id: int, size: int) -> None:
        nonlocal used
        while used + size > capacity_bytes:
            while heap and (heap[0][1] not in cached or key[heap[0][1]] != heap[0][0]):
                heapq.heappop(heap)
            if not heap:
                break
            _, victim = heapq.heappop(heap)
            used -= cached.pop(victim)
        cached[file_id] = size
        used += size

    def prefetch_run(t: float) -> None:
        nonlocal used
        assert prefetch is not None
        hot = sorted((f for f in h if f not in cached and h[f] > 0), key=lambda f: -key[f])[:prefetch.batch]
        for f in hot:
            if used + sizes[f] <= capacity_bytes:
                cached[f] = sizes[f]
                used += sizes[f]
                use(f, 1, t, sizes[f])
        recent = [f for f in range(len(prefetch.tree_sizes) - 1, -1, -1) if f not in cached][:prefetch.batch]
        for f in recent:
            if used + sizes[f] > capacity_bytes * prefetch.free_fraction:
                break
            cached[f] = sizes[f]
            used += sizes[f]
            use(f, 1, t, sizes[f])

    for e in events:
        if flush_s:
            while e.t_s >= next_flush:
                flush()
                next_flush += flush_s
        hit = e.is_read and e.file_id in cached and cached[e.file_id] == e.size
        sizes[e.file_id] = e.size
        if e.is_read:
            _count(result, e, hit)
        if hit:
            if flush_s:
                n, _ = pending.get(e.file_id, (0, 0.0))
                pending[e.file_id] = (n + 1, e.t_s)
            else:
                use(e.file_id, 1, e.t_s, e.size)
            continue
        if e.file_id in cached:
            used -= cached.pop(e.file_id)
        if e.size <= capacity_bytes:
            admit(e.file_id, e.size)
            use(e.file_id, 1, e.t_s, e.size)
        if prefetch and e.is_read and awake_burst != e.burst:
            awake_burst = e.burst  # this miss woke the NAS: BaluPi prefetches while it is awake
            prefetch_run(e.t_s)
    return result


def demand_bound(events: list[Event]) -> ModelResult:
    """An unlimited cache filled only on demand: every first read of a content is a miss."""
    result = ModelResult("unlimited, on demand")
    have: set[int] = set()
    for e in events:
        if e.is_read:
            _count(result, e, e.file_id in have)
        have.add(e.file_id)
    return result
