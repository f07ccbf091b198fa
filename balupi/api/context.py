"""What the API's handlers work with, handed in by the composition root (`balupi.app`).

The API does not import `balupi.app` (nor the other parts of the composition root: the scheduler,
the plugin host, maintenance): `BaluPi` builds one `ApiContext` from its parts and gives it to the
router, which puts it on every request (`request.ctx`). What the API needs of the composition root's
parts is written down as small protocols here. A test can build a context from the parts it has
and call a handler directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from balupi.nas.monitor import NasState

if TYPE_CHECKING:
    from balupi.auth.service import Authenticator
    from balupi.cache.integrity import VerifiedKeys
    from balupi.cache.manager import CacheManager
    from balupi.cache.prefetch import Prefetcher
    from balupi.db import Database
    from balupi.energy.service import EnergyService
    from balupi.nas.client import NasClient
    from balupi.nas.monitor import NasMonitor
    from balupi.settings import Settings
    from balupi.sync.worker import SyncWorker


class Jobs(Protocol):
    """The scheduler (`balupi.scheduler.Scheduler`), as the API uses it."""

    def status(self) -> list[dict]: ...

    def run_soon(self, name: str, fn: Callable[[], None]) -> None: ...


class SystemStatus(Protocol):
    """The system sampler (`balupi.system.SystemSampler`): CPU, memory, disk, temperature."""

    def status(self) -> dict: ...


class PluginListing(Protocol):
    """The plugin host (`balupi.plugins.PluginHost`), as GET /api/plugins uses it."""

    def listing(self) -> dict: ...


@dataclass
class ApiContext:
    settings: "Settings"
    db: "Database"
    auth: "Authenticator"
    scheduler: Jobs
    system: SystemStatus
    nas: "NasMonitor"
    nas_client: "NasClient"
    energy: "EnergyService"
    plugins: PluginListing
    cache: "CacheManager"  # eviction, pins, the cache volume
    cache_stats: Any  # hits and misses since the start (the WebDAV provider's counts)
    verified: "VerifiedKeys"  # content read whole and found intact since the start
    sync: "SyncWorker"
    prefetcher: "Prefetcher"
    refresh_all: Callable[[], object]  # list every known folder from the NAS once (balupi.sync.refresh.refresh_all)

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
