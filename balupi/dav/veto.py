"""The plugins' veto of a client's changing operation, in front of /dav/ (behind the guard).

The plugin host (`balupi.plugins.PluginHost`) is handed in: the WebDAV side asks it through
`VetoHost` and never imports the plugin machinery.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol
from urllib.parse import unquote, urlsplit

from balupi.hookspecs import ClientOp


class VetoHost(Protocol):
    def has_impls(self, hook: str) -> bool: ...

    def veto(self, hook: str, **kwargs: Any) -> str | None: ...


METHOD_OPS = {"PUT": ClientOp.WRITE, "PROPPATCH": ClientOp.WRITE, "DELETE": ClientOp.DELETE,
              "MOVE": ClientOp.MOVE, "COPY": ClientOp.COPY, "MKCOL": ClientOp.MKCOL}


class ClientOpVeto:
    """WSGI middleware behind DavGuard (so the path is checked and the user known): asks
    `balupi_before_client_op` before a changing method; a refusal is 403 with the plugin's message."""

    def __init__(self, host: VetoHost, next_app: Callable):
        self.host = host
        self.next_app = next_app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"].upper()
        op = METHOD_OPS.get(method)
        if op is None or not self.host.has_impls("balupi_before_client_op"):
            return self.next_app(environ, start_response)
        refusal = self.host.veto("balupi_before_client_op", op=op, method=method,
                                 user=environ.get("wsgidav.auth.user_name") or "", path=_wsgi_path(environ.get("PATH_INFO", "/")),
                                 destination=_destination_path(environ))
        if refusal is None:
            return self.next_app(environ, start_response)
        body = f"refused by plugin {refusal}\n".encode()
        start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(body))), ("Connection", "close")])
        return [body]


def _wsgi_path(raw: str) -> str:
    try:
        return raw.encode("iso-8859-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def _destination_path(environ: dict) -> str | None:
    value = environ.get("HTTP_DESTINATION")
    if not value:
        return None
    path = unquote(urlsplit(value.strip()).path)
    mount = (environ.get("SCRIPT_NAME", "") or "").rstrip("/")
    return path[len(mount):] if mount and path.startswith(mount + "/") else path
