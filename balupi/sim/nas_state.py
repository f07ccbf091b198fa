"""Types shared by the simulated NAS modules: power states, sleep modes, counter records, counters.

Kept apart from `balupi.sim.nas` so that running `python -m balupi.sim.nas` (which executes that
module as `__main__`) never creates a second copy of these enums.
"""

from __future__ import annotations

import threading
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


class NasCounters:
    """What the NAS saw: requests, magic packets, boots and soft-sleep wake-ups. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._requests: list[RequestRecord] = []
            self._packets: list[MagicPacketRecord] = []
            self._boot_count = 0
            self._wake_count = 0

    def add_request(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def add_packet(self, record: MagicPacketRecord) -> None:
        with self._lock:
            self._packets.append(record)

    def count_boot(self) -> None:
        with self._lock:
            self._boot_count += 1

    def count_wake(self) -> None:
        with self._lock:
            self._wake_count += 1

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def request_count(self, method: str | None = None, path: str | None = None, *,
                      path_prefix: str | None = None, state: PowerState | str | None = None,
                      user: str | None = None, since_s: float | None = None) -> int:
        """How many recorded requests match every given filter (method case-insensitive)."""
        state = PowerState(state) if state is not None else None
        return sum(
            1 for r in self.requests
            if (method is None or r.method == method.upper())
            and (path is None or r.path == path)
            and (path_prefix is None or r.path.startswith(path_prefix))
            and (state is None or r.state is state)
            and (user is None or r.user == user)
            and (since_s is None or r.time_s >= since_s))

    @property
    def magic_packets(self) -> list[MagicPacketRecord]:
        with self._lock:
            return list(self._packets)

    @property
    def magic_packet_count(self) -> int:
        with self._lock:
            return sum(1 for p in self._packets if p.matched)

    @property
    def boot_count(self) -> int:
        return self._boot_count

    @property
    def wake_count(self) -> int:
        return self._wake_count

    def to_dict(self) -> dict:
        with self._lock:
            return {
                "request_count": len(self._requests),
                "requests": [r.to_dict() for r in self._requests],
                "magic_packet_count": sum(1 for p in self._packets if p.matched),
                "magic_packets": [p.to_dict() for p in self._packets],
                "boot_count": self._boot_count,
                "wake_count": self._wake_count,
            }
