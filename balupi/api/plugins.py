"""GET /api/plugins (admin). Every plugin's own routes go under /api/plugins/<name>/; the composition
root adds them (`balupi.plugins.PluginHost.register_routes`), since plugins are handed the whole app."""

from __future__ import annotations

from balupi.api import Request, Route


def plugins_list(request: Request) -> dict:
    return request.ctx.plugins.listing()


ROUTES = (
    Route("GET", "/plugins", plugins_list, admin_only=True),
)
