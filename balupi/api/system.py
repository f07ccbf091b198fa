"""GET /api/health (no auth), GET /api/system/status and GET /api/system/jobs."""

from __future__ import annotations

from balupi import __version__
from balupi.api import Request, Route


def health(request: Request):
    ctx = request.ctx
    problems = [p for p in (ctx.cache.volume_problem(),) if p]
    body = {
        "status": "error" if problems else "ok",
        "version": __version__,
        "service": "balupi",
        "cache_enabled": True,
        "energy_enabled": ctx.energy_enabled,
        "nas": ctx.nas_summary(),
    }
    if problems:
        body["problems"] = problems
        return 503, body
    return body


def system_status(request: Request) -> dict:
    return request.ctx.system.status()


def jobs(request: Request) -> dict:
    return {"jobs": request.ctx.scheduler.status()}


ROUTES = (
    Route("GET", "/health", health, public=True),
    Route("GET", "/system/status", system_status),
    Route("GET", "/system/jobs", jobs),
)
