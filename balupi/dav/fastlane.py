"""GET and HEAD of files, and PROPFIND of live properties, answered in front of WsgiDAV.

`FastLane` wraps the WsgiDAV application: per request it costs one index query instead of
WsgiDAV's middleware stack (on the Pi, every millisecond here is ten). It decodes and checks the
path the way WsgiDAV does; a path it does not like (dot segments, bad UTF-8, NUL) goes on to WsgiDAV
untouched, which then answers as it always would. For a file it answers from the
index and the SSD: `Content-Length`, `Accept-Ranges`, `Last-Modified`, a strong `ETag`; the
conditionals `If-Match`, `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since`, `If-Range`;
single ranges as 206, several as `multipart/byteranges`, unsatisfiable ones as 416. (Stock WsgiDAV
4.4.0 answers `bytes=0-9,20-29` with only the last range.) A miss streams from the NAS through the
shared download (`balupi.cache.downloads`); a ranged miss is passed through to the NAS as a ranged GET
while the whole file is fetched into the cache behind it. Collections and everything else go on to
WsgiDAV.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import secrets
from urllib.parse import quote
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from wsgidav.dav_error import DAVError

from balupi.answermemo import MEMO_KEY
from balupi.cache.integrity import BLOCK_BYTES, ContentDamaged, verified_range
from balupi.cache import versions
from balupi.dav.guard import CHECKED_PATH_KEY, path_problem, wsgi_path
from balupi.dav import propfind
from balupi.cache.downloads import UpstreamError, UpstreamMissing
from balupi.cache.index import Entry
from balupi.dav.provider import WRITE_METHODS
from balupi.errors import AnswerCut, InsufficientStorage, NasUnavailable
from balupi.events import Event
from balupi.httpfields import etag_list, http_date, parse_http_date
from balupi.httpio import FileSpan

if TYPE_CHECKING:
    from balupi.dav.parts import CacheParts
    from balupi.dav.provider import CacheProvider

log = logging.getLogger("balupi.dav")

MAX_RANGES = 32
SMALL_FILE_BYTES = 256 * 1024  # read whole and sent in one piece
SPAN_BYTES = 64 << 20  # one sendfile(2) call per 64 MiB of a large file


def parse_ranges(header: str | None, size: int) -> list[tuple[int, int]] | None:
    """Satisfiable byte ranges [(start, end_inclusive)]; None: no valid Range header (serve all);
    []: syntactically valid but none satisfiable (416)."""
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    ranges = []
    for part in header.split("=", 1)[1].split(","):
        part = part.strip()
        if "-" not in part:
            return None
        first, last = part.split("-", 1)
        first, last = first.strip(), last.strip()
        try:
            if first == "":
                if not last:
                    return None
                length = int(last)
                if length <= 0:
                    continue
                start, end = max(0, size - length), size - 1
            else:
                start = int(first)
                if last and int(last) < start:
                    return None  # "bytes=20-10" is invalid: ignore the header
                end = min(int(last), size - 1) if last else size - 1
        except ValueError:
            return None
        if start < 0:
            return None
        if start < size:
            ranges.append((start, end))
    return ranges


def _file_blocks(f, start: int, length: int) -> Iterator[bytes]:
    """`length` bytes of the open file `f` from `start`, in blocks; closes `f`."""
    with f:
        if start:
            f.seek(start)
        remaining = length
        while remaining > 0:
            block = f.read(min(BLOCK_BYTES, remaining))
            if not block:
                raise OSError(f"{f.name} is shorter than the index says")
            remaining -= len(block)
            yield block


def dav_path(environ: dict) -> str | None:
    """PATH_INFO (WSGI latin-1) as the index's path, or None when WsgiDAV should judge it."""
    raw = environ.get("PATH_INFO", "/")
    checked = environ.get(CHECKED_PATH_KEY)
    if checked is not None and checked[0] == raw:
        path = checked[1]  # the guard decoded and checked it
    else:
        path = wsgi_path(raw)
        if path is None or path_problem(path) is not None:
            return None
    # What only the index cares about: an empty segment or a relative path is WsgiDAV's to judge.
    if "//" in path or not path.startswith("/"):
        return None
    return path.rstrip("/") or "/"


def _file_spans(f, start: int, length: int) -> Iterator[bytes]:
    """Like `_file_blocks`, as `FileSpan`s that the socket writer sends with sendfile(2)."""
    with f:
        offset, end = start, start + length
        while offset < end:
            count = min(SPAN_BYTES, end - offset)
            yield FileSpan(f, offset, count)
            offset += count


class FastLane:
    """WSGI app in front of WsgiDAV (mounted at `/dav`)."""

    def __init__(self, provider: "CacheProvider", parts: "CacheParts", next_app: Callable):
        self.provider = provider  # its methods: lookups (which may list from the NAS), downloads, deletes
        self.parts = parts
        self.next_app = next_app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method not in ("GET", "HEAD", "PROPFIND"):
            if method in WRITE_METHODS:
                refusal = self._refuse_write(environ, start_response)
                if refusal is not None:
                    return refusal
            return self.next_app(environ, start_response)
        path = dav_path(environ)
        if path is None or "HTTP_IF" in environ:  # WebDAV's If header (tokens, tags): WsgiDAV judges it
            return self.next_app(environ, start_response)
        try:
            if method == "PROPFIND":
                return self.propfind(environ, start_response, path)
            provider = self.provider
            entry = provider.lookup(provider.view_for(environ), path, method)
            if entry is not None and entry.is_dir and not environ.get("PATH_INFO", "/").endswith("/"):
                # WsgiDAV's own redirect would drop the /dav mount from Location.
                location = quote(provider.mount_path + provider.share_path + path + "/", safe=propfind.HREF_SAFE)
                start_response("301 Moved Permanently", [("Location", location), ("Content-Length", "0")])
                return []
            if entry is None or entry.is_dir:
                return self.next_app(environ, start_response)
            return self.serve(environ, start_response, entry, method == "HEAD")
        except NasUnavailable as exc:  # the NAS was needed (a listing, a miss) and could not be had
            return self._error(start_response, 503, str(exc), [("Retry-After", str(exc.retry_after_s))])
        except DAVError as exc:
            if exc.value == 503:
                return self._error(start_response, 503, str(exc.context_info), exc.add_headers)
            raise

    def _refuse_write(self, environ: dict, start_response: Callable) -> list[bytes] | None:
        """A write that must not start: an invalid Content-Length (400; cheroot would wait for -1
        bytes for ever), or a database volume too full to record it (507, before anything is written)."""
        length = (environ.get("CONTENT_LENGTH") or "").strip()
        if length and not length.isdigit():
            return self._error(start_response, 400, "invalid Content-Length", [("Connection", "close")])
        try:
            self.parts.cache.check_db_volume()
        except InsufficientStorage as exc:
            return self._error(start_response, 507, str(exc), [("Connection", "close")] if length not in ("", "0") else None)
        return None

    @staticmethod
    def _error(start_response: Callable, status: int, text: str, headers: list | None = None) -> list[bytes]:
        body = (text + "\n").encode()
        reasons = {304: "Not Modified", 404: "Not Found", 412: "Precondition Failed", 416: "Range Not Satisfiable",
                   400: "Bad Request", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
                   507: "Insufficient Storage"}
        start_response(f"{status} {reasons.get(status, '')}", [("Content-Type", "text/plain; charset=utf-8"),
                                                               ("Content-Length", str(len(body)))] + (headers or []))
        return [body]

    def serve(self, environ: dict, start_response: Callable, entry: Entry, head: bool) -> Iterable[bytes]:
        size = entry.size
        etag = entry.etag
        validators = [("Last-Modified", http_date(entry.mtime))]
        if etag:
            validators.append(("ETag", f'"{etag}"'))

        # Conditionals (RFC 9110 13.2.2 order).
        if_match = environ.get("HTTP_IF_MATCH")
        if if_match is not None:
            if if_match.strip() != "*" and (not etag or etag not in etag_list(if_match)):
                return self._error(start_response, 412, "If-Match failed", validators)
        else:
            since = parse_http_date(environ.get("HTTP_IF_UNMODIFIED_SINCE"))
            if since is not None and int(entry.mtime) > since:
                return self._error(start_response, 412, "modified since", validators)
        if_none = environ.get("HTTP_IF_NONE_MATCH")
        if if_none is not None:
            if if_none.strip() == "*" or (etag and etag in etag_list(if_none)):
                start_response("304 Not Modified", validators)
                return []
        else:
            since = parse_http_date(environ.get("HTTP_IF_MODIFIED_SINCE"))
            if since is not None and int(entry.mtime) <= since:
                start_response("304 Not Modified", validators)
                return []

        range_header = environ.get("HTTP_RANGE")
        if_range = environ.get("HTTP_IF_RANGE")
        if range_header and if_range:
            if_range = if_range.strip()
            if if_range.startswith('"') or if_range.startswith("W/"):
                ok = bool(etag) and not if_range.startswith("W/") and if_range.strip('"') == etag
            else:
                ok = parse_http_date(if_range) is not None and int(entry.mtime) <= (parse_http_date(if_range) or 0)
            if not ok:
                range_header = None
        ranges = parse_ranges(range_header, size)
        if ranges is not None and len(ranges) > MAX_RANGES:
            ranges = None

        ctype = entry.content_type or "application/octet-stream"
        headers = [("Content-Type", ctype), ("Accept-Ranges", "bytes")] + validators
        if ranges == []:
            return self._error(start_response, 416, "range not satisfiable", [("Content-Range", f"bytes */{size}")] + validators)

        provider, parts = self.provider, self.parts
        key = entry.cache_key
        if key and not head and (ranges is None or len(ranges) == 1) and key in parts.verified:
            data = parts.store.small_copy(key)  # one stat(2) instead of open, fstat, read, close
            if data is not None and len(data) == size:
                parts.index.note_access(entry.view, entry.path)
                parts.stats.hits += 1
                if ranges is None:
                    parts.stats.hit_bytes += size
                    memo = environ.get(MEMO_KEY)
                    if memo is not None:  # the hot path may answer this same request again from it
                        memo.parts, memo.db_stamp, memo.key = parts, parts.index.read_stamp(), key
                        memo.view, memo.path, memo.data, memo.size = entry.view, entry.path, data, size
                    start_response("200 OK", headers + [("Content-Length", str(size))])
                    return [data]
                start, end = ranges[0]
                parts.stats.hit_bytes += end - start + 1
                start_response("206 Partial Content", headers + [("Content-Range", f"bytes {start}-{end}/{size}"),
                                                                 ("Content-Length", str(end - start + 1))])
                return [data[start:end + 1]]
        f = None
        if entry.cache_key and not head:
            try:
                f = open(parts.store.open_content(entry.cache_key), "rb", buffering=0)
            except FileNotFoundError:
                log.warning("cached content of %s is missing; fetching it again", entry.path)
        if f is None and not head:
            if not parts.monitor.configured:
                return self._error(start_response, 404, "not cached, and no NAS is configured")
            return self._serve_miss(environ, start_response, entry, ranges, headers)
        if head:
            if ranges is None:
                start_response("200 OK", headers + [("Content-Length", str(size))])
                return []
        else:
            parts.index.note_access(entry.view, entry.path)
            parts.stats.hits += 1

        meta = None
        key = key or ""
        if f is not None and key not in parts.verified:
            # Not yet read whole by this process: every block is checked before it goes out.
            try:
                meta = parts.store.read_meta(key)
                if meta is not None and meta.size != size:
                    raise ContentDamaged(key, f"its sidecar says {meta.size} bytes, the index {size}")
            except ContentDamaged as exc:
                f.close()
                provider.content_damaged(key, exc.detail)
                return self._after_damage(environ, start_response, entry, ranges, headers)

        if ranges is None:
            if meta is not None:
                try:
                    body = self._prime(self._checked(f, key, meta, 0, size, whole=True))
                except ContentDamaged:
                    return self._after_damage(environ, start_response, entry, ranges, headers)
                parts.stats.hit_bytes += size
                start_response("200 OK", headers + [("Content-Length", str(size))])
                return self._held(key, body)
            parts.stats.hit_bytes += size
            start_response("200 OK", headers + [("Content-Length", str(size))])
            if size <= SMALL_FILE_BYTES:
                with f:
                    data = f.read()
                    small = parts.store.small
                    if len(data) == size and size <= small.file_bytes and key in parts.verified:
                        small.keep(key, data, os.fstat(f.fileno()))  # bytes sent as the verified file's
                if len(data) != size:
                    raise OSError(f"{entry.path}: cached content is {len(data)} bytes, the index says {size}")
                return [data]
            return self._held(entry.cache_key, self._body(environ, f, 0, size))
        if len(ranges) == 1:
            start, end = ranges[0]
            body = None
            if meta is not None and not head:
                try:
                    body = self._prime(self._checked(f, key, meta, start, end - start + 1, whole=False))
                except ContentDamaged:
                    return self._after_damage(environ, start_response, entry, ranges, headers)
            headers += [("Content-Range", f"bytes {start}-{end}/{size}"), ("Content-Length", str(end - start + 1))]
            start_response("206 Partial Content", headers)
            if head:
                return []
            parts.stats.hit_bytes += end - start + 1
            return self._held(entry.cache_key, body if body is not None else self._body(environ, f, start, end - start + 1))
        if f is not None:
            f.close()
        if meta is not None:
            return self._multipart(start_response, headers, ctype, size, ranges, head,
                                   lambda s, n: self._checked(open(parts.store.open_content(key), "rb", buffering=0),
                                                              key, meta, s, n, whole=False))
        return self._multipart(start_response, headers, ctype, size, ranges, head,
                               lambda s, n: _file_blocks(open(parts.store.open_content(key), "rb", buffering=0), s, n))

    @staticmethod
    def _prime(blocks: Iterator[bytes]) -> Iterator[bytes]:
        """Take the first block now, so that damage at the start is found before the status goes out."""
        try:
            first = next(blocks)
        except StopIteration:
            return iter(())
        return itertools.chain((first,), blocks)

    def _checked(self, f, key: str, meta, start: int, length: int, whole: bool) -> Iterator[bytes]:
        """`length` bytes of content `key` from `start`, each block checked against its checksum
        before it is yielded; closes `f`. Damage found takes the content aside and raises
        ContentDamaged: after the first block, that cuts the client's connection (a short body)."""
        provider, parts = self.provider, self.parts
        with f:
            try:
                yield from verified_range(f.fileno(), key, meta, start, length)
            except ContentDamaged as exc:
                provider.content_damaged(key, exc.detail)
                raise
        if whole:
            parts.verified.add(key, meta.size)

    def _after_damage(self, environ, start_response, entry: Entry, ranges, headers) -> Iterable[bytes]:
        """The content of `entry` was found damaged before a byte went out (and taken aside): a
        clean file is fetched again from the NAS; a change only the Pi had is an error."""
        fresh = self.parts.index.get(entry.view, entry.path)
        if (fresh is not None and not fresh.cache_key and not fresh.dirty and fresh.remote
                and fresh.etag == entry.etag and self.parts.monitor.configured):
            return self._serve_miss(environ, start_response, fresh, ranges, headers)
        return self._error(start_response, 500, "the Pi's copy of this file is damaged; it was taken aside"
                                                " for a person to resolve (see /api/cache/conflicts)")

    @staticmethod
    def _body(environ: dict, f, start: int, length: int) -> Iterator[bytes]:
        """The bytes of `f` from `start`: by sendfile(2) where the connection can, else in blocks."""
        if environ.get("balupi.sendfile"):
            return _file_spans(f, start, length)
        return _file_blocks(f, start, length)

    def _held(self, key: str, blocks: Iterator[bytes]) -> Iterator[bytes]:
        """Stream `blocks` while the cache keeps `key` from eviction."""
        cache = self.parts.cache
        cache.hold(key)
        try:
            yield from blocks
        finally:
            cache.unhold(key)

    def _multipart(self, start_response, headers, ctype, size, ranges, head, blocks) -> Iterable[bytes]:
        boundary = secrets.token_hex(12)
        parts = []
        total = 0
        for start, end in ranges:
            head_bytes = (f"--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: bytes {start}-{end}/{size}\r\n\r\n").encode()
            parts.append((head_bytes, start, end - start + 1))
            total += len(head_bytes) + (end - start + 1) + 2
        tail = f"--{boundary}--\r\n".encode()
        total += len(tail)
        headers = [(k, v) for k, v in headers if k != "Content-Type"]
        headers += [("Content-Type", f"multipart/byteranges; boundary={boundary}"), ("Content-Length", str(total))]
        start_response("206 Partial Content", headers)
        if head:
            return []

        def body() -> Iterator[bytes]:
            for head_bytes, start, length in parts:
                yield head_bytes
                yield from blocks(start, length)
                yield b"\r\n"
            yield tail

        return body()

    # -- PROPFIND ----------------------------------------------------------------------------------

    def propfind(self, environ: dict, start_response: Callable, path: str) -> Iterable[bytes]:
        """Depth 0/1 PROPFIND of live properties, the multistatus built from one index query.

        Dead properties are included (Windows leaves Win32* times on everything it copies), and the
        lock discovery of locked members (Office holds a lock on every open document). Anything this
        does not cover exactly like WsgiDAV (propname, <include>, Depth infinity, a chunked body, an
        If header, a lock whose owner is not well-formed XML) goes on to WsgiDAV.
        """
        depth = environ.get("HTTP_DEPTH", "infinity")
        if depth not in ("0", "1") or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return self.next_app(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return self.next_app(environ, start_response)
        if length > propfind.MAX_BODY_BYTES:
            return self.next_app(environ, start_response)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)  # WsgiDAV can still read it if we pass
        request = propfind.parse_request(body)
        if request is None:
            return self.next_app(environ, start_response)
        provider, parts = self.provider, self.parts
        view = provider.view_for(environ)
        entry = provider.lookup(view, path, "PROPFIND")
        if entry is None:
            return self.next_app(environ, start_response)
        children: list[tuple] = []
        if depth == "1" and entry.is_dir:
            provider.ensure_listed(entry)
            children = parts.index.listing_rows(view, entry.path)
        held = propfind.listing_locks(parts.db, entry, with_members=bool(children))
        if held is None:  # a lock it cannot show as WsgiDAV does
            return self.next_app(environ, start_response)
        chunks = propfind.multistatus_chunks(provider.mount_path + provider.share_path, entry, children, request,
                                             parts.db, held)
        first = next(chunks)
        second = next(chunks, None)
        headers = [("Content-Type", "application/xml; charset=utf-8")]
        if second is None:  # small: one piece, with its length
            start_response("207 Multi-Status", headers + [("Content-Length", str(len(first)))])
            return [first]
        start_response("207 Multi-Status", headers)  # large: streamed (chunked), never whole in memory
        return itertools.chain((first, second), chunks)

    # -- misses ----------------------------------------------------------------------------------

    def _serve_miss(self, environ, start_response, entry: Entry, ranges, headers) -> Iterable[bytes]:
        provider, parts = self.provider, self.parts
        parts.stats.misses += 1
        if parts.downloads.active(entry.view, entry.path) is not None:
            # Joining a download (perhaps one finishing its publication: checksums, fsyncs): a read
            # like any other for the heat; the download's own publication counts only its starter.
            parts.index.note_access(entry.view, entry.path)
        try:
            download = None if ranges is not None else provider.start_download(entry)
            if download is None:
                return self._pass_through(environ, start_response, entry, ranges, headers)
            download.wait_started()
        except NasUnavailable as exc:
            return self._error(start_response, 503, str(exc), [("Retry-After", str(exc.retry_after_s))])
        except UpstreamMissing:
            provider.delete_entry(entry)
            return self._error(start_response, 404, "no longer on the NAS")
        except UpstreamError as exc:
            return self._error(start_response, 502, str(exc))
        size = download.size_bytes if download.size_bytes is not None else entry.size
        if not versions.same_nas_version(entry.nas_etag, entry.size, download.etag, download.size_bytes):
            # The NAS has a newer version than the index knew: that one is sent, with its validators.
            headers = [(k, v) for k, v in headers if k not in ("ETag", "Last-Modified")]
            etag = versions.nas_version_etag(download.etag)
            if etag:
                headers.append(("ETag", f'"{etag}"'))
            headers.append(("Last-Modified", http_date(download.mtime or entry.mtime)))
        start_response("200 OK", headers + [("Content-Length", str(size))])
        parts.stats.miss_bytes += size
        parts.events.emit(Event.MISS_SERVED, user=environ.get("wsgidav.auth.user_name") or "", path=entry.path, size_bytes=size)
        return _until_cut(download.stream(spans=bool(environ.get("balupi.sendfile"))), entry.path)

    def _pass_through(self, environ, start_response, entry: Entry, ranges, headers) -> Iterable[bytes]:
        """A ranged (or too large to cache) miss: ask the NAS for exactly that; cache the file behind it."""
        provider, parts = self.provider, self.parts
        upstream_headers = {}
        if environ.get("HTTP_RANGE") and ranges is not None:
            upstream_headers["Range"] = "bytes=" + ",".join(f"{s}-{e}" for s, e in ranges)
        response = parts.client.request("GET", entry.path, wake=True, headers=upstream_headers, stream=True,
                                           view=entry.view)
        if response.status_code == 404:
            response.close()
            provider.delete_entry(entry)
            return self._error(start_response, 404, "no longer on the NAS")
        if response.status_code not in (200, 206):
            response.close()
            return self._error(start_response, 502, f"NAS answered {response.status_code}")
        keep = ("Content-Type", "Content-Length", "Content-Range")
        out = [("Accept-Ranges", "bytes")] + [(k, response.headers[k]) for k in keep if k in response.headers]
        nas_etag = (response.headers.get("ETag") or "").strip().removeprefix("W/").strip('"') or None
        if versions.same_nas_version(entry.nas_etag, entry.size, nas_etag, None):
            out += [(k, v) for k, v in headers if k in ("ETag", "Last-Modified")]  # the version the client knows
        else:  # a newer version than the index knew
            etag = versions.nas_version_etag(nas_etag)
            out += [("ETag", f'"{etag}"')] if etag else []
            out += [("Last-Modified", response.headers["Last-Modified"])] if "Last-Modified" in response.headers else []
        start_response(f"{response.status_code} {response.reason}", out)
        if ranges is not None:
            try:
                provider.start_download(entry)  # the whole file, into the cache, behind this answer
            except NasUnavailable as exc:  # every download slot taken: the head is sent, answer anyway
                log.info("not caching %s behind a ranged answer: %s", entry.path, exc)

        def body() -> Iterator[bytes]:
            sent = 0
            with response:
                while True:
                    try:
                        block = response.raw.read(BLOCK_BYTES)
                    except Exception as exc:  # urllib3's ProtocolError, ReadTimeoutError...: the NAS broke off
                        parts.client.monitor.note_unreachable(type(exc).__name__)
                        raise UpstreamError(f"the NAS broke off after {sent} bytes: {type(exc).__name__}") from exc
                    if not block:
                        return
                    sent += len(block)
                    parts.stats.miss_bytes += len(block)
                    yield block

        return _until_cut(body(), entry.path)


def _until_cut(blocks: Iterator, path: str) -> Iterator:
    """The body of a miss's answer, whose head (and length) the client already has. When the NAS
    breaks off the body it comes from, the answer ends by closing the client's connection, so the
    client sees a short body; a line in the log, not a traceback (decision 240)."""
    try:
        yield from blocks
    except UpstreamError as exc:
        log.info("the answer to GET %s was cut short: %s", path, exc)
        raise AnswerCut(f"GET {path} cut short: {exc}") from None
