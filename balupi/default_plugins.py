"""BaluPi's own defaults, shipped as plugins on the hooks anyone can implement (as Datasette does).

Each is registered first, so any other plugin's implementation of the same hook is called before
it (pluggy calls the last registered first); `tryfirst=True` makes that explicit. Each can also be
turned off: `[plugins.<name>] enabled = false`.

- `heat_eviction`: the eviction order, coldest first by heat (balupi.cache.heat).
- `baluhost_suspend`: the NAS suspend action, BaluHost's sleep API (only when `nas_url` names the
  WebDAV host, see balupi.nas.client).
- `kasa_plugs`: the plug driver, python-kasa (balupi.energy.plugs.PlugLink).
- `writeback_wake_policy`: whether pending changes are worth waking the NAS for (balupi.sync.policy).
"""

from __future__ import annotations

from typing import Any

from balupi.hookspecs import hookimpl


class HeatEviction:
    @hookimpl
    def balupi_eviction_order(self, db: Any, limit: int) -> list:
        from balupi.cache.index import coldest_first

        return coldest_first(db, limit)


class BaluHostSuspend:
    @hookimpl
    def balupi_nas_suspend_action(self, app: Any):
        return app.nas_client.suspend_via_baluhost if app.nas_client.rest_allowed() else None


class KasaPlugs:
    @hookimpl
    def balupi_plug_driver(self, plug_id: int, config: dict, credentials: Any, timeout_s: float, zone: Any):
        from balupi.energy.plugs import PlugLink

        return PlugLink(plug_id, config, credentials, timeout_s, zone)


class WriteBackWakePolicy:
    def __init__(self, settings: Any) -> None:
        from balupi.sync.policy import WakePolicy

        self.policy = WakePolicy(settings)

    @hookimpl
    def balupi_sync_wake_reason(self, pending: dict, now: float) -> str:
        return self.policy.wake_reason(pending, now) or ""


def defaults(settings: Any) -> dict[str, Any]:
    """A fresh set of the default plugins (name -> plugin object) for one BaluPi."""
    return {
        "heat_eviction": HeatEviction(),
        "baluhost_suspend": BaluHostSuspend(),
        "kasa_plugs": KasaPlugs(),
        "writeback_wake_policy": WriteBackWakePolicy(settings),
    }
