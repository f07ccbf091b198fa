"""GET /api/health (no auth) and GET /api/system/status."""

from __future__ import annotations

from typing import TYPE_CHECKING

from balupi import __version__
from balupi.api import public

if TYPE_CHECKING:
    from balupi.api import JsonApi, Request
    from balupi.app import BaluPi


def register(api: "JsonApi", app: "BaluPi") -> None:
    @api.route("GET", "/health")
    @public
    def health(request: "Request"):
        problems = [p for p in (app.provider.cache.volume_problem(),) if p]
        body = {
            "status": "error" if problems else "ok",
            "version": __version__,
            "service": "balupi",
            "cache_enabled": True,
            "energy_enabled": app.energy_enabled,
            "nas": app.nas_summary(),
        }
        if problems:
            body["problems"] = problems
            return 503, body
        return body

    @api.route("GET", "/system/status")
    def system_status(request: "Request") -> dict:
        return app.system.status()

    @api.route("GET", "/system/jobs")
    def jobs(request: "Request") -> dict:
        return {"jobs": app.scheduler.status()}
