"""Refusals that pass: WsgiDAV answers 503 with Retry-After, and BaluPi's own log says why.

WsgiDAV turns any exception that is not a `DAVError` into `500 Internal Server Error`, and its logger
is silenced in BaluPi (`balupi.dav.app`). `ServiceRefusals` sits inside WsgiDAV's `ErrorPrinter` and
turns `ServiceBusy` (the database locked by another process) and `NasUnavailable` into
`DAVError(503)` with `Retry-After`, logging each refusal once, with its cause, in `balupi.http`.
`log_refusal` is the same line for the layers outside WsgiDAV (`balupi.app.Dispatcher`).
"""

from __future__ import annotations

import logging

from wsgidav.dav_error import DAVError
from wsgidav.mw.base_mw import BaseMiddleware

from balupi.errors import NasUnavailable, ServiceBusy

log = logging.getLogger("balupi.http")


def log_refusal(environ: dict, exc: Exception, status: int = 503) -> None:
    log.warning("%d for %s %s: %s", status, environ.get("REQUEST_METHOD", "?"),
                environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), exc)


class ServiceRefusals(BaseMiddleware):
    def is_disabled(self) -> bool:
        return False

    def __call__(self, environ, start_response):
        try:
            app_iter = self.next_app(environ, start_response)
            yield from app_iter  # (a generator, so that errors while iterating are caught too)
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
        except (ServiceBusy, NasUnavailable) as exc:
            if isinstance(exc, ServiceBusy):  # NAS refusals are logged where they happen (balupi.nas)
                log_refusal(environ, exc)
            raise DAVError(503, str(exc), add_headers=[("Retry-After", str(exc.retry_after_s))]) from None
