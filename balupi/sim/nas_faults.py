"""Misbehaviour switches of the simulated NAS, and the stream wrappers that carry them out.

All switches can be changed at runtime (thread-safe), from Python or as JSON via the control port:

- ``latency_s``: added before every request on the main port is handled.
- ``bandwidth_bytes_per_s``: cap on response bodies and on request (upload) bodies.
- ``fail(status, count, method, path)``: answer `status` (5xx) instead of handling the request.
- ``drop_get(after_bytes, count, path)``: send the headers and `after_bytes` of a GET body, then
  close the connection (the client sees a truncated body).
- ``drop_put(after_bytes, count, path)``: read `after_bytes` of a PUT body, then close the
  connection without answering. The target file is left untouched.
- ``garble(count, method, path, encoding)``: answer as usual (status, headers, length), but with
  every byte of the body replaced by NUL, so that neither an XML parser nor a JSON one can read it
  (a NAS or a proxy in front of it mangling its answers). With `encoding` (e.g. "gzip"), the answer
  also claims that Content-Encoding, so an HTTP client fails to decode the body itself.
- ``never_wake``: magic packets are recorded but ignored.

`count` is how many matching requests the rule applies to (None: every matching one until
cleared); each matching request uses one, whether or not its body was long enough to be cut.
`path` matches as a prefix of the request path; drop and garble rules default to the WebDAV prefix
so that API polls do not use them up.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from dataclasses import asdict, dataclass

DAV_PATH_PREFIX = "/dav/"
_PIECE_MAX_BYTES = 64 * 1024


class SimulatedDrop(ConnectionResetError):
    """Raised to make cheroot close the connection quietly (ECONNRESET is in its ignore list)."""

    def __init__(self, message: str = "simulated connection drop"):
        super().__init__(errno.ECONNRESET, message)


@dataclass
class Rule:
    """One counted fault rule."""

    remaining: int | None = 1  # None: unlimited
    path: str | None = None  # prefix of the request path
    method: str | None = None  # e.g. "GET"; None: any
    after_bytes: int = 0  # drop rules
    status: int = 503  # fail rule
    encoding: str | None = None  # garble rule: the Content-Encoding the garbled answer claims

    def matches(self, method: str, path: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return not self.path or path.startswith(self.path)


class Faults:
    """The runtime-settable misbehaviour switches of one simulated NAS."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        """Switch every fault off."""
        with self._lock:
            self.latency_s = 0.0
            self.bandwidth_bytes_per_s: float | None = None
            self.never_wake = False
            self._fail: Rule | None = None
            self._drop_get: Rule | None = None
            self._drop_put: Rule | None = None
            self._garble: Rule | None = None

    # --- setters -----------------------------------------------------------------------------

    def fail(self, status: int = 503, count: int | None = 1, *, method: str | None = None,
             path: str | None = None) -> None:
        """Answer `status` to the next `count` matching requests (None: all until cleared)."""
        if not 400 <= int(status) <= 599:
            raise ValueError(f"fail status must be 4xx/5xx, got {status}")
        with self._lock:
            self._fail = Rule(remaining=count, path=path, method=method, status=int(status))

    def drop_get(self, after_bytes: int, count: int | None = 1, *,
                 path: str | None = DAV_PATH_PREFIX) -> None:
        """Cut the next `count` GET responses under `path` after `after_bytes` body bytes."""
        with self._lock:
            self._drop_get = Rule(remaining=count, path=path, method="GET",
                                  after_bytes=max(0, int(after_bytes)))

    def drop_put(self, after_bytes: int, count: int | None = 1, *,
                 path: str | None = DAV_PATH_PREFIX) -> None:
        """Drop the connection of the next `count` PUTs under `path` after `after_bytes` read."""
        with self._lock:
            self._drop_put = Rule(remaining=count, path=path, method="PUT",
                                  after_bytes=max(0, int(after_bytes)))

    def garble(self, count: int | None = 1, *, method: str | None = None,
               path: str | None = DAV_PATH_PREFIX, encoding: str | None = None) -> None:
        """Replace the body of the next `count` matching answers by as many NUL bytes (claiming
        Content-Encoding `encoding`, if given)."""
        with self._lock:
            self._garble = Rule(remaining=count, path=path, method=method, encoding=encoding or None)

    # --- used by the request handler ---------------------------------------------------------

    def _take(self, name: str, method: str, path: str) -> Rule | None:
        with self._lock:
            rule = getattr(self, name)
            if rule is None or not rule.matches(method, path):
                return None
            if rule.remaining is not None:
                rule.remaining -= 1
            return Rule(**asdict(rule))

    def take_fail(self, method: str, path: str) -> int | None:
        rule = self._take("_fail", method, path)
        return rule.status if rule else None

    def take_drop_get(self, method: str, path: str) -> int | None:
        rule = self._take("_drop_get", method, path)
        return rule.after_bytes if rule else None

    def take_drop_put(self, method: str, path: str) -> int | None:
        rule = self._take("_drop_put", method, path)
        return rule.after_bytes if rule else None

    def take_garble(self, method: str, path: str) -> Rule | None:
        return self._take("_garble", method, path)

    # --- JSON --------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        with self._lock:
            def rule(r: Rule | None) -> dict | None:
                return None if r is None or r.remaining == 0 else asdict(r)

            return {
                "latency_s": self.latency_s,
                "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s,
                "never_wake": self.never_wake,
                "fail": rule(self._fail),
                "drop_get": rule(self._drop_get),
                "drop_put": rule(self._drop_put),
                "garble": rule(self._garble),
            }

    def update(self, data: dict) -> None:
        """Apply a (partial) JSON description, e.g. from POST /faults on the control port.

        Keys: clear (bool, applied first), latency_s, bandwidth_bytes_per_s, never_wake, and
        fail / drop_get / drop_put / garble as an object of the keyword arguments of the method of that
        name (`count` included), or null to switch that rule off.
        """
        known = {"clear", "latency_s", "bandwidth_bytes_per_s", "never_wake", "fail", "drop_get",
                 "drop_put", "garble"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        if data.get("clear"):
            self.clear()
        with self._lock:
            if "latency_s" in data:
                self.latency_s = max(0.0, float(data["latency_s"] or 0.0))
            if "bandwidth_bytes_per_s" in data:
                value = data["bandwidth_bytes_per_s"]
                self.bandwidth_bytes_per_s = float(value) if value else None
            if "never_wake" in data:
                self.never_wake = bool(data["never_wake"])
        for name in ("fail", "drop_get", "drop_put", "garble"):
            if name not in data:
                continue
            spec = data[name]
            if spec is None:
                with self._lock:
                    setattr(self, f"_{name}", None)
            else:
                getattr(self, name)(**spec)


# --- stream helpers ------------------------------------------------------------------------------


class _Pacer:
    """Sleeps so that the bytes passed to `account()` do not exceed `rate_bytes_per_s`."""

    def __init__(self, rate_bytes_per_s: float | None, halt: threading.Event):
        self.rate = rate_bytes_per_s
        self.halt = halt
        self.start = time.monotonic()
        self.total_bytes = 0

    def piece_size(self) -> int:
        if not self.rate:
            return _PIECE_MAX_BYTES
        return max(1, min(_PIECE_MAX_BYTES, int(self.rate / 20)))  # ~20 pieces a second

    def account(self, n_bytes: int) -> None:
        self.total_bytes += n_bytes
        if self.rate:
            due = self.start + self.total_bytes / self.rate
            delay_s = due - time.monotonic()
            if delay_s > 0 and self.halt.wait(delay_s):
                raise SimulatedDrop("NAS went to sleep during the transfer")
        elif self.halt.is_set():
            raise SimulatedDrop("NAS went to sleep during the transfer")


def abort_connection(cheroot_req, *, send_headers: bool = False) -> None:
    """Flush what was written (and the response headers, if `send_headers` and not yet sent),
    then shut the socket down."""
    if cheroot_req is None:
        return
    try:
        if send_headers:
            cheroot_req.ensure_headers_sent()
        cheroot_req.conn.wfile.flush()
    except (OSError, ValueError):
        pass
    try:
        cheroot_req.conn.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class ThrottledInput:
    """wsgi.input wrapper that paces reads to the bandwidth cap (and stops when halted)."""

    def __init__(self, raw, *, rate_bytes_per_s: float | None, halt: threading.Event):
        self._raw = raw
        self._pacer = _Pacer(rate_bytes_per_s, halt)

    def _limit(self, size: int | None) -> int:
        piece = self._pacer.piece_size()
        return piece if size is None or size < 0 else min(size, piece)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            chunks = []
            while chunk := self.read(_PIECE_MAX_BYTES):
                chunks.append(chunk)
            return b"".join(chunks)
        data = self._raw.read(self._limit(size))
        self._pacer.account(len(data))
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data = self._raw.readline(self._limit(size))
        self._pacer.account(len(data))
        return data

    def __iter__(self):
        while line := self.readline():
            yield line


def read_then_drop(stream, after_bytes: int, cheroot_req, before_abort=None) -> None:
    """Read `after_bytes` of a request body from `stream`, then drop the connection
    (calling `before_abort()` first)."""
    left = after_bytes
    while left > 0:
        data = stream.read(min(left, _PIECE_MAX_BYTES))
        if not data:
            break
        left -= len(data)
    if before_abort is not None:
        before_abort()
    abort_connection(cheroot_req)
    raise SimulatedDrop("simulated drop during upload")


class ResponseBody:
    """Response iterable wrapper: bandwidth cap, mid-body drop, garbling, and a completion callback.

    `on_done(body)` runs once, *before* the client can have seen the end of the response: just
    before the last piece is handed to the server (with one piece of look-ahead), when the body
    turns out empty, or just before a dropped connection is shut down. So a test that has its
    response in hand always finds the request's record complete.
    """

    def __init__(self, inner, *, rate_bytes_per_s: float | None, drop_after_bytes: int | None,
                 halt: threading.Event, cheroot_req, on_done, garble: bool = False):
        self._inner = inner
        self._garble = garble
        self._pacer = _Pacer(rate_bytes_per_s, halt)
        self._drop_after = drop_after_bytes
        self._req = cheroot_req
        self._on_done = on_done
        self._done = False
        self._dropped = False

    @property
    def bytes_sent(self) -> int:
        return self._pacer.total_bytes

    @property
    def dropped(self) -> bool:
        return self._dropped

    def __iter__(self):
        try:
            pending = None  # one piece of look-ahead, to know which piece is the last
            for chunk in self._inner:
                if self._garble:
                    chunk = bytes(len(chunk))
                view = memoryview(chunk)
                while view:
                    piece = bytes(view[: self._pacer.piece_size()])
                    view = view[len(piece):]
                    if pending is not None:
                        yield from self._send(pending, last=False)
                    pending = piece
            if pending is not None:
                yield from self._send(pending, last=True)
            else:
                self._complete()
        except SimulatedDrop:
            self._dropped = True
            raise

    def _send(self, piece: bytes, *, last: bool):
        if self._drop_after is not None:
            left = self._drop_after - self._pacer.total_bytes
            if left <= 0:
                self._drop()
            if len(piece) > left:
                self._pacer.account(left)
                yield piece[:left]
                self._drop()
        self._pacer.account(len(piece))
        if last:
            self._complete()
        yield piece

    def _drop(self) -> None:
        self._dropped = True
        self._complete()
        abort_connection(self._req, send_headers=True)
        raise SimulatedDrop("simulated drop during download")

    def _complete(self) -> None:
        if not self._done:
            self._done = True
            self._on_done(self)

    def close(self) -> None:
        try:
            if hasattr(self._inner, "close"):
                self._inner.close()
        finally:
            self._complete()
