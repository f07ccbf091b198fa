"""Every job BaluPi's scheduler runs, in one table: its name, how often, and what it runs.

Intervals a user may want to change are settings (`nas_probe_interval_s`, `sync_interval_s`,
`prefetch_interval_minutes`, `energy_sample_interval_seconds`); the rest are defined here, once.
The scheduler (`balupi.scheduler`) runs each job on its own thread, at most one run at a time.

Jobs also start outside the table, always under the same name (so never beside a scheduled run):
- when the NAS wakes, for whatever reason: `sync`, and `awake-time` (a walk of the folders the index
  has never listed, then `prefetch`'s work) at once (`BaluPi._on_nas_state`);
- POST /api/cache/sync, /prefetch and /refresh run `sync`, `prefetch` and `refresh` at once;
- each plugin's `balupi_scheduled_jobs` run as "plugin <name>: <job>" (`balupi.plugins`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from balupi.sync.refresh import TICK_S as REFRESH_TICK_S  # the refresher's per-tick share depends on it

if TYPE_CHECKING:
    from balupi.app import BaluPi
    from balupi.scheduler import Scheduler
    from balupi.server import Server

SYSTEM_SAMPLE_INTERVAL_S = 5.0  # CPU and memory for /api/system/status (never sampled on a request)
ACCESS_FLUSH_INTERVAL_S = 30.0  # the cache's access counts, kept in memory meanwhile (lost in a crash: heat only)
CACHE_SWEEP_INTERVAL_S = 300.0  # eviction down to the size limit (writes also evict when they need room)
PLUGINS_STATUS_INTERVAL_S = 60.0  # the plugins' counts in data_dir, for `balupi plugins`
NAS_IDLE_CHECK_INTERVAL_S = 60.0  # whether to ask the NAS to suspend (nas_idle_suspend_minutes)
SYNC_PURGE_INTERVAL_S = 3600.0  # delete journal rows older than sync_done_retention_days
ENERGY_RETENTION_INTERVAL_S = 3600.0  # delete energy rows past energy_raw/hourly_retention_days
MEMORY_TRIM_INTERVAL_S = 10.0  # hand memory freed after a burst back to the system


@dataclass(frozen=True)
class Job:
    name: str
    interval_s: float
    run: Callable[[], object]
    run_now: bool = False  # also once as soon as it is scheduled


def app_jobs(app: "BaluPi") -> list[Job]:
    """The jobs of a running BaluPi (`BaluPi.start`)."""
    s = app.settings
    jobs = [
        Job("system-sample", SYSTEM_SAMPLE_INTERVAL_S, app.system.sample),
        Job("cache-access-flush", ACCESS_FLUSH_INTERVAL_S, app.provider.index.flush_access),
        Job("cache-sweep", CACHE_SWEEP_INTERVAL_S, app.provider.cache.sweep),
        Job("plugins-status", PLUGINS_STATUS_INTERVAL_S, app.plugins.write_status, run_now=True),
    ]
    if app.nas.configured:
        jobs += [
            Job("nas-probe", s.nas_probe_interval_s, app.nas.probe, run_now=True),
            Job("nas-idle-suspend", NAS_IDLE_CHECK_INTERVAL_S, app.nas.check_idle),
            Job("sync", s.sync_interval_s, app.sync.tick),
            Job("sync-purge", SYNC_PURGE_INTERVAL_S, app.sync.purge_done),
            Job("refresh", REFRESH_TICK_S, app.refresher.tick),
        ]
        if s.prefetch_interval_minutes > 0:  # the prefetch never wakes the NAS, but keeps it awake
            jobs.append(Job("prefetch", s.prefetch_interval_minutes * 60, app.prefetcher.run))
    if s.energy_enabled:
        jobs += [
            Job("energy-poll", app.energy.interval_s, app.energy.poll_all, run_now=True),
            Job("energy-retention", ENERGY_RETENTION_INTERVAL_S, app.energy.apply_retention),
        ]
    return jobs


def server_jobs(server: "Server") -> list[Job]:
    """The jobs of the HTTP server around it (`Server.start`)."""
    return [
        Job("memory-trim", MEMORY_TRIM_INTERVAL_S, server.release_memory),
        # proves to systemd's watchdog that the scheduler runs its jobs
        Job("heartbeat", server.heartbeat_s, server.heartbeat, run_now=True),
    ]


def schedule(scheduler: "Scheduler", jobs: Iterable[Job]) -> None:
    for job in jobs:
        scheduler.every(job.interval_s, job.name, job.run, run_now=job.run_now)
