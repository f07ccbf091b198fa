"""GET /api/plugins (admin), and every plugin's own routes under /api/plugins/<name>/ (balupi.plugins)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from balupi.api import admin_only

if TYPE_CHECKING:
    from balupi.api import JsonApi, Request
    from balupi.app import BaluPi


def register(api: "JsonApi", app: "BaluPi") -> None:
    @api.route("GET", "/plugins")
    @admin_only
    def plugins_list(request: "Request") -> dict:
        return app.plugins.listing()

    app.plugins.register_routes(api, app)
