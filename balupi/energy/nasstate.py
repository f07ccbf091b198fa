"""The NAS's power state read from its plug: off / standby / idle / active, with hysteresis and dwell.

`NasPowerTracker.feed(power_w, at)` is called with every reading of the `nas` plug. A reading far
enough past a threshold (half the hysteresis band beyond it) makes its band a *candidate*; the
candidate becomes the state once readings stayed in it for the minimum dwell time, so a single spike
(a disk spinning up in standby) or power hovering on a threshold does not flap the state. The first
reading sets the state at once (there is nothing to flap from).

`propose_thresholds(powers)` is `balupi energy calibrate`: it finds the clusters in a histogram of
recent readings and puts each threshold in the emptiest stretch between two clusters.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from balupi.energy.model import NasPowerState
from balupi.errors import ConfigError


@dataclass(frozen=True)
class Thresholds:
    off_below_w: float = 2.0
    standby_below_w: float = 8.0
    idle_below_w: float = 25.0
    hysteresis_w: float = 1.0
    min_dwell_s: float = 60.0

    @classmethod
    def from_settings(cls, settings) -> "Thresholds":
        t = cls(
            settings.nas_power_off_below_w,
            settings.nas_power_standby_below_w,
            settings.nas_power_idle_below_w,
            settings.nas_power_hysteresis_w,
            settings.nas_power_min_dwell_s,
        )
        if not t.off_below_w <= t.standby_below_w <= t.idle_below_w:
            raise ConfigError(
                "nas_power_off_below_w, nas_power_standby_below_w, nas_power_idle_below_w: must not decrease "
                f"(got {t.off_below_w:g}, {t.standby_below_w:g}, {t.idle_below_w:g})"
            )
        return t

    @property
    def limits(self) -> tuple[float, float, float]:
        return (self.off_below_w, self.standby_below_w, self.idle_below_w)

    def band(self, power_w: float) -> NasPowerState:
        """The state by thresholds alone."""
        for state, limit in zip(NasPowerState, self.limits):
            if power_w < limit:
                return state
        return NasPowerState.ACTIVE

    def band_from(self, current: NasPowerState, power_w: float) -> NasPowerState:
        """The state a reading points to, seen from `current`: thresholds move by half the band away from it."""
        half = self.hysteresis_w / 2
        up = self.band(power_w - half)
        if up.rank > current.rank:
            return up
        down = self.band(power_w + half)
        if down.rank < current.rank:
            return down
        return current


@dataclass(frozen=True)
class PowerTransition:
    at: float
    from_state: NasPowerState | None
    to_state: NasPowerState
    power_w: float
    left_state_s: float  # how long the state that ended lasted
    left_state_wh: float  # energy drawn in it


class NasPowerTracker:
    """The `nas` plug's state machine. Not thread-safe: fed by the energy ingest thread only."""

    def __init__(self, thresholds: Thresholds):
        self.thresholds = thresholds
        self.state: NasPowerState | None = None
        self.since: float | None = None
        self.energy_in_state_wh = 0.0
        self._candidate: NasPowerState | None = None
        self._candidate_since: float | None = None

    def restore(self, state: NasPowerState, since: float, energy_in_state_wh: float) -> None:
        """Resume after a restart from the last recorded transition."""
        self.state, self.since, self.energy_in_state_wh = state, since, energy_in_state_wh

    def add_energy(self, energy_wh: float) -> None:
        """Energy drawn in the current state (from the ledger)."""
        self.energy_in_state_wh += energy_wh

    def feed(self, power_w: float, at: float) -> PowerTransition | None:
        """One reading. Returns the transition it confirmed, if any."""
        if self.state is None:
            return self._move(self.thresholds.band(power_w), power_w, at)
        target = self.thresholds.band_from(self.state, power_w)
        if target is self.state:
            self._candidate = self._candidate_since = None
            return None
        if target is not self._candidate:
            self._candidate, self._candidate_since = target, at
        assert self._candidate_since is not None
        if at - self._candidate_since >= self.thresholds.min_dwell_s:
            return self._move(target, power_w, at)
        return None

    def _move(self, to_state: NasPowerState, power_w: float, at: float) -> PowerTransition:
        transition = PowerTransition(
            at, self.state, to_state, power_w,
            0.0 if self.since is None else at - self.since, self.energy_in_state_wh,
        )
        self.state, self.since, self.energy_in_state_wh = to_state, at, 0.0
        self._candidate = self._candidate_since = None
        return transition


# -- calibration -------------------------------------------------------------------------------------

BIN_W = 0.5
MIN_CLUSTER_SHARE = 0.02  # a cluster needs 2% of the readings to count
SUSPENDED_MIN_W = 0.8  # a NAS that is off draws less than this; suspended, more


@dataclass(frozen=True)
class Calibration:
    samples: int
    clusters: list[dict]  # {"power_w": mode, "share": fraction, "state": name}
    proposed: Thresholds | None
    notes: list[str]


def propose_thresholds(powers: Iterable[float], current: Thresholds) -> Calibration:
    """Thresholds that separate the clusters of these readings (a NAS's recent `nas` plug samples)."""
    values = [p for p in powers if p is not None and math.isfinite(p) and p >= 0]
    notes: list[str] = []
    if len(values) < 100:
        return Calibration(len(values), [], None, [f"only {len(values)} samples; need at least 100 (a few hours)"])
    hist = Counter(int(p / BIN_W) for p in values)
    top = max(hist)
    counts = [hist.get(i, 0) for i in range(top + 2)]
    smooth = [sum(counts[max(0, i - 1): i + 2]) / 3 for i in range(len(counts))]
    n = len(values)
    peaks = [
        i for i in range(len(smooth))
        if smooth[i] > 0
        and smooth[i] >= (smooth[i - 1] if i else 0)
        and smooth[i] > (smooth[i + 1] if i + 1 < len(smooth) else 0)
        and sum(counts[max(0, i - 2): i + 3]) / n >= MIN_CLUSTER_SHARE
    ]
    # Merge peaks closer than 2 W or 25 %: one cluster with a ragged top.
    merged: list[int] = []
    for i in peaks:
        if merged and (i - merged[-1]) * BIN_W < max(2.0, 0.25 * (merged[-1] + 0.5) * BIN_W):
            if smooth[i] > smooth[merged[-1]]:
                merged[-1] = i
        else:
            merged.append(i)

    def valley(a: int, b: int) -> float:
        """The emptiest power between two peaks (middle of the widest empty stretch)."""
        lowest = min(smooth[a + 1: b]) if b > a + 1 else 0
        run = [i for i in range(a + 1, b) if smooth[i] <= lowest]
        return (run[len(run) // 2] + 0.5) * BIN_W if run else (a + b + 1) / 2 * BIN_W

    low = [i for i in merged if (i + 0.5) * BIN_W < current.standby_below_w]
    high = [i for i in merged if (i + 0.5) * BIN_W >= current.standby_below_w]
    off, standby, idle = current.limits
    if len(low) >= 2:
        off = valley(low[0], low[1])
    elif low and (low[0] + 0.5) * BIN_W >= SUSPENDED_MIN_W:
        # One low cluster drawing a watt or more: a suspended NAS (one that is off draws almost nothing).
        off = min(current.off_below_w, (low[0] + 0.5) * BIN_W / 2)
        notes.append("one cluster below standby, at a watt or more: taken as standby (suspended), not off")
    if low and high:
        standby = valley(low[-1], high[0])
    elif not low:
        notes.append("no readings below the standby threshold: the NAS never slept in this period")
    if len(high) >= 2:
        idle = valley(high[0], high[1])
    elif high:
        idle_peak = [p for p in values if abs(p - (high[0] + 0.5) * BIN_W) < 10]
        idle_peak.sort()
        idle = round(idle_peak[int(0.98 * (len(idle_peak) - 1))] + max(2.0, current.hysteresis_w), 1)
        notes.append("one cluster above standby: taken as idle; 'active' starts above its 98th percentile")
    proposed = Thresholds(round(off, 1), round(max(off, standby), 1), round(max(standby, idle), 1),
                          current.hysteresis_w, current.min_dwell_s)
    clusters = []
    for i in merged:
        share = sum(counts[max(0, i - 4): i + 5]) / n
        clusters.append({"power_w": (i + 0.5) * BIN_W, "share": round(share, 3),
                         "state": proposed.band((i + 0.5) * BIN_W).value})
    return Calibration(n, clusters, proposed, notes)
