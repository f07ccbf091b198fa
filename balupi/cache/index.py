"""The offline index of the NAS tree (table `entries`; the only module that runs SQL on it).

Every change a client makes is one transaction here that updates the tree AND appends the pending
change for the NAS (`balupi.cache.journal`), so the two can never disagree after a crash. Reads are single
indexed queries; a collection's members are one query (`children`).
"""

from __future__ import annotations

import mimetypes
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from balupi.cache import heat, journal, versions
from balupi.cache.heat import HALF_LIFE_S
from balupi.cache.journal import Op
from balupi.db import Database
from balupi.nas.client import RemoteEntry

OWNS = ("entries",)

COLUMNS = (
    "id, view, path, parent, name, is_dir, size, mtime, ctime, etag, content_type, cache_key, dirty, "
    "local_only, listed, remote, base_etag, nas_etag"
)

LISTING_COLUMNS = "name, is_dir, size, mtime, ctime, etag, content_type"  # Index.listing_rows


def parent_of(path: str) -> str | None:
    if path == "/":
        return None
    head = path.rsplit("/", 1)[0]
    return head or "/"


def name_of(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def join(parent: str, name: str) -> str:
    return (parent.rstrip("/") + "/" + name) if parent != "/" else "/" + name


def subtree_bounds(path: str) -> tuple[str, str]:
    """Bounds for `path > lo AND path < hi` selecting every descendant of `path` (index-friendly)."""
    prefix = path.rstrip("/") + "/"
    return prefix, prefix[:-1] + "0"  # '0' sorts right after '/'


def _within_any(path: str, roots: Iterable[str]) -> bool:
    """Whether `path` is one of `roots` or lies below one."""
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def guess_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


@dataclass
class Entry:
    id: int
    view: str
    path: str
    parent: str | None
    name: str
    is_dir: bool
    size: int
    mtime: float
    ctime: float
    etag: str | None
    content_type: str | None
    cache_key: str | None
    dirty: bool
    local_only: bool
    listed: bool
    remote: bool
    base_etag: str | None
    nas_etag: str | None = None  # the NAS's ETag of this content (see balupi.cache.versions)

    @classmethod
    def from_row(cls, row) -> "Entry":
        return cls(
            row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], row[7], row[8], row[9], row[10],
            row[11], bool(row[12]), bool(row[13]), bool(row[14]), bool(row[15]), row[16], row[17],
        )

    @property
    def cached(self) -> bool:
        return self.cache_key is not None


GET_MEMO_ROWS = 32  # per thread: 32 workers x 32 rows x ~1.2 KB (decision 186, amended)


class Index:
    def __init__(self, db: Database, half_life_s: float = HALF_LIFE_S):
        self.db = db
        self.half_life_s = half_life_s
        self._get_memo = threading.local()  # per thread: `stamp` and `rows`, see `get`
        self._access_lock = threading.Lock()
        self._access: Counter[tuple[str, str]] = Counter()
        self._access_at: dict[tuple[str, str], float] = {}

    # -- reads -----------------------------------------------------------------------------------

    def get(self, view: str, path: str) -> Entry | None:
        """The entry of `path`, or None. Rows read are remembered per thread while nothing was
        written: no write transaction of this process began or ended (`Database.generation`) and
        no commit by another process has been seen (`Database.outside_commits`, which looks at
        most every 0.1 s: such a commit is seen by every call starting 0.1 s after it, decision
        201). Both are read before the query, so a row read while a write went on is dropped at
        the next call; a fresh Entry is made from the row every time."""
        db = self.db
        stamp = (db.generation, db.outside_commits())
        memo = self._get_memo
        rows = getattr(memo, "rows", None)
        if rows is None or memo.stamp != stamp or len(rows) >= GET_MEMO_ROWS:
            rows = memo.rows = {}
            memo.stamp = stamp
        key = (view, path)
        row = rows.get(key, False)
        if row is False:
            row = rows[key] = db.raw().execute(f"SELECT {COLUMNS} FROM entries WHERE view = ? AND path = ?",
                                               (view, path)).fetchone()
        return Entry.from_row(row) if row else None

    def read_stamp(self) -> tuple | None:
        """The (write generation, outside commits) this thread's last `get` read its row under:
        while both are the same, that row is the row (the answer memo's check, decision 230)."""
        return getattr(self._get_memo, "stamp", None)

    def children(self, view: str, path: str) -> list[Entry]:
        rows = self.db.raw().execute(
            f"SELECT {COLUMNS} FROM entries WHERE view = ? AND parent = ? ORDER BY name", (view, path)
        ).fetchall()
        return [Entry.from_row(r) for r in rows]

    def listing_rows(self, view: str, path: str) -> list[tuple]:
        """(name, is_dir, size, mtime, ctime, etag, content_type) of each child of `path`, by name:
        what a PROPFIND answer shows, without building an `Entry` per child."""
        cursor = self.db.raw().cursor()
        cursor.row_factory = None  # plain tuples: cheaper to build and to unpack than sqlite3.Row
        return cursor.execute(
            f"SELECT {LISTING_COLUMNS} FROM entries WHERE view = ? AND parent = ? ORDER BY name", (view, path)
        ).fetchall()

    def child_names(self, view: str, path: str) -> list[str]:
        rows = self.db.raw().execute("SELECT name FROM entries WHERE view = ? AND parent = ? ORDER BY name", (view, path))
        return [r[0] for r in rows]

    def descendants(self, view: str, path: str) -> list[Entry]:
        lo, hi = subtree_bounds(path)
        rows = self.db.raw().execute(
            f"SELECT {COLUMNS} FROM entries WHERE view = ? AND path > ? AND path < ? ORDER BY path", (view, lo, hi)
        ).fetchall()
        return [Entry.from_row(r) for r in rows]

    def note_access(self, view: str, path: str) -> None:
        """Count a read in memory; `flush_access` writes the counts (a write per GET would cost)."""
        with self._access_lock:
            self._access[(view, path)] += 1
            self._access_at[(view, path)] = time.time()

    def flush_access(self) -> int:
        """Write the counted reads: hits, last access, and the heat that decides what stays cached."""
        with self._access_lock:
            counts, self._access = self._access, Counter()
            times, self._access_at = self._access_at, {}
        if not counts:
            return 0
        with self.db.write() as d:
            for (view, path), n in counts.items():
                row = d.execute("SELECT id, heat, last_access, size FROM entries WHERE view = ? AND path = ?", (view, path)).fetchone()
                if row is None:
                    continue
                now = times[(view, path)]
                new_heat = heat.bump(row[1], row[2], now, n, self.half_life_s)
                d.execute(
                    "UPDATE entries SET hits = hits + ?, last_access = ?, heat = ?, heat_key = ? WHERE id = ?",
                    (n, now, new_heat, heat.heat_key(new_heat, now, row[3], self.half_life_s), row[0]),
                )
        return len(counts)

    def _use_heat(self, d, entry_id: int | None, size: int, now: float) -> tuple[float, float]:
        """(heat, heat_key) after one more use now (content just downloaded or written)."""
        row = d.execute("SELECT heat, last_access FROM entries WHERE id = ?", (entry_id,)).fetchone() if entry_id else None
        new_heat = heat.bump(row[0], row[1], now, 1, self.half_life_s) if row else 1.0
        return new_heat, heat.heat_key(new_heat, now, size, self.half_life_s)

    # -- tree changes (each one transaction, journaled unless local-only) ---------------------------

    def ensure_root(self, view: str, listed: bool) -> Entry:
        root = self.get(view, "/")
        if root is None:
            now = time.time()
            with self.db.write() as d:
                d.execute(
                    "INSERT OR IGNORE INTO entries (view, path, parent, name, is_dir, mtime, ctime, listed, remote, content_type)"
                    " VALUES (?, '/', NULL, '', 1, ?, ?, ?, 1, 'httpd/unix-directory')",
                    (view, now, now, int(listed)),
                )
            root = self.get(view, "/")
        assert root is not None
        return root

    def put_file(self, view: str, path: str, cache_key: str, size: int, mtime: float, content_type: str | None,
                 local_only: bool, etag: str) -> str | None:
        """Record new content for `path` (created or replaced). Returns the replaced content key."""
        now = time.time()
        with self.db.write() as d:
            old = self.get(view, path)
            if old is None:
                d.execute(
                    "INSERT INTO entries (view, path, parent, name, is_dir, size, mtime, ctime, etag, content_type,"
                    " cache_key, dirty, local_only, listed, remote, last_access, heat, heat_key)"
                    " VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, 1, 0, ?, ?, ?)",
                    (view, path, parent_of(path), name_of(path), size, mtime, now, etag,
                     content_type or guess_type(path), cache_key, int(not local_only), int(local_only), now,
                     *self._use_heat(d, None, size, now)),
                )
                base = None
            else:
                base = self._nas_base(old)
                d.execute(
                    "UPDATE entries SET size = ?, mtime = ?, etag = ?, content_type = ?, cache_key = ?, dirty = ?,"
                    " base_etag = ?, last_access = ?, heat = ?, heat_key = ? WHERE id = ?",
                    (size, mtime, etag, content_type or old.content_type or guess_type(path), cache_key,
                     int(not old.local_only), base, now, *self._use_heat(d, old.id, size, now), old.id),
                )
                local_only = old.local_only
            if not local_only:
                journal.add(d, view, Op.PUT, path, cache_key=cache_key, size=size, base_etag=base)
        return old.cache_key if old is not None else None

    @staticmethod
    def _nas_base(entry: Entry) -> str | None:
        """The NAS version a change of `entry` is based on (what the NAS should still have)."""
        if entry.dirty:
            return entry.base_etag
        return entry.nas_etag if entry.remote else None

    def mkdir(self, view: str, path: str, local_only: bool = False) -> None:
        now = time.time()
        with self.db.write() as d:
            d.execute(
                "INSERT INTO entries (view, path, parent, name, is_dir, mtime, ctime, content_type, dirty, local_only, listed)"
                " VALUES (?, ?, ?, ?, 1, ?, ?, 'httpd/unix-directory', ?, ?, 1)",
                (view, path, parent_of(path), name_of(path), now, now, int(not local_only), int(local_only)),
            )
            if not local_only:
                journal.add(d, view, Op.MKCOL, path)

    def set_mtime(self, view: str, path: str, mtime: float) -> None:
        with self.db.write() as d:
            d.execute("UPDATE entries SET mtime = ? WHERE view = ? AND path = ?", (mtime, view, path))

    def note_props_changed(self, view: str, path: str) -> None:
        """Journal a 'proppatch' of `path`: the sync copies its dead properties as they are then.

        Consecutive PROPPATCHes of one path (Windows sends one per property group) make one entry.
        """
        with self.db.write() as d:
            if journal.last_pending(d) == (Op.PROPPATCH, view, path):
                return
            journal.add(d, view, Op.PROPPATCH, path)

    def delete(self, view: str, path: str) -> list[str]:
        """Remove `path` and everything below it. Returns the content keys no longer referenced."""
        lo, hi = subtree_bounds(path)
        with self.db.write() as d:
            entry = self.get(view, path)
            if entry is None:
                return []
            rows = d.execute(
                "SELECT cache_key FROM entries WHERE view = ? AND (path = ? OR (path > ? AND path < ?))"
                " AND cache_key IS NOT NULL",
                (view, path, lo, hi),
            ).fetchall()
            d.execute("DELETE FROM entries WHERE view = ? AND (path = ? OR (path > ? AND path < ?))", (view, path, lo, hi))
            if not entry.local_only:
                journal.add(d, view, Op.DELETE, path, base_etag=self._nas_base(entry))
            keys = [r[0] for r in rows]
            return [k for k in keys if not journal.key_pending(d, k)]

    def move(self, view: str, src: str, dest: str) -> None:
        """Rename `src` (and its subtree) to `dest`, which must not exist."""
        lo, hi = subtree_bounds(src)
        with self.db.write() as d:
            entry = self.get(view, src)
            if entry is None:
                return
            d.execute(
                "UPDATE entries SET path = ?, parent = ?, name = ? WHERE view = ? AND path = ?",
                (dest, parent_of(dest), name_of(dest), view, src),
            )
            # Descendants: swap the prefix of path and parent.
            n = len(src)
            d.execute(
                "UPDATE entries SET path = ? || substr(path, ?), parent = ? || substr(parent, ?)"
                " WHERE view = ? AND path > ? AND path < ?",
                (dest, n + 1, dest, n + 1, view, lo, hi),
            )
            if not entry.local_only:
                journal.add(d, view, Op.MOVE, src, dest=dest, base_etag=self._nas_base(entry))

    def copy(self, view: str, src: str, dest: str, key_map: dict[str, str]) -> None:
        """Copy the single entry `src` to `dest` (WsgiDAV copies trees member by member).

        `key_map` maps the source content key to the copy's key (content was copied by the caller).
        """
        now = time.time()
        with self.db.write() as d:
            entry = self.get(view, src)
            if entry is None:
                return
            new_key = key_map.get(entry.cache_key) if entry.cache_key else None
            etag = versions.local_version_etag(new_key) if new_key else entry.etag
            d.execute(
                "INSERT INTO entries (view, path, parent, name, is_dir, size, mtime, ctime, etag, content_type,"
                " cache_key, dirty, local_only, listed, remote) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, 1, 0)",
                (view, dest, parent_of(dest), name_of(dest), int(entry.is_dir), entry.size, entry.mtime, now, etag,
                 entry.content_type, new_key, int(entry.local_only)),
            )
            if not entry.local_only:
                if entry.is_dir:
                    journal.add(d, view, Op.MKCOL, dest)
                elif new_key:
                    journal.add(d, view, Op.PUT, dest, cache_key=new_key, size=entry.size)
                else:  # not cached: the NAS copies it server-side
                    journal.add(d, view, Op.COPY, src, dest=dest, base_etag=self._nas_base(entry))

    # -- what the NAS says -------------------------------------------------------------------------

    def apply_listing(self, view: str, path: str, members: Iterable[RemoteEntry],
                      asked_at: float | None = None) -> list[str]:
        """Make the index's members of `path` match a fresh NAS listing. Returns stale content keys.

        Local changes win until synced: dirty or local-only entries are left as they are, and so are
        the names a move, copy or delete changed that the listing (asked for at `asked_at`) cannot
        show yet: a renamed file is not dropped under its new name nor brought back under its old
        one. A collection the Pi no longer has, or one a pending move made, is not merged at all.
        """
        stale: list[str] = []
        seen: set[str] = set()
        now = time.time()
        with self.db.write() as d:
            gone, made = journal.renames_unseen_by(d, view, asked_at)
            if path != "/" and self.get(view, path) is None:
                return stale  # removed or moved away meanwhile: nothing to merge into
            if path != "/" and _within_any(path, made):
                # What the NAS has under this name is not yet what the Pi has. Counted as listed
                # now all the same, so the walk and the refresh do not ask again at every turn (each
                # request keeps the NAS awake) while the move waits for the write-back.
                self._listed_as_is(d, view, path, now)
                return stale
            existing = {e.name: e for e in self.children(view, path)}
            for m in members:
                name = name_of("/" + m.path) if m.path else ""
                if not name:
                    continue
                seen.add(name)
                child = join(path, name)
                old = existing.get(name)
                if _within_any(child, gone) or _within_any(child, made):
                    continue  # changed on the Pi; the NAS learns it from the write-back
                if old is None:
                    d.execute(
                        "INSERT INTO entries (view, path, parent, name, is_dir, size, mtime, ctime, etag, nas_etag,"
                        " content_type, listed, remote) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 1)",
                        (view, child, path, name, int(m.is_collection), m.size_bytes, m.mtime, now,
                         versions.nas_version_etag(m.etag), m.etag or None, m.content_type),
                    )
                elif old.dirty or old.local_only:
                    continue
                elif old.is_dir != m.is_collection or not (
                        old.is_dir or versions.same_nas_version(old.nas_etag, old.size, m.etag, m.size_bytes)):
                    # A version the Pi did not know: the client sees a new ETag, time and length.
                    if old.cache_key and not old.is_dir:
                        stale.append(old.cache_key)
                    d.execute(
                        "UPDATE entries SET is_dir = ?, size = ?, mtime = ?, etag = ?, nas_etag = ?, content_type = ?,"
                        " cache_key = NULL, remote = 1 WHERE id = ?",
                        (int(m.is_collection), m.size_bytes, m.mtime, versions.nas_version_etag(m.etag),
                         m.etag or None, m.content_type, old.id),
                    )
                elif not old.remote or (m.etag and old.nas_etag != m.etag):
                    # The same content (our own upload, say): only the NAS's name for it is learnt.
                    d.execute("UPDATE entries SET remote = 1, nas_etag = ? WHERE id = ?", (m.etag or None, old.id))
            for name, old in existing.items():
                if name not in seen and old.remote and not old.dirty and not old.local_only \
                        and not _within_any(old.path, made):
                    stale += self.delete_quietly(d, view, old.path)
            d.execute("UPDATE entries SET listed = 1, remote = 1, listed_at = ? WHERE view = ? AND path = ?", (now, view, path))
        return stale

    def delete_quietly(self, d, view: str, path: str) -> list[str]:
        """Drop an entry the NAS no longer has (no journal: nothing to tell the NAS)."""
        lo, hi = subtree_bounds(path)
        rows = d.execute(
            "SELECT cache_key FROM entries WHERE view = ? AND (path = ? OR (path > ? AND path < ?)) AND cache_key IS NOT NULL"
            " AND dirty = 0",
            (view, path, lo, hi),
        ).fetchall()
        d.execute(
            "DELETE FROM entries WHERE view = ? AND (path = ? OR (path > ? AND path < ?)) AND dirty = 0 AND local_only = 0",
            (view, path, lo, hi),
        )
        return [r[0] for r in rows]

    def mark_cached(self, view: str, path: str, cache_key: str, size: int, etag: str | None, mtime: float | None) -> str | None:
        """A download finished: the entry's content is now `cache_key`; `etag` and `mtime` are the
        NAS's for it. Returns a replaced key, if any."""
        with self.db.write() as d:
            entry = self.get(view, path)
            if entry is None or entry.dirty:
                return cache_key  # deleted or rewritten meanwhile: the download is not wanted
            now = time.time()
            if versions.same_nas_version(entry.nas_etag, entry.size, etag, size):
                # The version the client knows (evicted and fetched again): its ETag, time and
                # length stay as the client saw them.
                d.execute(
                    "UPDATE entries SET cache_key = ?, nas_etag = COALESCE(?, nas_etag), last_access = ?, heat = ?,"
                    " heat_key = ? WHERE id = ?",
                    (cache_key, etag, now, *self._use_heat(d, entry.id, size, now), entry.id),
                )
            else:  # the NAS had a newer version than the index knew: that is what was fetched
                d.execute(
                    "UPDATE entries SET cache_key = ?, size = ?, etag = ?, nas_etag = ?, mtime = COALESCE(?, mtime),"
                    " last_access = ?, heat = ?, heat_key = ? WHERE id = ?",
                    (cache_key, size, versions.nas_version_etag(etag), etag, mtime, now,
                     *self._use_heat(d, entry.id, size, now), entry.id),
                )
            return entry.cache_key

    def pending_changes(self) -> int:
        return journal.Journal(self.db).pending()["count"]

    # -- what write-back learns (balupi.sync.worker) ------------------------------------------------

    def key_in_use(self, key: str) -> bool:
        """Whether an entry or a pending change still names content `key`."""
        return key_in_use(self.db, key)

    def settle_upload(self, view: str, path: str, key: str, nas_etag: str | None) -> None:
        """The NAS holds `key`'s content at `path` now: the entry is clean and knows the NAS's ETag of
        it; the ETag clients see stays (same content)."""
        with self.db.write() as d:
            d.execute(
                "UPDATE entries SET dirty = 0, remote = 1, nas_etag = ?, base_etag = NULL"
                " WHERE view = ? AND path = ? AND cache_key = ?",
                (nas_etag or None, view, path, key),
            )
            # A newer local version (written during the upload) is now based on what we uploaded,
            # and so is a later delete or move of the path.
            d.execute("UPDATE entries SET base_etag = ?, nas_etag = ? WHERE view = ? AND path = ? AND dirty = 1",
                      (nas_etag, nas_etag or None, view, path))
            journal.rebase(d, view, path, nas_etag, (Op.PUT, Op.DELETE, Op.MOVE))

    def record_conflict(self, view: str, path: str, conflict_path: str, key: str, uploaded: RemoteEntry,
                        nas_version: RemoteEntry | None, base_etag: str | None, now: float) -> None:
        """An upload met a newer NAS version: the Pi's version (clean) lives under `conflict_path`."""
        with self.db.write() as d:
            moved = d.execute(
                "UPDATE entries SET path = ?, name = ?, dirty = 0, remote = 1, nas_etag = ?, base_etag = NULL"
                " WHERE view = ? AND path = ? AND cache_key = ?",
                (conflict_path, name_of(conflict_path), uploaded.etag or None, view, path, key),
            ).rowcount
            if not moved:  # a newer version replaced it on the Pi meanwhile: the copy gets its own entry
                d.execute(
                    "INSERT OR IGNORE INTO entries (view, path, parent, name, is_dir, size, mtime, ctime, etag,"
                    " nas_etag, content_type, cache_key, listed, remote) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, 1, 1)",
                    (view, conflict_path, parent_of(conflict_path), name_of(conflict_path), uploaded.size_bytes,
                     uploaded.mtime, now, versions.local_version_etag(key), uploaded.etag or None,
                     uploaded.content_type, key),
                )
            # ... and the NAS's version keeps the name (not cached: it is fetched when asked for),
            # unless a client wrote a newer version meanwhile: that one stays, dirty, and its own
            # upload will meet the NAS's version the same way.
            if nas_version is not None:
                d.execute(
                    "INSERT INTO entries (view, path, parent, name, is_dir, size, mtime, ctime, etag, nas_etag,"
                    " content_type, listed, remote) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, 1, 1)"
                    " ON CONFLICT (view, path) DO UPDATE SET is_dir = 0, size = excluded.size,"
                    " mtime = excluded.mtime, etag = excluded.etag, nas_etag = excluded.nas_etag,"
                    " content_type = excluded.content_type, cache_key = NULL, remote = 1 WHERE dirty = 0",
                    (view, path, parent_of(path), name_of(path), nas_version.size_bytes, nas_version.mtime, now,
                     versions.nas_version_etag(nas_version.etag), nas_version.etag or None, nas_version.content_type),
                )
            journal.add_conflict(d, view, path, conflict_path, nas_version.etag if nas_version else None, base_etag, at=now)

    def refuse_delete(self, view: str, path: str, nas_etag: str | None, base_etag: str | None) -> None:
        """A delete met a changed NAS version: keep the NAS's, let the index learn it again."""
        with self.db.write() as d:
            d.execute("UPDATE entries SET listed = 0 WHERE view = ? AND path = ?", (view, parent_of(path) or "/"))
            journal.add_conflict(d, view, path, path, nas_etag, base_etag)

    def learn_moved(self, view: str, dest: str, nas_etag: str | None) -> None:
        """A synced move put the entry at `dest` on the NAS too."""
        with self.db.write() as d:
            d.execute(
                "UPDATE entries SET remote = 1, nas_etag = CASE WHEN dirty = 0 THEN ? ELSE nas_etag END"
                " WHERE view = ? AND path = ?",
                (nas_etag or None, view, dest),
            )

    def settle_moved(self, view: str, dest: str, remote: RemoteEntry, change_id: int) -> None:
        """Content written on the Pi and moved before its upload reached the NAS under the old name,
        and change `change_id` brought it to `dest`. Whatever no pending change still needs is clean
        now (else it would stay dirty for ever: never evicted, never refreshed)."""
        lo, hi = subtree_bounds(dest)
        unneeded = journal.not_needed_by_other_pending()
        with self.db.write() as d:
            if not remote.is_collection:
                d.execute(
                    "UPDATE entries SET dirty = 0, remote = 1, nas_etag = ?, base_etag = NULL"
                    f" WHERE view = ? AND path = ? AND dirty = 1 AND {unneeded}",
                    (remote.etag or None, view, dest, change_id),
                )
            else:  # the members' NAS ETags come with the next listing of their folders
                d.execute(
                    "UPDATE entries SET dirty = 0, remote = 1, base_etag = NULL"
                    f" WHERE view = ? AND (path = ? OR (path > ? AND path < ?)) AND dirty = 1 AND {unneeded}",
                    (view, dest, lo, hi, change_id),
                )

    def rebase(self, view: str, path: str, nas_etag: str | None) -> None:
        """Local changes of `path` are based on the NAS's version `nas_etag` now."""
        with self.db.write() as d:
            d.execute("UPDATE entries SET base_etag = ? WHERE view = ? AND path = ? AND dirty = 1",
                      (nas_etag or None, view, path))
            journal.rebase(d, view, path, nas_etag or None, (Op.PUT,))

    # -- what the WebDAV side, the refresh and the prefetch ask --------------------------------------

    def mark_listed(self, entry_id: int) -> None:
        """A collection counts as fully known (no NAS to ask: what the Pi holds is all there is)."""
        with self.db.write() as d:
            d.execute("UPDATE entries SET listed = 1 WHERE id = ?", (entry_id,))

    def unlisted_collections(self, view: str, limit: int) -> list[str]:
        """Collections whose members the index does not know yet, shallowest first."""
        rows = self.db.query(
            "SELECT path FROM entries WHERE view = ? AND is_dir = 1 AND listed = 0 AND local_only = 0"
            " ORDER BY length(path), path LIMIT ?",
            (view, limit),
        )
        return [r[0] for r in rows]

    def stalest_collections(self, view: str, listed_before: float, limit: int) -> list[str]:
        """Listed NAS collections last listed before `listed_before`, least recently listed first."""
        rows = self.db.query(
            "SELECT path FROM entries WHERE view = ? AND is_dir = 1 AND listed = 1 AND remote = 1"
            " AND coalesce(listed_at, 0) < ? ORDER BY coalesce(listed_at, 0) LIMIT ?",
            (view, listed_before, limit),
        )
        return [r[0] for r in rows]

    def forget_vanished(self, view: str, path: str, asked_at: float | None = None) -> list[str]:
        """The NAS no longer has `path` (as of `asked_at`): drop it (what the Pi still needs stays,
        and so does what a move not yet on the NAS put there). Returns freed keys."""
        with self.db.write() as d:
            _gone, made = journal.renames_unseen_by(d, view, asked_at)
            if _within_any(path, made):
                self._listed_as_is(d, view, path, time.time())  # see apply_listing
                return []
            return self.delete_quietly(d, view, path)

    @staticmethod
    def _listed_as_is(d, view: str, path: str, now: float) -> None:
        d.execute("UPDATE entries SET listed = 1, listed_at = ? WHERE view = ? AND path = ?", (now, view, path))

    def refresh_left(self, view: str, since: float) -> bool:
        return refresh_left(self.db, view, since)

    def refreshed_since(self, view: str, since: float) -> int:
        return refreshed_since(self.db, view, since)

    _UNCACHED = f"SELECT {COLUMNS} FROM entries WHERE view = ? AND is_dir = 0 AND cache_key IS NULL AND local_only = 0"

    def uncached_matching(self, view: str, pattern: str, limit: int) -> list[Entry]:
        """Files not cached whose path matches the GLOB `pattern`."""
        return self._entries(self._UNCACHED + " AND path GLOB ? LIMIT ?", (view, pattern, limit))

    def uncached_hottest(self, view: str, limit: int) -> list[Entry]:
        """Files not cached that were used before, hottest first."""
        return self._entries(self._UNCACHED + " AND heat > 0 ORDER BY heat_key DESC LIMIT ?", (view, limit))

    def uncached_newest(self, view: str, limit: int) -> list[Entry]:
        """Files not cached, most recently changed first."""
        return self._entries(self._UNCACHED + " ORDER BY mtime DESC LIMIT ?", (view, limit))

    def _entries(self, sql: str, params: tuple) -> list[Entry]:
        return [Entry.from_row(r) for r in self.db.query(sql, params)]


# -- the cache's size and eviction (balupi.cache.manager) ----------------------------------------------

def coldest_first(db: Database, limit: int) -> list:
    """Up to `limit` cached, clean entries, coldest first (lowest heat_key): the default eviction order."""
    return db.query(
        "SELECT id, path, cache_key, size FROM entries WHERE cache_key IS NOT NULL AND dirty = 0"
        " ORDER BY heat_key LIMIT ?", (int(limit),)
    )


def cached_bytes(db: Database) -> int:
    """Bytes of content the index names."""
    return db.query_one("SELECT coalesce(sum(size), 0) FROM entries WHERE cache_key IS NOT NULL")[0]


def evictable_bytes(db: Database) -> int:
    """Bytes of clean cached content no pending change needs (what eviction could free)."""
    return db.query_one(
        "SELECT coalesce(sum(size), 0) FROM entries WHERE cache_key IS NOT NULL AND dirty = 0"
        f" AND {journal.not_needed_by_pending_key()}"
    )[0]


def drop_content(db: Database, entry_id: int, key: str) -> bool:
    """Forget that entry `entry_id` holds content `key` (evicted), if it still does and is clean."""
    with db.write() as d:
        return d.execute("UPDATE entries SET cache_key = NULL WHERE id = ? AND cache_key = ? AND dirty = 0",
                         (entry_id, key)).rowcount > 0


def counts(db: Database) -> dict:
    """Cached files and bytes, dirty files and bytes."""
    cached = db.query_one("SELECT count(*), coalesce(sum(size), 0) FROM entries WHERE cache_key IS NOT NULL AND is_dir = 0")
    dirty = db.query_one("SELECT count(*), coalesce(sum(size), 0) FROM entries WHERE dirty = 1 AND is_dir = 0")
    return {"cached": (cached[0], cached[1]), "dirty": (dirty[0], dirty[1])}


def cached_files_after(db: Database, after_id: int, up_to_id: int, limit: int) -> list:
    """Cached files with `after_id` < id <= `up_to_id`, by id (rows: id, view, path, size, cache_key,
    dirty, local_only): a content check walks the cache in batches of these."""
    return db.query(
        "SELECT id, view, path, size, cache_key, dirty, local_only FROM entries"
        " WHERE cache_key IS NOT NULL AND is_dir = 0 AND id > ? AND id <= ? ORDER BY id LIMIT ?",
        (after_id, up_to_id, limit),
    )


def content_of(db: Database, entry_id: int):
    """(cache_key, dirty, local_only, path, size) of entry `entry_id` now, or None."""
    return db.query_one("SELECT cache_key, dirty, local_only, path, size FROM entries WHERE id = ?", (entry_id,))


def collection_count(db: Database) -> int:
    """Collections the NAS has (or will have): what a full refresh lists."""
    return db.query_one("SELECT count(*) FROM entries WHERE is_dir = 1 AND local_only = 0")[0]


def refresh_left(db: Database, view: str, since: float) -> bool:
    """Whether a collection of `view` has not been listed from the NAS since `since`."""
    return db.query_one(
        "SELECT 1 FROM entries WHERE view = ? AND is_dir = 1 AND local_only = 0"
        " AND (listed = 0 OR (remote = 1 AND coalesce(listed_at, 0) < ?)) LIMIT 1",
        (view, since),
    ) is not None


def refreshed_since(db: Database, view: str, since: float) -> int:
    """Collections of `view` listed from the NAS since `since`."""
    return db.query_one("SELECT count(*) FROM entries WHERE view = ? AND is_dir = 1 AND listed_at >= ?", (view, since))[0]


def key_in_use(db: Database, key: str) -> bool:
    """Whether an entry or a pending change still names content `key`."""
    if db.query_one("SELECT 1 FROM entries WHERE cache_key = ? LIMIT 1", (key,)) is not None:
        return True
    return journal.Journal(db).key_pending(key)


def glob_figures(db: Database, pattern: str) -> dict:
    """Files whose path matches the GLOB `pattern`: how many, their bytes, and how much is cached."""
    row = db.query_one(
        "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(cache_key IS NOT NULL), 0),"
        " coalesce(sum(CASE WHEN cache_key IS NOT NULL THEN size ELSE 0 END), 0)"
        " FROM entries WHERE is_dir = 0 AND path GLOB ?", (pattern,))
    return {"files": row[0], "bytes": row[1], "cached_files": row[2], "cached_bytes": row[3]}


def cached_bytes_matching(db: Database, patterns: Iterable[str]) -> int:
    """Cached bytes of files whose path matches any of the GLOB `patterns`."""
    patterns = tuple(patterns)
    if not patterns:
        return 0
    where = " OR ".join("path GLOB ?" for _ in patterns)
    row = db.query_one("SELECT coalesce(sum(size), 0) FROM entries WHERE cache_key IS NOT NULL AND is_dir = 0"
                       f" AND ({where})", patterns)
    return int(row[0])


def record_damage(db: Database, key: str, kept_as: str, error: str, now: float) -> tuple[list, set, bool, int]:
    """Content `key` was found damaged (and moved aside as `kept_as`): clean entries forget it (the
    NAS's copy is fetched again); a change only the Pi held goes back to the NAS's version it was
    based on (or away, if there was none) and is listed with the conflicts for a person, as is
    every pending upload of it. Returns ((view, path) of the entries that held it, (view, path)
    recorded as conflicts, whether a change was lost, entries that just became uncached)."""
    pending = False
    clean = 0
    with db.write() as d:
        rows = d.execute("SELECT id, view, path, dirty, local_only, remote, base_etag FROM entries WHERE cache_key = ?",
                         (key,)).fetchall()
        jrows = journal.set_aside_damaged(d, key, error)
        for row in rows:
            entry_id, view, path, dirty, local_only, remote, base_etag = row
            if not dirty and not local_only:
                d.execute("UPDATE entries SET cache_key = NULL WHERE id = ?", (entry_id,))
                clean += 1
                continue
            pending = True
            if base_etag or remote:
                # Back to the NAS's version this change was based on; the next listing of the folder
                # brings its size and times.
                d.execute("UPDATE entries SET cache_key = NULL, dirty = 0, remote = 1, etag = coalesce(?, etag),"
                          " nas_etag = ?, base_etag = NULL WHERE id = ?", (base_etag, base_etag, entry_id))
                d.execute("UPDATE entries SET listed = 0 WHERE view = ? AND path = ?", (view, parent_of(path) or "/"))
            else:
                d.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
            journal.add_conflict(d, view, path, kept_as, None, None, at=now, kind=journal.ConflictKind.DAMAGED)
        recorded = {(r[1], r[2]) for r in rows}
        for _, view, path in jrows:
            pending = True
            if (view, path) not in recorded:  # an older version of the file, superseded but still waiting
                journal.add_conflict(d, view, path, kept_as, None, None, at=now, kind=journal.ConflictKind.DAMAGED)
                recorded.add((view, path))
    return [(r[1], r[2]) for r in rows], recorded, pending, clean


# -- taking content back after a lost or restored database (balupi.cache.recovery) --------------------

def row_at(d, view: str, path: str):
    """(id, is_dir, cache_key, dirty, etag, nas_etag, remote, size) of `path`, or None."""
    return d.execute("SELECT id, is_dir, cache_key, dirty, etag, nas_etag, remote, size FROM entries"
                     " WHERE view = ? AND path = ?", (view, path)).fetchone()


def exists_at(d, view: str, path: str) -> bool:
    return d.execute("SELECT 1 FROM entries WHERE view = ? AND path = ?", (view, path)).fetchone() is not None


def add_unlisted_folder(d, view: str, folder: str, now: float) -> None:
    """A folder the index lacks, unlisted (the NAS lists it later)."""
    d.execute(
        "INSERT OR IGNORE INTO entries (view, path, parent, name, is_dir, mtime, ctime, content_type, listed, remote)"
        " VALUES (?, ?, ?, ?, 1, ?, ?, 'httpd/unix-directory', 0, 0)",
        (view, folder, parent_of(folder), name_of(folder) if folder != "/" else "", now, now),
    )


def add_recovered_file(d, view: str, path: str, size: int, mtime: float, now: float, etag: str | None,
                       nas_etag: str | None, content_type: str, key: str, dirty: bool, local_only: bool, remote: bool,
                       base_etag: str | None) -> None:
    d.execute(
        "INSERT INTO entries (view, path, parent, name, is_dir, size, mtime, ctime, etag, nas_etag, content_type,"
        " cache_key, dirty, local_only, listed, remote, base_etag, last_access)"
        " VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
        (view, path, parent_of(path), name_of(path), size, mtime, now, etag, nas_etag, content_type, key,
         int(dirty), int(local_only), int(remote), base_etag, now),
    )


def take_back_change(d, entry_id: int, key: str, size: int, mtime: float, etag: str, dirty: bool, local_only: bool,
                     base_etag: str | None) -> None:
    """Entry `entry_id` (clean) gets a newer version the Pi held: content `key`."""
    d.execute(
        "UPDATE entries SET cache_key = ?, size = ?, mtime = ?, etag = ?, dirty = ?, local_only = ?,"
        " base_etag = ? WHERE id = ?",
        (key, size, mtime, etag, int(dirty), int(local_only), base_etag, entry_id),
    )


def adopt_content(d, entry_id: int, key: str, size: int) -> None:
    """Entry `entry_id` (clean, not cached) holds content `key` of its version again."""
    d.execute("UPDATE entries SET cache_key = ?, size = ? WHERE id = ?", (key, size, entry_id))


def settle_restored_upload(d, view: str, path: str, key: str, nas_etag: str | None, content_kept: bool) -> None:
    """An upload a restored backup still had pending went to the NAS after that backup."""
    d.execute("UPDATE entries SET dirty = 0, remote = 1, base_etag = NULL, nas_etag = coalesce(?, nas_etag),"
              " cache_key = CASE WHEN ? THEN cache_key ELSE NULL END WHERE view = ? AND path = ? AND cache_key = ?",
              (nas_etag, int(content_kept), view, path, key))


def cached_keys(d) -> list:
    """(id, cache_key) of every entry that names content."""
    return d.execute("SELECT id, cache_key FROM entries WHERE cache_key IS NOT NULL").fetchall()


def uncache_lost(d, entry_id: int, key: str) -> None:
    """Entry `entry_id`'s content `key` is gone from the disk: uncached, unless a pending change needs it."""
    d.execute("UPDATE entries SET cache_key = NULL, dirty = 0 WHERE id = ? AND cache_key = ?"
              f" AND {journal.not_needed_by_pending_key()}", (entry_id, key))


def is_dir_anywhere(db: Database, path: str) -> bool | None:
    """Whether `path` (in any view) is a folder; None when no view has it."""
    row = db.query_one("SELECT is_dir FROM entries WHERE path = ? LIMIT 1", (path,))
    return None if row is None else bool(row[0])


def uncached_files(db: Database, pattern: str) -> list[Entry]:
    """Files of every view, not cached, whose path matches the GLOB `pattern`."""
    rows = db.query(f"SELECT {COLUMNS} FROM entries WHERE is_dir = 0 AND cache_key IS NULL AND local_only = 0"
                    " AND path GLOB ?", (pattern,))
    return [Entry.from_row(r) for r in rows]
