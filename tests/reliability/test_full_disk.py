"""A full disk (issue 17): 507 Insufficient Storage before anything is written, for the cache volume
and the database's volume; nothing acknowledged lost, no orphan content, no eviction for an upload
that cannot fit; a cache volume too small to cache anything is an error. The volumes are small
tmpfs mounts (root only; skipped otherwise), unmounted afterwards."""

from __future__ import annotations

import pytest

from bench.reliability import integrity

needs_mount = pytest.mark.skipif(integrity.can_mount() is not None, reason=integrity.can_mount() or "")


@needs_mount
def test_a_full_cache_volume_is_507_before_anything_is_written_and_loses_nothing():
    f = integrity.full_cache_volume(long=False)
    assert f["huge_put"].startswith("HTTP/1.1 507") and f["evicted_by_huge_put"] == 0
    assert f["negative_length_put"].startswith("HTTP/1.1 400") and f["negative_length_s"] < 5
    assert f["put_while_volume_filled"].startswith("HTTP/1.1 507") and f["late_put_in_index"] == 0
    assert set(f["statuses"]) == {201, 507} and f["statuses"][507] >= 1
    assert f["served"] == f["acknowledged"] == f["statuses"][201]
    assert f["orphan_content_files"] == 0 and f["temp_files_left"] == 0
    assert f["refusal_log_lines"] >= 1
    assert f["reached_nas"] == f["acknowledged"]
    assert f["put_after_sync"] == 201  # synced files are clean: evicted to make room


@needs_mount
def test_a_full_database_volume_is_507_before_anything_is_written_and_recovers():
    f = integrity.full_db_volume(long=False)
    assert f["statuses_while_full"] == {507: f["puts_while_full"]} and f["mkcol_while_full"] == 507
    assert f["content_files_written_while_full"] == 0 and f["orphan_content_files"] == 0
    assert f["refusal_log_lines"] >= 1
    assert f["served_while_full"] == 3  # reads go on
    assert f["put_after_room"] == 201 and f["reached_nas"] == f["acknowledged"]


@needs_mount
def test_a_cache_volume_smaller_than_the_free_space_floor_is_an_error_in_health_and_the_log():
    f = integrity.small_cache_volume(long=False)
    assert f["health_status"] == 503 and f["health"] == "error" and f["problems"] == 1
    assert f["startup_error_lines"] == 1
