"""The cache-backed WsgiDAV provider: the tree from the index, content from the SSD, the NAS on a miss.

Lookups never touch the NAS when the index can answer: a path under a collection whose members
are known (`listed`) either is in the index or does not exist. Only an unlisted collection, or
content that is not cached, needs the NAS; then `NasClient` wakes it (up to the wake timeout) and
a NAS that cannot be had becomes `503 Service Unavailable` with `Retry-After`.

Client noise (Finder's `._*` and `.DS_Store`, Windows' `desktop.ini`, ...) is answered from the
index alone, never from the NAS, and files created under those names stay on the Pi.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from pathlib import Path

from wsgidav.dav_error import HTTP_NOT_FOUND, DAVError
from wsgidav.dav_provider import DAVProvider

from balupi.cache.damage import Damage, handle_damaged
from balupi.cache.integrity import ContentDamaged, Meta, State, check_whole
from balupi.auth.service import IDENTITY_KEY
from balupi.cache.downloads import UpstreamError, UpstreamMissing
from balupi.cache.index import Entry, Index, name_of, parent_of
from balupi.cache import versions
from balupi.dav.parts import CacheParts
from balupi.dav.resources import CacheCollection, CacheFile
from balupi.errors import NasUnavailable
from balupi.events import Event
from balupi.nas.monitor import NasState

log = logging.getLogger("balupi.dav")

WRITE_METHODS = frozenset({"PUT", "MKCOL", "LOCK", "PROPPATCH", "COPY", "MOVE", "DELETE"})


def unavailable(exc: NasUnavailable) -> DAVError:
    return DAVError(503, str(exc), add_headers=[("Retry-After", str(exc.retry_after_s))])


class CacheProvider(DAVProvider):
    def __init__(self, parts: CacheParts, local_only_names: tuple[str, ...]):
        super().__init__()
        self.parts = parts
        # The composition root and the CLI's commands use these (never the fast lane or resources).
        self.index, self.store, self.client, self.monitor = parts.index, parts.store, parts.client, parts.monitor
        self.events, self.cache, self.downloads = parts.events, parts.cache, parts.downloads
        self.stats, self.verified = parts.stats, parts.verified
        self._noise = tuple(p.lower() for p in local_only_names)
        for view in ("",):
            parts.index.ensure_root(view, listed=not parts.monitor.configured)

    def __repr__(self) -> str:
        return "BaluPi CacheProvider"

    # -- names and views -------------------------------------------------------------------------

    def is_noise(self, name: str) -> bool:
        lowered = name.lower()
        return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in self._noise)

    def view_for(self, environ: dict) -> str:
        """The view (whose tree) of this request: set by DavGuard from who is asking."""
        identity = environ.get(IDENTITY_KEY)
        return identity.view if identity is not None else ""

    # -- lookups ---------------------------------------------------------------------------------

    def lookup(self, view: str, path: str, method: str = "GET") -> Entry | None:
        """The index entry for `path`, listing unlisted parents from the NAS when needed.

        Raises NasUnavailable when the NAS is needed and cannot be had.
        """
        path = path.rstrip("/") or "/"
        entry = self.index.get(view, path)
        if entry is not None:
            return entry
        if path == "/":
            return self.index.ensure_root(view, listed=not self.monitor.configured)
        if self.is_noise(name_of(path)):
            return None
        parent = self.lookup(view, parent_of(path) or "/", method)
        if parent is None or not parent.is_dir or parent.listed:
            return None
        if method in WRITE_METHODS and self.monitor.state is not NasState.AWAKE:
            return None  # don't wake the NAS to create something; sync settles conflicts
        self.ensure_listed(parent)
        return self.index.get(view, path)

    def ensure_listed(self, entry: Entry) -> None:
        """Fill the index with the members of a collection it has never listed (may wake the NAS)."""
        if entry.listed:
            return
        if not self.monitor.configured:
            self.index.mark_listed(entry.id)
            entry.listed = True
            return
        asked_at = time.time()
        try:
            members = self.client.propfind(entry.path, "1", wake=True, view=entry.view)
        except NasUnavailable as exc:
            raise unavailable(exc) from None
        if members is None:
            members = []  # the NAS has no such collection (yet): it exists only here
        own = entry.path.strip("/")
        stale = self.index.apply_listing(entry.view, entry.path, [m for m in members if m.path != own], asked_at)
        for key in stale:
            self.store.remove(key)
        entry.listed = True

    def content_damaged(self, key: str, detail: str) -> Damage:
        """Content `key` failed its checksum: take it aside (see balupi.cache.damage)."""
        self.verified.discard(key)
        self.verified.note_damaged()
        return handle_damaged(self.parts.db, self.store, key, detail)

    def checked_key(self, key: str) -> str:
        """`key`, once its whole content is verified (for WsgiDAV's own GET and for COPY, which read
        it without the fast lane's block checks). Raises ContentDamaged (and takes it aside)."""
        if key in self.verified:
            return key
        try:
            meta = self.store.read_meta(key)
            if meta is None:
                return key  # from before sidecars: nothing to check against (`cache verify` adds one)
            fd = self.store.open_content(key)
            try:
                check_whole(fd, key, meta)
            finally:
                os.close(fd)
        except ContentDamaged as exc:
            self.content_damaged(key, exc.detail)
            raise
        self.verified.add(key, meta.size)
        return key

    def get_resource_inst(self, path: str, environ: dict):
        view = self.view_for(environ)
        try:
            entry = self.lookup(view, path, environ.get("REQUEST_METHOD", "GET"))
        except NasUnavailable as exc:
            raise unavailable(exc) from None
        return self.resource_for(entry, environ) if entry is not None else None

    def resource_for(self, entry: Entry, environ: dict):
        return (CacheCollection(self, self.parts, entry, environ) if entry.is_dir
                else CacheFile(self, self.parts, entry, environ))

    # -- content ---------------------------------------------------------------------------------

    def ensure_cached(self, entry: Entry) -> str:
        """The content key of `entry`, downloading it first if needed (may wake the NAS)."""
        if entry.cache_key and self.store.exists(entry.cache_key):
            return entry.cache_key
        try:
            download = self.start_download(entry)
        except NasUnavailable as exc:  # NasBusy: as many downloads as may run do
            raise unavailable(exc) from None
        if download is None:
            raise unavailable(NasUnavailable(f"{entry.path} is too large for the cache", retry_after_s=3600))
        try:
            for _ in download.stream():
                pass
            download.wait_done(60.0)  # the last byte arrives before the entry is published
        except UpstreamMissing:
            raise DAVError(HTTP_NOT_FOUND) from None
        except (UpstreamError, NasUnavailable) as exc:
            raise unavailable(NasUnavailable(str(exc))) from None
        fresh = self.index.get(entry.view, entry.path)
        if fresh is None or not fresh.cache_key:
            raise unavailable(NasUnavailable(f"{entry.path} could not be cached"))
        return fresh.cache_key

    def start_download(self, entry: Entry, wake: bool = True):
        """The download of `entry` into the cache (joining one that runs), or None when it may not
        be cached (larger than the cache, or no room that can be made). `wake=False` for background
        fetches: they fail rather than wake a sleeping NAS."""
        running = self.downloads.active(entry.view, entry.path)
        if running is not None:
            running.wake = running.wake or wake
            return running
        if not self.cache.admit(entry.size):
            return None
        try:
            download, started = self.downloads.get_or_start(entry, reserved_bytes=entry.size, wake=wake)
        except BaseException:  # NasBusy, or BaluPi is stopping: the room admitted for it is not used
            self.cache.release(entry.size)
            raise
        if not started:
            self.cache.release(entry.size)  # someone else started it meanwhile
        return download

    def commit_content(self, entry: Entry, key: str, tmp: Path, size: int, content_type: str | None,
                       environ: dict, new: bool = False, blocks: str | None = None) -> Entry:
        """Make written content durable with its sidecar, then record it in the index and the journal.

        Content whose index transaction fails (the database's volume full, ...) is removed again:
        nothing is acknowledged, so nothing is left behind."""
        mtime = time.time()
        oc_mtime = environ.get("HTTP_X_OC_MTIME")
        if oc_mtime and oc_mtime.strip().isdigit():
            mtime = float(oc_mtime.strip())
        local_only = self.is_noise(entry.name) or entry.local_only
        meta = None
        if blocks is not None:
            old = self.index.get(entry.view, entry.path)
            base = None if old is None else Index._nas_base(old)
            local_only = local_only or bool(old is not None and old.local_only)
            meta = Meta(view=entry.view, path=entry.path, state=State.LOCAL if local_only else State.PENDING,
                        size=size, blocks=blocks, mtime=mtime, base_etag=base, content_type=content_type,
                        client_etag=versions.local_version_etag(key))
        self.store.publish(key, tmp, meta)
        try:
            replaced = self.index.put_file(entry.view, entry.path, key, size, mtime, content_type, local_only,
                                           versions.local_version_etag(key))
        except BaseException:
            self.store.remove(key)
            raise
        if replaced and replaced != key:
            self._drop_content([replaced])
        fresh = self.index.get(entry.view, entry.path)
        assert fresh is not None
        if not new:
            self.events.emit(Event.CACHE_FILE_ADDED, path=entry.path, size_bytes=size)
            self.events.emit(Event.UPLOAD_FINISHED, user=environ.get("wsgidav.auth.user_name") or "", path=entry.path,
                             size_bytes=size)
        return fresh

    def sidecars_follow(self, view: str, path: str) -> None:
        """After a move: the sidecars of pending content at or under `path` name its new path (so a
        lost database does not bring the change back under the old name). Clean content's sidecars
        are brought up to date by `balupi cache verify --repair`."""
        entry = self.index.get(view, path)
        if entry is None:
            return
        moved = [entry] if not entry.is_dir else self.index.descendants(view, path)
        for e in moved:
            if e.cache_key and (e.dirty or e.local_only):
                self.store.update_meta(e.cache_key, view=view, path=e.path)

    def note_props_changed(self, entry: Entry) -> None:
        """A PROPPATCH is about to change dead properties of `entry`: journal it for the NAS."""
        if not (entry.local_only or self.is_noise(entry.name)):
            self.index.note_props_changed(entry.view, entry.path)

    def make_collection(self, view: str, path: str) -> None:
        self.index.mkdir(view, path, local_only=self.is_noise(name_of(path)))

    def delete_entry(self, entry: Entry) -> None:
        self._drop_content(self.index.delete(entry.view, entry.path))

    def copy_entry(self, entry: Entry, dest_path: str) -> None:
        key_map = {}
        if not entry.is_dir:
            key = self.ensure_cached(entry)
            meta = Meta(view=entry.view, path=dest_path, state=State.LOCAL if entry.local_only else State.PENDING,
                        size=0, blocks="", mtime=entry.mtime, content_type=entry.content_type)
            try:
                key_map[key] = self.store.copy(key, meta)
            except ContentDamaged as exc:
                self.content_damaged(key, exc.detail)
                raise DAVError(500, f"the Pi's copy of {entry.path} is damaged ({exc.detail}); it was taken aside") from None
            entry = self.index.get(entry.view, entry.path) or entry
        existing = self.index.get(entry.view, dest_path)
        if existing is not None:
            self.delete_entry(existing)
        self.index.copy(entry.view, entry.path, dest_path, key_map)

    def _drop_content(self, keys: list[str]) -> None:
        """Remove content nothing needs any more: no entry names it and no pending change uploads it
        (the sync removes the latter once applied)."""
        for key in keys:
            if not self.index.key_in_use(key):
                self.store.remove(key)
