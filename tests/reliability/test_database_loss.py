"""A lost or damaged database (issue 17): no acknowledged upload is lost, `--repair` deletes no only
copy, a damaged database is one line and a recovery, and a nightly backup can be put back."""

from __future__ import annotations

import signal
import sqlite3

from bench.reliability import integrity
from tests.test_cli import Served, run_balupi


def _assert_nothing_lost(f: dict) -> None:
    assert f["start_error"] == "" and f["renamed"] == 201
    assert f["journaled_again"] == f["acknowledged"]
    assert f["deleted_by_repair"] == 0 and f["content_files_after_repair"] == f["content_files_before"]
    assert f["repair_exit"] == 0
    assert f["reached_nas"] == f["acknowledged"]
    assert f["served_nas_asleep"] == f["acknowledged"] and f["nas_wakes_during_reads"] == 0
    assert f["clean_served_nas_asleep"] == f["clean_cached"]
    assert f["conflicts"] == 0


def test_a_deleted_database_loses_no_acknowledged_upload():
    f = integrity.database_deleted(long=False)
    _assert_nothing_lost(f)
    assert f["moved_aside"] == 0


def test_a_corrupted_database_is_moved_aside_and_rebuilt_losing_no_acknowledged_upload():
    f = integrity.database_corrupted(long=False)
    _assert_nothing_lost(f)
    assert f["moved_aside"] == 1 and f["log_errors"] == 1


def test_a_restored_backup_gets_back_what_was_written_after_it():
    f = integrity.database_restored(long=False)
    assert f["backup_exit"] == 0 and f["restore_exit"] == 0
    assert f["served_after_restore"] == f["acknowledged"] and f["reached_nas"] == f["acknowledged"]
    assert f["conflicts"] == 0


def _damaged_db(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "balupi.db").write_bytes(b"SQLite format 3\0" + b"\x07" * 8000)
    return data


def test_balupi_serve_with_a_damaged_database_logs_one_line_and_serves(tmp_path):
    data = _damaged_db(tmp_path)
    served = Served(tmp_path, BALUPI_DATA_DIR=str(data), BALUPI_CACHE_DIR=str(tmp_path / "cache"))
    try:
        served.wait_until_serving()
        assert served.stop(signal.SIGTERM) == 0
    finally:
        served.kill()
    log = served.log
    assert "Traceback" not in log
    assert sum("is damaged" in line and "moved aside" in line for line in log.splitlines()) == 1
    aside = [p for p in data.iterdir() if p.name.startswith("balupi.db.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"SQLite format 3\0\x07")
    assert sqlite3.connect(data / "balupi.db").execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_a_maintenance_command_with_a_damaged_database_says_so_in_one_line_and_moves_nothing(tmp_path):
    data = _damaged_db(tmp_path)
    result = run_balupi(tmp_path, "cache", "verify", BALUPI_DATA_DIR=str(data), BALUPI_CACHE_DIR=str(tmp_path / "cache"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "is damaged" in lines[0] and "restore-db" in lines[0]
    assert sorted(p.name for p in data.iterdir()) == ["balupi.db"]
