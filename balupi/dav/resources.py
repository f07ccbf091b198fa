"""WsgiDAV resources backed by the index and the content store.

Everything a client changes lands here first, durably: content goes to a temp file that is fsynced
and renamed into the store (`ContentStore.publish`), then one index transaction records the new
tree and the pending change for the NAS. Only then does WsgiDAV send the 2xx.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import sqlite3
import time
from typing import TYPE_CHECKING

from cheroot.server import KnownLengthRFile
from wsgidav import util, xml_tools
from wsgidav.dav_error import (ERROR_DESCRIPTIONS, HTTP_BAD_REQUEST, HTTP_FORBIDDEN, HTTP_INSUFFICIENT_STORAGE,
                               HTTP_INTERNAL_ERROR, HTTP_NOT_FOUND, HTTP_PRECONDITION_FAILED, DAVError)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection

from balupi.cache.downloads import DROP_STEP_BYTES
from balupi.cache.integrity import BLOCK_BYTES, BlockHasher, ContentDamaged
from balupi.cache.index import Entry, join
from balupi.errors import InsufficientStorage

if TYPE_CHECKING:
    from balupi.cache.manager import CacheManager
    from balupi.dav.parts import CacheParts
    from balupi.dav.provider import CacheProvider

log = logging.getLogger("balupi.dav")

WIN32_NS = "{urn:schemas-microsoft-com:}"
etree = xml_tools.etree


# WsgiDAV knows the code but not its reason phrase ("507 Status" otherwise).
ERROR_DESCRIPTIONS.setdefault(HTTP_INSUFFICIENT_STORAGE, "507 Insufficient Storage")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def is_no_space(exc: BaseException) -> bool:
    """A full volume: the cache's (ENOSPC) or the database's (SQLite's 'database or disk is full')."""
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return True
    return isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == 13  # SQLITE_FULL


def insufficient_storage(cache: "CacheManager", kind: str, cause: str, environ: dict | None = None,
                         logged: bool = False) -> DAVError:
    """A 507 for WsgiDAV, the refusal logged (once a minute per kind) by the cache manager.

    With `environ` (refused before the body was read): the connection is closed after the answer,
    and WsgiDAV is told not to read the body first (it would wait for all of a huge Content-Length,
    and it decodes a chunked body a second time)."""
    if not logged:
        try:
            cache.refuse(kind, cause)
        except InsufficientStorage:
            pass
    if environ is not None:
        environ["wsgidav.all_input_read"] = 1
        return DAVError(HTTP_INSUFFICIENT_STORAGE, cause, add_headers=[("Connection", "close")])
    return DAVError(HTTP_INSUFFICIENT_STORAGE, cause)


# Uploads announced at least this long (or of unknown length) bypass the page cache: they are
# gathered in a page-aligned buffer of this size and written with O_DIRECT (decision 220).
DIRECT_BUFFER_BYTES = 4 * BLOCK_BYTES
DIRECT_MIN_BYTES = DIRECT_BUFFER_BYTES


class _Writer:
    """The file object WsgiDAV's PUT writes into: a temp file in the cache volume.

    A large body goes to the disk with O_DIRECT from a reused page-aligned buffer (decision 220):
    the kernel then neither copies it into page-cache pages nor has to write back and reclaim them,
    which was most of an upload's CPU. Where the file system refuses O_DIRECT (tmpfs, some FUSE
    mounts) or a direct write fails with EINVAL, the writer goes on through the page cache and
    drops it behind itself (decision 190). The unaligned tail is written through the page cache at
    `finish`. Durability is publish's fsync, as before (it also flushes the metadata that O_DIRECT
    writes leave to it)."""

    def __init__(self, parts: "CacheParts", expected: int | None = None, environ: dict | None = None):
        self.parts = parts
        self._environ = environ
        self.key, self.tmp, self._file = parts.store.open_temp()
        self._fd = self._file.fileno()
        self.written = 0
        # The checksums, computed on the bytes as they arrive, in this thread: XXH3 costs less than
        # the copy that handing each piece to another thread needed (decision 170).
        self.hasher = BlockHasher()
        self._dropped = 0  # the pages of [0, _dropped) were handed back (`_drop_behind`)
        self._buffer: mmap.mmap | None = None  # O_DIRECT's staging buffer (None: the page cache)
        self._filled = 0
        self._direct = False  # O_DIRECT is on
        if expected is None or expected >= DIRECT_MIN_BYTES:
            self._start_direct()

    def _start_direct(self) -> None:
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) | os.O_DIRECT)
        except OSError:
            return  # refused (EINVAL): the page cache, as before
        self._direct = True
        # anonymous and private: page-aligned, as O_DIRECT needs (a shared one would be shmem's pages)
        self._buffer = mmap.mmap(-1, DIRECT_BUFFER_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            # Two huge pages instead of 1024 small ones where the kernel has them: fewer faults, and
            # pinning the buffer for each direct write walks two pages, not 1024
            self._buffer.madvise(mmap.MADV_HUGEPAGE)
        except (AttributeError, OSError):
            pass
        self._view = memoryview(self._buffer)

    def write(self, data: bytes) -> None:
        if self._buffer is not None:
            self._write_direct(data)
        else:
            self._write_cached(data)
        self.hasher.update(data)
        self.written += len(data)
        if not self._direct and self.written - self._dropped >= 2 * DROP_STEP_BYTES:
            self._drop_behind(self.written - DROP_STEP_BYTES)

    def writelines(self, stream) -> None:
        """WsgiDAV hands the whole body here (`stream`: its generator of `read` blocks). A body of
        known length from a reader with `readinto` (the server's socket reader) is received straight
        into the O_DIRECT buffer: no bytes object per piece and no copies between them; anything
        else goes block by block through `write`."""
        body = self._environ.get("wsgi.input") if self._environ is not None else None
        if self._buffer is None or not isinstance(body, KnownLengthRFile) or not hasattr(body.rfile, "readinto"):
            for data in stream:
                self.write(data)
            return
        stream.close()  # (not started: it has read nothing)
        view, environ = self._view, self._environ
        while body.remaining > 0:
            want = min(DIRECT_BUFFER_BYTES - self._filled, body.remaining)
            got = body.rfile.readinto(view[self._filled:self._filled + want])
            if not got:
                break  # the client stopped early: `end_write` finds the body short
            environ["wsgidav.some_input_read"] = 1
            body.remaining -= got
            self.hasher.update(view[self._filled:self._filled + got])
            self._filled += got
            self.written += got
            if self._filled == DIRECT_BUFFER_BYTES:
                self._write_out(view)
                self._filled = 0
                if not self._direct and self.written - self._dropped >= 2 * DROP_STEP_BYTES:
                    self._drop_behind(self.written - DROP_STEP_BYTES)
        environ["wsgidav.all_input_read"] = 1

    def _write_direct(self, data: bytes) -> None:
        view, data = self._view, memoryview(data)
        while data:
            room = DIRECT_BUFFER_BYTES - self._filled
            piece = data[:room]
            view[self._filled:self._filled + len(piece)] = piece
            self._filled += len(piece)
            data = data[len(piece):]
            if self._filled == DIRECT_BUFFER_BYTES:
                self._write_out(view)
                self._filled = 0

    def _write_out(self, data: memoryview) -> None:
        """All of `data` into the file: with O_DIRECT while the file takes it, else cached."""
        try:
            while data:
                try:
                    data = data[os.write(self._fd, data):]
                except OSError as exc:
                    if exc.errno != errno.EINVAL or not self._direct:
                        raise
                    # a file system that takes the flag but not the write (or a short write left
                    # an unaligned offset): the page cache from here on
                    self._direct_off()
        except OSError as exc:
            self._raise_no_space(exc)
            raise

    def _direct_off(self) -> None:
        fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        self._direct = False

    def _write_cached(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            self._raise_no_space(exc)
            raise

    def _raise_no_space(self, exc: OSError) -> None:
        if is_no_space(exc):  # a body of unknown length ran out of room
            raise insufficient_storage(self.parts.cache, "cache-during", f"the cache volume filled up during an upload"
                                                               f" after {self.written / 1e6:.1f} MB") from None

    def _drop_behind(self, upto: int) -> None:
        """Give back the page cache of [0, upto), as a miss does (decision 190): nothing reads an
        upload's bytes before publish, and kept there they crowd a Pi's 1 GiB and make every page
        the next write needs a fresh one. The first call on a range starts its writeback (dirty
        pages are never dropped), a later one drops it. Durability is publish's fsync, as before."""
        upto -= upto % BLOCK_BYTES
        try:
            self._file.flush()
            os.posix_fadvise(self._fd, 0, upto, os.POSIX_FADV_DONTNEED)
        except OSError as exc:
            self._raise_no_space(exc)
            upto = 1 << 62  # a file system without it: stop asking
        self._dropped = upto

    def close(self) -> None:
        """The whole body is here (WsgiDAV calls this after the last write): what the O_DIRECT
        buffer still holds is written (through the page cache: the tail is not a whole number of
        blocks), then the file is closed."""
        if self._file.closed:
            return
        try:
            if self._buffer is not None and self._filled:
                if self._direct:
                    self._direct_off()
                self._write_out(self._view[:self._filled])
                self._filled = 0
            try:
                self._file.flush()
            except OSError as exc:
                self._raise_no_space(exc)
                raise
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Let go of the file and the buffer without writing anything more (idempotent)."""
        if self._buffer is not None:
            buffer, self._buffer = self._buffer, None
            try:
                self._view.release()
                buffer.close()
            except BufferError:
                pass  # a view of it is still held (a traceback's frame): unmapped when that goes
        if not self._file.closed:
            try:
                self._file.close()
            except OSError:
                pass  # nothing is left in its buffer to lose: `close` flushed it, or the upload failed


class _ResourceMixin:
    provider: "CacheProvider"
    entry: Entry
    environ: dict

    def get_creation_date(self):
        return self.entry.ctime

    def get_last_modified(self):
        return self.entry.mtime

    def get_display_name(self):
        return self.entry.name

    def get_property_value(self, name):
        if name == "{DAV:}getetag":  # RFC 4918: the entity tag, quotes included
            etag = self.get_etag()
            if etag is None:
                raise DAVError(HTTP_NOT_FOUND)
            return f'"{etag}"'
        return super().get_property_value(name)

    def set_property_value(self, name, value, *, dry_run=False):
        """Dead properties are kept, Windows' Win32* ones included, and journaled for the NAS.

        WsgiDAV's `emulate_win32_lastmod` hotfix answers 200 to PROPPATCH of Win32CreationTime,
        Win32LastAccessTime and Win32FileAttributes and drops them; here they are stored like any
        dead property, and Win32LastModifiedTime also sets the modification time (as the hotfix
        does, except for Windows 7's redirector, whose times it does not trust either).
        """
        if not name.startswith("{DAV:}") and not dry_run:
            self.provider.note_props_changed(self.entry)  # before the change: a crash costs a needless sync
        pm = self.provider.prop_manager
        if not name.startswith(WIN32_NS) or pm is None:
            return super().set_property_value(name, value, dry_run=dry_run)
        if (name == WIN32_NS + "Win32LastModifiedTime" and value is not None and value.text
                and "MiniRedir/6.1" not in self.environ.get("HTTP_USER_AGENT", "")):
            self.set_last_modified(self.path, value.text, dry_run=dry_run)
        if value is None:
            return pm.remove_property(self.get_ref_url(), name, dry_run, self.environ)
        return pm.write_property(self.get_ref_url(), name, etree.tostring(value), dry_run, self.environ)

    def set_last_modified(self, dest_path, time_stamp, *, dry_run):
        secs = time_stamp if isinstance(time_stamp, (int, float)) else util.parse_time_string(time_stamp)
        if secs is None:
            return False
        if not dry_run:
            self.parts.index.set_mtime(self.entry.view, dest_path.rstrip("/") or "/", float(secs))
        return True

    def delete(self):
        self.provider.delete_entry(self.entry)
        self.remove_all_properties(recursive=True)
        self.remove_all_locks(recursive=True)

    def support_recursive_move(self, dest_path):
        return True

    def move_recursive(self, dest_path):
        dest_path = dest_path.rstrip("/") or "/"
        self.parts.index.move(self.entry.view, self.entry.path, dest_path)
        self.provider.sidecars_follow(self.entry.view, dest_path)
        if self.provider.prop_manager:
            dest_res = self.provider.get_resource_inst(dest_path, self.environ)
            self.provider.prop_manager.move_properties(
                self.get_ref_url(), dest_res.get_ref_url(), with_children=True, environ=self.environ
            )

    def _copy_props(self, dest_path: str) -> None:
        if self.provider.prop_manager:
            dest_res = self.provider.get_resource_inst(dest_path, self.environ)
            self.provider.prop_manager.copy_properties(self.get_ref_url(), dest_res.get_ref_url(), self.environ)


class CacheFile(_ResourceMixin, DAVNonCollection):
    def __init__(self, provider: "CacheProvider", parts: "CacheParts", entry: Entry, environ: dict):
        super().__init__(entry.path, environ)
        self.provider = provider
        self.parts = parts
        self.entry = entry
        self.name = entry.name
        self._writer: _Writer | None = None

    def get_content_length(self):
        return self.entry.size

    def get_content_type(self):
        return self.entry.content_type or "application/octet-stream"

    def get_etag(self):
        return self.entry.etag

    def support_etag(self):
        return self.entry.etag is not None

    def support_ranges(self):
        return True

    def get_content(self):
        """Used by WsgiDAV's own GET (the fast lane answers most GETs itself)."""
        key = self.provider.ensure_cached(self.entry)
        try:
            self.provider.checked_key(key)
        except ContentDamaged as exc:
            raise DAVError(HTTP_INTERNAL_ERROR, f"the Pi's copy of this file is damaged ({exc.detail});"
                                                " it was taken aside") from None
        return self.parts.store.open_read(key)

    def begin_write(self, *, content_type=None):
        if self.provider.is_readonly():
            raise DAVError(HTTP_FORBIDDEN)
        expected = _expected_length(self.environ)
        if expected is not None and expected < 0:
            raise DAVError(HTTP_BAD_REQUEST, "invalid Content-Length")
        try:
            # Room is made before the bytes arrive, and a write that cannot fit is refused before
            # anything is written or evicted.
            self.parts.cache.reserve_write(expected or 0)
        except InsufficientStorage as exc:
            raise insufficient_storage(self.parts.cache, "cache", str(exc), self.environ, logged=True) from None
        self._reserved = expected or 0
        self._content_type = content_type
        try:
            self._writer = _Writer(self.parts, expected, self.environ)
        except OSError as exc:
            self.parts.cache.release(self._reserved)
            if is_no_space(exc):
                raise insufficient_storage(self.parts.cache, "cache", "the cache volume is full", self.environ) from None
            raise
        return self._writer

    def end_write(self, *, with_errors):
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            if with_errors:
                writer.abandon()
            else:
                try:
                    writer.close()  # (WsgiDAV closed it already; here for any other caller)
                except BaseException:
                    self.parts.store.discard_temp(writer.tmp)
                    raise
            self._commit(writer, with_errors)
        finally:
            self.parts.cache.release(self._reserved)

    def _commit(self, writer: _Writer, with_errors: bool) -> None:
        if with_errors:
            self.parts.store.discard_temp(writer.tmp)
            return
        expected = _expected_length(self.environ)
        if expected is not None and expected != writer.written:
            self.parts.store.discard_temp(writer.tmp)
            raise DAVError(HTTP_BAD_REQUEST, f"body ended after {writer.written} of {expected} bytes")
        try:
            self.entry = self.provider.commit_content(self.entry, writer.key, writer.tmp, writer.written,
                                                      self._content_type, self.environ,
                                                      blocks=writer.hasher.blocks_hex())
        except (OSError, sqlite3.Error) as exc:
            self.parts.store.discard_temp(writer.tmp)  # commit_content removed what it published
            if not is_no_space(exc):
                raise
            volume = "the database's volume" if isinstance(exc, sqlite3.Error) else "the cache volume"
            raise insufficient_storage(self.parts.cache, "db" if isinstance(exc, sqlite3.Error) else "cache",
                                       f"{volume} filled up while the upload was committed ({exc})") from None

    def copy_move_single(self, dest_path, *, is_move):
        self.provider.copy_entry(self.entry, dest_path.rstrip("/"))
        self._copy_props(dest_path)


class CacheCollection(_ResourceMixin, DAVCollection):
    def __init__(self, provider: "CacheProvider", parts: "CacheParts", entry: Entry, environ: dict):
        super().__init__(entry.path, environ)
        self.provider = provider
        self.parts = parts
        self.entry = entry
        self.name = entry.name

    def get_etag(self):
        return None

    def get_member_names(self):
        self.provider.ensure_listed(self.entry)
        return self.parts.index.child_names(self.entry.view, self.entry.path)

    def get_member(self, name):
        entry = self.parts.index.get(self.entry.view, join(self.entry.path, name))
        return self.provider.resource_for(entry, self.environ) if entry else None

    def get_member_list(self):
        """All members from one index query (not one lookup per name)."""
        self.provider.ensure_listed(self.entry)
        return [self.provider.resource_for(e, self.environ) for e in self.parts.index.children(self.entry.view, self.entry.path)]

    def create_empty_resource(self, name):
        """A new file: recorded at once for LOCK (a lock-null URL becomes an empty file), but for PUT
        only by `end_write`, once the whole body is in: a PUT that fails leaves nothing behind."""
        assert "/" not in name
        if "HTTP_IF_MATCH" in self.environ:
            # RFC 9110 13.1.1: If-Match is false when there is no current version (even "*"): a
            # client updating the version it saw must not bring back a file deleted meanwhile.
            raise DAVError(HTTP_PRECONDITION_FAILED, "If-Match: there is no such file")
        path = join(self.entry.path, name)
        placeholder = Entry(0, self.entry.view, path, self.entry.path, name, False, 0, time.time(), time.time(),
                            None, None, None, False, False, True, False, None)
        if self.environ.get("REQUEST_METHOD") == "PUT":
            return CacheFile(self.provider, self.parts, placeholder, self.environ)
        key, tmp, f = self.parts.store.open_temp()
        f.close()
        entry = self.provider.commit_content(placeholder, key, tmp, 0, None, self.environ, new=True,
                                             blocks=BlockHasher().blocks_hex())
        return self.provider.resource_for(entry, self.environ)

    def create_collection(self, name):
        assert "/" not in name
        self.provider.make_collection(self.entry.view, join(self.entry.path, name))

    def copy_move_single(self, dest_path, *, is_move):
        dest_path = dest_path.rstrip("/")
        if self.parts.index.get(self.entry.view, dest_path) is None:
            self.provider.make_collection(self.entry.view, dest_path)
        self._copy_props(dest_path)


def _expected_length(environ: dict) -> int | None:
    """The body length the client announced (Content-Length, or X-Expected-Entity-Length with chunking)."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        raw = environ.get("HTTP_X_EXPECTED_ENTITY_LENGTH")
    else:
        raw = environ.get("CONTENT_LENGTH")
    try:
        return int(raw) if raw not in (None, "") else None
    except ValueError:
        return None
