"""WebDAV dead properties in SQLite (table `dav_props`), so they survive a restart.

Implements the interface of WsgiDAV's PropertyManager. Windows Explorer writes its Win32* times as
dead properties during every copy; they must be accepted and kept.

Properties belong to a view (a user's tree): the stored `url` of view "" is the ref URL itself, that
of any other view is `@<view>:<ref URL>` (`storage_url`), so two users' files of the same path
never share properties. (User names never contain ':', and ref URLs always start with '/'.)
"""

from __future__ import annotations

from balupi.dav.index import subtree_bounds
from balupi.db import Database


def storage_url(view: str, url: str) -> str:
    """The `dav_props.url` (and `dav_locks.root`) key of `url` in `view`."""
    return url if not view else f"@{view}:{url}"


def view_of(environ) -> str:
    from balupi.auth.service import IDENTITY_KEY

    identity = environ.get(IDENTITY_KEY) if environ else None
    return identity.view if identity is not None else ""


class SqlitePropertyManager:
    def __init__(self, db: Database):
        self.db = db

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
        if dry_run:
            return
        norm_url = storage_url(view_of(environ), norm_url)
        with self.db.write() as d:
            d.execute("INSERT OR REPLACE INTO dav_props (url, name, value) VALUES (?, ?, ?)", (norm_url, name, property_value))

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
