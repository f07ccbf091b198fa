"""Faster socket files for cheroot (plain TCP only).

cheroot reads requests and writes responses through `cheroot.makefile`, which is built on `_pyio`,
the pure-Python io module, on purpose. Profiling 4 KiB GETs shows that module's `readline` and
buffered writer among the largest costs of a request, and the writer copies every body block twice
(into a bytearray, then to bytes). Here:

- `SocketReader` keeps one bytes buffer and finds line ends with `bytes.find` (C speed);
- `SocketWriter` sends each block as it is, except that a short head (the status line and headers)
  is held back and sent together with the first body block, so a small response is one `send`
  instead of two. `FastConnection.communicate` sends anything held back when a request ends.

- `FileSpan` lets a WSGI app hand a range of an open file to the socket: it is a `bytes` (cheroot
  insists on bytes) whose length is the span's, and `SocketWriter` sends it with `sendfile(2)`, so
  file bodies go from the page cache to the socket without passing through Python (a quarter of
  the CPU per GB served). `SendfileGateway` tells the app, per request, whether the connection can
  take spans (`environ["balupi.sendfile"]`).

cheroot's own classes are used unchanged for TLS connections (their makefile comes from the SSL
adapter), and there the app sends ordinary blocks. The interface is what cheroot uses of its stream classes: `read`, `readline`,
`readlines`, iteration, `has_data`, `bytes_read`, `write`, `flush`, `close`, `bytes_written`.
"""

from __future__ import annotations

import logging
import re
import select
import socket
import sys
import threading
import time
from email.utils import formatdate
from urllib.parse import unquote_to_bytes

from cheroot import errors as cheroot_errors
from cheroot.makefile import MakeFile
from cheroot.server import HTTPConnection, KnownLengthRFile
from cheroot.wsgi import Gateway_10

from balupi.answermemo import MEMO_KEY, AnswerMemo

RECV_BYTES = 64 * 1024
FOLLOW_UP_WAIT_S = 0.002
MAX_REQUESTS_PER_TURN = 100  # then back to the selector, so one busy client cannot pin a worker
HOLD_BACK_MAX_BYTES = 16 * 1024
HOT_GATE_SLOTS = 1  # hot-path answers computed at once (decision 210)
HOT_GATE_WAIT_S = 1.0  # a worker waits this long for a slot, then answers without one


_http_date: tuple[int, str] = (0, "")  # (second, its Date header value): one formatting a second


def http_date_now() -> str:
    """The Date header's value for now (formatted once a second; cheroot formats it per answer)."""
    global _http_date
    now = int(time.time())
    second, text = _http_date
    if second != now:
        text = formatdate(now, usegmt=True)
        _http_date = (now, text)  # one assignment: another thread sees the old pair or the new one
    return text


class SocketReader:
    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._buf = b""
        self._pos = 0
        self.bytes_read = 0
        self.closed = False

    def _fill(self) -> bool:
        data = self._sock.recv(RECV_BYTES)
        if not data:
            return False
        if self._pos < len(self._buf):
            self._buf = self._buf[self._pos:] + data
        else:
            self._buf = data
        self._pos = 0
        return True

    def has_data(self) -> bool:
        return self._pos < len(self._buf)

    def head_ready(self, max_bytes: int, readable: bool = False) -> bool:
        """Whether a whole request head (or more than `max_bytes`, or the end of the stream) is here,
        reading what the socket already holds without waiting. For the head gate (`balupi.limits`).
        `readable`: the caller has just seen the socket readable (one poll less)."""
        for _ in range(4):
            if self._head_in_buffer(max_bytes):
                return True
            # (recv with MSG_DONTWAIT is no use here: Python retries EAGAIN for up to the socket timeout)
            if not readable and not readable_within(self._sock, 0):
                return False
            readable = False
            try:
                data = self._sock.recv(RECV_BYTES)
            except OSError:
                return True  # the worker meets the error and closes the connection
            if not data:
                return True  # end of stream: the worker closes the connection
            self._buf = self._buf[self._pos:] + data
            self._pos = 0
        return self._head_in_buffer(max_bytes)

    def _head_in_buffer(self, max_bytes: int) -> bool:
        pending = len(self._buf) - self._pos
        if pending == 0:
            return False
        if pending > max_bytes:
            return True  # too large: the worker answers 413/414
        start = self._pos
        while self._buf.startswith(b"\r\n", start) or self._buf.startswith(b"\n", start):
            start += 2 if self._buf[start] == 13 else 1  # empty lines before a request line (RFC 9112 2.2)
        return self._buf.find(b"\r\n\r\n", start) >= 0 or self._buf.find(b"\n\n", start) >= 0

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None or size < 0 else size
        while True:
            end = self._buf.find(b"\n", self._pos)
            available = len(self._buf) - self._pos
            if end >= 0 and (limit < 0 or end - self._pos < limit):
                line = self._buf[self._pos:end + 1]
                break
            if limit >= 0 and available >= limit:
                line = self._buf[self._pos:self._pos + limit]
                break
            if not self._fill():
                line = self._buf[self._pos:]
                break
        self._pos += len(line)
        self.bytes_read += len(line)
        return line

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            chunks = [self._buf[self._pos:]]
            self._buf, self._pos = b"", 0
            while True:
                data = self._sock.recv(RECV_BYTES)
                if not data:
                    break
                chunks.append(data)
            out = b"".join(chunks)
        else:
            # All `size` bytes unless the peer closes first, as cheroot's own reader (a buffered
            # reader) answers: its chunked-body reader takes one read(n) as a whole chunk.
            parts, got = [], 0
            while got < size:
                want = size - got
                available = len(self._buf) - self._pos
                if available == 0 and want >= RECV_BYTES:
                    data = self._sock.recv(want)  # large body reads go straight to the socket
                    if not data:
                        break
                else:
                    if available == 0 and not self._fill():
                        break
                    n = min(want, len(self._buf) - self._pos)
                    data = self._buf[self._pos:self._pos + n]
                    self._pos += n
                parts.append(data)
                got += len(data)
            out = parts[0] if len(parts) == 1 else b"".join(parts)
        self.bytes_read += len(out)
        return out

    def readinto(self, buffer) -> int:
        """Up to len(buffer) bytes into `buffer` (what is buffered, else one recv_into straight from
        the socket); 0 at the end of the stream. A large PUT's body lands in the upload writer's
        own buffer this way, without a bytes object per piece (decision 220)."""
        view = memoryview(buffer)
        available = len(self._buf) - self._pos
        if available:
            n = min(available, len(view))
            view[:n] = memoryview(self._buf)[self._pos:self._pos + n]
            self._pos += n
        else:
            n = self._sock.recv_into(view)
        self.bytes_read += n
        return n

    def readlines(self, hint: int = 0) -> list[bytes]:
        lines, total = [], 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        self.closed = True


class HotGate:
    """At most `slots` workers compute hot-path answers (`FastConnection._answer_hot`) at once.

    Under a CPU quota every system call of a request hands the GIL to another runnable worker: with
    16 keep-alive clients each on its own worker that is a futex wake and a context switch per call,
    paid in the quota with cold caches (40 switches per 4 KiB GET at a tenth of a core against 6
    unthrottled). Workers waiting here sleep on a lock instead of contending for the GIL.

    A slot covers computing the answer, not sending it: it is given up before the first body block
    goes to the socket (the head is held back until then), so a client that reads slowly holds
    none. Nor is it held while the request waits for the NAS: a request that starts depending on
    the NAS gives its slot up (`step_aside`, called by `NasWaiters.enter`), so a cached GET never
    waits behind a waking NAS (decisions 2 and 42). For anything else that blocks while holding a
    slot (a database lock), a worker waits at most `wait_s` and then answers without a slot
    (`bypassed` counts those). Only plain GETs and HEADs under `prefix` pass the gate: the server
    gives it WebDAV's, since an API read may call the NAS or a plug without stepping aside (the NAS
    status reads the NAS's version once while it is awake).
    """

    def __init__(self, slots: int = HOT_GATE_SLOTS, wait_s: float = HOT_GATE_WAIT_S, prefix: str = ""):
        self.slots, self.wait_s = slots, wait_s
        self.prefix = prefix  # only requests whose path starts so pass the gate ("": all)
        # A plain lock for one slot (all C, no Python-level condition as in threading.Semaphore)
        self._free = threading.Lock() if slots == 1 else threading.Semaphore(slots)
        self.bypassed = 0

    def enter(self) -> None:
        if self._free.acquire(True, self.wait_s):
            _gate_held.gate = self
        else:
            self.bypassed += 1

    def leave(self) -> None:
        """Give this thread's slot back (nothing when it holds none)."""
        if getattr(_gate_held, "gate", None) is self:
            _gate_held.gate = None
            self._free.release()


_gate_held = threading.local()  # .gate: the HotGate whose slot this thread holds


def step_aside() -> None:
    """The current request is about to wait for something other than the CPU (the NAS): give its
    hot-gate slot, if it holds one, to another worker."""
    gate = getattr(_gate_held, "gate", None)
    if gate is not None:
        gate.leave()


def readable_within(sock: socket.socket, timeout_s: float) -> bool:
    """Whether `sock` has bytes (or its end) to read within `timeout_s` (poll: no FD_SETSIZE limit)."""
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(timeout_s * 1000))
    except (OSError, ValueError):
        return True  # let the reader meet the error


class FileSpan(bytes):
    """`count` bytes of the open file `file` from `offset`, to be sent with sendfile(2).

    Its content as bytes is empty; its length is `count`, which is what cheroot accounts with.
    Only for connections whose environ says `balupi.sendfile`.
    """

    def __new__(cls, file, offset: int, count: int) -> "FileSpan":
        span = super().__new__(cls)
        span.file, span.offset, span.count = file, offset, count
        return span

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0


class SocketWriter:
    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._held = b""
        self.bytes_written = 0
        self.closed = False

    def write(self, data) -> int:
        n = len(data)
        if type(data) is FileSpan:
            self.flush()
            sent = self._sock.sendfile(data.file, data.offset, data.count)
            if sent != data.count:
                raise OSError(f"sendfile sent {sent} of {data.count} bytes (file shorter than announced)")
            self.bytes_written += sent
            return sent
        if not self._held and n <= HOLD_BACK_MAX_BYTES and bytes(data[:5]) == b"HTTP/" and bytes(data[9:10]) != b"1":
            self._held = bytes(data)  # a response head: wait for the first body block
        elif self._held:
            held, self._held = self._held, b""
            self._sock.sendall(held + bytes(data) if n <= HOLD_BACK_MAX_BYTES * 4 else held)
            if n > HOLD_BACK_MAX_BYTES * 4:
                self._sock.sendall(data)
        else:
            self._sock.sendall(data)
        self.bytes_written += n
        return n

    def flush(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            self._sock.sendall(held)

    def close(self) -> None:
        try:
            self.flush()
        except OSError:
            pass
        self.closed = True


def fast_makefile(sock, mode="r", bufsize=None):
    return SocketReader(sock) if "r" in mode else SocketWriter(sock)


HOT_METHODS = {b"GET": "GET", b"HEAD": "HEAD"}
HOT_PROTOCOLS = {b"HTTP/1.1": "HTTP/1.1", b"HTTP/1.0": "HTTP/1.0"}
_HEADER_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # a token (RFC 9110 5.1); no space before the colon
# A target the hot path leaves to cheroot: bytes outside visible ASCII (cheroot refuses them), a
# fragment, or an encoded slash (cheroot keeps "%2F" encoded while decoding the rest).
_TARGET_LEFT_TO_CHEROOT = re.compile(rb"[^\x21-\x7e]|#|%2[fF]")
log = logging.getLogger("balupi.httpio")


def parse_hot_head(buf: bytes, pos: int, max_bytes: int) -> tuple[dict, int, bool] | None:
    """The request head at `buf[pos:]` as (WSGI environ entries, the head's end, HTTP/1.1?), when
    it is a whole plain GET or HEAD that `FastConnection` answers without cheroot's parser; else None.

    Plain means: request line `GET|HEAD <origin-form target> HTTP/1.1|HTTP/1.0`, only CRLF line
    ends, no NUL, no obs-fold, every header name a token and given once (once as cheroot's environ
    names it: `X-A` and `X_A` count as the same), no body (no Transfer-Encoding, no Expect, no
    Content-Length other than 0), the whole head within `max_bytes`. Anything else (and every
    smuggling attempt: CL with TE, two Content-Lengths, whitespace before a colon) is cheroot's to
    answer, as it always was. The environ entries are the ones cheroot's WSGI gateway would make.
    """
    end = buf.find(b"\r\n\r\n", pos)
    if end < 0 or end + 4 - pos > max_bytes:
        return None
    head = buf[pos:end]
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf or head.count(b"\r") != crlf or b"\x00" in head:
        return None
    lines = head.split(b"\r\n")
    request_line = lines[0].split(b" ")
    if len(request_line) != 3:
        return None
    method_b, target, protocol_b = request_line
    method = HOT_METHODS.get(method_b)
    protocol = HOT_PROTOCOLS.get(protocol_b)
    if method is None or protocol is None or target[:1] != b"/" or target[:2] == b"//" \
            or _TARGET_LEFT_TO_CHEROOT.search(target):
        return None
    path, _, query = target.partition(b"?")
    environ = {
        "REQUEST_METHOD": method,
        "SERVER_PROTOCOL": protocol,
        "PATH_INFO": unquote_to_bytes(path).decode("iso-8859-1"),
        "QUERY_STRING": query.decode("ascii"),
        "REQUEST_URI": target.decode("ascii"),
    }
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _HEADER_NAME.match(name):
            return None
        key = "HTTP_" + name.decode("ascii").upper().replace("-", "_")
        if key in environ:
            return None
        environ[key] = value.strip().decode("iso-8859-1")
    if "HTTP_TRANSFER_ENCODING" in environ or "HTTP_EXPECT" in environ:
        return None
    length = environ.pop("HTTP_CONTENT_LENGTH", None)
    if length is not None:
        if length != "0":
            return None
        environ["CONTENT_LENGTH"] = length
    content_type = environ.pop("HTTP_CONTENT_TYPE", None)
    if content_type is not None:
        environ["CONTENT_TYPE"] = content_type
    return environ, end + 4, protocol == "HTTP/1.1"


class _HotAnswer:
    """The WSGI `start_response` and the response head of one hot-path request: what cheroot's
    gateway and `HTTPRequest.send_headers` do, for this one case."""

    __slots__ = ("conn", "head_request", "http11", "close", "status", "headers", "left", "chunked", "sent",
                 "head_lines", "date_at")

    def __init__(self, conn: "FastConnection", head_request: bool, http11: bool, close: bool):
        self.conn = conn
        self.head_request = head_request
        self.http11 = http11
        self.close = close
        self.status: str | None = None
        self.headers: list = []
        self.left: int | None = None  # body bytes still to send, when the answer declared its length
        self.chunked = False
        self.sent = False
        self.head_lines: list[str] = []
        self.date_at: int | None = None  # where in `head_lines` the Date header this answer added is

    def start_response(self, status, headers, exc_info=None):
        if self.status is not None and not exc_info:
            raise RuntimeError("WSGI start_response called a second time with no exc_info.")
        if self.sent and exc_info:
            raise exc_info[1]
        if type(status) is not str:
            raise TypeError("WSGI response status is not of type str.")
        left = None
        for name, value in headers:
            if type(name) is not str or type(value) is not str:
                raise TypeError(f"WSGI response header {name!r}: {value!r} is not of type str.")
            lower = name.lower()
            if lower == "content-length":
                left = int(value)
            elif lower == "connection" and value.strip().lower() == "close":
                self.close = True  # as SendfileGateway: do not read an unread body first
        self.status, self.headers, self.left = status, list(headers), left
        return self.write

    def send_head(self) -> None:
        self.sent = True
        status, headers = self.status, self.headers
        code = int(status[:3])
        names = {name.lower() for name, _ in headers}
        server = self.conn.server
        if "date" not in names:  # first, where `limits.HeadDeadlineRequest` puts it on cheroot's path
            self.date_at = len(headers) + 1  # (the status line comes first)
            headers.append(("Date", http_date_now()))
        if code == 413:
            self.close = True
        elif "content-length" not in names and code >= 200 and code not in (204, 205, 304):
            if self.http11 and not self.head_request:
                self.chunked = True
                headers.append(("Transfer-Encoding", "chunked"))
            else:
                self.close = True  # the end of the connection is the end of the body
        if not self.close:
            self.close = not server.can_add_keepalive_connection
        if "connection" not in names:
            if self.http11:
                if self.close:
                    headers.append(("Connection", "close"))
            elif not self.close:
                headers.append(("Connection", "Keep-Alive"))
        if ("Connection", "Keep-Alive") in headers:
            headers.append(("Keep-Alive", f"timeout={server.timeout}"))
        if "server" not in names:
            headers.append(("Server", server.server_name))
        lines = [f"{server.protocol} {status}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        lines.append("\r\n")
        self.head_lines = lines
        self.conn.wfile.write("".join(lines).encode("iso-8859-1"))

    def write(self, chunk) -> None:
        if self.status is None:
            raise RuntimeError("WSGI write called before start_response.")
        if not self.sent:
            self.send_head()
        step_aside()  # the answer is computed; sending it (system calls, a slow reader) needs no slot
        left = self.left
        too_long = left is not None and len(chunk) > left
        if too_long:
            chunk = chunk[:left]  # the client gets what was announced; the connection then closes
        if self.chunked:
            self.conn.wfile.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            self.conn.wfile.write(chunk)
        if left is not None:
            self.left = left - len(chunk)
        if too_long:
            raise ValueError("Response body exceeds the declared Content-Length.")


class FastConnection(HTTPConnection):
    """cheroot's connection with `SocketReader`/`SocketWriter` on plain TCP sockets, answering plain
    GETs and HEADs without cheroot's request parser (`parse_hot_head`, `_answer_hot`)."""

    def __init__(self, server, sock, makefile=MakeFile):
        super().__init__(server, sock, fast_makefile if makefile is MakeFile else makefile)
        self._environ_base: dict | None = None
        self._memo: _KeptAnswer | None = None  # this connection's last replayable answer (decision 230)

    def communicate(self):
        """Answer this connection's request, and the next ones if they follow at once.

        cheroot hands a keep-alive connection back to its selector thread after every request, and
        a worker picks it up again from a queue: two thread hand-offs per request, which under the
        GIL cost more than answering a cached 4 KiB GET. A client that sends its next request within
        `FOLLOW_UP_WAIT_S` is answered by the same worker directly, unless another connection is
        queued for a worker (all are busy): then this one goes back to the selector after each
        request, so with fewer workers than busy connections every connection is served in turn.
        """
        hot = isinstance(self.rfile, SocketReader) and getattr(self.server, "balupi_hot_path", True)
        for _ in range(MAX_REQUESTS_PER_TURN):
            try:
                keep_open = self._answer_hot() if hot else None
                if keep_open is None:
                    keep_open = super().communicate()
            finally:
                if isinstance(self.wfile, SocketWriter):
                    try:
                        self.wfile.flush()
                    except OSError:
                        keep_open = False
            if not keep_open or not isinstance(self.rfile, SocketReader) or self._others_queued() \
                    or not self._follow_up():
                return keep_open
        return True

    def _others_queued(self) -> bool:
        """Whether a connection waits in cheroot's queue for a free worker (the deque's length, no lock)."""
        pending = getattr(getattr(self.server.requests, "_queue", None), "queue", None)
        return bool(pending)

    def _answer_hot(self) -> bool | None:
        """Answer a plain GET or HEAD whose whole head is buffered (`parse_hot_head`) straight through
        the WSGI app, as cheroot would; None (nothing read) when the request is cheroot's to parse.

        The head is here already (the head gate or `_follow_up` waited for it), so there is nothing
        to read and no deadline to keep; cheroot's per-line reads, size checks, header dict, request
        object, gateway and per-header checks of the answer are what this saves.
        """
        rfile = self.rfile
        kept = self._memo
        if kept is not None:
            if rfile._buf.startswith(kept.request, rfile._pos):
                replayed = self._replay(kept)
                if replayed is not None:
                    return replayed
            self._memo = None  # another request, or something its answer rests on changed
        parsed = parse_hot_head(rfile._buf, rfile._pos, self.server.max_request_header_size or 1 << 20)
        if parsed is None:
            return None
        environ, end, http11 = parsed
        memo = None
        if environ["REQUEST_METHOD"] == "GET":
            memo = environ[MEMO_KEY] = AnswerMemo()
            request = rfile._buf[rfile._pos:end]
        rfile.bytes_read += end - rfile._pos
        rfile._pos = end
        server = self.server
        server.balupi_hot_answers = getattr(server, "balupi_hot_answers", 0) + 1  # (a count for tests and benches)
        if server.stats["Enabled"]:
            self.requests_seen += 1
        base = self._environ_base
        if base is None:
            base = self._environ_base = self._base_environ()
        environ.update(base)
        environ["wsgi.input"] = KnownLengthRFile(rfile, 0)
        connection = environ.get("HTTP_CONNECTION")
        answer = _HotAnswer(self, environ["REQUEST_METHOD"] == "HEAD", http11,
                            connection == "close" if http11 else connection != "Keep-Alive")
        metrics = getattr(server, "balupi_metrics", None)
        started = time.perf_counter()
        gate = getattr(server, "balupi_hot_gate", None)
        if gate is not None:
            if environ["PATH_INFO"].startswith(gate.prefix):
                gate.enter()
            else:
                gate = None
        try:
            result = server.wsgi_app(environ, answer.start_response)
            try:
                for chunk in result:
                    if chunk:
                        if not isinstance(chunk, bytes):
                            raise ValueError("WSGI Applications must yield bytes")
                        answer.write(chunk)
            finally:
                if not answer.sent and answer.status is not None:
                    answer.send_head()
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            if answer.chunked:
                self.wfile.write(b"0\r\n\r\n")
            elif (memo is not None and memo.ready() and answer.status == "200 OK" and answer.left == 0
                  and not answer.close and answer.date_at is not None and type(result) is list
                  and len(result) == 1 and result[0] is memo.data):
                lines = answer.head_lines
                memo.data = None  # (the bytes stay SmallCopies' to keep or drop)
                self._memo = _KeptAnswer(request, memo, "".join(lines[:answer.date_at]).encode("iso-8859-1"),
                                         "".join(lines[answer.date_at + 1:]).encode("iso-8859-1"))
        except socket.error as exc:
            if exc.args and exc.args[0] not in cheroot_errors.socket_errors_to_ignore and exc.args[0] != "timed out":
                server.error_log(f"socket.error {exc.args[0]!r}", level=logging.WARNING, traceback=True)
            return False
        except Exception as exc:  # noqa: BLE001 - as cheroot: logged, 500 if nothing was sent, closed
            server.error_log(repr(exc), level=logging.ERROR, traceback=True)
            if not answer.sent:
                self._simple_500()
            return False
        finally:
            if gate is not None:
                gate.leave()
            if metrics is not None:
                metrics.observe_request(environ["REQUEST_METHOD"], time.perf_counter() - started)
        return not answer.close

    def _replay(self, kept: "_KeptAnswer") -> bool | None:
        """Answer the request at the reader's position, whose head is exactly `kept.request`, with
        `kept`'s answer if `AnswerMemo.replay` finds nothing it rests on changed; None (nothing
        read, nothing done) otherwise. What `_answer_hot` does around the app is done here too:
        the counts, the gate, the request histogram, a fresh Date."""
        server = self.server
        if not server.can_add_keepalive_connection:
            return None  # this answer would close the connection: the long way says so
        started = time.perf_counter()
        gate = getattr(server, "balupi_hot_gate", None)
        if gate is not None:
            gate.enter()
        try:
            try:
                body = kept.memo.replay()
            except Exception as exc:  # noqa: BLE001 - the long way meets (and reports) whatever it was
                log.debug("answer memo not replayed: %r", exc)
                body = None
            if body is None:
                return None
            rfile = self.rfile
            rfile._pos += len(kept.request)
            rfile.bytes_read += len(kept.request)
            server.balupi_hot_answers = getattr(server, "balupi_hot_answers", 0) + 1
            server.balupi_answer_replays = getattr(server, "balupi_answer_replays", 0) + 1
            if server.stats["Enabled"]:
                self.requests_seen += 1
        finally:
            if gate is not None:
                gate.leave()
        try:
            self.wfile.write(kept.head_before_date + http_date_now().encode("ascii") + kept.head_after_date)
            self.wfile.write(body)
        except socket.error as exc:
            if exc.args and exc.args[0] not in cheroot_errors.socket_errors_to_ignore and exc.args[0] != "timed out":
                server.error_log(f"socket.error {exc.args[0]!r}", level=logging.WARNING, traceback=True)
            return False
        finally:
            metrics = getattr(server, "balupi_metrics", None)
            if metrics is not None:
                metrics.observe_request("GET", time.perf_counter() - started)
        return True

    def _base_environ(self) -> dict:
        """The environ entries that are the same for every request of this connection (cheroot's)."""
        server = self.server
        return {
            "ACTUAL_SERVER_PROTOCOL": server.protocol,
            "REMOTE_ADDR": self.remote_addr or "",
            "REMOTE_PORT": str(self.remote_port or ""),
            "SCRIPT_NAME": "",
            "SERVER_NAME": server.server_name,
            "SERVER_PORT": str(server.bind_addr[1]) if not isinstance(server.bind_addr, str) else "",
            "SERVER_SOFTWARE": server.software,
            "wsgi.errors": sys.stderr,
            "wsgi.input_terminated": False,
            "wsgi.multiprocess": False,
            "wsgi.multithread": True,
            "wsgi.run_once": False,
            "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0),
            "balupi.sendfile": isinstance(self.wfile, SocketWriter),
        }

    def _simple_500(self) -> None:
        """cheroot's answer to an app that failed before it answered (`simple_response`)."""
        try:
            self.wfile.write(b"%s 500 Internal Server Error\r\nContent-Length: 0\r\nContent-Type: text/plain\r\n\r\n"
                             % self.server.protocol.encode("ascii"))
        except OSError:
            pass

    def _follow_up(self) -> bool:
        """Whether the next request's whole head is already here or arrives within FOLLOW_UP_WAIT_S
        (a partial head goes back to the selector: a worker never waits for a slow client's head)."""
        max_bytes = self.server.max_request_header_size or 1 << 20
        rfile = self.rfile
        if rfile.has_data() and rfile.head_ready(max_bytes):
            return True  # pipelined: already buffered
        # One poll that returns at once if bytes are there, then the read: each system call lets
        # another worker take the GIL, which under a CPU quota costs more than the call itself.
        return readable_within(self.socket, FOLLOW_UP_WAIT_S) and rfile.head_ready(max_bytes, readable=True)


class _KeptAnswer:
    """An answer `FastConnection._replay` may send again: the request head it answered (with its
    blank line), the `AnswerMemo` that says whether it still holds, and its head around the Date."""

    __slots__ = ("request", "memo", "head_before_date", "head_after_date")

    def __init__(self, request: bytes, memo: AnswerMemo, head_before_date: bytes, head_after_date: bytes):
        self.request, self.memo = request, memo
        self.head_before_date = head_before_date + b"Date: "
        self.head_after_date = b"\r\n" + head_after_date


class SendfileGateway(Gateway_10):
    """cheroot's WSGI 1.0 gateway, telling the app whether this connection can send `FileSpan`s."""

    def get_environ(self):
        environ = super().get_environ()
        environ["balupi.sendfile"] = isinstance(self.req.conn.wfile, SocketWriter)
        return environ

    def start_response(self, status, headers, exc_info=None):
        # An answer with "Connection: close" (a write refused before its body was read: 507, 400)
        # closes the connection after it is sent. Else cheroot first reads the whole unread body,
        # however large it was announced to be, before it sends a byte of the answer.
        if any(k.lower() == "connection" and v.strip().lower() == "close" for k, v in headers):
            self.req.close_connection = True
        return super().start_response(status, headers, exc_info)

    def respond(self):
        """Answer the request, timing it for balupi_http_request_duration_seconds (balupi.metrics),
        then tell the server how large its body was (`balupi_after_request`: after a large one the
        heap is trimmed, `balupi.server.Server.after_request`)."""
        server = self.req.server
        started = time.perf_counter()
        try:
            return super().respond()
        finally:
            metrics = getattr(server, "balupi_metrics", None)
            if metrics is not None:
                method = self.req.method.decode("ascii", "replace") if isinstance(self.req.method, bytes) else str(self.req.method)
                metrics.observe_request(method.upper(), time.perf_counter() - started)
            after = getattr(server, "balupi_after_request", None)
            if after is not None:
                after(self._body_bytes())

    def _body_bytes(self) -> int:
        """The larger of the request's and the answer's announced body length (0 if neither says)."""
        largest = 0
        for value in (self.req.inheaders.get(b"Content-Length"),
                      next((v for k, v in self.req.outheaders if k.lower() == b"content-length"), None)):
            try:
                largest = max(largest, int(value or 0))
            except ValueError:
                pass
        return largest
