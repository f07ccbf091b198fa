"""Keeping the cache under its size limit and above the volume's free-space floor, at admission.

New content asks `admit(size)` before a byte is written: room is made first, by evicting the
coldest clean files (lowest `heat_key`, see `balupi.cache.heat`), and the size is reserved until the
content is committed or dropped (`release`). So concurrent downloads cannot together overshoot the
limit; a periodic `sweep` only catches what changed under us (e.g. the limit was lowered).

Writes (`reserve_write`) are refused with InsufficientStorage (507), before a byte is written or a
file evicted, when they cannot fit: more than the free space plus everything evictable, keeping
`WRITE_FLOOR_BYTES` free; or when the database's volume has less than `DB_FLOOR_BYTES` free (each
at most a tenth of the volume). Each
kind of refusal is logged once a minute at most, with its cause.

Never evicted: dirty files (changes not yet on the NAS), content referenced by a pending journal
entry, pinned paths (`cache_pinned` globs), and content that is open (`hold`/`unhold`).

Lock order: `CacheManager._lock` before `Database._write_lock`.
"""

from __future__ import annotations

import enum
import fnmatch
import logging
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from balupi.cache import pins
from balupi.cache import index
from balupi.cache.index import coldest_first
from balupi.cache.journal import Journal
from balupi.cache.store import ContentStore
from balupi.db import Database
from balupi.errors import InsufficientStorage
from balupi.events import Event, Events
from balupi.settings import Settings

log = logging.getLogger("balupi.cache")

EVICT_BATCH = 256
# Kept free under writes on the cache volume (sidecars, renames, the log, a database beside it) and
# on the database's volume (below it, writes are refused with 507): this much, or a tenth of a
# smaller volume.
WRITE_FLOOR_BYTES = 64 << 20
DB_FLOOR_BYTES = 16 << 20


def floor_bytes(volume: Path, most_bytes: int) -> int:
    return min(most_bytes, shutil.disk_usage(volume).total // 10)
REFUSAL_LOG_INTERVAL_S = 60.0



class EvictReason(enum.StrEnum):
    """Why content left the cache (the plugins' `reason`; stored and sent as these strings)."""

    ROOM = "room"  # to make room: over the size limit, or below the free-space floor

class CacheManager:
    def __init__(self, settings: Settings, db: Database, store: ContentStore, events: Events):
        self.db, self.store, self.events = db, store, events
        self._journal = Journal(db)
        self.max_bytes = int(settings.cache_max_size_gb * 1e9)
        self.min_free_bytes = int(settings.cache_min_free_gb * 1e9)
        self._configured_pins = tuple(settings.cache_pinned)
        self.pinned = self._configured_pins + pins.stored(db)  # the setting's globs, then those added at run time
        self.volume = Path(settings.cache_dir)
        self.db_volume = Path(settings.data_dir)
        self._refusals_logged: dict[str, tuple[float, int]] = {}
        self.refusals = 0
        self._lock = threading.Lock()
        self._reserved = 0
        self._open: Counter[str] = Counter()
        self.evictions = 0
        self.evicted_bytes = 0
        self.eviction_order: Callable[[Database, int], list] = coldest_first  # the plugins' balupi_eviction_order
        self.evict_veto: Callable[[str, int, str], str | None] | None = None  # the plugins' balupi_before_evict

    # -- questions -------------------------------------------------------------------------------

    def reload_pins(self) -> None:
        """After a pin was added or removed (balupi.cache.pins)."""
        self.pinned = self._configured_pins + pins.stored(self.db)

    def is_pinned(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.pinned)

    def used_bytes(self) -> int:
        return int(index.cached_bytes(self.db))

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.volume).free

    # -- open content ----------------------------------------------------------------------------

    def hold(self, key: str) -> None:
        with self._lock:
            self._open[key] += 1

    def unhold(self, key: str) -> None:
        with self._lock:
            self._open[key] -= 1
            if self._open[key] <= 0:
                del self._open[key]

    # -- admission -------------------------------------------------------------------------------

    def admit(self, size: int) -> bool:
        """Make room for `size` new bytes and reserve them. False: this file is not to be cached."""
        if size > self.max_bytes:
            return False
        with self._lock:
            # Again until it fits: a download that finished meanwhile counts twice for a moment (in
            # the index and still reserved), which is no reason to refuse this one.
            shortfall = self._shortfall(size)
            while shortfall > 0:
                if not self._evict(shortfall):
                    log.warning("cache: no room for %d bytes (the rest is dirty, pinned or open)", size)
                    return False
                shortfall = self._shortfall(size)
            self._reserved += size
            return True

    def reserve(self, size: int) -> None:
        """Writes are always taken (they must not be lost): make what room there is, then reserve."""
        with self._lock:
            shortfall = self._shortfall(size)
            if shortfall > 0:
                self._evict(shortfall)
            self._reserved += size

    def volume_problem(self) -> str | None:
        """Why nothing could ever be cached on this volume (it is smaller than the free-space floor)."""
        total = shutil.disk_usage(self.volume).total
        if total <= self.min_free_bytes:
            return (f"the cache volume of {self.volume} holds {total / 1e9:.2f} GB, less than cache_min_free_gb"
                    f" ({self.min_free_bytes / 1e9:g} GB): nothing can ever be cached")
        return None

    def check_db_volume(self) -> None:
        """Raise InsufficientStorage when the database's volume is (nearly) full."""
        free = shutil.disk_usage(self.db_volume).free
        if free < floor_bytes(self.db_volume, DB_FLOOR_BYTES):
            self.refuse("db", f"the database's volume ({self.db_volume}) is full: {free / 1e6:.1f} MB free")

    def refuse(self, kind: str, cause: str) -> None:
        """Log a refusal (once a minute per kind, with how many since) and raise InsufficientStorage."""
        now = time.monotonic()
        self.refusals += 1
        last, count = self._refusals_logged.get(kind, (-REFUSAL_LOG_INTERVAL_S, 0))
        if now - last >= REFUSAL_LOG_INTERVAL_S:
            more = f" ({count} more refused since the last message)" if count else ""
            log.warning("write refused (507 Insufficient Storage): %s%s", cause, more)
            self._refusals_logged[kind] = (now, 0)
        else:
            self._refusals_logged[kind] = (last, count + 1)
        raise InsufficientStorage(cause)

    def reserve_write(self, size: int) -> None:
        """Room for a write of `size` bytes (0: not known), or InsufficientStorage before anything is
        evicted when it cannot fit even with every evictable file gone. Then as `reserve`."""
        self.check_db_volume()
        write_floor = floor_bytes(self.volume, WRITE_FLOOR_BYTES)
        with self._lock:
            room = self.free_bytes() - write_floor - self._reserved  # others still arriving count
            if size > room:
                evictable = self._evictable_bytes()
                if size > room + evictable:
                    self.refuse("cache", f"an upload of {size / 1e6:.1f} MB cannot fit on the cache volume"
                                         f" ({max(room, 0) / 1e6:.1f} MB free, {evictable / 1e6:.1f} MB evictable)")
                self._evict(size - room)
                room = self.free_bytes() - write_floor - self._reserved
                if size > room:
                    self.refuse("cache", f"an upload of {size / 1e6:.1f} MB cannot fit on the cache volume"
                                         f" ({max(room, 0) / 1e6:.1f} MB free after evicting what could be)")
            elif room <= 0:
                self.refuse("cache", f"the cache volume is full ({self.free_bytes() / 1e6:.1f} MB free)")
            shortfall = self._shortfall(size)
            if shortfall > 0:
                self._evict(shortfall)
            self._reserved += size

    def _evictable_bytes(self) -> int:
        """At most this much could be evicted now (pinned and open files are not subtracted)."""
        return int(index.evictable_bytes(self.db))

    def release(self, size: int) -> None:
        """The reserved bytes were committed (they count in the index now) or dropped."""
        with self._lock:
            self._reserved = max(0, self._reserved - size)

    def sweep(self) -> int:
        """Scheduled: evict whatever exceeds the limits now. Returns bytes freed."""
        with self._lock:
            shortfall = self._shortfall(0)
            return self._evict(shortfall) if shortfall > 0 else 0

    def evict_to(self, target_bytes: int) -> tuple[int, int]:
        """An operator's eviction (`balupi evict --to-gb`, `POST /api/cache/evict`): evict the coldest
        evictable content until at most `target_bytes` are cached. Returns (files, bytes) evicted."""
        with self._lock:
            before = self.evictions
            want = self.used_bytes() + self._reserved - max(0, target_bytes)
            freed = self._evict(want) if want > 0 else 0
            return self.evictions - before, freed

    def _shortfall(self, incoming: int) -> int:
        """Bytes to free so that `incoming` more fit both limits. Caller holds self._lock."""
        over_limit = self.used_bytes() + self._reserved + incoming - self.max_bytes
        under_floor = self.min_free_bytes - (self.free_bytes() - incoming)
        return max(over_limit, under_floor, 0)

    def _evict(self, want: int) -> int:
        """Evict the coldest evictable content until `want` bytes are freed. Caller holds self._lock."""
        freed = 0
        skip: set[int] = set()
        while freed < want:
            rows = self.eviction_order(self.db, EVICT_BATCH + len(skip))
            candidates = [r for r in rows if r["id"] not in skip]
            if not candidates:
                break
            for row in candidates:
                key = row["cache_key"]
                if (self.is_pinned(row["path"]) or self._open.get(key) or self._journal_needs(key)
                        or self.evict_veto is not None and self.evict_veto(row["path"], row["size"], EvictReason.ROOM)):
                    skip.add(row["id"])
                    continue
                if index.drop_content(self.db, row["id"], key):
                    self.store.remove(key)
                    freed += row["size"]
                    self.evictions += 1
                    self.evicted_bytes += row["size"]
                    self.events.emit(Event.CACHE_FILE_EVICTED, path=row["path"], size_bytes=row["size"], reason=EvictReason.ROOM)
                else:
                    skip.add(row["id"])
                if freed >= want:
                    break
        return freed

    def _journal_needs(self, key: str) -> bool:
        return self._journal.key_pending(key)
