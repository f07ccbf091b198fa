"""The journal of pending changes for the NAS (table `journal`) and the conflicts write-back found
(table `conflicts`). The only module that runs SQL on them.

A client's change is one transaction in `balupi.cache.index` that updates the tree and appends the
change here, so the functions that take `d` (an open write transaction, `Database.write()`) run
inside the caller's transaction; `Journal` is what the write-back worker and the status pages use.
The write-back worker (`balupi.sync.worker`) applies pending changes in id order.
"""

from __future__ import annotations

import enum
import time
from typing import Any

from balupi.db import Database

OWNS = ("journal", "conflicts")

DONE_RETENTION_S = 7 * 86400  # synced changes are kept this long (for `balupi status`), then purged


class Op(enum.StrEnum):
    """What a journaled change does on the NAS (stored as these strings)."""

    PUT = "put"
    MKCOL = "mkcol"
    DELETE = "delete"
    MOVE = "move"
    COPY = "copy"
    PROPPATCH = "proppatch"


class ChangeState(enum.StrEnum):
    """Where a journaled change is (stored as these strings)."""

    PENDING = "pending"  # waits for the NAS
    DONE = "done"  # applied on the NAS; purged after DONE_RETENTION_S
    QUARANTINED = "quarantined"  # the NAS refuses it for good: set aside for a person
    DAMAGED = "damaged"  # its content was found damaged on the Pi's disk: never uploaded (balupi.cache.damage)


class ConflictKind(enum.StrEnum):
    CONFLICT = "conflict"  # the NAS's version changed under a change of the Pi's
    DAMAGED = "damaged"  # content found damaged on the Pi's disk (balupi.cache.damage)


# -- inside the caller's write transaction --------------------------------------------------------

def add(d, view: str, op: Op, path: str, dest: str | None = None, cache_key: str | None = None,
        size: int | None = None, base_etag: str | None = None, at: float | None = None) -> None:
    d.execute(
        "INSERT INTO journal (at, view, op, path, dest, cache_key, size, base_etag) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (time.time() if at is None else at, view, str(op), path, dest, cache_key, size, base_etag),
    )


def pending_uploads(d) -> list:
    """(id, view, path, cache_key) of every pending upload."""
    return d.execute("SELECT id, view, path, cache_key FROM journal WHERE state = 'pending' AND op = 'put'"
                     " AND cache_key IS NOT NULL").fetchall()


def mark_done(d, change_id: int, note: str) -> None:
    """Change `change_id` reached the NAS by another way (`note` says how)."""
    d.execute("UPDATE journal SET state = 'done', done_at = ?, last_error = ? WHERE id = ?", (time.time(), note, change_id))


def last_pending(d) -> tuple[str, str, str] | None:
    """(op, view, path) of the newest pending change."""
    row = d.execute("SELECT op, view, path FROM journal WHERE state = 'pending' ORDER BY id DESC LIMIT 1").fetchone()
    return tuple(row) if row is not None else None


def key_pending(d, key: str) -> bool:
    """Whether a pending change still needs content `key`."""
    return d.execute("SELECT 1 FROM journal WHERE state = 'pending' AND cache_key = ? LIMIT 1", (key,)).fetchone() is not None


def rebase(d, view: str, path: str, base_etag: str | None, ops: tuple[Op, ...]) -> None:
    """Pending changes `ops` of `path` are based on the NAS's version `base_etag` now."""
    marks = ", ".join("?" for _ in ops)
    d.execute(f"UPDATE journal SET base_etag = ? WHERE state = 'pending' AND op IN ({marks}) AND view = ? AND path = ?",
              (base_etag, *map(str, ops), view, path))


def set_aside_damaged(d, key: str, error: str) -> list:
    """Pending changes that upload content `key` (found damaged) will never be applied: mark them.
    Returns their (id, view, path)."""
    rows = d.execute("SELECT id, view, path FROM journal WHERE state = 'pending' AND cache_key = ?", (key,)).fetchall()
    d.execute("UPDATE journal SET state = 'damaged', last_error = ? WHERE state = 'pending' AND cache_key = ?",
              (error[:500], key))
    return rows


def renames_unseen_by(d, view: str, asked_at: float | None) -> tuple[list[str], list[str]]:
    """What a NAS listing asked for at `asked_at` cannot show yet: the names the Pi took away (the
    sources of moves, deletes) and the names it made (the destinations of moves and copies) by
    changes still pending, or applied on the NAS only after `asked_at`. Returns (gone, made)."""
    rows = d.execute(
        "SELECT op, path, dest FROM journal WHERE view = ? AND op IN ('move', 'copy', 'delete')"
        " AND (state = 'pending' OR (state = 'done' AND done_at >= ?))",
        (view, float("inf") if asked_at is None else asked_at),
    ).fetchall()
    gone = [r["path"] for r in rows if r["op"] in (Op.MOVE, Op.DELETE)]
    made = [r["dest"] for r in rows if r["op"] in (Op.MOVE, Op.COPY) and r["dest"]]
    return gone, made


def not_needed_by_other_pending() -> str:
    """An SQL condition on `entries` (one parameter: a change id): no pending change other than that
    one still needs the entry (its path, as source or destination, or its content)."""
    return ("NOT EXISTS (SELECT 1 FROM journal j WHERE j.state = 'pending' AND j.id != ?"
            " AND j.view = entries.view"
            " AND (j.path = entries.path OR j.dest = entries.path OR j.cache_key = entries.cache_key))")


def not_needed_by_pending_key() -> str:
    """An SQL condition on `entries`: no pending change uploads the entry's content."""
    return "NOT EXISTS (SELECT 1 FROM journal j WHERE j.state = 'pending' AND j.cache_key = entries.cache_key)"


def counts(db: Database) -> dict:
    """Pending changes (count, oldest), quarantined changes, conflicts (count, unresolved)."""
    pending = db.query_one("SELECT count(*), min(at) FROM journal WHERE state = 'pending'")
    quarantined = db.query_one("SELECT count(*) FROM journal WHERE state = 'quarantined'")
    conflicts = db.query_one("SELECT count(*), coalesce(sum(resolved = 0), 0) FROM conflicts")
    return {"pending": (pending[0], pending[1]), "quarantined": quarantined[0],
            "conflicts": (conflicts[0], int(conflicts[1]))}


def add_conflict(d, view: str, path: str, conflict_path: str, nas_etag: str | None, base_etag: str | None,
                 at: float | None = None, kind: ConflictKind = ConflictKind.CONFLICT) -> None:
    d.execute(
        "INSERT INTO conflicts (at, view, path, conflict_path, nas_etag, base_etag, kind) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (time.time() if at is None else at, view, path, conflict_path, nas_etag, base_etag, str(kind)),
    )


# -- the write-back worker's and the status pages' view -----------------------------------------------

class Journal:
    def __init__(self, db: Database):
        self.db = db

    def pending(self) -> dict:
        row = self.db.query_one(
            "SELECT count(*), coalesce(sum(size), 0), min(at) FROM journal WHERE state = 'pending'"
        )
        return {"count": row[0], "bytes": row[1], "oldest_at": row[2]}

    def pending_detail(self) -> dict:
        """`pending()` and how many of the pending changes failed at least once."""
        row = self.db.query_one("SELECT count(*), coalesce(sum(size), 0), min(at), coalesce(sum(last_error IS NOT NULL), 0)"
                                " FROM journal WHERE state = 'pending'")
        return {"count": row[0], "bytes": row[1], "oldest_at": row[2], "failing": row[3]}

    def has_pending(self) -> bool:
        return self.db.query_one("SELECT 1 FROM journal WHERE state = 'pending' LIMIT 1") is not None

    def next_pending(self, after_id: int) -> Any:
        """The oldest pending change after `after_id` (a row), or None."""
        return self.db.query_one(
            "SELECT id, at, view, op, path, dest, cache_key, size, base_etag, attempts, phase, next_at"
            " FROM journal WHERE state = 'pending' AND id > ? ORDER BY id LIMIT 1",
            (after_id,),
        )

    def later_put(self, view: str, path: str, after_id: int) -> bool:
        """Whether a newer version of `path` waits to be uploaded after change `after_id`."""
        return self.db.query_one(
            "SELECT 1 FROM journal WHERE state = 'pending' AND op = 'put' AND view = ? AND path = ? AND id > ? LIMIT 1",
            (view, path, after_id),
        ) is not None

    def key_pending(self, key: str) -> bool:
        return self.db.query_one("SELECT 1 FROM journal WHERE state = 'pending' AND cache_key = ? LIMIT 1",
                                 (key,)) is not None

    def done(self, change_id: int) -> None:
        with self.db.write() as d:
            d.execute("UPDATE journal SET state = 'done', done_at = ?, last_error = NULL WHERE id = ?",
                      (time.time(), change_id))

    def failed(self, change_id: int, attempts: int, next_at: float, error: str) -> None:
        with self.db.write() as d:
            d.execute("UPDATE journal SET attempts = ?, next_at = ?, last_error = ? WHERE id = ?",
                      (attempts, next_at, error[:500], change_id))

    def quarantine(self, change_id: int, error: str) -> None:
        with self.db.write() as d:
            d.execute("UPDATE journal SET state = 'quarantined', attempts = attempts + 1, done_at = ?, last_error = ?"
                      " WHERE id = ?", (time.time(), error[:500], change_id))

    def quarantined(self, view: str | None = None, limit: int = 100) -> list[dict]:
        """Changes set aside (newest first); only `view`'s when given."""
        if view is None:
            rows = self.db.query("SELECT id, at, view, op, path, dest, last_error FROM journal"
                                 " WHERE state = 'quarantined' ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self.db.query("SELECT id, at, view, op, path, dest, last_error FROM journal"
                                 " WHERE state = 'quarantined' AND view = ? ORDER BY id DESC LIMIT ?", (view, limit))
        return [dict(r) for r in rows]

    def set_phase(self, change_id: int, phase: str) -> None:
        with self.db.write() as d:
            d.execute("UPDATE journal SET phase = ? WHERE id = ?", (str(phase), change_id))

    def purge_done(self, retention_s: float = DONE_RETENTION_S) -> int:
        with self.db.write() as d:
            return d.execute("DELETE FROM journal WHERE state = 'done' AND done_at < ?",
                             (time.time() - retention_s,)).rowcount

    def proppatch_again(self, view: str, path: str) -> None:
        with self.db.write() as d:
            add(d, view, Op.PROPPATCH, path)

    def conflict_recorded(self, view: str, path: str, conflict_path: str) -> bool:
        return self.db.query_one("SELECT 1 FROM conflicts WHERE view = ? AND path = ? AND conflict_path = ?",
                                 (view, path, conflict_path)) is not None


# -- what the API shows (GET /api/cache/conflicts, /api/cache/stats) ----------------------------------

def damaged_unresolved(db: Database, view: str | None = None) -> int:
    """Unresolved conflicts of kind 'damaged'; only `view`'s when given."""
    return db.query_one("SELECT count(*) FROM conflicts WHERE kind = 'damaged' AND resolved = 0 AND (? OR view = ?)",
                        (int(view is None), view or ""))[0]


def conflicts(db: Database, view: str | None = None, unresolved_only: bool = False, limit: int = 100) -> dict:
    """Conflicts newest first (at most `limit`) with the counts; only `view`'s when given."""
    where, params = ["1"], []
    if view is not None:
        where.append("view = ?")
        params.append(view)
    counted = " AND ".join(where)
    if unresolved_only:
        where.append("resolved = 0")
    rows = db.query(
        "SELECT id, at, view, path, conflict_path, nas_etag, base_etag, resolved, kind FROM conflicts"
        f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
        (*params, limit),
    )
    total = db.query_one(f"SELECT count(*), coalesce(sum(resolved = 0), 0) FROM conflicts WHERE {counted}", tuple(params))
    return {"count": total[0], "unresolved": int(total[1]),
            "conflicts": [{**dict(row), "resolved": bool(row["resolved"])} for row in rows]}
