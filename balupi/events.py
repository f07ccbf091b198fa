"""Where BaluPi says that something happened: one named event per happening, emitted in one place.

Subsystems `emit` and `subscribe`; the plugin host (balupi.plugins) is one more subscriber of every
event: each event's name is also the name of an observe hook (`balupi_<name>`, balupi.hookspecs). A subscriber that raises is
logged and never breaks the emitter.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import defaultdict
from typing import Any, Callable

log = logging.getLogger("balupi.events")


class Event(enum.Enum):
    NAS_STATE_CHANGED = "nas_state_changed"  # from_state, to_state, cause, at
    NAS_WAKE_REQUESTED = "nas_wake_requested"  # reason, cause (balupi.nas.wakes.WakeCause), at
    NAS_POWER_READING = "nas_power_reading"  # power_w, power_state, at (from the `nas` plug)
    PLUG_SAMPLE = "plug_sample"  # device_id, power_w, at
    PLUG_HEALTH_CHANGED = "plug_health_changed"  # device_id, error_kind (None: recovered), at
    NAS_POWER_STATE_CHANGED = "nas_power_state_changed"  # from_state, to_state, power_w, at (off/standby/idle/active)
    CACHE_FILE_ADDED = "cache_file_added"  # path, size_bytes
    CACHE_FILE_EVICTED = "cache_file_evicted"  # path, size_bytes, reason
    SYNC_CONFLICT = "sync_conflict"  # path, conflict_path, at
    SYNC_DONE = "sync_done"  # path, action
    UPLOAD_FINISHED = "upload_finished"  # user, path, size_bytes (a client's PUT is stored on the Pi)
    MISS_SERVED = "miss_served"  # user, path, size_bytes (a client got a file that came from the NAS)


Subscriber = Callable[..., None]


class Events:
    def __init__(self) -> None:
        self._subscribers: dict[Event, list[Subscriber]] = defaultdict(list)
        self._lock = threading.Lock()

    def subscribe(self, event: Event, fn: Subscriber) -> None:
        with self._lock:
            self._subscribers[event].append(fn)

    def emit(self, event: Event, **payload: Any) -> None:
        with self._lock:
            subscribers = list(self._subscribers[event])
        for fn in subscribers:
            try:
                fn(**payload)
            except Exception:
                log.exception("subscriber %r of %s failed", fn, event.value)
