"""What the WebDAV side works with of the cache and the NAS, built once and passed in.

The provider, its resources and the fast lane each get a `CacheParts` when they are made (in
`balupi.dav.app.build_provider`, or `balupi.maintenance.Parts` for the CLI), instead of reaching
through the provider for its index, store or NAS client.
"""

from __future__ import annotations

from dataclasses import dataclass

from balupi.cache.downloads import Downloads
from balupi.cache.index import Index
from balupi.cache.integrity import VerifiedKeys
from balupi.cache.manager import CacheManager
from balupi.cache.store import ContentStore
from balupi.db import Database
from balupi.events import Events
from balupi.nas.client import NasClient
from balupi.nas.monitor import NasMonitor


@dataclass
class CacheStats:
    """Counts of this process (hits and misses, in files and bytes) for /metrics and the dashboard."""

    hits: int = 0
    misses: int = 0
    hit_bytes: int = 0
    miss_bytes: int = 0


@dataclass
class CacheParts:
    index: Index
    store: ContentStore
    cache: CacheManager
    client: NasClient
    monitor: NasMonitor
    events: Events
    downloads: Downloads
    stats: CacheStats
    verified: VerifiedKeys  # content read whole and found intact by this process

    @property
    def db(self) -> Database:
        return self.index.db

    @classmethod
    def build(cls, index: Index, store: ContentStore, client: NasClient, monitor: NasMonitor, events: Events,
              cache: CacheManager) -> "CacheParts":
        downloads = Downloads(store, index, client, events, hold=cache.hold, unhold=cache.unhold,
                              finished=lambda d: cache.release(d.reserved_bytes))
        return cls(index, store, cache, client, monitor, events, downloads, CacheStats(), VerifiedKeys())
