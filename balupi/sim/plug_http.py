"""The simulated plug's TCP port: a threading HTTP server, the "down" and "hang" faults.

`PlugPort` owns the port number for the plug's lifetime. While up, a `PlugHttpServer` hands every
POST to the ``answer`` callable it was given (the KLAP endpoint); while down, a bound socket that
never listens keeps the number reserved and the kernel refuses every connection. While hung,
requests are read and never answered. This module only speaks HTTP; it knows nothing of KLAP.
"""

from __future__ import annotations

import http.cookies
import http.server
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from balupi.sim.plug_klap import HttpAnswer

__all__ = ["PlugHttpServer", "PlugPort"]

AnswerFn = Callable[[str, dict[str, list[str]], str | None, bytes], HttpAnswer]
"""``(path, query, session_id, body) -> (status, headers, body)``: one POST's answer."""

_LOGGER = logging.getLogger("balupi.sim.plug")


class PlugHttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], port: PlugPort) -> None:
        self.plug_port = port
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
        port = self.server.plug_port
        if port.wait_while_hung(self.server.closing):
            return  # hung plug: the client never gets an answer, the socket just closes
        url = urlsplit(self.path)
        cookie = http.cookies.SimpleCookie(self.headers.get("Cookie") or "")
        session_id = cookie["TP_SESSIONID"].value if "TP_SESSIONID" in cookie else None
        status, headers, payload = port.answer(url.path, parse_qs(url.query), session_id, body)
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


class PlugPort:
    """The plug's TCP port on ``host``: served over HTTP while up, refusing while down."""

    def __init__(self, host: str, port: int, answer: AnswerFn, *, down: bool = False, hang: bool = False) -> None:
        self.host = host
        self.port = port  # 0 until opened: then the real one, kept across reopenings
        self.answer = answer
        self._down = bool(down)
        self._hang = bool(hang)
        self._hang_cond = threading.Condition()
        self._server: PlugHttpServer | None = None
        self._server_thread: threading.Thread | None = None
        self._placeholder: socket.socket | None = None
        self._open = False

    def open(self) -> None:
        self._open = True
        if self._down:
            self._open_placeholder()
        else:
            self._open_http()

    def close(self) -> None:
        self._open = False
        self._close_http()
        self._close_placeholder()

    @property
    def hang(self) -> bool:
        return self._hang

    @hang.setter
    def hang(self, value: bool) -> None:
        with self._hang_cond:
            self._hang = bool(value)
            self._hang_cond.notify_all()

    @property
    def down(self) -> bool:
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        value = bool(value)
        if value == self._down:
            return
        self._down = value
        if not self._open:
            return
        if value:
            self._close_http()
            self._open_placeholder()
        else:
            self._close_placeholder()
            self._open_http()

    def wait_while_hung(self, closing: threading.Event) -> bool:
        """Block a request while hung (until unhung or ``closing``); True means: drop it."""
        with self._hang_cond:
            if not self._hang:
                return False
            while self._hang and not closing.is_set():
                self._hang_cond.wait(0.5)
            return True

    def _open_http(self) -> None:
        server = PlugHttpServer((self.host, self.port), self)
        self.port = server.server_address[1]
        self._server = server
        self._server_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"sim-plug-{self.port}", daemon=True
        )
        self._server_thread.start()

    def _close_http(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.closing.set()
        with self._hang_cond:
            self._hang_cond.notify_all()
        server.shutdown()
        server.drop_connections()
        server.server_close()  # joins the worker threads
        if self._server_thread is not None:
            self._server_thread.join(timeout=5)
            self._server_thread = None

    def _open_placeholder(self) -> None:
        # A bound socket that never listens keeps the port ours while the kernel
        # answers every connection attempt with a reset ("connection refused").
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._placeholder = sock

    def _close_placeholder(self) -> None:
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None
