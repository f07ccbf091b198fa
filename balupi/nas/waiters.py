"""How many client requests may wait for the NAS at once: the cache never waits on the NAS.

A request that needs the NAS (a miss, a folder never listed, a login the NAS must check) can hold its
worker thread for the whole wake (up to `nas_wake_timeout_s`) or a slow download. Without a bound,
forty such requests held all 32 workers and every cached GET queued behind them for the length of
the wake. So a request takes one of `limit` NAS slots (`nas_waiters`: 24 of 32 workers)
the first time it depends on the NAS, and keeps it until its response has been sent; when none is
free it gets `NasBusy` at once (503 with `Retry-After`), and the other workers stay free for what
the cache can answer alone (a cached GET takes milliseconds, so 8 workers serve many clients).

Threads that are not serving a request (downloads, the write-back, jobs) never take a slot.
The first refusal of an episode is logged with its cause; the end of the episode logs how many were
refused (not one line per request: a busy evening would fill the journal).

Lock order: `NasWaiters._lock` is a leaf.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Iterable

from balupi.errors import NasBusy
from balupi.httpio import step_aside

log = logging.getLogger("balupi.nas")

RETRY_AFTER_S = 5


def nas_waiters(server_threads: int) -> int:
    """Worker threads that may wait for the NAS at once (a wake, a download): all but a quarter
    (at least 4), which stay free for what the cache answers alone. Also the most downloads at once."""
    return max(1, server_threads - max(4, server_threads // 4))


class _RequestState:
    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = False


class NasWaiters:
    def __init__(self, limit: int):
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)
        self._local = threading.local()
        self._lock = threading.Lock()
        self.refused = 0  # ever
        self._episode_refused = 0
        self.in_use = 0

    # -- the request's life (balupi.app.Dispatcher) -----------------------------------------------------

    def begin_request(self) -> None:
        local = self._local
        state = getattr(local, "state", None)
        if state is not None and state.held:
            self.end_request()  # a previous request on this thread that did not end cleanly
        local.state = _RequestState()

    def end_request(self) -> None:
        state = getattr(self._local, "state", None)
        self._local.state = None
        if state is not None and state.held:
            state.held = False
            with self._lock:
                self.in_use -= 1
                ended = self._episode_refused if self.in_use == 0 else 0
                if ended:
                    self._episode_refused = 0
            self._free.release()
            if ended:
                log.info("NAS waiters free again; %d request(s) were refused 503 meanwhile", ended)

    def holding(self) -> bool:
        state = getattr(self._local, "state", None)
        return state is not None and state.held

    def wrap(self, result: Iterable[bytes]) -> Iterable[bytes]:
        """The response, releasing this request's slot (if it took one) once it has been sent."""
        state = getattr(self._local, "state", None)
        if state is None or not state.held:
            self._local.state = None  # (what end_request does for a request that held no slot)
            return result
        return _Releasing(result, self.end_request)

    # -- where a request starts depending on the NAS ----------------------------------------------------

    def enter(self, why: str) -> None:
        """Take a slot for this request (once; no-op outside a request). Raises NasBusy when none is free.
        First the request gives up its hot-gate slot, if it holds one (`httpio.step_aside`): from here
        it may wait for the NAS, and cached GETs must not wait behind it."""
        step_aside()
        state = getattr(self._local, "state", None)
        if state is None or state.held:
            return
        if not self._free.acquire(blocking=False):
            with self._lock:
                self.refused += 1
                self._episode_refused += 1
                first = self._episode_refused == 1
            if first:
                log.warning("refusing requests that need the NAS with 503: %d requests already wait for it (%s)",
                            self.limit, why)
            raise NasBusy(f"{self.limit} requests already wait for the NAS; try again shortly", RETRY_AFTER_S)
        state.held = True
        with self._lock:
            self.in_use += 1


class _Releasing:
    """A WSGI response iterable whose close() also runs `release` (cheroot calls close at the end)."""

    __slots__ = ("_result", "_release")

    def __init__(self, result: Iterable[bytes], release: Callable[[], None]):
        self._result, self._release = result, release

    def __iter__(self):
        return iter(self._result)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._release()
