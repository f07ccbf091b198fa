"""Namespace refresh: keeping the index in step with the NAS while it is awake, never waking it.

Each tick lists a bounded number of collections (`refresh_collections_per_minute`), one PROPFIND
Depth 1 at a time, so clients keep priority: first collections the index has never listed (so a
first walk of the whole tree proceeds breadth-first and ends), then the ones listed longest ago,
but none listed less than `refresh_min_age_minutes` ago: every request resets the NAS's idle timer,
so a refresh that never ended would keep it from ever sleeping. After a wake the refresh catches
up once and falls quiet.
`Index.apply_listing` merges each listing: new and changed entries, vanished ones dropped, cached
content whose NAS version changed invalidated; local changes not yet synced are left alone (the
write-back settles them as conflicts). Memory stays bounded by one listing: the walk's frontier is
the `listed = 0` rows in the database, not a list in memory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from balupi.cache.index import Index
from balupi.cache.store import ContentStore
from balupi.errors import NasUnavailable
from balupi.nas.client import NasClient
from balupi.nas.monitor import NasMonitor
from balupi.settings import Settings

log = logging.getLogger("balupi.sync.refresh")

TICK_S = 10.0
PAUSE_BETWEEN_LISTINGS_S = 0.02


@dataclass
class RefreshResult:
    listed: int = 0
    new_collections: int = 0
    removed: int = 0


class Refresher:
    def __init__(self, settings: Settings, index: Index, store: ContentStore, client: NasClient, monitor: NasMonitor):
        self.index, self.store, self.client, self.monitor = index, store, client, monitor
        self.per_tick = max(1, round(settings.refresh_collections_per_minute * TICK_S / 60))
        self.min_age_s = settings.refresh_min_age_minutes * 60
        self.listings = 0

    def tick(self, limit: int | None = None, view: str = "", min_age_s: float | None = None) -> RefreshResult:
        """List up to `limit` collections (default: this tick's share) while the NAS is awake.

        `min_age_s` overrides `refresh_min_age_minutes` (an operator's `balupi refresh` passes 0:
        everything, now)."""
        result = RefreshResult()
        if not self.monitor.configured:
            return result
        min_age_s = self.min_age_s if min_age_s is None else min_age_s
        for path in self._next_collections(view, limit or self.per_tick, min_age_s):
            if not self.monitor.is_awake():
                break
            asked_at = time.time()
            try:
                members = self.client.propfind(path, "1", wake=False, view=view)
            except NasUnavailable as exc:
                log.debug("refresh stopped at %s: %s", path, exc)
                break
            self.listings += 1
            result.listed += 1
            if members is None:
                result.removed += self._vanished(view, path, asked_at)
                continue
            own = path.strip("/")
            for key in self.index.apply_listing(view, path, [m for m in members if m.path != own], asked_at):
                self.store.remove(key)
            time.sleep(PAUSE_BETWEEN_LISTINGS_S)
        return result

    def walk(self, view: str = "", budget_s: float = 3600.0) -> RefreshResult:
        """List every collection not listed yet (the first walk), for at most `budget_s`."""
        total = RefreshResult()
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline and self.monitor.is_awake():
            if not self._unlisted(view, 1):
                break
            step = self.tick(limit=50, view=view)
            total.listed += step.listed
            total.removed += step.removed
            if not step.listed:
                break
        return total

    def _unlisted(self, view: str, limit: int) -> list[str]:
        return self.index.unlisted_collections(view, limit)

    def _next_collections(self, view: str, limit: int, min_age_s: float) -> list[str]:
        paths = self._unlisted(view, limit)
        if len(paths) < limit:
            paths += self.index.stalest_collections(view, time.time() - min_age_s, limit - len(paths))
        return paths

    def _vanished(self, view: str, path: str, asked_at: float) -> int:
        """The NAS no longer has this collection: drop what the Pi does not still need."""
        if path == "/":
            return 0
        keys = self.index.forget_vanished(view, path, asked_at)
        for key in keys:
            self.store.remove(key)
        return 1


# -- a whole refresh (`balupi refresh`, POST /api/cache/refresh) ------------------------------------

REFRESH_STEP = 50  # listings per step of a whole refresh


@dataclass
class RefreshOutcome:
    listed: int = 0
    removed: int = 0
    complete: bool = False
    note: str = ""


def refresh_all(refresher: "Refresher", index: Index, view: str = "", budget_s: float = 3600.0,
                on_step: Callable[[int], None] | None = None) -> RefreshOutcome:
    """List every collection the index knows from the NAS once (unlisted ones first), in steps of
    `REFRESH_STEP` listings at the refresher's bounded pace, while the NAS stays awake."""
    outcome = RefreshOutcome()
    started = time.time()
    deadline = time.monotonic() + budget_s
    done = 0
    while time.monotonic() < deadline:
        if not index.refresh_left(view, started):
            outcome.complete = True
            break
        step = refresher.tick(limit=REFRESH_STEP, view=view, min_age_s=0)
        outcome.listed += step.listed
        outcome.removed += step.removed
        if on_step is not None:
            on_step(step.listed)
        if not step.listed:
            outcome.note = f"the NAS is {refresher.monitor.state.value}; stopped"
            break
        now_done = index.refreshed_since(view, started)
        if now_done <= done and not step.removed:  # listings that change nothing: don't go round in circles
            outcome.note = "some collections could not be refreshed"
            break
        done = now_done
    return outcome
