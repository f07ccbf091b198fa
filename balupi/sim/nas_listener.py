"""The simulated NAS's ports: the main TCP port (a cheroot server that can be closed and
re-opened) and the Wake-on-LAN UDP port.

Closed (the NAS is suspended or off), the port refuses connections: the listening socket is gone.
A bound, non-listening placeholder socket keeps the number reserved meanwhile (so no outgoing
connection is given it as its local port); it refuses connections just like a free port. On
open, the placeholder is released and cheroot binds the same number again with SO_REUSEADDR.
"""

from __future__ import annotations

import socket
import threading
import time

from balupi.sim.nas_http import SimHTTPServer

_BIND_ATTEMPTS = 100
_BIND_RETRY_S = 0.02


class ReopenableServer:
    """One port number, served by a fresh cheroot server each time it is opened."""

    def __init__(self, host: str, port: int, app, *, threads: int, name: str = "BaluHost-sim",
                 tls: tuple[str, str] | None = None):
        self.host = host
        self.tls = tls  # (certificate, key) PEM paths: serve HTTPS
        self.port = int(port)
        self.app = app
        self.threads = threads
        self.name = name
        self.halt = threading.Event()  # set on close: in-flight requests must stop
        self._server: SimHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._placeholder: socket.socket | None = None

    @property
    def is_open(self) -> bool:
        return self._server is not None

    def reserve(self) -> None:
        """Hold the port number with a bound, non-listening socket (picks one if port is 0)."""
        if self._placeholder is not None:
            return
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._placeholder = sock

    def release(self) -> None:
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    def open(self) -> None:
        """Listen on the port (same number as before)."""
        if self._server is not None:
            return
        if self.port == 0:
            # Pick the number ourselves: cheroot sets SO_REUSEADDR only for a fixed port, and
            # without it (inherited by accepted sockets) the port could not be bound again.
            self.reserve()
        self.release()
        self.halt = threading.Event()
        last_error: OSError | None = None
        for _attempt in range(_BIND_ATTEMPTS):
            server = SimHTTPServer((self.host, self.port), self.app, threads=self.threads,
                                   name=self.name)
            if self.tls is not None:
                from cheroot.ssl.builtin import BuiltinSSLAdapter

                server.ssl_adapter = BuiltinSSLAdapter(*self.tls)
            try:
                server.prepare()  # bind + listen
                break
            except OSError as exc:  # e.g. EADDRINUSE for a moment
                last_error = exc
                time.sleep(_BIND_RETRY_S)
        else:
            raise last_error  # type: ignore[misc]
        self._server = server
        self._thread = threading.Thread(target=server.serve, daemon=True,
                                        name=f"sim-nas http :{self.port}")
        self._thread.start()

    def close(self, *, keep_reserved: bool = True) -> None:
        """Stop listening (connections are refused from now on) and end in-flight requests."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self.halt.set()
        if server is not None:
            server.stop()
        if thread is not None:
            thread.join(2.0)
        if keep_reserved:
            self.reserve()
        else:
            self.release()


class WolListener:
    """The NAS's WoL port: every UDP datagram goes to `on_datagram(data, sender)` (a thread)."""

    def __init__(self, host: str, port: int, on_datagram):
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                   socket.SOCK_DGRAM)
        self._sock.bind((host, int(port)))
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self._on_datagram = on_datagram
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"sim-nas wol :{self.port}")
        self._thread.start()

    def _loop(self) -> None:
        while not self._closing.is_set():
            try:
                data, sender = self._sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            self._on_datagram(data, sender)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(2.0)
        self._sock.close()
