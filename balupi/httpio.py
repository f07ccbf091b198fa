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

import select
import socket
import time

from cheroot.makefile import MakeFile
from cheroot.server import HTTPConnection
from cheroot.wsgi import Gateway_10

RECV_BYTES = 64 * 1024
FOLLOW_UP_WAIT_S = 0.002
MAX_REQUESTS_PER_TURN = 100  # then back to the selector, so one busy client cannot pin a worker
HOLD_BACK_MAX_BYTES = 16 * 1024


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

    def head_ready(self, max_bytes: int) -> bool:
        """Whether a whole request head (or more than `max_bytes`, or the end of the stream) is here,
        reading what the socket already holds without waiting. For the head gate (`balupi.limits`)."""
        for _ in range(4):
            if self._head_in_buffer(max_bytes):
                return True
            # (recv with MSG_DONTWAIT is no use here: Python retries EAGAIN for up to the socket timeout)
            if not readable_within(self._sock, 0):
                return False
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


class FastConnection(HTTPConnection):
    """cheroot's connection with `SocketReader`/`SocketWriter` on plain TCP sockets."""

    def __init__(self, server, sock, makefile=MakeFile):
        super().__init__(server, sock, fast_makefile if makefile is MakeFile else makefile)

    def communicate(self):
        """Answer this connection's request, and the next ones if they follow at once.

        cheroot hands a keep-alive connection back to its selector thread after every request, and
        a worker picks it up again from a queue: two thread hand-offs per request, which under the
        GIL cost more than answering a cached 4 KiB GET. A client that sends its next request within
        `FOLLOW_UP_WAIT_S` is answered by the same worker directly.
        """
        for _ in range(MAX_REQUESTS_PER_TURN):
            try:
                keep_open = super().communicate()
            finally:
                if isinstance(self.wfile, SocketWriter):
                    try:
                        self.wfile.flush()
                    except OSError:
                        keep_open = False
            if not keep_open or not isinstance(self.rfile, SocketReader) or not self._follow_up():
                return keep_open
        return True

    def _follow_up(self) -> bool:
        """Whether the next request's whole head is already here or arrives within FOLLOW_UP_WAIT_S
        (a partial head goes back to the selector: a worker never waits for a slow client's head)."""
        max_bytes = self.server.max_request_header_size or 1 << 20
        if self.rfile.head_ready(max_bytes):
            return True
        return readable_within(self.socket, FOLLOW_UP_WAIT_S) and self.rfile.head_ready(max_bytes)


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
