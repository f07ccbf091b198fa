"""Issue 17, item 1: descriptors and memory are bounded, idle and under misses (bench/reliability/resources.py).

Both run `balupi serve` as its own process against the simulated NAS in its own process, and read
the server's descriptors and RSS from /proc. Each scenario prints its figures."""

from __future__ import annotations

from bench.reliability.harness import fd_kinds  # noqa: F401 - the figures name its kinds
from bench.reliability.resources import IDLE_NOFILE, idle_day, misses
from balupi.limits import CONTENT_DIR_DESCRIPTORS


def test_a_day_of_idle_time_with_every_job_running_leaves_descriptors_and_rss_where_they_started():
    figures = idle_day(long=False)
    print("idle day:", figures)
    assert figures["alive"] and figures["health_status"] == 200, figures["log_errors"]
    assert figures["job_runs"] > 5_000  # a day's worth of thread starts (system samples, probes, syncs...)
    assert figures["fds_max"] < IDLE_NOFILE // 2
    assert figures["fds_after"] <= figures["fds_before"] + 4
    assert figures["rss_mb_after"] <= figures["rss_mb_before"] + 5
    assert figures["log_errors"] == []


def test_a_thousand_cache_misses_leave_descriptors_flat():
    figures = misses(long=False)
    print("misses:", figures)
    assert figures["served_right"] == figures["misses"]
    first, second = figures["fd_kinds_after_round1"], figures["fd_kinds_after_round2"]
    for kind in (set(first) | set(second)) - {"dir", "db"}:
        assert second.get(kind, 0) <= first.get(kind, 0) + 4, (kind, first, second)
    # SQLite: the database and WAL file of each live thread's connection, plus the shared memory
    assert second["db"] <= 2 * figures["threads_at_round2"] + 1, (second, figures["threads_at_round2"])
    assert second.get("dir", 0) <= CONTENT_DIR_DESCRIPTORS  # content directories, each opened once
    assert figures["rss_mb_after_round2"] <= figures["rss_mb_after_round1"] + 10
