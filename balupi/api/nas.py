"""GET /api/nas/status and POST /api/nas/wol."""

from __future__ import annotations

from typing import TYPE_CHECKING

RETRY_SUFFIX = " (retry)"
PATH_HIDDEN = " (a path, shown to admins)"

from balupi.api import ApiError, admin_only
from balupi.errors import WakeNotPossible

if TYPE_CHECKING:
    from balupi.api import JsonApi, Request
    from balupi.app import BaluPi


def without_path(cause: str) -> str:
    """A transition's cause without the path it names ("wake: GET /bob/x.txt" -> "wake: GET (a path...)")."""
    at = cause.find(" /")
    if at < 0:
        return cause
    return cause[:at] + PATH_HIDDEN + (RETRY_SUFFIX if cause.endswith(RETRY_SUFFIX) else "")


def register(api: "JsonApi", app: "BaluPi") -> None:
    @api.route("GET", "/nas/status")
    def nas_status(request: "Request") -> dict:
        if app.nas.version is None and app.nas.is_awake():
            app.nas_client.fetch_version()  # once, and only while it is awake anyway
        status = app.nas.status()
        if not request.user.is_admin:  # the NAS's address and other users' file names are admin business
            status.pop("url", None)
            status["transitions"] = [{**t, "cause": without_path(t["cause"])} for t in status["transitions"]]
        return status

    @api.route("POST", "/nas/wol")
    @admin_only
    def nas_wol(request: "Request") -> dict:
        try:
            return app.nas.wake(reason="POST /api/nas/wol")
        except WakeNotPossible as exc:
            raise ApiError(409, str(exc)) from None
