"""One `schedule` thread that only dispatches; each run of a job gets its own daemon thread.

A job that can take long (polling a hung plug, syncing a file) therefore never delays the others.
A job whose previous run is still going is skipped for that tick rather than stacked up, and the
skip is counted, so there is at most one thread per job. The threads are daemons: at shutdown a
run that hangs is abandoned (after `stop`'s timeout) instead of keeping the process alive; a
`concurrent.futures` pool would not do, because Python joins its workers at interpreter exit.

Each job keeps its last run, duration and error for status pages; a failing job logs once when it
starts failing and once when it recovers, not on every tick.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import schedule

log = logging.getLogger("balupi.scheduler")

TICK_S = 0.2


@dataclass
class JobStatus:
    name: str
    interval_s: float
    runs: int = 0
    skipped: int = 0
    last_started: float | None = None
    last_duration_s: float | None = None
    last_error: str | None = None
    running: bool = False
    failing: bool = field(default=False, repr=False)


class Scheduler:
    def __init__(self) -> None:
        self._schedule = schedule.Scheduler()
        self._jobs: dict[str, JobStatus] = {}
        self._scheduled: set[str] = set()  # names given to `every`
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: set[threading.Thread] = set()  # runs in progress; guarded by _lock

    def every(self, interval_s: float, name: str, fn: Callable[[], None], run_now: bool = False) -> None:
        """Run `fn` every `interval_s` seconds on its own thread (at most one run of it at a time).

        A job that `run_soon` started before it was scheduled (an event during start-up) becomes
        the scheduled job: same status, still at most one run at a time.
        """
        with self._lock:
            if name in self._scheduled:
                raise ValueError(f"job {name!r} is already scheduled")
            self._scheduled.add(name)
            status = self._jobs.get(name)
            if status is None:
                status = self._jobs[name] = JobStatus(name, interval_s)
            status.interval_s = interval_s
        self._schedule.every(interval_s).seconds.do(self._dispatch, status, fn)
        if run_now:
            self._dispatch(status, fn)

    def run_soon(self, name: str, fn: Callable[[], None]) -> None:
        """Run `fn` once on its own thread, now (e.g. on an event), without holding up the caller."""
        with self._lock:
            status = self._jobs.get(name)
            if status is None:
                status = self._jobs[name] = JobStatus(name, 0)
        self._dispatch(status, fn)

    def _dispatch(self, status: JobStatus, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            if status.running:
                status.skipped += 1
                return
            status.running = True
            worker = threading.Thread(
                target=self._run, args=(status, fn), name=f"balupi-job-{status.name}", daemon=True
            )
            self._workers.add(worker)
        worker.start()

    def _run(self, status: JobStatus, fn: Callable[[], None]) -> None:
        started = time.monotonic()
        status.last_started = time.time()
        try:
            fn()
        except Exception as exc:  # a job's failure must not kill the scheduler
            status.last_error = f"{type(exc).__name__}: {exc}"
            if not status.failing:
                log.error("job %s failed: %s", status.name, status.last_error, exc_info=True)
            status.failing = True
        else:
            if status.failing:
                log.info("job %s recovered", status.name)
            status.failing = False
            status.last_error = None
        finally:
            status.runs += 1
            status.last_duration_s = time.monotonic() - started
            with self._lock:
                status.running = False
                self._workers.discard(threading.current_thread())

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._schedule.run_pending()
            except Exception:
                log.exception("scheduler: dispatch failed")
            self._stop.wait(TICK_S)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="balupi-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop dispatching, then wait up to `timeout_s` for running jobs. True if all finished."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        unfinished = [s.name for s in self._jobs.values() if s.running]
        if unfinished:
            log.warning("scheduler: abandoned running jobs at shutdown: %s", ", ".join(unfinished))
        return not unfinished

    def status(self) -> list[dict]:
        return [
            {
                "name": s.name,
                "interval_s": s.interval_s,
                "runs": s.runs,
                "skipped": s.skipped,
                "running": s.running,
                "last_started": s.last_started,
                "last_duration_s": s.last_duration_s,
                "last_error": s.last_error,
            }
            for s in self._jobs.values()
        ]
