"""The one SQLite database: per-thread connections, one writer path, versioned migrations.

- WAL mode, so readers (cheroot's worker threads, PROPFIND) never wait for the writer;
  `synchronous=FULL`, so a committed transaction survives a power cut of the Pi (an acknowledged
  write is only acknowledged after its index transaction commits).
- A thread holds one connection (`Database.conn()`) from its first use until it ends or hands it
  back (`release_thread()`, which cheroot's workers call when they go back to waiting): a
  handed-back connection waits in an idle pool for the next thread; beyond `IDLE_CONNECTIONS`,
  those that waited `IDLE_RETIRE_S` are closed (decision 175). Each connection parses the schema
  for itself (about 110 KiB, plus its page cache), so 32 workers each keeping one cost 5 MB on a
  1 GB Pi. Every cache miss and every scheduled job run is a new thread: a connection kept until
  shutdown was a descriptor leak (`balupi.perthread`). Open connections never exceed the live
  threads that use the database plus the idle pool (docs/reliability.md has the descriptor budget).
- All writes go through `Database.write()`: a process-wide lock plus `BEGIN IMMEDIATE`, so threads of
  this process queue in order instead of failing with "database is locked"; other processes (the
  cron-style CLI commands) are handled by `busy_timeout`.
- Schema: each subsystem owns a sqlite-utils `Migrations` set with named steps in its own module
  (listed in `SCHEMA_MODULES`); `migrate()` applies whatever is pending in every set at start-up.

Lock order: `Database._write_lock` is a leaf; never take another BaluPi lock while holding it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sqlite3
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import sqlite_utils
from sqlite_utils.migrations import Migrations

from balupi.errors import DatabaseError, ServiceBusy
from balupi.perthread import PerThread

log = logging.getLogger("balupi.db")

DB_FILENAME = "balupi.db"  # in data_dir
BUSY_TIMEOUT_MS = 10_000
LOCKED_RETRY_AFTER_S = 10  # another process holds the write lock: clients try again after this
LOCKED_FAST_FAIL_S = 10.0  # after a write found the database locked, later ones wait only ...
LOCKED_BUSY_TIMEOUT_MS = 1_000  # ... this long for the lock
CACHE_KIB_PER_CONNECTION = 64
IDLE_CONNECTIONS = 4  # handed-back connections kept open for the next thread (decision 175) ...
IDLE_RETIRE_S = 2.0  # ... and more of them only until they have waited this long
OUTSIDE_CHECK_S = 0.1  # commits by other processes are looked for at most this often (decision 201)

# Modules that define a module-level `migrations` (a sqlite_utils Migrations set), applied in this order.
SCHEMA_MODULES = (
    "balupi.schema",
    "balupi.cache.schema",
    "balupi.energy.schema",
    "balupi.auth.schema",
    "balupi.nas.wakes",
    "balupi.cache.pins",
)


def migration_sets() -> list[Migrations]:
    return [importlib.import_module(name).migrations for name in SCHEMA_MODULES]


class Database:
    """The BaluPi database file. Thread-safe: every thread gets its own connection."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._write_lock = threading.RLock()
        self._conns: PerThread[_Conn] = PerThread(self._take, self._give_back, "database connection")
        self._idle: list[tuple[float, _Conn]] = []  # (handed back at, conn), oldest first; under _idle_lock
        self._idle_lock = threading.Lock()  # a leaf
        self._closed = False
        self.connections_opened = 0  # ever (each parses the schema: about 110 KiB and a millisecond)
        self.fresh = False  # set by open_database: new (missing, or a damaged one moved aside)
        self.moved_aside: Path | None = None
        self._locked_at: float | None = None  # monotonic time a write last found the database locked
        # Bumped (under the write lock) when a write transaction of this process starts and when it
        # ends: a memo of a read taken before it (`Index.get`) is stale once this has moved.
        self.generation = 0
        # Moves when a commit by a connection not of this process (a `balupi cache ...` command
        # beside the server) has been seen; looked for at most every `OUTSIDE_CHECK_S` (decision 201).
        self.outside_generation = 0
        self._outside_checked_at = -OUTSIDE_CHECK_S

    def outside_commits(self) -> int:
        """`outside_generation`, after looking for commits by other connections if nobody in this
        process has for `OUTSIDE_CHECK_S`: a commit that ended that long ago has moved it.

        One `PRAGMA data_version` (a read transaction: two fcntl calls and a GIL hand-over) per
        `OUTSIDE_CHECK_S` for the whole process instead of one per call. The connection that looks
        compares with what it saw itself the last time it looked; a connection looking for the
        first time counts as a change."""
        started = time.monotonic()
        if started - self._outside_checked_at < OUTSIDE_CHECK_S:
            return self.outside_generation
        conn = self._conns.get()
        version = conn.raw.execute("PRAGMA data_version").fetchone()[0]
        if version != conn.data_version:
            conn.data_version = version
            self.outside_generation += 1
        # Only now: a thread that skips the check because of this time must find the bump above.
        self._outside_checked_at = started
        return self.outside_generation

    def _take(self) -> "_Conn":
        """A connection for a thread that has none: the idle one handed back last, else a new one."""
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()[1]
        return self._open()

    def _give_back(self, conn: "_Conn") -> None:
        """A thread is done with `conn` (it ended, or handed it back): keep it for the next thread,
        or close it. One still inside a transaction is never passed on (closing rolls it back)."""
        if conn.raw.in_transaction:
            conn.close()
            return
        now = time.monotonic()
        with self._idle_lock:
            if self._closed:
                surplus = [conn]
            else:
                self._idle.append((now, conn))
                surplus = self._surplus(now)
        for old in surplus:
            old.close()

    def retire_idle(self) -> int:
        """Close the idle connections beyond `IDLE_CONNECTIONS` that have waited `IDLE_RETIRE_S`
        (scheduled with the memory trim, for a server that went quiet after a burst). Returns how many."""
        with self._idle_lock:
            surplus = self._surplus(time.monotonic())
        for conn in surplus:
            conn.close()
        return len(surplus)

    def _surplus(self, now: float) -> list["_Conn"]:
        """Under _idle_lock: take out the idle connections to close. A burst of requests leaves up to
        one per worker; the pool keeps them for a moment (the next burst would open them again, a
        schema parse each), then goes back to its few."""
        surplus = []
        while len(self._idle) > IDLE_CONNECTIONS and now - self._idle[0][0] >= IDLE_RETIRE_S:
            surplus.append(self._idle.pop(0)[1])
        return surplus

    def _open(self) -> "_Conn":
        if self._closed:
            raise DatabaseError(f"database {self.path} is closed")
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self.connections_opened += 1
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            # One connection per cheroot thread: SQLite's default 2 MB page cache each would be
            # 64 MB on a 1 GB Pi (256 KiB each: RSS after the WebDAV benchmark 66 -> 64 MB; 64 KiB,
            # 16 pages, still holds a lookup's B-tree path: 77-79 -> 73 MB with logins on). The OS
            # page cache holds the file anyway, and a write elsewhere empties this cache regardless.
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB_PER_CONNECTION}")
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open database {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        return _Conn(conn)

    def raw(self) -> sqlite3.Connection:
        """This thread's sqlite3 connection (autocommit; use write() for transactions)."""
        return self._conns.get().raw

    def conn(self) -> sqlite_utils.Database:
        """This thread's connection wrapped by sqlite-utils, for reads and table helpers."""
        return self._conns.get().wrapped()

    def open_connections(self) -> int:
        """Connections open now (one per live thread holding one, plus the idle pool)."""
        with self._idle_lock:
            idle = len(self._idle)
        return len(self._conns) + idle

    def release_thread(self) -> None:
        """Hand this thread's connection back to the idle pool; the thread takes one again on its
        next use. Cheroot's workers call this when they go back to waiting, and a thread before it
        waits for the NAS to wake (decision 175). Inside a transaction it keeps it."""
        conn = self._conns.current()
        if conn is not None and not conn.raw.in_transaction:
            self._conns.release_current()

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        try:
            return self.raw().execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise _busy_or(exc) from exc

    def query_one(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        try:
            return self.raw().execute(sql, params).fetchone()
        except sqlite3.OperationalError as exc:
            raise _busy_or(exc) from exc

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction: `with db.write() as d: d.execute(...)`. Commits on success.

        Re-entrant within a thread (a nested call joins the outer transaction). When another process
        holds the write lock for longer than `busy_timeout`, raises `ServiceBusy` (HTTP: 503 with
        Retry-After), not sqlite3's "database is locked" (which was a 500).
        """
        if not self._write_lock.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
            raise ServiceBusy("the database is locked: other writes have waited for it too long; try again shortly",
                              LOCKED_RETRY_AFTER_S)
        try:
            conn = self.raw()
            if conn.in_transaction:
                yield self.conn()
                return
            self.generation += 1
            self._begin(conn)
            try:
                yield self.conn()
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise _busy_or(exc) from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except sqlite3.OperationalError as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise _busy_or(exc) from exc
        finally:
            self.generation += 1  # (a nested write adds nothing the outer one's end does not)
            self._write_lock.release()

    def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE. While another process is known to hold the lock (the last attempt timed
        out), wait only briefly: writes queued behind the first would otherwise each wait the whole
        busy timeout in turn (a PUT took 20 s behind one other)."""
        known_locked = self._locked_at is not None and time.monotonic() - self._locked_at < LOCKED_FAST_FAIL_S
        if known_locked:
            conn.execute(f"PRAGMA busy_timeout = {LOCKED_BUSY_TIMEOUT_MS}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            error = _busy_or(exc)
            if isinstance(error, ServiceBusy):
                self._locked_at = time.monotonic()
            raise error from exc
        finally:
            if known_locked:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._locked_at = None

    def migrate(self, sets: list[Migrations] | None = None) -> list[str]:
        """Apply every pending migration. Returns the names applied, as 'set/name'."""
        applied = []
        with self._write_lock:
            db = self.conn()
            for mset in sets if sets is not None else migration_sets():
                pending = [m.name for m in mset.pending(db)]
                if not pending:
                    continue
                try:
                    mset.apply(db)
                except sqlite3.Error as exc:
                    raise DatabaseError(f"migration of {mset.name!r} failed: {exc}") from exc
                applied += [f"{mset.name}/{name}" for name in pending]
        if applied:
            log.info("database %s: applied migrations %s", self.path, ", ".join(applied))
        return applied

    def applied_migrations(self) -> list[str]:
        db = self.conn()
        return [f"{m.name}/{a.name}" for m in migration_sets() for a in m.applied(db)]

    def backup(self, target: Path | str, progress: Callable[[int, int, int], object] | None = None) -> None:
        """An online, consistent copy of the database (safe while the server runs). `progress`
        (status, remaining, total pages) is called after each step of 1024 pages."""
        dest = sqlite3.connect(str(target))
        try:
            self.raw().backup(dest, pages=1024 if progress else -1, progress=progress)
        finally:
            dest.close()

    def close(self) -> None:
        """Close every thread's connection (at shutdown, after the worker threads have stopped)."""
        with self._idle_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        self._conns.close_all()
        for _, conn in idle:
            conn.close()


class _Conn:
    """A thread's connection and its sqlite-utils wrapper (made on first use)."""

    __slots__ = ("raw", "_wrapped", "data_version")

    def __init__(self, raw: sqlite3.Connection):
        self.raw = raw
        self._wrapped: sqlite_utils.Database | None = None
        self.data_version: int | None = None  # PRAGMA data_version when `outside_commits` last looked

    def wrapped(self) -> sqlite_utils.Database:
        if self._wrapped is None:
            self._wrapped = sqlite_utils.Database(self.raw, execute_plugins=False)
        return self._wrapped

    def close(self) -> None:
        self._wrapped = None
        self.raw.close()


def _busy_or(exc: sqlite3.OperationalError) -> Exception:
    """ServiceBusy for "database is locked"/"busy" (another process holds the lock), else `exc`."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return ServiceBusy(f"the database is locked by another process ({exc}); try again shortly",
                           LOCKED_RETRY_AFTER_S)
    return exc


PRIVATE_FILE_MODE = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")


def make_private(path: Path | str) -> None:
    """The database file exists with mode 0600, and so do its WAL and shared-memory files (SQLite
    creates those with the database file's mode), whatever the umask; existing ones are tightened."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    for suffix in SIDE_FILES:
        side = path.with_name(path.name + suffix)
        try:
            if not side.is_symlink() and stat.S_IMODE(side.stat().st_mode) != PRIVATE_FILE_MODE:
                side.chmod(PRIVATE_FILE_MODE)
        except FileNotFoundError:
            pass


# SQLite's answers for a file that is damaged or not a database at all (not: locked, unreadable,
# disk full, which moving the file aside would not cure).
_DAMAGED_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB


def _is_damage(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, sqlite3.DatabaseError) and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _DAMAGED_CODES:
            return True
        exc = exc.__cause__
    return False


def _check(db: Database) -> None:
    """Open, migrate and quick-check `db`; raises DatabaseError."""
    try:
        db.migrate()
        rows = db.query("PRAGMA quick_check")
    except sqlite3.Error as exc:
        raise DatabaseError(f"database {db.path}: {exc}") from exc
    problems = [r[0] for r in rows if r[0] != "ok"]
    if problems:
        exc = sqlite3.DatabaseError("; ".join(problems[:3]))
        exc.sqlite_errorcode = 11  # type: ignore[attr-defined]
        raise DatabaseError(f"database {db.path} failed its check: {'; '.join(problems[:3])}") from exc


def move_aside(path: Path, why: str = "damaged") -> Path:
    """Move a database (and its -wal and -shm files) to `<name>.<why>-<time>`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.{why}-{stamp}")
    for suffix in ("", *SIDE_FILES):
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, f"{aside}{suffix}")
    return aside


def open_database(path: Path | str, recover: bool = True) -> Database:
    """The database at `path`, migrated. A file SQLite calls damaged or not a database is moved
    aside (one ERROR line) and a new database is started: `Database.fresh` then tells the caller to
    rebuild what it can (the cache's sidecars hold every pending upload, see balupi.cache.recovery).
    A missing file is created, and is fresh too. `recover=False` (commands that run beside the
    server): a damaged database is a DatabaseError saying what to do, and stays where it is."""
    path = Path(path)
    existed = path.exists() and path.stat().st_size > 0
    try:
        make_private(path)
    except OSError as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from exc
    db = Database(path)
    try:
        _check(db)
    except DatabaseError as exc:
        db.close()
        if not (existed and _is_damage(exc)):
            raise
        if not recover:
            raise DatabaseError(f"database {path} is damaged ({exc.__cause__ or exc}); `balupi serve` moves it aside"
                                " and rebuilds it from the cache at start-up, or put a backup back with"
                                " `balupi restore-db BACKUP` (server stopped)") from None
        aside = move_aside(path)
        make_private(path)
        log.error("database %s is damaged (%s): moved aside to %s; starting a new one, rebuilt from the cache",
                  path, exc.__cause__ or exc, aside)
        db = Database(path)
        _check(db)
        db.moved_aside = aside
    db.fresh = not existed or db.moved_aside is not None
    return db
