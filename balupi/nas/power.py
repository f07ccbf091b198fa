"""What the `nas` plug's power draw says about the NAS (the energy monitor classifies readings;
the NAS monitor weighs them with the NAS's port)."""

from __future__ import annotations

import enum


class NasPowerState(enum.Enum):
    """What the `nas` plug's power says about the NAS. Ordered by draw."""

    OFF = "off"
    STANDBY = "standby"  # suspended
    IDLE = "idle"
    ACTIVE = "active"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def asleep(self) -> bool:
        return self in (NasPowerState.OFF, NasPowerState.STANDBY)

    @classmethod
    def of(cls, value: object) -> "NasPowerState | None":
        """`value` (a NasPowerState or its string) as a NasPowerState; None for anything else."""
        if isinstance(value, cls):
            return value
        return _BY_VALUE.get(value) if isinstance(value, str) else None


_RANK = {s: i for i, s in enumerate(NasPowerState)}
_BY_VALUE = {s.value: s for s in NasPowerState}
