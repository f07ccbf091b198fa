"""What the API's handlers work with, handed in by the composition root (`balupi.app`).

The API does not import `balupi.app`: `BaluPi` builds one `ApiContext` from its parts and gives it
to the router, which puts it on every request (`request.ctx`). A test can build a context from the
parts it has and call a handler directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from balupi.nas.monitor import NasState

if TYPE_CHECKING:
    from balupi.auth.service import Authenticator
    from balupi.cache.manager import CacheManager
    from balupi.cache.prefetch import Prefetcher
    from balupi.db import Database
    from balupi.energy.service import EnergyService
    from balupi.nas.client import NasClient
    from balupi.nas.monitor import NasMonitor
    from balupi.plugins import PluginHost
    from balupi.scheduler import Scheduler
    from balupi.settings import Settings
    from balupi.sync.refresh import Refresher
    from balupi.sync.worker import SyncWorker
    from balupi.system import SystemSampler


@dataclass
class ApiContext:
    settings: "Settings"
    db: "Database"
    auth: "Authenticator"
    scheduler: "Scheduler"
    system: "SystemSampler"
    nas: "NasMonitor"
    nas_client: "NasClient"
    energy: "EnergyService"
    plugins: "PluginHost"
    cache: "CacheManager"  # eviction, pins, the cache volume
    index: Any  # the offline index of the NAS tree (what /cache/refresh walks)
    cache_stats: Any  # hits and misses since the start (the WebDAV provider's counts)
    verified: Any  # content read whole and found intact since the start (balupi.cache.integrity.VerifiedKeys)
    sync: "SyncWorker"
    prefetcher: "Prefetcher"
    refresher: "Refresher"

    @property
    def energy_enabled(self) -> bool:
        """Energy monitoring is on and has something to watch (Tapo credentials or a plug)."""
        return self.settings.energy_enabled and (bool(self.settings.tapo_username) or bool(self.energy.plugs()))

    def nas_summary(self) -> dict:
        """The NAS's state in words for people (GET /api/health, the start-up log)."""
        nas = self.nas
        state = nas.state
        messages = {
            NasState.UNCONFIGURED: "no NAS configured: serving only what the cache holds",
            NasState.UNREACHABLE: f"the NAS is {nas.state_words()}: serving only what the cache holds",
            NasState.ASLEEP: "the NAS is asleep: cached files are served, others wake it",
        }
        return {
            "configured": nas.configured,
            "state": state.value,
            "online": state is NasState.AWAKE,
            "message": messages.get(state, ""),
            "state_words": nas.state_words(),  # "unreachable: certificate not trusted (fingerprint ...)"
            "problem": nas.problem,
            **({} if nas.configured else {"access": self.auth.open_access()}),
        }
