"""WebDAV locks in SQLite (table `dav_locks`), so they survive a restart.

Implements the storage interface WsgiDAV's LockManager expects (the one of its LockStorageDict);
the locking rules stay WsgiDAV's own. Lock roots are WsgiDAV's normalized ref URLs.

Locks belong to a view (a user's tree), like dead properties: the stored root of a view other than
"" is `@<view>:<root>` (`balupi.dav.props.storage_url`). WsgiDAV's storage interface carries no
request, so the view comes from `current_view`, which `DavGuard` sets for each request; a lock of
another view is invisible (not listed, not found by its token).

Limits: at most `MAX_LOCKS_PER_RESOURCE` locks on one resource (shared locks pile up otherwise, and
WsgiDAV checks each new one against all the others) and `MAX_LOCKS_PER_VIEW` in one view; one more
is 507 (Insufficient Storage). Both counts are index range lookups on `dav_locks.root`.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

from wsgidav.dav_error import HTTP_INSUFFICIENT_STORAGE, DAVError
from wsgidav.lock_man.lock_manager import generate_lock_token, normalize_lock_root, validate_lock

from balupi.cache.index import subtree_bounds
from balupi.dav.props import storage_url
from balupi.db import Database

current_view: ContextVar[str] = ContextVar("balupi_dav_view", default="")

LOCK_TIMEOUT_DEFAULT_S = 604800  # one week
LOCK_TIMEOUT_MAX_S = 4 * 604800
MAX_LOCKS_PER_RESOURCE = 32
MAX_LOCKS_PER_VIEW = 4096
_COLUMNS = "token, root, depth, scope, type, owner, principal, timeout, expire"


OWNS = ("dav_locks",)


def listing_locks(db: Database, view: str, root: str, with_members: bool) -> list[dict]:
    """The unexpired locks of `view` rooted at `root` (a normalized lock root, as
    `normalize_lock_root` makes it) and, with `with_members`, at its direct members: the locks whose
    discovery a Depth 0 or 1 PROPFIND of `root` shows (WsgiDAV's lockdiscovery shows a resource's
    own locks only, see balupi.dav.propfind). Oldest first on each root, as WsgiDAV reads them.

    Only reads: an expired lock is left out, not purged (WsgiDAV's storage purges them when it
    next reads; a PROPFIND should not need a write transaction)."""
    stored = storage_url(view, root)
    sql, params = f"SELECT {_COLUMNS} FROM dav_locks WHERE root = ?", [stored]
    if with_members:
        lo, hi = subtree_bounds(stored)
        sql += " OR (root > ? AND root < ? AND instr(substr(root, ?), '/') = 0)"
        params += [lo, hi, len(lo) + 1]
    now = time.time()
    cut = len(storage_url(view, ""))
    found = []
    for row in db.query(sql + " ORDER BY root, rowid", tuple(params)):
        if 0 <= row[8] < now:
            continue
        owner = row[5]
        found.append({
            "token": row[0], "root": row[1][cut:], "depth": row[2], "scope": row[3], "type": row[4],
            "owner": owner.encode() if isinstance(owner, str) else bytes(owner or b""), "principal": row[6] or "",
            "timeout": row[7], "expire": row[8],
        })
    return found


def _unscoped(stored_root: str) -> str | None:
    """The root of a stored lock as WsgiDAV knows it, or None when it belongs to another view."""
    prefix = storage_url(current_view.get(), "")
    if not prefix:
        return stored_root if stored_root.startswith("/") else None
    return stored_root[len(prefix):] if stored_root.startswith(prefix) else None


def _lock_from_row(row) -> dict:
    return {
        "token": row[0], "root": _unscoped(row[1]), "depth": row[2], "scope": row[3], "type": row[4],
        "owner": bytes(row[5]) if row[5] is not None else b"", "principal": row[6] or "",
        "timeout": row[7], "expire": row[8],
    }


class SqliteLockStorage:
    def __init__(self, db: Database):
        self.db = db

    def __repr__(self) -> str:
        return "SqliteLockStorage"

    def open(self) -> None:
        self.cleanup()

    def close(self) -> None:
        pass

    def cleanup(self) -> None:
        with self.db.write() as d:
            d.execute("DELETE FROM dav_locks WHERE expire >= 0 AND expire < ?", (time.time(),))

    def clear(self) -> None:
        with self.db.write() as d:
            d.execute("DELETE FROM dav_locks")

    def get(self, token: str) -> dict | None:
        row = self.db.query_one(f"SELECT {_COLUMNS} FROM dav_locks WHERE token = ?", (token,))
        if row is None:
            return None
        lock = _lock_from_row(row)
        if lock["root"] is None:  # another view's lock
            return None
        if 0 <= lock["expire"] < time.time():
            self.delete(token)
            return None
        return lock

    def create(self, path: str, lock: dict) -> dict:
        assert lock.get("token") is None and lock.get("expire") is None
        lock["root"] = normalize_lock_root(path)
        timeout = lock.get("timeout")
        timeout = LOCK_TIMEOUT_DEFAULT_S if timeout is None else float(timeout)
        if timeout < 0 or timeout > LOCK_TIMEOUT_MAX_S:
            timeout = LOCK_TIMEOUT_MAX_S
        lock["timeout"] = timeout
        lock["expire"] = time.time() + timeout
        validate_lock(lock)
        lock["token"] = generate_lock_token()
        stored_root = storage_url(current_view.get(), lock["root"])
        self._check_room(stored_root)
        with self.db.write() as d:
            d.execute(
                f"INSERT INTO dav_locks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (lock["token"], stored_root, lock["depth"], lock["scope"], lock["type"], lock["owner"],
                 lock["principal"], lock["timeout"], lock["expire"]),
            )
        return lock

    def _check_room(self, stored_root: str) -> None:
        now = time.time()
        live = "(expire < 0 OR expire >= ?)"
        on_root = self.db.query_one(f"SELECT count(*) FROM dav_locks WHERE root = ? AND {live}", (stored_root, now))[0]
        if on_root >= MAX_LOCKS_PER_RESOURCE:
            raise DAVError(HTTP_INSUFFICIENT_STORAGE, f"at most {MAX_LOCKS_PER_RESOURCE} locks on one resource")
        prefix = storage_url(current_view.get(), "/")
        in_view = self.db.query_one(f"SELECT count(*) FROM dav_locks WHERE root >= ? AND root < ? AND {live}",
                                    (prefix, prefix[:-1] + "0", now))[0]
        if in_view >= MAX_LOCKS_PER_VIEW:
            raise DAVError(HTTP_INSUFFICIENT_STORAGE, f"at most {MAX_LOCKS_PER_VIEW} locks in one view")

    def refresh(self, token: str, *, timeout: float) -> dict:
        if self.get(token) is None:
            raise ValueError(f"no such lock: {token}")
        if timeout < 0 or timeout > LOCK_TIMEOUT_MAX_S:
            timeout = LOCK_TIMEOUT_MAX_S
        with self.db.write() as d:
            d.execute("UPDATE dav_locks SET timeout = ?, expire = ? WHERE token = ?", (timeout, time.time() + timeout, token))
        lock = self.get(token)
        if lock is None:
            raise ValueError(f"no such lock: {token}")
        return lock

    def delete(self, token: str) -> bool:
        row = self.db.query_one("SELECT root FROM dav_locks WHERE token = ?", (token,))
        if row is None or _unscoped(row[0]) is None:
            return False
        with self.db.write() as d:
            return d.execute("DELETE FROM dav_locks WHERE token = ?", (token,)).rowcount > 0

    def get_lock_list(self, path: str, *, include_root: bool, include_children: bool, token_only: bool) -> list:
        root = storage_url(current_view.get(), normalize_lock_root(path))
        clauses, params = [], []
        if include_root:
            clauses.append("root = ?")
            params.append(root)
        if include_children:
            lo, hi = subtree_bounds(root)
            clauses.append("(root > ? AND root < ?)")
            params += [lo, hi]
        rows = self.db.query(f"SELECT {_COLUMNS} FROM dav_locks WHERE {' OR '.join(clauses)}", tuple(params))
        now = time.time()
        locks = [_lock_from_row(r) for r in rows]
        live = [lock for lock in locks if not (0 <= lock["expire"] < now)]
        if len(live) < len(locks):
            self.cleanup()
        return [lock["token"] for lock in live] if token_only else live
