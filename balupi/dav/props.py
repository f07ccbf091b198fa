"""WebDAV dead properties in SQLite (table `dav_props`), so they survive a restart.

Implements the interface of WsgiDAV's PropertyManager. Windows Explorer writes its Win32* times as
dead properties during every copy; they must be accepted and kept.

Properties belong to a view (a user's tree): the stored `url` of view "" is the ref URL itself, that
of any other view is `@<view>:<ref URL>` (`storage_url`), so two users' files of the same path
never share properties. (User names never contain ':', and ref URLs always start with '/'.)

Limits (a normal user must not be able to fill the Pi's memory through PROPFIND answers): a value
is at most `MAX_VALUE_BYTES`, one resource holds at most `MAX_PER_RESOURCE` properties of
`MAX_BYTES_PER_RESOURCE` in all, one view at most `MAX_BYTES_PER_VIEW`. A PROPPATCH past a limit
answers 507 (Insufficient Storage) for that property, as RFC 4918 (9.2.1) says, and stores
nothing of the request. Windows' Win32* times are about 100 bytes each.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import quote

from wsgidav.dav_error import HTTP_INSUFFICIENT_STORAGE, DAVError

from balupi.cache.index import subtree_bounds
from balupi.db import Database

MAX_VALUE_BYTES = 16 * 1024
MAX_PER_RESOURCE = 64
MAX_BYTES_PER_RESOURCE = 64 * 1024
MAX_BYTES_PER_VIEW = 64 << 20
VIEW_TOTAL_TTL_S = 60.0
PENDING_KEY = "balupi.dav.props_pending"  # environ: what a PROPPATCH's dry run has counted so far  # the per-view total is recounted this often (deletes only lower it)


def storage_url(view: str, url: str) -> str:
    """The `dav_props.url` (and `dav_locks.root`) key of `url` in `view`."""
    return url if not view else f"@{view}:{url}"


OWNS = ("dav_props",)


def urls_with_props(db: Database, view: str, path: str) -> set[str]:
    """Storage URLs of `path` (a decoded path) and everything below it, in `view`, that have dead
    properties: one range query (a PROPFIND reads a whole listing's properties from it)."""
    ref = storage_url(view, quote(path.rstrip("/")))
    lo, hi = ref + "/", ref + "0"
    rows = db.query(
        "SELECT DISTINCT url FROM dav_props WHERE url = ? OR url = ? OR (url > ? AND url < ?)",
        (ref if path.rstrip("/") else storage_url(view, "/"), lo, lo, hi),
    )
    return {r[0] for r in rows}


def stored_values(db: Database, url: str) -> list[tuple[str, bytes]]:
    """(name, stored value) of every dead property of storage URL `url`."""
    return [(name, value) for name, value in db.query("SELECT name, value FROM dav_props WHERE url = ?", (url,))]


def stored_values_of(db: Database, urls: list[str]) -> dict[str, list[tuple[str, bytes]]]:
    """`stored_values` of several storage URLs in one query ({url: [(name, value)]}, by name as
    `stored_values` gives them; URLs without properties are left out)."""
    found: dict[str, list[tuple[str, bytes]]] = {}
    if not urls:
        return found
    marks = ", ".join("?" * len(urls))
    for url, name, value in db.query(f"SELECT url, name, value FROM dav_props WHERE url IN ({marks}) ORDER BY url, name",
                                     tuple(urls)):
        found.setdefault(url, []).append((name, value))
    return found


def dead_prop_values(db: Database, view: str, ref: str) -> list[bytes]:
    """The dead properties of ref URL `ref` in `view`, each the XML of its element (write-back
    copies them to the NAS)."""
    return [element_xml(value) for _, value in stored_values(db, storage_url(view, ref))]


def element_xml(value) -> bytes:
    """A stored dead property as the XML of its element (without an XML declaration)."""
    data = value.encode() if isinstance(value, str) else bytes(value)
    if data.startswith(b"<?xml"):
        data = data[data.index(b"?>") + 2:].lstrip()
    return data


def view_of(environ) -> str:
    from balupi.auth.service import IDENTITY_KEY

    identity = environ.get(IDENTITY_KEY) if environ else None
    return identity.view if identity is not None else ""


def _view_bounds(view: str) -> tuple[str, str]:
    """The range of `dav_props.url` keys of one view."""
    prefix = storage_url(view, "/")
    return prefix, prefix[:-1] + "0"  # "/" < every key of the view < "0"


class SqlitePropertyManager:
    def __init__(self, db: Database):
        self.db = db
        self._lock = threading.Lock()
        self._view_bytes: dict[str, tuple[int, float]] = {}  # view -> (bytes stored, when counted)

    def __repr__(self) -> str:
        return "SqlitePropertyManager"

    def get_properties(self, norm_url: str, environ=None) -> list[str]:
        norm_url = storage_url(view_of(environ), norm_url)
        return [r[0] for r in self.db.query("SELECT name FROM dav_props WHERE url = ?", (norm_url,))]

    def get_property(self, norm_url: str, name: str, environ=None):
        norm_url = storage_url(view_of(environ), norm_url)
        row = self.db.query_one("SELECT value FROM dav_props WHERE url = ? AND name = ?", (norm_url, name))
        return bytes(row[0]) if row is not None and isinstance(row[0], (bytes, memoryview)) else (row[0] if row else None)

    def write_property(self, norm_url: str, name: str, property_value, dry_run=False, environ=None) -> None:
        view = view_of(environ)
        norm_url = storage_url(view, norm_url)
        size = len(property_value) + len(name)
        # In the dry run too, counting what the request's earlier properties will add: a request
        # that would not fit stores nothing (WsgiDAV answers 424 for the others).
        pending = environ.setdefault(PENDING_KEY, {}) if dry_run and environ is not None else {}
        before = pending.get(norm_url, (0, 0))
        self._check_room(view, norm_url, name, size, before)
        if dry_run:
            pending[norm_url] = (before[0] + 1, before[1] + size)
            return
        with self.db.write() as d:
            d.execute("INSERT OR REPLACE INTO dav_props (url, name, value) VALUES (?, ?, ?)", (norm_url, name, property_value))
        with self._lock:
            counted = self._view_bytes.get(view)
            if counted is not None:
                self._view_bytes[view] = (counted[0] + size, counted[1])

    def _check_room(self, view: str, url: str, name: str, size: int, pending: tuple[int, int] = (0, 0)) -> None:
        if size > MAX_VALUE_BYTES:
            raise DAVError(HTTP_INSUFFICIENT_STORAGE, f"a dead property may hold at most {MAX_VALUE_BYTES} bytes")
        row = self.db.query_one(
            "SELECT count(*), coalesce(sum(length(value) + length(name)), 0) FROM dav_props WHERE url = ? AND name != ?",
            (url, name))
        if row[0] + pending[0] >= MAX_PER_RESOURCE or row[1] + pending[1] + size > MAX_BYTES_PER_RESOURCE:
            raise DAVError(HTTP_INSUFFICIENT_STORAGE,
                           f"a resource may hold at most {MAX_PER_RESOURCE} dead properties of {MAX_BYTES_PER_RESOURCE} bytes")
        if self._view_total(view) + pending[1] + size > MAX_BYTES_PER_VIEW:
            raise DAVError(HTTP_INSUFFICIENT_STORAGE, "no room left for more dead properties")

    def _view_total(self, view: str) -> int:
        with self._lock:
            counted = self._view_bytes.get(view)
        if counted is not None and time.monotonic() - counted[1] < VIEW_TOTAL_TTL_S:
            return counted[0]
        lo, hi = _view_bounds(view)
        total = self.db.query_one(
            "SELECT coalesce(sum(length(value) + length(name)), 0) FROM dav_props WHERE url >= ? AND url < ?", (lo, hi))[0]
        with self._lock:
            self._view_bytes[view] = (total, time.monotonic())
        return total

    def remove_property(self, norm_url: str, name: str, dry_run=False, environ=None) -> None:
        if dry_run:
            return
        norm_url = storage_url(view_of(environ), norm_url)
        with self.db.write() as d:
            d.execute("DELETE FROM dav_props WHERE url = ? AND name = ?", (norm_url, name))

    def remove_properties(self, norm_url: str, environ=None) -> None:
        norm_url = storage_url(view_of(environ), norm_url)
        with self.db.write() as d:
            d.execute("DELETE FROM dav_props WHERE url = ?", (norm_url,))

    def copy_properties(self, src_url: str, dest_url: str, environ=None) -> None:
        view = view_of(environ)
        src_url, dest_url = storage_url(view, src_url), storage_url(view, dest_url)
        size = self.db.query_one("SELECT coalesce(sum(length(value) + length(name)), 0) FROM dav_props WHERE url = ?",
                                 (src_url,))[0]
        if size and self._view_total(view) + size > MAX_BYTES_PER_VIEW:
            raise DAVError(HTTP_INSUFFICIENT_STORAGE, "no room left for more dead properties")
        with self.db.write() as d:
            d.execute("DELETE FROM dav_props WHERE url = ?", (dest_url,))
            d.execute("INSERT INTO dav_props (url, name, value) SELECT ?, name, value FROM dav_props WHERE url = ?", (dest_url, src_url))

    def move_properties(self, src_url: str, dest_url: str, with_children: bool, environ=None) -> None:
        view = view_of(environ)
        src_url, dest_url = storage_url(view, src_url), storage_url(view, dest_url)
        with self.db.write() as d:
            d.execute("DELETE FROM dav_props WHERE url = ?", (dest_url,))
            d.execute("UPDATE dav_props SET url = ? WHERE url = ?", (dest_url, src_url))
            if with_children:
                lo, hi = subtree_bounds(src_url)
                n = len(src_url.rstrip("/"))
                d.execute(
                    "UPDATE OR REPLACE dav_props SET url = ? || substr(url, ?) WHERE url > ? AND url < ?",
                    (dest_url.rstrip("/"), n + 1, lo, hi),
                )
