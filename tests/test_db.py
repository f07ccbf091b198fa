"""The SQLite database: pragmas, per-thread connections, one writer path, migrations, backup."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import sqlite_utils
from sqlite_utils.migrations import Migrations

import balupi.db
from balupi import schema
from balupi.db import BUSY_TIMEOUT_MS, IDLE_CONNECTIONS, Database, migration_sets, open_database
from balupi.errors import DatabaseError


@pytest.fixture
def db(tmp_path):
    database = open_database(tmp_path / "balupi.db")
    yield database
    database.close()


def in_thread(fn):
    result = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed back to the test
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def pragmas(db: Database) -> dict:
    return {
        name: db.query_one(f"PRAGMA {name}")[0]
        for name in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")
    }


def test_every_connection_uses_wal_busy_timeout_and_full_sync(db):
    expected = {"journal_mode": "wal", "busy_timeout": BUSY_TIMEOUT_MS, "synchronous": 2, "foreign_keys": 1}
    assert pragmas(db) == expected
    assert in_thread(lambda: pragmas(db)) == expected  # another thread's own connection too


def test_each_thread_gets_its_own_connection(db):
    mine = db.raw()
    assert db.raw() is mine  # the same one again in the same thread
    theirs = in_thread(db.raw)
    assert theirs is not mine
    assert db.conn().conn is mine  # the sqlite-utils wrapper uses this thread's connection


def test_concurrent_writers_from_many_threads_and_two_handles_never_fail(tmp_path):
    first = open_database(tmp_path / "balupi.db")
    second = Database(tmp_path / "balupi.db")  # like a second process: its own write lock
    threads_per_handle, rows_per_thread = 8, 40
    errors: list[BaseException] = []
    start = threading.Barrier(2 * threads_per_handle)

    def writer(handle: Database, n: int) -> None:
        try:
            start.wait()
            for i in range(rows_per_thread):
                with handle.write() as d:
                    d.execute("INSERT INTO kv (key, value) VALUES (?, ?)", (f"{id(handle)}-{n}-{i}", "x"))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(handle, n))
        for handle in (first, second)
        for n in range(threads_per_handle)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert first.query_one("SELECT count(*) FROM kv")[0] == 2 * threads_per_handle * rows_per_thread
    first.close()
    second.close()


def test_a_failed_write_is_rolled_back(db):
    with pytest.raises(RuntimeError):
        with db.write() as d:
            d.execute("INSERT INTO kv (key, value) VALUES ('a', '1')")
            raise RuntimeError("boom")
    assert db.query("SELECT * FROM kv") == []


def test_a_nested_write_joins_the_outer_transaction(db):
    with pytest.raises(RuntimeError):
        with db.write() as d:
            d["kv"].insert({"key": "outer", "value": "1"})
            with db.write() as inner:
                inner.execute("INSERT INTO kv (key, value) VALUES ('inner', '2')")
            raise RuntimeError("undo both")
    assert db.query("SELECT * FROM kv") == []
    with db.write() as d:
        d["kv"].insert({"key": "outer", "value": "1"})
        with db.write() as inner:
            inner.execute("INSERT INTO kv (key, value) VALUES ('inner', '2')")
    assert sorted(row["key"] for row in db.query("SELECT key FROM kv")) == ["inner", "outer"]


def test_open_database_applies_every_migration_once(tmp_path):
    db = Database(tmp_path / "balupi.db")
    applied = db.migrate()
    expected = [f"{m.name}/{step.name}" for m in migration_sets() for step in m._migrations]
    assert applied == expected and "core/0001_initial" in applied
    assert db.migrate() == []  # nothing pending the second time
    assert db.applied_migrations() == expected
    db.close()


def test_an_old_schema_file_is_upgraded_and_keeps_its_data(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    schema.migrations.apply(old, stop_before="0002_nas_transitions")  # a file from the first release
    old["kv"].insert({"key": "first_start", "value": "2026-01-01"})
    old.close()
    assert [m.name for m in schema.migrations.applied(sqlite_utils.Database(path))] == ["0001_initial"]

    db = open_database(path)
    assert set(db.applied_migrations()) >= {"core/0001_initial", "core/0002_nas_transitions"}
    assert all(not m.pending(db.conn()) for m in migration_sets())
    assert db.query_one("SELECT value FROM kv WHERE key = 'first_start'")["value"] == "2026-01-01"
    assert db.conn()["nas_transitions"].exists()
    db.close()


def test_a_failing_migration_is_a_database_error_and_changes_nothing(tmp_path):
    broken = Migrations("broken")

    @broken(name="0001_creates_then_fails")
    def creates_then_fails(d):
        d["half_done"].create({"id": int}, pk="id")
        raise sqlite3.OperationalError("disk on fire")

    db = Database(tmp_path / "balupi.db")
    with pytest.raises(DatabaseError, match="migration of 'broken' failed: disk on fire"):
        db.migrate([broken])
    assert not db.conn()["half_done"].exists()
    assert broken.pending(db.conn())  # still pending: it will be retried at the next start
    db.close()


def test_online_backup_is_a_consistent_copy(db, tmp_path):
    with db.write() as d:
        d["kv"].insert_all([{"key": f"k{i}", "value": str(i)} for i in range(100)])
    reader_in_transaction = threading.Event()
    release = threading.Event()

    def hold_a_read_transaction():
        conn = db.raw()
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM kv").fetchone()
        reader_in_transaction.set()
        release.wait(30)
        conn.execute("COMMIT")

    reader = threading.Thread(target=hold_a_read_transaction)
    reader.start()
    assert reader_in_transaction.wait(30)
    try:
        db.backup(tmp_path / "copy.db")  # while another thread reads, as when the server runs
    finally:
        release.set()
        reader.join()
    copy = sqlite3.connect(tmp_path / "copy.db")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("SELECT count(*) FROM kv").fetchone()[0] == 100
        assert copy.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == len(db.applied_migrations())
    finally:
        copy.close()


def test_a_closed_database_refuses_new_connections(tmp_path):
    db = open_database(tmp_path / "balupi.db")
    db.close()
    with pytest.raises(DatabaseError, match="is closed"):
        in_thread(db.raw)


def test_a_file_that_is_not_a_database_is_moved_aside_with_one_line_and_a_new_one_started(tmp_path, caplog):
    junk = b"this is not an SQLite file, just text" * 100
    (tmp_path / "not-a-db").write_bytes(junk)
    with caplog.at_level("ERROR", logger="balupi.db"):
        db = open_database(tmp_path / "not-a-db")
    try:
        assert db.fresh and db.moved_aside is not None
        assert db.moved_aside.read_bytes() == junk  # kept for a person, never deleted
        assert db.query_one("SELECT count(*) FROM entries")[0] == 0
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "moved aside" in errors[0].getMessage()
    finally:
        db.close()


def test_a_database_that_cannot_be_opened_at_all_is_a_database_error_and_nothing_is_moved(tmp_path):
    (tmp_path / "a-directory").mkdir()
    with pytest.raises(DatabaseError):
        open_database(tmp_path / "a-directory")
    assert (tmp_path / "a-directory").is_dir() and len(list(tmp_path.iterdir())) == 1


def test_a_handed_back_connection_is_taken_by_the_next_thread_and_the_idle_pool_shrinks_back(db, monkeypatch):
    monkeypatch.setattr(balupi.db, "IDLE_RETIRE_S", 0.3)

    def use_and_hand_back():
        conn = db.raw()
        conn.execute("SELECT 1")
        db.release_thread()
        return conn

    db.release_thread()  # the test's own thread (it ran the migrations) hands its one to the pool
    first = in_thread(use_and_hand_back)
    assert in_thread(use_and_hand_back) is first  # reused, not opened again (no schema parse)
    opened = db.connections_opened
    # a burst: many threads holding one at once
    hold, started = threading.Event(), []

    def hold_one():
        started.append(db.raw())
        hold.wait(30)
        db.release_thread()

    threads = [threading.Thread(target=hold_one) for _ in range(IDLE_CONNECTIONS + 6)]
    for t in threads:
        t.start()
    while len(started) < len(threads):
        time.sleep(0.01)
    assert len({id(c) for c in started}) == len(threads)  # each holder has its own
    assert db.connections_opened == opened + len(threads) - 1  # one of them came from the pool
    hold.set()
    for t in threads:
        t.join()
    assert db.open_connections() == len(threads)  # kept for a moment: the next burst needs no new ones
    assert in_thread(use_and_hand_back) in started
    assert db.connections_opened == opened + len(threads) - 1
    time.sleep(0.4)
    assert db.retire_idle() == len(threads) - IDLE_CONNECTIONS  # then back to the pool's few
    assert db.open_connections() == IDLE_CONNECTIONS
    assert sum(_is_closed(c) for c in started) == len(threads) - IDLE_CONNECTIONS


def test_a_thread_ending_hands_its_connection_to_the_pool(db):
    db.release_thread()
    conn = in_thread(db.raw)  # the thread ends without handing it back itself
    assert db.open_connections() == 1
    assert in_thread(db.raw) is conn


def test_a_connection_inside_a_transaction_is_closed_not_passed_on(db):
    def begin_and_hand_back():
        conn = db.raw()
        conn.execute("BEGIN")
        db.release_thread()
        return conn

    db.release_thread()
    conn = in_thread(begin_and_hand_back)
    assert _is_closed(conn)  # it kept it (a transaction is not handed back), then its thread ended
    assert db.open_connections() == 0
    assert in_thread(db.raw) is not conn


def test_a_thread_inside_a_transaction_keeps_its_connection_when_it_hands_it_back(db):
    with db.write() as d:
        conn = db.raw()
        d.execute("INSERT INTO kv (key, value) VALUES ('pool', 'kept')")
        db.release_thread()
        assert db.raw() is conn and conn.in_transaction
    assert db.query_one("SELECT value FROM kv WHERE key = 'pool'")[0] == "kept"


def test_closing_the_database_closes_the_idle_connections(tmp_path):
    db = open_database(tmp_path / "balupi.db")
    idle = in_thread(db.raw)
    db.close()
    assert _is_closed(idle)
    assert db.open_connections() == 0


def _is_closed(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


# -- commits by other processes and Index.get's memo (decisions 186, 201) --------------------------


def _memo_index(tmp_path):
    from balupi.cache.index import Index

    database = open_database(tmp_path / "balupi.db")
    index = Index(database)
    index.ensure_root("", listed=True)
    index.put_file("", "/a.txt", "0" * 32, 5, 1000.0, "text/plain", local_only=True, etag="e1")
    return database, index


def test_a_commit_by_another_process_is_seen_by_index_get_within_the_check_interval(tmp_path):
    import subprocess
    import sys

    database, index = _memo_index(tmp_path)
    try:
        assert index.get("", "/a.txt").size == 5  # read, and remembered
        # What `balupi cache ...` beside the server does: another process commits to the file.
        subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
                        " c.execute(\"UPDATE entries SET size = 7 WHERE path = '/a.txt'\"); c.commit()",
                        str(tmp_path / "balupi.db")], check=True)
        time.sleep(balupi.db.OUTSIDE_CHECK_S * 1.5)
        assert index.get("", "/a.txt").size == 7
        assert in_thread(lambda: index.get("", "/a.txt").size) == 7  # and on another thread
    finally:
        database.close()


def test_a_write_of_this_process_is_seen_by_index_get_at_once(tmp_path):
    database, index = _memo_index(tmp_path)
    try:
        assert index.get("", "/a.txt").size == 5
        in_thread(lambda: index.put_file("", "/a.txt", "1" * 32, 9, 1001.0, "text/plain", local_only=True, etag="e2"))
        assert index.get("", "/a.txt").size == 9 and index.get("", "/a.txt").cache_key == "1" * 32
    finally:
        database.close()


def test_index_get_looks_for_outside_commits_at_most_once_per_interval(tmp_path, monkeypatch):
    monkeypatch.setattr(balupi.db, "OUTSIDE_CHECK_S", 60.0)
    database, index = _memo_index(tmp_path)
    try:
        seen: list[str] = []
        database.raw().set_trace_callback(seen.append)
        for _ in range(50):
            assert index.get("", "/a.txt").size == 5
        assert sum("data_version" in s for s in seen) <= 1
        assert sum(s.startswith("SELECT") for s in seen) <= 1  # the memo answered the rest
    finally:
        database.raw().set_trace_callback(None)
        database.close()


def test_index_gets_memo_holds_at_most_get_memo_rows_per_thread(tmp_path):
    """A photo grid asks for hundreds of distinct files: each of the 32 workers' memos stays small
    (decision 186, amended: 256 rows per thread were 18 MB of RSS over a 500-file grid)."""
    from balupi.cache import index as index_module

    database, index = _memo_index(tmp_path)
    try:
        for i in range(3 * index_module.GET_MEMO_ROWS):
            index.put_file("", f"/t{i:04d}.jpg", "0" * 32, 4096, 1000.0, "image/jpeg", local_only=True, etag=f"e{i}")
        largest = 0
        for i in range(3 * index_module.GET_MEMO_ROWS):
            assert index.get("", f"/t{i:04d}.jpg").size == 4096
            largest = max(largest, len(index._get_memo.rows))
        assert largest == index_module.GET_MEMO_ROWS <= 32
    finally:
        database.close()
