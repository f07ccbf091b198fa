"""The HTTP server: cheroot serving BaluPi's WSGI tree, with a clean shutdown on SIGTERM/SIGINT.

Shutdown order: release requests waiting for the NAS to wake (they answer 503 at once), stop
accepting and let in-flight requests finish (cheroot's shutdown_timeout), then stop background
work (scheduler jobs finish or are abandoned safely), then close the database.

Limits (`balupi.limits`): requests in progress per client address, a deadline for the request head,
the head's size, the socket timeout. HTTPS (`balupi.tls`) when `tls_cert` and `tls_key` are set.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import re
import selectors
import signal
import socket
import threading
import time

from cheroot import wsgi

from balupi import jobs
from balupi.app import BaluPi
from balupi.errors import ConfigError
from balupi.httpio import HotGate, SendfileGateway
from balupi.limits import (KEEP_ALIVE_CONNECTIONS, LISTEN_BACKLOG, GuardedConnection, Limits,
                           raise_descriptor_limit)
from balupi.sdnotify import Notifier, Watchdog
from balupi.tls import server_adapter
from balupi.websec import DAV_PREFIX

log = logging.getLogger("balupi.server")

SHUTDOWN_TIMEOUT_S = 5
M_ARENA_MAX = -8  # glibc mallopt parameter
MALLOC_ARENAS = 1  # decision 176 (was 2, decision 22)
TRIM_AFTER_BYTES = 8 << 20  # a request or answer this large: hand freed memory back at once (decision 177)
HEARTBEAT_MAX_S = 5.0  # the scheduler's heartbeat job runs this often (or at each watchdog interval if shorter)


class HeadGatedServer(wsgi.Server):
    """cheroot's server, handing a connection to a worker only once its request head is here
    (`balupi.limits.HeadGate`); until then it waits in the connection manager's selector.

    `balupi_hot_path`: plain GETs and HEADs skip cheroot's request parser (`balupi.httpio.FastConnection`);
    False sends every request through cheroot (tests compare the two). `balupi_hot_answers` counts them."""

    balupi_hot_path = True
    balupi_hot_answers = 0

    @property
    def can_add_keepalive_connection(self):
        # cheroot counts the open connections under its selector's lock at every answer; under a
        # CPU quota that lock, held by a stopped thread, stalls every worker. The length of the
        # selector's map read without it (one dict length, atomic) is as good for a limit.
        try:
            count = len(self._connections._selector._selector.get_map()) - 1  # less the listening socket
        except (AttributeError, TypeError):  # another cheroot: its own count
            return super().can_add_keepalive_connection
        return self.ready and count < self.keep_alive_conn_limit

    def process_conn(self, conn):
        gate = self.balupi_limits.heads
        if gate.ready(conn, self.max_request_header_size or 1 << 20):
            super().process_conn(conn)
        elif not self.ready or not gate.admit(conn):
            conn.close()
        else:
            try:  # back to the selector: it calls process_conn again when more bytes arrive
                self._connections._selector.register(conn.socket.fileno(), selectors.EVENT_READ, data=conn)
            except (OSError, ValueError, KeyError):
                gate.forget(conn)
                conn.close()


class Server:
    """BaluPi behind cheroot. `start()` returns once the socket listens; `stop()` shuts all down."""

    def __init__(self, app: BaluPi):
        self.app = app
        s = app.settings
        self.httpd = HeadGatedServer(
            (s.host, s.port),
            app.wsgi,
            numthreads=s.server_threads,
            server_name="balupi",
            timeout=s.http_timeout_s,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        self.httpd.request_queue_size = LISTEN_BACKLOG  # read by prepare()'s listen()
        self.httpd.keep_alive_conn_limit = KEEP_ALIVE_CONNECTIONS
        self.httpd.ConnectionClass = GuardedConnection
        self.httpd.max_request_header_size = s.http_max_header_kib * 1024
        self.limits = self.httpd.balupi_limits = Limits(s.http_max_requests_per_client, s.http_header_timeout_s)
        self.tls = bool(s.tls_cert and s.tls_key)
        if self.tls:
            self.httpd.ssl_adapter = server_adapter(s.tls_cert, s.tls_key)
        self.httpd.gateway = SendfileGateway
        # plain WebDAV GETs' answers computed one at a time (decision 210)
        self.httpd.balupi_hot_gate = HotGate(prefix=DAV_PREFIX + "/")
        self.httpd.balupi_metrics = app.metrics  # the gateway times each request for /metrics
        self.httpd.balupi_after_request = self.after_request
        self.httpd.balupi_after_turn = self.after_turn
        self._trim_due = False  # a large body was answered since the last trim
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.notifier = Notifier()
        self.heartbeat_s = min(HEARTBEAT_MAX_S, self.notifier.watchdog_interval_s or HEARTBEAT_MAX_S)
        self._heartbeat_at: float | None = None
        self.watchdog = Watchdog(self.notifier, self.healthy)
        self.announcer = None  # balupi.announce.Announcer, when dnssd_enabled

    def after_request(self, body_bytes: int) -> None:
        """Called by a worker after each request (`httpio.SendfileGateway`): a large body (a PUT's
        or a checked file's 1 MiB blocks) leaves freed heap that goes back to the system when the
        worker is done with the connection, not at the next 10 s `release_free_memory`."""
        if body_bytes >= TRIM_AFTER_BYTES:
            self._trim_due = True

    def after_turn(self) -> None:
        """Called by a worker when it is done with a connection for now (`limits.GuardedConnection`)
        and goes back to waiting: it hands its database connection back, since 32 idle workers
        keeping one each cost 5 MB (decision 175); then, after a large body, the heap is trimmed
        (decision 177: a trim walks the heap, 0.3-1.3 ms here, little beside an 8 MiB body)."""
        self.app.db.release_thread()
        if self._trim_due:
            self._trim_due = False
            release_free_memory()

    def release_memory(self) -> None:
        """Scheduled (memory-trim): close the idle database connections a burst of requests left,
        then hand the freed heap back to the system."""
        self.app.db.retire_idle()
        release_free_memory()

    def heartbeat(self) -> None:
        """Scheduled: proves to the watchdog that the scheduler runs its jobs."""
        self._heartbeat_at = time.monotonic()

    def healthy(self) -> bool:
        """For systemd's watchdog: the HTTP server's thread runs and accepts a connection, and the
        scheduler ran its heartbeat recently. (Busy workers waiting for a NAS are healthy.)"""
        if self._stopped.is_set() or self._thread is None or not self._thread.is_alive() or not self.httpd.ready:
            return False
        beat = self._heartbeat_at
        if beat is None or time.monotonic() - beat > 3 * self.heartbeat_s + 1:
            return False
        host = self.httpd.bind_addr[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
        try:
            with socket.create_connection((host, self.port), timeout=2):
                return True
        except OSError:
            return False

    @property
    def port(self) -> int:
        return self.httpd.bind_addr[1]

    @property
    def url(self) -> str:
        host = self.httpd.bind_addr[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> None:
        raise_descriptor_limit(self.app.settings)
        jobs.schedule(self.app.scheduler, jobs.server_jobs(self))
        try:
            self.httpd.prepare()  # binds; with port 0 the real port is in bind_addr afterwards
        except OSError as exc:  # port taken, or an address this machine does not have
            self.app.db.close()
            reason = re.search(r"\[Errno \d+\] ([^)]+)", str(exc))
            host, port = self.app.settings.host, self.app.settings.port
            if exc.errno == errno.EADDRINUSE or "Address already in use" in str(exc):
                raise ConfigError(f"BALUPI_HOST/BALUPI_PORT: {listen_problem(host, port) or f'port {port} is already in use'}") from None
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
        if self.app.settings.dnssd_enabled:
            from balupi.announce import Announcer

            self.announcer = Announcer(self.app.settings.dnssd_name, host, self.port, self.tls)
            self.announcer.start()
        self.notifier.ready(f"listening on {where}")
        self.watchdog.start()

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("shutting down")
        self.notifier.stopping()
        self.watchdog.stop()
        if self.announcer is not None:
            self.announcer.stop()
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


def listen_problem(host: str, port: int) -> str | None:
    """Why BaluPi could not listen on host:port, in words ("port 8000 is already in use"), or None.
    Asked before the database is opened, so a second BaluPi changes nothing (cheroot sets
    SO_REUSEADDR too, so a port in TIME_WAIT is not in use)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"port {port} is already in use on {host} (another BaluPi, or another program: "
                        f"`ss -ltnp 'sport = :{port}'` shows which); stop it or set BALUPI_PORT to another port")
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this machine"
            if exc.errno == errno.EACCES:
                return f"port {port} needs root (ports below 1024); use a port from 1024 up"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def tune_malloc() -> None:
    """Keep the heap small on the Pi (1 GB): glibc gives each of cheroot's threads its own malloc
    arena by default; one arena holds far less memory for the same work (decision 176: two held
    2-4 MB more after the WebDAV benchmark, the second one's free blocks kept by its own threads;
    the GIL already keeps threads from allocating at once, so one arena's lock costs nothing
    measurable). (A fixed mmap threshold was tried too: it returns 1 MiB body blocks to the system
    at once, but the page faults that follow cost more than half of the GET throughput.)"""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc
    libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)


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
