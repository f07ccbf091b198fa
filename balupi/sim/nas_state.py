"""Types shared by the simulated NAS modules: power states, sleep modes, and counter records.

Kept apart from `balupi.sim.nas` so that running `python -m balupi.sim.nas` (which executes that
module as `__main__`) never creates a second copy of these enums.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class PowerState(str, Enum):
    """Power state of the simulated NAS."""

    AWAKE = "awake"  # serving
    BOOTING = "booting"  # magic packet seen, port still refuses until boot_delay_s has passed
    SOFT_SLEEP = "soft_sleep"  # port accepts; the next HTTP request wakes it (after spinup_delay_s)
    SUSPENDED = "suspended"  # S3: port refuses; only a magic packet for its MAC boots it
    OFF = "off"  # S5: like suspended (a magic packet boots it), but reported as off

    @property
    def listening(self) -> bool:
        """True in the states whose TCP port accepts connections."""
        return self in (PowerState.AWAKE, PowerState.SOFT_SLEEP)

    @property
    def baluhost_sleep_state(self) -> str:
        """The matching BaluHost `SleepState` value (as /api/system/sleep/status reports it)."""
        return {
            PowerState.AWAKE: "awake",
            PowerState.BOOTING: "waking",
            PowerState.SOFT_SLEEP: "soft_sleep",
            PowerState.SUSPENDED: "true_suspend",
            PowerState.OFF: "true_suspend",
        }[self]


class SleepMode(str, Enum):
    """What "suspend" means for this NAS: real S3 suspend, or soft sleep (port stays open)."""

    SUSPEND = "suspend"
    SOFT = "soft"

    @property
    def target_state(self) -> PowerState:
        return PowerState.SUSPENDED if self is SleepMode.SUSPEND else PowerState.SOFT_SLEEP


@dataclass
class RequestRecord:
    """One HTTP request that reached the NAS's main port."""

    method: str
    path: str  # decoded (unicode) path, without query string
    time_s: float  # wall clock (time.time()) at arrival
    state: PowerState  # power state when it arrived
    user: str | None  # authenticated user (Basic or Bearer), None if anonymous or refused
    status: int | None = None  # response status; None if the connection was dropped before one
    bytes_sent: int = 0  # response body bytes handed to the socket
    duration_s: float | None = None
    fault: str | None = None  # "fail", "drop_get", "drop_put" or "halted" when a fault hit it

    def to_dict(self) -> dict:
        data = asdict(self)
        data["state"] = self.state.value
        return data


@dataclass(frozen=True)
class MagicPacketRecord:
    """One magic packet that arrived on the NAS's WoL UDP port."""

    time_s: float
    mac: str  # target MAC in the packet, aa:bb:cc:dd:ee:ff
    matched: bool  # addressed to this NAS
    state: PowerState  # power state when it arrived
    acted: bool  # it booted or woke the NAS
    sender: tuple = field(default=())

    def to_dict(self) -> dict:
        data = asdict(self)
        data["state"] = self.state.value
        data["sender"] = list(self.sender)
        return data
