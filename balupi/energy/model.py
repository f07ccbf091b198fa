"""The energy monitor's vocabulary: roles, poll outcomes, ledger kinds, NAS power states, readings.

Everything here is plain data; nothing talks to a plug or the database.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime

from balupi.errors import BaluPiError
from balupi.nas.power import NasPowerState  # noqa: F401  (the energy monitor's classification of a reading)

# A plug whose clock reads a year before this has lost its time (Tapo plugs restart at 2000-01-01).
MIN_VALID_YEAR = 2020


class PlugRole(enum.Enum):
    NAS = "nas"  # feeds the NAS power state and the savings
    PI = "pi"  # BaluPi's own draw, for net savings
    MONITOR = "monitor"  # something the household wants to watch
    GENERIC = "generic"

    @property
    def unique(self) -> bool:
        """Only one plug may have this role."""
        return self in (PlugRole.NAS, PlugRole.PI)


class PollErrorKind(enum.Enum):
    """Why a poll failed. Reported as such: a wrong password is not "offline"."""

    AUTHENTICATION = "authentication"  # the plug refused the Tapo account
    UNSUPPORTED = "unsupported"  # python-kasa cannot speak its protocol (e.g. TPAP firmware 1.4.x)
    TIMEOUT = "timeout"  # no answer before the poll's deadline
    OFFLINE = "offline"  # connection refused or unreachable
    DEVICE_ERROR = "device_error"  # the plug answered with an error code
    PROTOCOL = "protocol"  # an answer we could not use


class LedgerKind(enum.Enum):
    """Where the energy of a ledger piece comes from."""

    MEASURED = "measured"  # counter delta between two regular samples
    FILLED = "filled"  # counter delta (and the plug's hourly history) across a gap
    ESTIMATED = "estimated"  # sampled power x time: only for the seconds before a month reset with no history


class GapStatus(enum.Enum):
    OPEN = "open"  # the plug is not answering right now
    FILLED = "filled"  # the plug's counters told us every Wh of it
    PARTIAL = "partial"  # part of it stays unknown (no counter or history covers it)




@dataclass
class Reading:
    """One successful poll of a plug: what it said, and when (by BaluPi's clock)."""

    plug_id: int
    at: float  # epoch s, BaluPi's clock, when the answer arrived
    power_w: float
    today_wh: int  # the plug's counter for its local day
    month_wh: int  # ... for its local month
    plug_time: datetime  # the plug's own local time (aware, in the plug's zone); year 2000 when it lost its clock
    voltage_v: float | None = None
    current_a: float | None = None
    is_on: bool | None = None
    latency_s: float | None = None
    # The plug's hourly history (`get_energy_data`, Wh per hour from local midnight) for the plug
    # dates the ledger needs after a day change or a gap; fetched in the same poll.
    history: dict[date, list[int]] = field(default_factory=dict)

    @property
    def plug_date(self) -> date:
        return self.plug_time.date()

    @property
    def clock_valid(self) -> bool:
        return self.plug_time.year >= MIN_VALID_YEAR

    @property
    def plug_secs_into_day(self) -> float:
        """Seconds since the plug's local midnight (DST-correct)."""
        midnight = self.plug_time.replace(hour=0, minute=0, second=0, microsecond=0)
        return self.plug_time.timestamp() - midnight.timestamp()

    @property
    def offset_s(self) -> float:
        """BaluPi's clock minus the plug's: ~0 when its clock is synced, decades when it is not."""
        return self.at - self.plug_time.timestamp()


@dataclass
class PlugHealth:
    """How polling a plug goes: for status pages, and to log a failure once, not every 30 s."""

    last_success_at: float | None = None
    last_attempt_at: float | None = None
    error_kind: PollErrorKind | None = None
    error: str | None = None
    latency_ms: float | None = None
    consecutive_failures: int = 0
    failing_since: float | None = None
    polls: int = 0
    failures: int = 0
    skipped: int = 0  # ticks skipped because the previous poll of this plug was still running

    def as_dict(self) -> dict:
        return {
            "last_success_at": self.last_success_at,
            "last_attempt_at": self.last_attempt_at,
            "error_kind": self.error_kind.value if self.error_kind else None,
            "error": self.error,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "consecutive_failures": self.consecutive_failures,
            "failing_since": self.failing_since,
            "polls": self.polls,
            "failures": self.failures,
            "skipped": self.skipped,
        }


# -- errors the energy monitor raises ---------------------------------------------------------------


class PlugUnavailable(BaluPiError):
    """A plug could not be reached or used; `kind` says why."""

    def __init__(self, kind: PollErrorKind, message: str):
        super().__init__(f"plug: {kind.value}: {message}")
        self.kind = kind


class PlugNotFound(BaluPiError, LookupError):
    """No plug with that id."""


class PlugConflict(BaluPiError):
    """The plug is added already, or another plug has this role (only one `nas` and one `pi` plug)."""


class ConfirmationRequired(BaluPiError):
    """Switching off the `nas` plug cuts the NAS's power: the request must confirm it."""
