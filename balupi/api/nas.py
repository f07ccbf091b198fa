"""GET /api/nas/status and POST /api/nas/wol."""

from __future__ import annotations

from typing import TYPE_CHECKING

from balupi.api import ApiError, admin_only
from balupi.errors import WakeNotPossible

if TYPE_CHECKING:
    from balupi.api import JsonApi, Request
    from balupi.app import BaluPi


def register(api: "JsonApi", app: "BaluPi") -> None:
    @api.route("GET", "/nas/status")
    def nas_status(request: "Request") -> dict:
        if app.nas.version is None and app.nas.is_awake():
            app.nas_client.fetch_version()  # once, and only while it is awake anyway
        return app.nas.status()

    @api.route("POST", "/nas/wol")
    @admin_only
    def nas_wol(request: "Request") -> dict:
        try:
            return app.nas.wake(reason="POST /api/nas/wol")
        except WakeNotPossible as exc:
            raise ApiError(409, str(exc)) from None
