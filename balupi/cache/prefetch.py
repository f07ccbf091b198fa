"""Prefetch: use every NAS wake to leave the Pi better able to answer the next hours alone.

When the NAS is awake (for whatever reason), fetch in this order, one file at a time, within
`prefetch_budget_mb` per run:
1. pinned paths (`cache_pinned`) not cached: they may evict colder files to get in;
2. the hottest files not cached (heat from past reads; they were evicted or never fully read);
3. while the cache has free room (below 90% of its limit), the rest of the tree, most recently
   changed first.
Steps 2 and 3 never evict anything. The prefetch yields whenever a client is waiting for the NAS
(another download is running) and stops when the NAS stops being awake; it never wakes it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from balupi.cache.downloads import Download, Downloads
from balupi.cache.index import Entry, Index
from balupi.cache.manager import CacheManager
from balupi.errors import NasBusy, NasUnavailable
from balupi.nas.monitor import NasMonitor
from balupi.settings import Settings



class Fetcher(Protocol):
    """What the prefetch needs of whoever serves files (the WebDAV provider): it is handed one."""

    index: Index
    cache: CacheManager
    downloads: Downloads

    def start_download(self, entry: Entry, wake: bool = True) -> Download | None: ...

log = logging.getLogger("balupi.cache.prefetch")

FREE_ROOM_FRACTION = 0.9
YIELD_POLL_S = 0.2
YIELD_MAX_S = 30.0
CANDIDATE_BATCH = 200
FETCH_TIMEOUT_S = 3600.0


@dataclass
class PrefetchResult:
    files: int = 0
    bytes: int = 0
    stopped: str = ""


class Prefetcher:
    def __init__(self, settings: Settings, fetcher: Fetcher, monitor: NasMonitor):
        self.fetcher, self.monitor = fetcher, monitor
        self.budget_bytes = int(settings.prefetch_budget_mb * 1e6)
        self.fetched_files = 0
        self.fetched_bytes = 0

    def run(self, budget_bytes: int | None = None, view: str = "") -> PrefetchResult:
        result = PrefetchResult()
        budget = self.budget_bytes if budget_bytes is None else budget_bytes
        if not self.monitor.configured or not self.monitor.is_awake():
            result.stopped = "the NAS is not awake"
            return result
        if budget <= 0:  # prefetch is off (an empty file would still fit a budget of 0 bytes)
            result.stopped = "no prefetch budget"
            return result
        self._fill(result, budget, view)
        # Counted and logged however the run ended (a run that stops early has fetched files too).
        self.fetched_files += result.files
        self.fetched_bytes += result.bytes
        self.monitor.wake_log.on_prefetch_done(files=result.files, bytes=result.bytes)  # what the awake time did
        if result.files:
            log.info("prefetch: %d file(s), %.1f MB%s", result.files, result.bytes / 1e6,
                     f" (stopped: {result.stopped})" if result.stopped else "")
        return result

    def _fill(self, result: PrefetchResult, budget: int, view: str) -> None:
        """Fetch phase by phase into `result` until done or a reason to stop (`result.stopped`).

        Candidates come in batches, asked again after each batch, so one run goes on until the
        budget, the room or the tree is used up (files fetched leave the "not cached" set; files
        skipped or failed are remembered and not tried twice in a run)."""
        cache = self.fetcher.cache
        tried: set[int] = set()
        for phase, query, may_evict in (("pinned", self._pinned, True), ("hot", self._hot, False),
                                        ("recent", self._recent, False)):
            while True:
                batch = [e for e in query(view, CANDIDATE_BATCH + len(tried)) if e.id not in tried]
                if not batch:
                    break
                for entry in batch:
                    tried.add(entry.id)
                    if result.bytes + entry.size > budget:
                        result.stopped = "budget spent"
                        return
                    if phase == "recent" and cache.used_bytes() + entry.size > cache.max_bytes * FREE_ROOM_FRACTION:
                        result.stopped = "cache full enough"
                        return
                    if not may_evict and cache.used_bytes() + entry.size > cache.max_bytes:
                        continue
                    if not self._yield_to_clients():
                        result.stopped = "clients kept the NAS busy"
                        return
                    if not self.monitor.is_awake():
                        result.stopped = "the NAS stopped being awake"
                        return
                    try:
                        fetched = self._fetch(entry)
                    except NasUnavailable as exc:  # no new download may start (BaluPi is stopping)
                        result.stopped = str(exc)
                        return
                    if fetched:
                        result.files += 1
                        result.bytes += entry.size

    @property
    def pinned(self) -> tuple[str, ...]:
        return self.fetcher.cache.pinned  # the setting's and those added at run time

    def _pinned(self, view: str, limit: int) -> list[Entry]:
        out: list[Entry] = []
        for pattern in self.pinned:
            out += self.fetcher.index.uncached_matching(view, pattern, limit)
        return out

    def _hot(self, view: str, limit: int) -> list[Entry]:
        return self.fetcher.index.uncached_hottest(view, limit)

    def _recent(self, view: str, limit: int) -> list[Entry]:
        return self.fetcher.index.uncached_newest(view, limit)

    def _yield_to_clients(self) -> bool:
        """Wait while a client's download runs (it needs the NAS more than we do)."""
        deadline = time.monotonic() + YIELD_MAX_S
        while self.fetcher.downloads.count() > 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(YIELD_POLL_S)
        return True

    def _fetch(self, entry: Entry) -> bool:
        try:
            download = self.fetcher.start_download(entry, wake=False)  # never wake the NAS for a prefetch
        except NasBusy:  # clients' downloads fill every slot: they come first
            return False
        if download is None:
            return False
        return download.wait_done(FETCH_TIMEOUT_S)
