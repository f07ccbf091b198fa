"""The scheduler: one dispatching thread, jobs on their own threads, errors logged once, safe stop."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from balupi.scheduler import TICK_S, Scheduler

WAIT_S = 20.0  # upper bound for "eventually"; the tests never assert how fast anything is


def wait_until(predicate, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def job(scheduler: Scheduler, name: str) -> dict:
    return next(j for j in scheduler.status() if j["name"] == name)


@pytest.fixture
def scheduler():
    s = Scheduler()
    yield s
    s.stop(timeout_s=0.1)


def test_a_hanging_job_does_not_delay_another_jobs_rhythm(scheduler):
    release = threading.Event()
    ticks = []
    scheduler.every(TICK_S, "hangs", lambda: release.wait(WAIT_S), run_now=True)
    scheduler.every(TICK_S, "quick", lambda: ticks.append(time.monotonic()))
    scheduler.start()
    try:
        wait_until(lambda: len(ticks) >= 4)
        hanging = job(scheduler, "hangs")
        assert hanging["running"] and hanging["runs"] == 0  # still in its first run...
        wait_until(lambda: job(scheduler, "hangs")["skipped"] >= 1)  # ...and its ticks are skipped, not stacked
        assert job(scheduler, "quick")["last_error"] is None
    finally:
        release.set()
    wait_until(lambda: job(scheduler, "hangs")["runs"] == 1)


def test_a_failing_job_is_logged_once_and_its_recovery_once(scheduler, caplog):
    outcomes = iter([ValueError("plug unplugged")] * 4 + [None] * 3)

    def flaky():
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    caplog.set_level(logging.INFO, logger="balupi.scheduler")
    for run in range(1, 8):
        scheduler.run_soon("flaky", flaky)
        wait_until(lambda: job(scheduler, "flaky")["runs"] == run and not job(scheduler, "flaky")["running"])
        if run == 4:
            assert job(scheduler, "flaky")["last_error"] == "ValueError: plug unplugged"
    assert job(scheduler, "flaky")["last_error"] is None
    messages = [r.getMessage() for r in caplog.records if r.name == "balupi.scheduler"]
    assert messages == ["job flaky failed: ValueError: plug unplugged", "job flaky recovered"]
    assert [r.levelno for r in caplog.records if r.name == "balupi.scheduler"] == [logging.ERROR, logging.INFO]


def test_stop_returns_while_a_job_hangs_and_reports_it_abandoned(caplog):
    scheduler = Scheduler()
    release = threading.Event()
    scheduler.run_soon("hangs", lambda: release.wait(WAIT_S))
    scheduler.start()
    wait_until(lambda: job(scheduler, "hangs")["running"])
    try:
        assert scheduler.stop(timeout_s=0.1) is False
        assert "scheduler: abandoned running jobs at shutdown: hangs" in caplog.text
        worker = next(t for t in threading.enumerate() if t.name == "balupi-job-hangs")
        assert worker.daemon  # an abandoned run never keeps the process alive
    finally:
        release.set()


def test_a_finished_job_lets_stop_report_success(scheduler):
    done = threading.Event()
    scheduler.run_soon("short", done.set)
    assert done.wait(WAIT_S)
    assert scheduler.stop(timeout_s=WAIT_S) is True


def test_nothing_is_dispatched_after_stop():
    scheduler = Scheduler()
    scheduler.stop(timeout_s=0.1)
    ran = threading.Event()
    scheduler.run_soon("late", ran.set)
    assert not ran.wait(0.3)
    assert job(scheduler, "late")["runs"] == 0


def test_the_process_exits_although_a_job_hangs_forever():
    """A hung plug poll must not keep `balupi serve` alive after SIGTERM (no join at exit)."""
    code = textwrap.dedent(
        """
        import threading
        from balupi.scheduler import Scheduler
        s = Scheduler()
        started = threading.Event()
        s.run_soon("hangs", lambda: (started.set(), threading.Event().wait()))
        started.wait()
        print("stopped cleanly:", s.stop(timeout_s=0.1))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "stopped cleanly: False"


def test_a_job_run_soon_before_it_is_scheduled_becomes_the_scheduled_job(scheduler):
    # At start-up the first NAS probe (run_now) can announce "awake" before the jobs that react to
    # it are scheduled; that must not make scheduling them fail.
    release = threading.Event()
    scheduler.run_soon("sync", release.wait)
    scheduler.every(60, "sync", lambda: None)
    scheduler.run_soon("sync", lambda: None)  # the first run still goes: this one is skipped
    assert job(scheduler, "sync")["interval_s"] == 60 and job(scheduler, "sync")["skipped"] == 1
    release.set()
    wait_until(lambda: not job(scheduler, "sync")["running"])
    assert job(scheduler, "sync")["runs"] == 1


def test_the_same_job_name_cannot_be_scheduled_twice(scheduler):
    scheduler.every(60, "once", lambda: None)
    with pytest.raises(ValueError, match="already scheduled"):
        scheduler.every(60, "once", lambda: None)
