"""The HTTP server: cheroot serving BaluPi's WSGI tree, with a clean shutdown on SIGTERM/SIGINT.

Shutdown order: release requests waiting for the NAS to wake (they answer 503 at once), stop
accepting and let in-flight requests finish (cheroot's shutdown_timeout), then stop background
work (scheduler jobs finish or are abandoned safely), then close the database.

Limits (`balupi.limits`): requests in progress per client address, a deadline for the request head,
the head's size, the socket timeout. HTTPS (`balupi.tls`) when `tls_cert` and `tls_key` are set.
"""

from __future__ import annotations

import ctypes
import logging
import re
import signal
import threading

from cheroot import wsgi

from balupi.app import BaluPi
from balupi.errors import ConfigError
from balupi.httpio import SendfileGateway
from balupi.limits import GuardedConnection, Limits
from balupi.tls import server_adapter

log = logging.getLogger("balupi.server")

SHUTDOWN_TIMEOUT_S = 5
M_ARENA_MAX = -8  # glibc mallopt parameter
MEMORY_TRIM_INTERVAL_S = 10.0


class Server:
    """BaluPi behind cheroot. `start()` returns once the socket listens; `stop()` shuts all down."""

    def __init__(self, app: BaluPi):
        self.app = app
        s = app.settings
        self.httpd = wsgi.Server(
            (s.host, s.port),
            app.wsgi,
            numthreads=s.server_threads,
            server_name="balupi",
            timeout=s.http_timeout_s,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        self.httpd.ConnectionClass = GuardedConnection
        self.httpd.max_request_header_size = s.http_max_header_kib * 1024
        self.limits = self.httpd.balupi_limits = Limits(s.http_max_requests_per_client, s.http_header_timeout_s)
        self.tls = bool(s.tls_cert and s.tls_key)
        if self.tls:
            self.httpd.ssl_adapter = server_adapter(s.tls_cert, s.tls_key)
        self.httpd.gateway = SendfileGateway
        self.httpd.balupi_metrics = app.metrics  # the gateway times each request for /metrics
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        return self.httpd.bind_addr[1]

    @property
    def url(self) -> str:
        host = self.httpd.bind_addr[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> None:
        self.app.scheduler.every(MEMORY_TRIM_INTERVAL_S, "memory-trim", release_free_memory)
        try:
            self.httpd.prepare()  # binds; with port 0 the real port is in bind_addr afterwards
        except OSError as exc:  # port taken, or an address this machine does not have
            self.app.db.close()
            reason = re.search(r"\[Errno \d+\] ([^)]+)", str(exc))
            host, port = self.app.settings.host, self.app.settings.port
            raise ConfigError(
                f"BALUPI_HOST/BALUPI_PORT: cannot listen on {host}:{port}: {reason.group(1) if reason else exc}"
            ) from None
        self.app.start()
        self.limits.watchdog.start()
        self._thread = threading.Thread(target=self.httpd.serve, name="balupi-http", daemon=True)
        self._thread.start()
        host = self.httpd.bind_addr[0]
        where = f"port {self.port} on every interface" if host in ("0.0.0.0", "::", "") else f"{host}:{self.port}"
        log.info("listening on %s (WebDAV at /dav/, API at /api/)", where)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("shutting down")
        self.app.nas.stop()  # requests waiting for the NAS to wake get 503 now, not at their deadline
        self.httpd.stop()
        self.limits.watchdog.stop()
        if self._thread is not None:
            self._thread.join(SHUTDOWN_TIMEOUT_S + 5)
        self.app.stop()

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def tune_malloc() -> None:
    """Keep the heap small on the Pi (1 GB): glibc gives each of cheroot's threads its own malloc
    arena by default; two arenas hold far less memory for the same work. (A fixed mmap threshold
    was tried too: it returns 1 MiB body blocks to the system at once, but the page faults that
    follow cost more than half of the GET throughput.)"""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc
    libc.mallopt(M_ARENA_MAX, 2)


def release_free_memory() -> None:
    """Scheduled: hand memory freed after a burst (a large PROPFIND answer, many PUTs) back to the
    system; glibc keeps it in its arenas otherwise, and the Pi has 1 GB for everything."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


def serve_forever(app: BaluPi) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly."""
    server = Server(app)
    stop_requested = threading.Event()

    def on_signal(signum, _frame):
        log.info("received %s", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    try:
        while not stop_requested.wait(1.0):
            pass
    finally:
        server.stop()
