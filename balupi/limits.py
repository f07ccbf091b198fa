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
import resource
import socket
import ssl
import threading
import time
from collections import Counter

from cheroot.server import HTTPRequest

from balupi.httpio import FastConnection, http_date_now
from balupi.nas.waiters import nas_waiters

log = logging.getLogger("balupi.limits")

WATCHDOG_INTERVAL_S = 0.5

# -- the descriptor budget (docs/reliability.md, "Descriptor budget") --------------------------------
DESCRIPTOR_LIMIT = 4096  # LimitNOFILE in etc/balupi.service; BaluPi raises its soft limit to it at start
LISTEN_BACKLOG = 128  # connections the kernel queues before cheroot accepts them (cheroot's default: 5)
KEEP_ALIVE_CONNECTIONS = 128  # idle keep-alive connections kept open (cheroot's default: 10)
PENDING_HEADS_PER_ADDRESS = 16  # connections of one address still sending their request head
PENDING_HEADS_TOTAL = 128  # ... of all addresses; these wait in the selector, not on a worker
FIXED_DESCRIPTORS = 20  # stdio, the listening socket, the selector, SQLite's shared memory, logs
CONTENT_DIR_DESCRIPTORS = 2 + 256  # balupi.cache.store: data/, tmp/ and the 256 data/<xx>/ directories
JOB_THREADS = 16  # scheduled jobs (at most one run of each at a time) plus the waker and watchdog
PER_THREAD_DESCRIPTORS = 4  # SQLite database and WAL files, a keep-alive socket to the NAS, spare


def descriptor_budget(settings) -> int:
    """The most descriptors BaluPi holds with these settings (each term is bounded in code)."""
    threads = settings.server_threads
    downloads = nas_waiters(threads)  # balupi.cache.downloads.Downloads caps downloads at this
    thread_count = threads + JOB_THREADS + downloads
    client_sockets = threads + KEEP_ALIVE_CONNECTIONS + PENDING_HEADS_TOTAL
    open_files = threads + downloads  # a content file per response being sent, a temp file per download
    return (FIXED_DESCRIPTORS + CONTENT_DIR_DESCRIPTORS + thread_count * PER_THREAD_DESCRIPTORS
            + client_sockets + open_files)


def raise_descriptor_limit(settings) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards DESCRIPTOR_LIMIT (as far as the hard limit allows);
    warn when it stays below the budget. Returns (soft limit, budget)."""
    budget = descriptor_budget(settings)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = DESCRIPTOR_LIMIT if hard == resource.RLIM_INFINITY else min(DESCRIPTOR_LIMIT, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < budget:
        log.warning("open file limit %d is below BaluPi's descriptor budget of %d (LimitNOFILE=%d in the unit)",
                    soft, budget, DESCRIPTOR_LIMIT)
    return soft, budget
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


class HeadGate:
    """Connections still sending their request head wait in cheroot's selector, not on a worker.

    cheroot hands a connection to a worker thread as soon as one byte can be read; the worker then
    blocks reading the rest of the head, so 80 slow connections held all 32 workers. Here
    `HeadGatedServer.process_conn` first reads what the socket holds without waiting
    (`SocketReader.head_ready`): a whole head goes to a worker, anything less goes back to the
    selector, which hands it over again when more arrives. Such connections are capped per address
    (`PENDING_HEADS_PER_ADDRESS`) and in total (`PENDING_HEADS_TOTAL`); one more is closed at once.
    Each has the head deadline of `HeadWatchdog`. TLS connections are not gated (their bytes are
    encrypted until a worker decrypts them): for them the per-client cap and the deadline hold.

    Lock order: `HeadGate._lock` before `HeadWatchdog._lock`.
    """

    def __init__(self, watchdog: HeadWatchdog, per_address: int = PENDING_HEADS_PER_ADDRESS,
                 total: int = PENDING_HEADS_TOTAL):
        self.watchdog = watchdog
        self.per_address, self.total = per_address, total
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[object, str, int]] = {}  # id(conn) -> (conn, address, watchdog handle)
        self._by_address: Counter[str] = Counter()
        self.refused = 0
        self._refusing = False

    def ready(self, conn, max_bytes: int) -> bool:
        """True: give `conn` to a worker (its head is here, or it is TLS, or it ended)."""
        rfile = conn.rfile
        head_ready = getattr(rfile, "head_ready", None)
        if head_ready is None or head_ready(max_bytes):
            self.forget(conn)
            return True
        return False

    def admit(self, conn) -> bool:
        """Let `conn` wait for the rest of its head; False when its address or everyone is at the cap."""
        key = id(conn)
        address = getattr(conn, "remote_addr", None) or ""
        with self._lock:
            if key in self._pending:
                return True
            if self._by_address[address] >= self.per_address or len(self._pending) >= self.total:
                self._purge_closed()
            if self._by_address[address] < self.per_address and len(self._pending) < self.total:
                self._pending[key] = (conn, address, self.watchdog.arm(conn.socket))
                self._by_address[address] += 1
                if len(self._pending) < self.total // 2:
                    self._refusing = False  # the episode is over: log the next refusal again
                return True
            self.refused += 1
            first, self._refusing = not self._refusing, True
            waiting = self._by_address[address]
        if first:  # once per episode, not per connection
            log.warning("closing connections that do not send their request head: %s has %d waiting, %d in all "
                        "(caps %d and %d)", address, waiting, len(self._pending), self.per_address, self.total)
        return False

    def pending(self, address: str | None = None) -> int:
        with self._lock:
            return len(self._pending) if address is None else self._by_address.get(address, 0)

    def forget(self, conn) -> None:
        with self._lock:
            found = self._pending.pop(id(conn), None)
            if found is not None:
                self._release(found)
        if found is not None:
            self.watchdog.disarm(found[2])

    def _release(self, found) -> None:  # with _lock held
        address = found[1]
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]

    def _purge_closed(self) -> None:  # with _lock held: entries whose socket cheroot closed meanwhile
        for key, found in list(self._pending.items()):
            sock = getattr(found[0], "socket", None)
            if sock is None or sock.fileno() < 0:
                del self._pending[key]
                self._release(found)
                self.watchdog.disarm(found[2])


class Limits:
    """What `GuardedConnection` needs from the server (set as `server.balupi_limits`)."""

    def __init__(self, max_per_client: int, header_timeout_s: float):
        self.clients = ClientLimiter(max_per_client)
        self.watchdog = HeadWatchdog(header_timeout_s)
        self.heads = HeadGate(self.watchdog)


class HeadDeadlineRequest(HTTPRequest):
    """cheroot's request, its head read under the deadline; header values with CR, LF or NUL are 400
    (RFC 9110 5.5; cheroot passes them on)."""

    def send_headers(self):
        # cheroot formats the Date header with email.utils for every answer (3% of a 4 KiB GET);
        # it adds its own only when the answer has none.
        if not any(name.lower() == b"date" for name, _ in self.outheaders):
            self.outheaders.append((b"Date", http_date_now().encode("ascii")))
        super().send_headers()

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
            after_turn = getattr(self.server, "balupi_after_turn", None)
            if after_turn is not None:  # the worker goes back to waiting: it hands back what it held
                after_turn()

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
