"""Pinned paths: files and folders that always stay on the Pi and are fetched whenever the NAS is awake.

Two sources: the `cache_pinned` setting (globs, fixed while BaluPi runs) and pins added at run time
(`POST /api/cache/pins`, the dashboard's "Pin" button), kept in the `cache_pins` table this module
owns. A folder is pinned as `<folder>/*` (a glob's `*` spans `/`, in fnmatch and SQLite GLOB alike).
"""

from __future__ import annotations

import time

from sqlite_utils.migrations import Migrations

from balupi.db import Database

OWNS = ("cache_pins",)

migrations = Migrations("cache_pins")

MAX_PATTERN_CHARS = 1000


@migrations(name="0001_cache_pins")
def _create(db) -> None:
    db["cache_pins"].create({"pattern": str, "added_at": float, "added_by": str}, pk="pattern")


def stored(db: Database) -> tuple[str, ...]:
    return tuple(r[0] for r in db.query("SELECT pattern FROM cache_pins ORDER BY added_at, pattern"))


def rows(db: Database) -> list[dict]:
    return [dict(r) for r in db.query("SELECT pattern, added_at, added_by FROM cache_pins ORDER BY added_at, pattern")]


def check_pattern(pattern: object) -> str:
    """A pin as given by a person: an absolute share path or glob. ValueError says what is wrong."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError("a pin is a path in the share, like /Photos/2024 or /Photos/2024/*")
    pattern = pattern.strip()
    if not pattern.startswith("/"):
        raise ValueError(f"a pin starts with / (a path in the share), got {pattern!r}")
    if len(pattern) > MAX_PATTERN_CHARS or "\x00" in pattern or "/../" in pattern + "/":
        raise ValueError(f"not a usable path: {pattern[:80]!r}")
    return pattern.rstrip("/") or "/*"


def add(db: Database, pattern: str, added_by: str | None) -> bool:
    """True if added, False if it was pinned already."""
    with db.write() as d:
        cursor = d.execute("INSERT OR IGNORE INTO cache_pins (pattern, added_at, added_by) VALUES (?, ?, ?)",
                           (pattern, time.time(), added_by))
        return cursor.rowcount == 1


def remove(db: Database, pattern: str) -> bool:
    with db.write() as d:
        return d.execute("DELETE FROM cache_pins WHERE pattern = ?", (pattern,)).rowcount == 1
