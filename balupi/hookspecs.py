"""Every plugin hook BaluPi has, one bare function each (pluggy project name "balupi").

Three kinds (docs/plugins.md has a section per hook, with an example):

- Veto hooks (`balupi_before_*`) run on the caller's thread and may refuse: return a message (str)
  to refuse, None to allow (`balupi_before_wake` may also return a `WakeRefusal`, which names when
  to ask again). Every implementation is asked; the first refusal wins. An exception is
  logged with the plugin's name and counts as "no veto".
- Observe hooks run off the request path, on one worker thread fed by a bounded queue (full: the
  event is dropped and counted). Their return value is ignored. One per `balupi.events.Event`
  (same name), plus start-up, shutdown.
- Provide hooks give BaluPi a part: routes, jobs, or one of the replaceable defaults
  (`firstresult`: the first implementation that returns something other than None wins; the
  built-in defaults in `balupi.default_plugins` answer last, so `tryfirst=True` replaces them).

Every argument is passed by name; an implementation declares only the ones it needs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable

import pluggy

PROJECT = "balupi"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class WakeKind(str, enum.Enum):
    """Who needs the NAS awake (`balupi_before_wake`'s `kind`)."""

    CLIENT = "client"  # a person's request: a miss, a listing never seen, a login
    SYNC = "sync"  # the write-back of pending changes
    PREFETCH = "prefetch"
    REFRESH = "refresh"
    MANUAL = "manual"  # an operator: POST /api/nas/wol, POST /api/cache/sync, `balupi sync --wake`


class ClientOp(str, enum.Enum):
    """A client's changing operation (`balupi_before_client_op`'s `op`)."""

    WRITE = "write"  # PUT, PROPPATCH
    DELETE = "delete"
    MOVE = "move"
    COPY = "copy"
    MKCOL = "mkcol"


DEFAULT_WAKE_RETRY_AFTER_S = 300  # a refused wake's Retry-After when the plugin names none
MAX_WAKE_RETRY_AFTER_S = 86400


@dataclass(frozen=True)
class WakeRefusal:
    """A `balupi_before_wake` refusal that says when asking again makes sense: a waiting client's
    `Retry-After` (clamped to 1 s .. a day). A plain str refusal means 300 s."""

    message: str
    retry_after_s: float = DEFAULT_WAKE_RETRY_AFTER_S

    def clamped_retry_after_s(self) -> int:
        return int(min(MAX_WAKE_RETRY_AFTER_S, max(1, round(self.retry_after_s))))


@dataclass(frozen=True)
class PluginRoute:
    """An API route a plugin adds under /api/plugins/<plugin name><path>."""

    method: str
    path: str  # "/" or "/something/{param}"
    handler: Callable[[Any], Any]  # takes the balupi.api.Request, returns like any API handler
    admin_only: bool = True


@dataclass(frozen=True)
class ScheduledJob:
    """A job a plugin wants run every `interval_s` seconds on BaluPi's scheduler."""

    name: str
    interval_s: float
    fn: Callable[[], Any]


# -- veto hooks ---------------------------------------------------------------------------------


@hookspec
def balupi_before_wake(reason: str, kind: WakeKind, user: str | None, path: str | None) -> str | WakeRefusal | None:
    """Before BaluPi starts waking the NAS. A refusal: a waiting client gets 503 + Retry-After (the
    `WakeRefusal`'s, else 300 s), a background job waits for the NAS's next wake."""


@hookspec
def balupi_before_client_op(op: ClientOp, method: str, user: str, path: str, destination: str | None) -> str | None:
    """Before a client's write, delete, move, copy or MKCOL under /dav/. A refusal: 403 with the message."""


@hookspec
def balupi_before_evict(path: str, size_bytes: int, reason: str) -> str | None:
    """Before a cached file is evicted. A refusal keeps it (the next candidate goes instead)."""


# -- observe hooks: one per balupi.events.Event, plus start-up and shutdown ------------------------


@hookspec
def balupi_startup(app: Any) -> None:
    """BaluPi has started (its background work runs)."""


@hookspec
def balupi_shutdown(app: Any) -> None:
    """BaluPi is stopping (delivered before the worker ends, within a short grace)."""


@hookspec
def balupi_nas_state_changed(from_state: Any, to_state: Any, cause: str, at: float) -> None:
    """The NAS moved between states (balupi.nas.monitor.NasState)."""


@hookspec
def balupi_nas_wake_requested(reason: str, at: float) -> None:
    """BaluPi started waking the NAS."""


@hookspec
def balupi_nas_power_reading(power_w: float, power_state: Any, at: float) -> None:
    """A reading of the NAS's plug."""


@hookspec
def balupi_plug_sample(device_id: int, power_w: float, at: float) -> None:
    """A plug was polled."""


@hookspec
def balupi_plug_health_changed(device_id: int, error_kind: Any, at: float) -> None:
    """A plug started failing (`error_kind`) or recovered (`error_kind` None)."""


@hookspec
def balupi_nas_power_state_changed(from_state: Any, to_state: Any, power_w: float, at: float) -> None:
    """The NAS's power state by its plug changed (off/standby/idle/active)."""


@hookspec
def balupi_cache_file_added(path: str, size_bytes: int) -> None:
    """A file's content entered the cache."""


@hookspec
def balupi_cache_file_evicted(path: str, size_bytes: int, reason: str) -> None:
    """A file's content left the cache."""


@hookspec
def balupi_sync_conflict(path: str, conflict_path: str, at: float) -> None:
    """The write-back met a change on the NAS; BaluPi's version was kept as `conflict_path`."""


@hookspec
def balupi_sync_done(path: str, action: str) -> None:
    """A pending change reached the NAS."""


@hookspec
def balupi_upload_finished(user: str, path: str, size_bytes: int) -> None:
    """A client's upload (PUT) is stored on the Pi."""


@hookspec
def balupi_miss_served(user: str, path: str, size_bytes: int) -> None:
    """A client got a file that was not cached (it came from the NAS)."""


# -- provide hooks ------------------------------------------------------------------------------


@hookspec
def balupi_api_routes(app: Any) -> list[PluginRoute] | None:
    """Routes this plugin adds under /api/plugins/<its name>/ (same login, admin-only by default)."""


@hookspec
def balupi_scheduled_jobs(app: Any) -> list[ScheduledJob] | None:
    """Jobs to run on BaluPi's scheduler."""


@hookspec(firstresult=True)
def balupi_nas_suspend_action(app: Any) -> Callable[[], None] | None:
    """How to ask the NAS to suspend when idle (None: not this plugin)."""


@hookspec(firstresult=True)
def balupi_plug_driver(plug_id: int, config: dict, credentials: Any, timeout_s: float, zone: Any) -> Any:
    """The object polling one plug: async `poll(prev, gap, clock)`, `set_on(on)`, `drop()` (see
    balupi.energy.plugs.PlugLink). None: not this plugin."""


@hookspec(firstresult=True)
def balupi_eviction_order(db: Any, limit: int) -> list | None:
    """Up to `limit` cached, clean entries (rows with id, path, cache_key, size), the first to evict first."""


@hookspec(firstresult=True)
def balupi_sync_wake_reason(pending: dict, now: float) -> str | None:
    """Whether pending changes ({count, bytes, oldest_at}) are worth waking the NAS for: a reason
    to wake, "" not to, None: no opinion (the next plugin decides)."""
