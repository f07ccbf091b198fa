"""The simulated plug's HTTP port: a threading server that hands every POST to the plug.

The plug (`balupi.sim.plug.SimulatedPlug`) decides the answer through its public
``wait_while_hung`` and ``handle_http``; this module only speaks HTTP and can drop every open
connection when the plug goes "down".
"""

from __future__ import annotations

import http.cookies
import http.server
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from balupi.sim.plug import SimulatedPlug

__all__ = ["PlugHttpServer"]

_LOGGER = logging.getLogger("balupi.sim.plug")


class PlugHttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: SimulatedPlug) -> None:
        self.sim = sim
        self.closing = threading.Event()  # set when this listener is being torn down
        self.active_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def drop_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.active_connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(http.server.BaseHTTPRequestHandler):
    server: PlugHttpServer
    protocol_version = "HTTP/1.1"
    server_version = "SimTapo/1.0"
    sys_version = ""
    timeout = 30

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.active_connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.active_connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        _LOGGER.debug("%s: " + format, self.client_address[0], *args)

    def do_POST(self) -> None:  # noqa: N802
        self.close_connection = True
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        sim = self.server.sim
        if sim.wait_while_hung(self.server.closing):
            return  # hung plug: the client never gets an answer, the socket just closes
        url = urlsplit(self.path)
        cookie = http.cookies.SimpleCookie(self.headers.get("Cookie") or "")
        session_id = cookie["TP_SESSIONID"].value if "TP_SESSIONID" in cookie else None
        status, headers, payload = sim.handle_http(url.path, parse_qs(url.query), session_id, body)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802
        self.close_connection = True
        self.send_error(404)
