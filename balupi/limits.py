"""Request limits of the HTTP server: per-client concurrency, a deadline for the request head, TLS
handshakes off the accept loop.

- `ClientLimiter`: at most `http_max_requests_per_client` requests of one client address in
  progress at once; one more is answered `503` with `Retry-After: 1` straight away and its
  connection closed, so one client (or one attacker) cannot take every worker thread.
- `HeadWatchdog`: a client must send its request line and headers (and, with TLS, finish the
  handshake) within `http_header_timeout_s`; a slow client ("slowloris") that trickles bytes, each
  within the socket timeout, has its connection shut down at the deadline. A thread checks the
  armed deadlines twice a second.
- Header values holding CR, LF or NUL are refused (400).
- `GuardedConnection` puts both around cheroot's connection (BaluPi's fast one for plain TCP). With
  TLS it also performs the handshake, which `balupi.tls.LazyHandshakeAdapter` leaves undone: cheroot
  would otherwise run it on its single accepting thread, where one silent client stalls every new
  connection for the whole socket timeout.

Header and body sizes: cheroot's `max_request_header_size` (413/414), the API's 1 MiB JSON bodies,
`DavGuard`'s XML bodies; PUT bodies are file content and are bounded by the cache, not here.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import Counter

from cheroot.server import HTTPRequest

from balupi.httpio import FastConnection

log = logging.getLogger("balupi.limits")

WATCHDOG_INTERVAL_S = 0.5
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 52\r\nConnection: close\r\n\r\ntoo many requests in progress from this address;\n"
    b"retry\n"
)
assert BUSY_RESPONSE.endswith(b"\r\n\r\n" + b"too many requests in progress from this address;\nretry\n")


class ClientLimiter:
    def __init__(self, max_per_client: int):
        self.max_per_client = max_per_client
        self._lock = threading.Lock()
        self._in_progress: Counter[str] = Counter()
        self.refused = 0

    def enter(self, address: str) -> bool:
        if self.max_per_client <= 0:
            return True
        with self._lock:
            if self._in_progress[address] >= self.max_per_client:
                self.refused += 1
                return False
            self._in_progress[address] += 1
            return True

    def leave(self, address: str) -> None:
        if self.max_per_client <= 0:
            return
        with self._lock:
            self._in_progress[address] -= 1
            if self._in_progress[address] <= 0:
                del self._in_progress[address]

    def in_progress(self, address: str) -> int:
        with self._lock:
            return self._in_progress.get(address, 0)


class HeadWatchdog:
    """Shuts down connections whose request head is not complete by its deadline."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[socket.socket, float]] = {}
        self._next = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cut = 0  # connections shut down at their deadline

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="balupi-head-watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None

    def arm(self, sock: socket.socket) -> int:
        with self._lock:
            self._next += 1
            self._armed[self._next] = (sock, time.monotonic() + self.timeout_s)
            return self._next

    def disarm(self, handle: int) -> None:
        with self._lock:
            self._armed.pop(handle, None)

    def _run(self) -> None:
        while not self._stop.wait(WATCHDOG_INTERVAL_S):
            now = time.monotonic()
            with self._lock:
                late = [(h, s) for h, (s, deadline) in self._armed.items() if deadline <= now]
                for handle, _ in late:
                    del self._armed[handle]
            for _, sock in late:
                self.cut += 1
                try:  # the plain socket's shutdown, also for an SSLSocket (its own would drop its state)
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass
            if late:
                log.info("closed %d connection(s) that did not send a whole request head in %.0f s",
                         len(late), self.timeout_s)


class Limits:
    """What `GuardedConnection` needs from the server (set as `server.balupi_limits`)."""

    def __init__(self, max_per_client: int, header_timeout_s: float):
        self.clients = ClientLimiter(max_per_client)
        self.watchdog = HeadWatchdog(header_timeout_s)


class HeadDeadlineRequest(HTTPRequest):
    """cheroot's request, its head read under the deadline; header values with CR, LF or NUL are 400
    (RFC 9110 5.5; cheroot passes them on)."""

    def parse_request(self):
        watchdog = self.server.balupi_limits.watchdog
        handle = watchdog.arm(self.conn.socket)
        try:
            super().parse_request()
        finally:
            watchdog.disarm(handle)
        if self.ready and any(b"\r" in v or b"\n" in v or b"\x00" in v for v in self.inheaders.values()):
            self.ready = False
            self.close_connection = True
            self.simple_response("400 Bad Request", "A header value holds CR, LF or NUL.")


class GuardedConnection(FastConnection):
    RequestHandlerClass = HeadDeadlineRequest

    def __init__(self, server, sock, makefile=None):
        if makefile is None:
            super().__init__(server, sock)
        else:
            super().__init__(server, sock, makefile)
        self._tls_ready = not isinstance(sock, ssl.SSLSocket)

    def communicate(self):
        limits: Limits = self.server.balupi_limits
        address = getattr(self, "remote_addr", None) or ""
        if not self._tls_ready and not self._handshake(limits):
            return False
        if not limits.clients.enter(address):
            try:
                self.wfile.write(BUSY_RESPONSE)
                self.wfile.flush()
            except OSError:
                pass
            return False
        try:
            return super().communicate()
        finally:
            limits.clients.leave(address)

    def _handshake(self, limits: Limits) -> bool:
        handle = limits.watchdog.arm(self.socket)
        try:
            self.socket.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", getattr(self, "remote_addr", "?"), exc)
            return False
        finally:
            limits.watchdog.disarm(handle)
        self._tls_ready = True
        return True
