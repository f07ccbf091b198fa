"""quiet_hours: never wake the NAS at night for background work; a person's own request still wakes it.

During the configured hours, `balupi_before_wake` refuses wakes for the write-back, prefetch and
refresh (they wait for the NAS's next wake, whatever causes it); a client's request (a miss, a
folder never listed, a login) and an operator's wake (POST /api/nas/wol, `balupi sync --wake`) still
wake it. A refused wake names the end of the quiet hours, so a client that is refused (when
`kinds` includes "client") is told by `Retry-After` to come back then.

    [plugins.quiet_hours]
    hours = "22:00-07:00"             # local time; may wrap past midnight; "" = off
    kinds = ["sync", "prefetch", "refresh"]   # which wakes wait (see balupi.hookspecs.WakeKind)
"""

from __future__ import annotations

import time

from balupi.hookspecs import WakeKind, WakeRefusal, hookimpl
from balupi.plugins import Setting, parse_list
from balupi.settings import _time_window
from balupi.sync.policy import in_window

__version__ = "1.0"


def _kinds(values: tuple[str, ...]) -> None:
    known = {k.value for k in WakeKind}
    for value in values:
        if value not in known:
            raise ValueError(f"unknown kind {value!r}; one of {', '.join(sorted(known))}")


SETTINGS = (
    Setting("hours", "", "Local time window in which background work never wakes the NAS, e.g. 22:00-07:00.",
            check=_time_window),
    Setting("kinds", ("sync", "prefetch", "refresh"), "Which wakes wait during the quiet hours.", parse_list, _kinds),
)

config: dict = {}


def configure(values: dict) -> None:
    config.update(values)


def seconds_until_end(hours: str, now: float) -> float:
    """From `now` to the next end of the local time window `hours` ("22:00-07:00")."""
    end_hour, end_minute = (int(part) for part in hours.split("-", 1)[1].strip().split(":", 1))
    today = time.localtime(now)
    for days_ahead in (0, 1):  # mktime normalises the 32nd of a month; isdst=-1 lets it find DST
        end = time.mktime((today.tm_year, today.tm_mon, today.tm_mday + days_ahead, end_hour, end_minute, 0, 0, 0, -1))
        if end > now:
            return end - now
    raise AssertionError("a window ends within a day")


@hookimpl
def balupi_before_wake(kind: WakeKind) -> WakeRefusal | None:
    hours = config.get("hours")
    now = time.time()
    if hours and kind.value in config["kinds"] and in_window(hours, now):
        return WakeRefusal(f"quiet hours {hours}: {kind.value} waits for the NAS's next wake",
                           retry_after_s=seconds_until_end(hours, now))
    return None
