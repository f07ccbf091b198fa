"""When pending changes are worth waking a sleeping NAS for.

Otherwise they wait for its next natural wake (a client's miss, someone using the NAS directly).
"""

from __future__ import annotations

import time

from balupi.settings import Settings


def in_window(window: str, when: float) -> bool:
    """Whether local time `when` falls in a window like "01:00-05:00" (may wrap past midnight)."""
    if not window:
        return False
    start_text, end_text = window.split("-", 1)
    start = _minutes(start_text)
    end = _minutes(end_text)
    tm = time.localtime(when)
    now = tm.tm_hour * 60 + tm.tm_min
    return start <= now < end if start <= end else (now >= start or now < end)


def _minutes(text: str) -> int:
    hours, minutes = text.strip().split(":", 1)
    return int(hours) * 60 + int(minutes)


class WakePolicy:
    def __init__(self, settings: Settings):
        self.max_delay_s = settings.sync_max_delay_minutes * 60
        self.max_pending_bytes = settings.sync_max_pending_mb * 1e6
        self.window = settings.sync_window

    def wake_reason(self, pending: dict, now: float) -> str | None:
        """Why the NAS should be woken for `pending` ({count, bytes, oldest_at}), or None."""
        if not pending["count"]:
            return None
        oldest = pending["oldest_at"]
        if self.max_delay_s > 0 and oldest is not None and now - oldest >= self.max_delay_s:
            return f"oldest change waited {(now - oldest) / 60:.0f} min"
        if self.max_pending_bytes > 0 and pending["bytes"] >= self.max_pending_bytes:
            return f"{pending['bytes'] / 1e6:.0f} MB waiting"
        if in_window(self.window, now):
            return f"inside the sync window {self.window}"
        return None
