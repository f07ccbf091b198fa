"""Cache misses: one upstream download per file, streamed to every waiting client while it is cached.

A `Download` writes the NAS's response into a temp file and publishes each block as it lands;
readers (`Download.stream`) follow the writer, so a client's first byte never waits for the whole
file, and two clients missing the same file share one upstream GET. A reader whose connection
takes `httpio.FileSpan`s gets the temp file's landed blocks as spans, sent by sendfile(2) from the
page cache (decision 131); what every reader has been sent is then dropped from the page cache
(decision 190). The content becomes a cache entry only when complete and verified
(byte count equals the NAS's Content-Length, and a HEAD afterwards shows the same ETag), by an
atomic rename; anything else discards the temp file, so no partial entry is ever visible. A client that disconnects does not stop the download: the NAS is
awake now, and the file will be asked for again. Stopping BaluPi (`Downloads.stop`) cancels the
downloads that run and waits for their threads, before the store and the database close.

Lock order: `Downloads._lock` before `Download._cond`; neither is held during network or disk I/O.
`NasWaiters` (taken while waiting for a download slot) is a leaf.
"""

from __future__ import annotations

import enum
import logging
import os
import contextvars
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from balupi.cache.integrity import BLOCK_BYTES, BlockHasher, Meta, State
from balupi.cache.index import Entry, Index
from balupi.cache.store import ContentStore
from balupi.errors import NasBusy, NasUnavailable, UpstreamError, UpstreamMissing
from balupi.events import Event, Events
from balupi.httpfields import parse_http_date, strip_etag
from balupi.httpio import FileSpan
from balupi.nas.client import NasClient
from balupi.nas.waiters import RETRY_AFTER_S

log = logging.getLogger("balupi.cache.downloads")

HEADERS_WAIT_S = 120.0
# Landed bytes every follower has been sent are dropped from the page cache in steps of this
# much, keeping the newest step for a reader that joins (decision 190).
DROP_STEP_BYTES = 8 * BLOCK_BYTES
DOWNLOAD_SLOT_WAIT_S = 10.0  # a miss waits this long for one of the capped download slots, then 503


class DownloadState(enum.Enum):
    STARTING = "starting"
    STREAMING = "streaming"
    DONE = "done"
    FAILED = "failed"


class Download:
    def __init__(self, entry: Entry, store: ContentStore, index: Index, client: NasClient, events: Events,
                 on_finish: Callable[["Download"], None], hold: Callable[[str], None],
                 unhold: Callable[[str], None]):
        self.entry = entry
        self.store, self.index, self.client, self.events = store, index, client, events
        self._on_finish = on_finish
        self._hold, self._unhold = hold, unhold
        self.reserved_bytes = 0
        self.wake = True  # False: a background fetch (prefetch) that must not wake a sleeping NAS
        self.key, self.tmp, self._file = store.open_temp()
        self._cond = threading.Condition()
        self.state = DownloadState.STARTING
        self.written = 0
        self.size_bytes: int | None = None
        self.etag: str | None = None  # the NAS's ETag (clients see the entry's: balupi.cache.versions)
        self.mtime: float | None = None
        self.content_type: str | None = None
        self.error: BaseException | None = None
        self.readers = 0
        self._sent: dict[int, int] = {}  # per following reader: the bytes it has been sent up to
        self._dropped = 0  # the temp file's bytes below this were given back to the page cache
        self._hasher = BlockHasher()  # checksums of the bytes as they come from the NAS
        self._cancelled = threading.Event()
        self._response = None  # the NAS's answer while its body is read (for `cancel`)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # In the starting request's context: a wake this download needs is that request's (balupi.nas.wakes).
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._run,), name=f"balupi-fetch-{self.key[:8]}",
                                        daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """End this download unpublished (BaluPi is stopping): at the next block, or at once when
        its read waits for the NAS (the connection is shut down, which wakes that read)."""
        self._cancelled.set()
        response = self._response
        connection = getattr(getattr(response, "raw", None), "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: the read ends anyway

    def join(self, timeout_s: float) -> bool:
        """Wait for the download's thread to end; True if it has."""
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    def _set(self, **changes) -> None:
        with self._cond:
            for name, value in changes.items():
                setattr(self, name, value)
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            self._download()
        except BaseException as exc:  # every failure ends in FAILED, with the temp file gone
            if self._cancelled.is_set():
                log.info("download of %s cancelled: %s", self.entry.path, exc)
            elif not isinstance(exc, (UpstreamMissing, UpstreamError, NasUnavailable)):
                log.exception("download of %s failed", self.entry.path)
            else:
                log.warning("download of %s failed: %s", self.entry.path, exc)
            self._file.close()
            self.store.discard_temp(self.tmp)
            self._set(state=DownloadState.FAILED, error=exc)
        finally:
            self._on_finish(self)

    def _stop_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise UpstreamError(f"download of {self.entry.path} stopped after {self.written} bytes: BaluPi is stopping")

    def _download(self) -> None:
        self._stop_if_cancelled()
        response = self.client.request("GET", self.entry.path, wake=self.wake, stream=True, view=self.entry.view)
        self._response = response
        with response:
            self._stop_if_cancelled()
            if response.status_code == 404:
                raise UpstreamMissing(self.entry.path)
            if response.status_code != 200:
                raise UpstreamError(f"NAS answered {response.status_code} to GET {self.entry.path}")
            length = response.headers.get("Content-Length")
            self._set(
                state=DownloadState.STREAMING,
                size_bytes=int(length) if length and length.isdigit() else None,
                etag=strip_etag(response.headers.get("ETag")),
                mtime=parse_http_date(response.headers.get("Last-Modified")),
                content_type=response.headers.get("Content-Type"),
            )
            raw = response.raw
            fd = self._file.fileno()
            hasher = self._hasher
            try:
                while True:
                    self._stop_if_cancelled()
                    block = raw.read(BLOCK_BYTES)
                    if not block:
                        break
                    hasher.update(block)
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view):]
                    with self._cond:
                        self.written += len(block)
                        self._cond.notify_all()
                        done = min(self._sent.values(), default=self.written)
                    if done - self._dropped >= 2 * DROP_STEP_BYTES:
                        self._drop_cached(fd, min(done, self.written - DROP_STEP_BYTES))
            except Exception as exc:
                self._stop_if_cancelled()  # our own doing, not the NAS's
                self.client.monitor.note_unreachable(type(exc).__name__)
                raise UpstreamError(f"connection dropped after {self.written} bytes: {type(exc).__name__}") from exc
        self._file.close()
        if self.size_bytes is not None and self.written != self.size_bytes:
            raise UpstreamError(f"short body: {self.written} of {self.size_bytes} bytes")
        if self.size_bytes is None:
            self.size_bytes = self.written
        self._stop_if_cancelled()  # not published unverified, and no ETag check that may wait for the NAS
        self._verify_and_publish()
        with self._cond:
            self.state = DownloadState.DONE
            self._cond.notify_all()

    def _drop_cached(self, fd: int, upto: int) -> None:
        """Give the pages of [0, upto) back: sent to every follower, and only read again from the
        published file. The first call on a range starts its writeback (dirty pages are never
        dropped), a later one drops it; kept in the page cache, a miss's bytes crowd a Pi's 1 GiB
        and every new page is a fresh one (decision 190). Durability is publish's fsync, as before."""
        upto -= upto % BLOCK_BYTES
        try:
            os.posix_fadvise(fd, 0, upto, os.POSIX_FADV_DONTNEED)
        except OSError:
            upto = 1 << 62  # a file system without it: stop asking
        self._dropped = upto

    def _verify_and_publish(self) -> None:
        if self.etag:
            try:
                head = self.client.request("HEAD", self.entry.path, wake=False, view=self.entry.view)
            except NasUnavailable:
                # Gone to sleep right after sending every byte: nobody is changing the file, and
                # the byte count matched. Keep it rather than fetch it again on the next wake.
                log.info("cached %s without the ETag re-check: the NAS went to sleep", self.entry.path)
            else:
                if strip_etag(head.headers.get("ETag")) != self.etag:
                    raise UpstreamError(f"{self.entry.path} changed on the NAS during the download")
        meta = Meta(view=self.entry.view, path=self.entry.path, state=State.CLEAN, size=self.written,
                    blocks=self._hasher.blocks_hex(), mtime=self.mtime, etag=self.etag, content_type=self.content_type)
        final = self.store.publish(self.key, self.tmp, meta)
        self.tmp = final  # readers that open late find the published file
        replaced = self.index.mark_cached(self.entry.view, self.entry.path, self.key, self.written, self.etag, self.mtime)
        if replaced == self.key:  # the entry went away or was rewritten meanwhile
            self.store.remove(self.key)
        elif replaced:
            self.store.remove(replaced)
        else:
            self.events.emit(Event.CACHE_FILE_ADDED, path=self.entry.path, size_bytes=self.written)

    def wait_started(self, timeout_s: float = HEADERS_WAIT_S) -> None:
        """Wait until the NAS's response headers are known. Raises the download's error."""
        if self.state is not DownloadState.DONE:
            self.client.monitor.waiters.enter(f"download of {self.entry.path}")
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.state is DownloadState.STARTING:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise UpstreamError("the NAS did not start sending in time")
                self._cond.wait(remaining)
            if self.state is DownloadState.FAILED and self.written == 0:
                raise self.error  # type: ignore[misc]

    def wait_done(self, timeout_s: float) -> bool:
        """Wait until the download ends; True if it completed (and was cached)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.state in (DownloadState.STARTING, DownloadState.STREAMING):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 5.0))
            return self.state is DownloadState.DONE

    def stream(self, start: int = 0, end: int | None = None, spans: bool = False) -> Iterator[bytes]:
        """Yield bytes [start, end) as they arrive (end None: to the end of the file); with `spans`,
        as `FileSpan`s of the temp file (only for a connection whose environ has `balupi.sendfile`)."""
        token = object()
        try:
            fd = os.open(self.tmp, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            try:
                fd = self.store.open_content(self.key)
            except FileNotFoundError:  # neither landing nor published: it failed before this reader
                raise UpstreamError(f"download failed before this reader started: {self.error}") from None
        with self._cond:
            self.readers += 1
            self._sent[id(token)] = start
        self._hold(self.key)
        file = os.fdopen(fd, "rb", buffering=0, closefd=False) if spans else None
        try:
            pos = start
            while True:
                with self._cond:
                    self._sent[id(token)] = pos  # the consumer asks again: bytes before pos are sent
                    stop = end if end is not None else self.size_bytes
                    while self.written <= pos and self.state is DownloadState.STREAMING and (stop is None or pos < stop):
                        self._cond.wait(5.0)
                    available, state = self.written, self.state
                    stop = end if end is not None else self.size_bytes
                if stop is not None and pos >= stop:
                    return
                if available > pos:
                    n = min(BLOCK_BYTES, available - pos, (stop - pos) if stop is not None else BLOCK_BYTES)
                    if file is not None:  # landed bytes: sendfile(2) cannot come up short
                        pos += n
                        yield FileSpan(file, pos - n, n)
                        continue
                    block = os.pread(fd, n, pos)
                    if not block:
                        raise UpstreamError("cache temp file shrank")
                    pos += len(block)
                    yield block
                elif state is DownloadState.DONE:
                    return
                elif state is DownloadState.FAILED:
                    raise UpstreamError(f"download failed after {available} bytes: {self.error}")
        finally:
            if file is not None:
                file.close()  # closefd=False: only the wrapper
            os.close(fd)
            self._unhold(self.key)
            with self._cond:
                self.readers -= 1
                del self._sent[id(token)]


class Downloads:
    """The registry of downloads in progress: one per (view, path)."""

    def __init__(self, store: ContentStore, index: Index, client: NasClient, events: Events,
                 hold: Callable[[str], None], unhold: Callable[[str], None], finished: Callable[["Download"], None]):
        self.store, self.index, self.client, self.events = store, index, client, events
        self.hold, self.unhold, self.finished = hold, unhold, finished
        self._lock = threading.Lock()
        self._slot_free = threading.Condition(self._lock)
        self._active: dict[tuple[str, str], Download] = {}
        self._stopping = False
        self.started = 0

    def get_or_start(self, entry: Entry, reserved_bytes: int = 0, wake: bool = True) -> tuple[Download, bool]:
        """The download of `entry`, starting it if none runs. Returns (download, started_now).

        `wake=False` (prefetch): the download gives up rather than wake a NAS that went to sleep.
        A client joining such a download before its request went out makes it a waking one.
        """
        key = (entry.view, entry.path)
        waiters = self.client.monitor.waiters
        with self._lock:
            if self._stopping:
                raise NasUnavailable("BaluPi is stopping", retry_after_s=5)
            download = self._active.get(key)
            if download is not None:
                download.wake = download.wake or wake
                return download, False
            if len(self._active) >= waiters.limit:
                # At most `limit` downloads (part of the descriptor budget, docs/reliability.md). A
                # client that misses faster than finished downloads are recorded (each commit is an
                # fsync) waits here for one to end: back-pressure, holding a NAS slot while it waits.
                waiters.enter(f"a download slot for {entry.path}")
                deadline = time.monotonic() + DOWNLOAD_SLOT_WAIT_S
                while len(self._active) >= waiters.limit:
                    if self._stopping:
                        raise NasUnavailable("BaluPi is stopping", retry_after_s=5)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise NasBusy(f"{waiters.limit} downloads from the NAS are running; try again shortly",
                                      RETRY_AFTER_S)
                    self._slot_free.wait(remaining)
                download = self._active.get(key)
                if download is not None:
                    download.wake = download.wake or wake
                    return download, False
            download = Download(entry, self.store, self.index, self.client, self.events, self._finished,
                                self.hold, self.unhold)
            download.reserved_bytes = reserved_bytes
            download.wake = wake
            self._active[key] = download
            self.started += 1
        download.start()
        return download, True

    def active(self, view: str, path: str) -> Download | None:
        with self._lock:
            return self._active.get((view, path))

    def _finished(self, download: Download) -> None:
        with self._lock:
            if self._active.get((download.entry.view, download.entry.path)) is download:
                del self._active[(download.entry.view, download.entry.path)]
                self._slot_free.notify()
        self.finished(download)

    def count(self) -> int:
        with self._lock:
            return len(self._active)

    def stop(self, timeout_s: float) -> bool:
        """Refuse new downloads, cancel the running ones (nothing unfinished is published) and wait
        up to `timeout_s` for their threads: a download must not write to the store or the index
        after they are closed. True if every one ended."""
        with self._lock:
            self._stopping = True
            running = list(self._active.values())
            self._slot_free.notify_all()
        for download in running:
            download.cancel()
        deadline = time.monotonic() + timeout_s
        left = [d.entry.path for d in running if not d.join(max(0.0, deadline - time.monotonic()))]
        if left:
            log.warning("stopping with %d download(s) still running: %s", len(left), ", ".join(left))
        return not left
