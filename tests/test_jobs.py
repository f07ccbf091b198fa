"""The job table (balupi/jobs.py): what the scheduler of a running BaluPi runs, and the settings in it."""

from __future__ import annotations

from balupi import jobs
from tests.stack import stack_factory  # noqa: F401  (the fixture)


def scheduled(app) -> dict[str, float]:
    """Name -> interval of every job the scheduler runs on a timer (jobs only ever run at once have 0)."""
    return {job["name"]: job["interval_s"] for job in app.scheduler.status() if job["interval_s"]}


def test_a_running_server_schedules_exactly_the_job_table(stack_factory):
    stack = stack_factory(prefetch_interval_minutes=30, sync_interval_s=7)
    table = jobs.app_jobs(stack.app) + jobs.server_jobs(stack.server)
    assert scheduled(stack.app) == {job.name: job.interval_s for job in table}
    assert {"nas-probe", "nas-idle-suspend", "sync", "sync-purge", "refresh", "prefetch", "energy-poll",
            "energy-retention", "cache-sweep", "heartbeat"} <= set(scheduled(stack.app))
    assert scheduled(stack.app)["prefetch"] == 30 * 60  # the setting, in minutes
    assert scheduled(stack.app)["sync"] == 7


def test_prefetch_interval_0_leaves_the_prefetch_to_the_wakes(stack_factory):
    stack = stack_factory(prefetch_interval_minutes=0)
    assert "prefetch" not in scheduled(stack.app)
    assert "sync" in scheduled(stack.app)  # the rest of the NAS's jobs run as ever


def test_without_a_nas_no_nas_job_is_scheduled(running_server):
    server = running_server()
    names = set(scheduled(server.app))
    assert names == {job.name for job in jobs.app_jobs(server.app) + jobs.server_jobs(server)}
    assert not names & {"nas-probe", "nas-idle-suspend", "sync", "sync-purge", "refresh", "prefetch"}
    assert {"system-sample", "cache-access-flush", "cache-sweep", "plugins-status", "memory-trim"} <= names
