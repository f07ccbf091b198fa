"""The simulated plug's clock, relay and energy meter: integer watt-hour counters by the plug's local hour.

Power follows a *profile*: a constant in watts, or a callable ``f(now_s) -> watts`` (``now_s`` is
the simulator's clock in epoch seconds). Energy is integrated lazily into *integer* watt-hour
counters like a real meter: fractional energy is carried until it makes a whole Wh, which is then
credited to the current local hour. Daily, monthly and lifetime counters are sums of those hourly
buckets, so every SMART energy call agrees with every other. Buckets are keyed on the plug's *own*
local time, so a plug without a clock books into the year 2000.
"""

from __future__ import annotations

import calendar
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import IntEnum
from zoneinfo import ZoneInfo

__all__ = ["EnergyInterval", "ManualClock", "Meter", "PlugPower", "PowerProfile", "MAX_HOURLY_SPAN_S"]

#: ``get_energy_data`` with hourly interval accepts at most this span.
MAX_HOURLY_SPAN_S = 8 * 86_400

_MJ_PER_WH = 3_600_000  # millijoules (milliwatt-seconds) per watt-hour

PowerProfile = float | int | Callable[[float], float]
"""Watts as a constant, or a callable taking the simulator clock (epoch s)."""


class EnergyInterval(IntEnum):
    """``interval`` values ``get_energy_data`` accepts, in minutes."""

    HOURLY = 60
    DAILY = 1440
    MONTHLY = 43200


class ManualClock:
    """A clock that only moves when told to: pass it as ``clock=`` for fast tests.

    >>> clock = ManualClock(datetime(2024, 3, 31, 23, 0, tzinfo=ZoneInfo("UTC")))
    >>> clock.advance(3600)
    """

    def __init__(self, start: float | datetime = 1_718_000_000.0) -> None:
        self._now_s = start.timestamp() if isinstance(start, datetime) else float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now_s

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds``; returns the new time (epoch s)."""
        if seconds < 0:
            raise ValueError("a ManualClock only moves forward")
        with self._lock:
            self._now_s += seconds
            return self._now_s

    def set(self, when: float | datetime) -> None:
        """Jump to an absolute time (epoch s or aware datetime), forward only."""
        target_s = when.timestamp() if isinstance(when, datetime) else float(when)
        with self._lock:
            if target_s < self._now_s:
                raise ValueError("a ManualClock only moves forward")
            self._now_s = target_s


@dataclass
class Meter:
    """Integer-Wh energy counters bucketed by the plug's local hour (device time).

    Not locked: the plug calls it with its own lock held.
    """

    tz: ZoneInfo
    hourly_wh: dict[int, int] = field(default_factory=dict)  # local hour start (epoch s)
    daily_wh: dict[date, int] = field(default_factory=dict)
    monthly_wh: dict[tuple[int, int], int] = field(default_factory=dict)
    daily_on_s: dict[date, float] = field(default_factory=dict)
    monthly_on_s: dict[tuple[int, int], float] = field(default_factory=dict)
    total_wh: int = 0
    residual_mj: int = 0

    def local(self, device_s: float) -> datetime:
        return datetime.fromtimestamp(device_s, self.tz)

    def hour_start_s(self, device_s: float) -> int:
        return int(self.local(device_s).replace(minute=0, second=0, microsecond=0).timestamp())

    def add(self, device_s: float, duration_s: float, power_w: float, relay_on: bool) -> None:
        local = self.local(device_s)
        day = local.date()
        month = (local.year, local.month)
        if relay_on:
            self.daily_on_s[day] = self.daily_on_s.get(day, 0.0) + duration_s
            self.monthly_on_s[month] = self.monthly_on_s.get(month, 0.0) + duration_s
        self.residual_mj += round(power_w * duration_s * 1000)
        whole_wh, self.residual_mj = divmod(self.residual_mj, _MJ_PER_WH)
        if whole_wh:
            hour = self.hour_start_s(device_s)
            self.hourly_wh[hour] = self.hourly_wh.get(hour, 0) + whole_wh
            self.daily_wh[day] = self.daily_wh.get(day, 0) + whole_wh
            self.monthly_wh[month] = self.monthly_wh.get(month, 0) + whole_wh
            self.total_wh += whole_wh

    def hourly(self, start_s: float, end_s: float) -> list[int]:
        """Hourly buckets whose start lies in [start_s, end_s)."""
        hour_s = self.hour_start_s(start_s)
        out = []
        while hour_s < end_s:
            out.append(self.hourly_wh.get(hour_s, 0))
            hour_s += 3600
        return out

    def day_sums(self, today: date, days: int) -> tuple[int, int]:
        """Energy (Wh) and relay-on minutes of the ``days`` days ending with ``today``."""
        energy_wh = sum(self.daily_wh.get(today - timedelta(days=i), 0) for i in range(days))
        on_s = sum(self.daily_on_s.get(today - timedelta(days=i), 0.0) for i in range(days))
        return energy_wh, int(on_s // 60)

    def energy_data(self, start_s: int, end_s: int, interval: EnergyInterval) -> list[int]:
        """The ``data`` list of ``get_energy_data``; ValueError for parameters the firmware rejects.

        Hourly: at most eight days. Daily: from the first of a quarter's first month, one value a
        day of that quarter. Monthly: from the 1st of January, one value a month.
        """
        if interval is EnergyInterval.HOURLY:
            if end_s < start_s or end_s - start_s > MAX_HOURLY_SPAN_S:
                raise ValueError("hourly span")
            return self.hourly(start_s, end_s)
        first = self.local(start_s)
        if first.time() != datetime.min.time() or first.day != 1:
            raise ValueError("not the first of a month at midnight")
        data: list[int] = []
        if interval is EnergyInterval.DAILY:
            if first.month not in (1, 4, 7, 10):
                raise ValueError("not the start of a quarter")
            quarter_days = sum(calendar.monthrange(first.year, first.month + i)[1] for i in range(3))
            for i in range(quarter_days):
                day = first.date() + timedelta(days=i)
                if end_s > start_s and datetime(day.year, day.month, day.day, tzinfo=self.tz).timestamp() >= end_s:
                    break
                data.append(self.daily_wh.get(day, 0))
            return data
        if first.month != 1:
            raise ValueError("not the start of a year")
        for month in range(1, 13):
            if end_s > start_s and datetime(first.year, month, 1, tzinfo=self.tz).timestamp() >= end_s:
                break
            data.append(self.monthly_wh.get((first.year, month), 0))
        return data


_Y2000 = (2000, 1, 1)


class PlugPower:
    """The relay, what it draws, the plug's own clock and the meter they feed.

    True time comes from the injected ``clock``; the plug's clock is that plus an offset (zero
    while it has network time; after `lose_clock` it restarts in the year 2000). Energy is
    integrated lazily, on every read and every change, in steps of at most ``sample_interval_s``
    for callable profiles and never across a local-hour boundary, so each step lands in one bucket.

    Every method takes :attr:`lock`; it is re-entrant because the SMART methods call these with it
    held.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        tz: ZoneInfo,
        profile: PowerProfile,
        relay_on: bool,
        sample_interval_s: float,
    ) -> None:
        if sample_interval_s <= 0:
            raise ValueError("sample_interval_s must be positive")
        self.lock = threading.RLock()
        self.clock = clock
        self.tz = tz
        self.sample_interval_s = float(sample_interval_s)
        self.meter = Meter(tz)
        self._profile = profile
        self._relay_on = bool(relay_on)
        now_s = clock()
        self._on_since_s: float | None = now_s if relay_on else None
        self._last_integrated_s = now_s
        self._clock_offset_s = 0.0
        self._resync_at_s: float | None = None

    # ------------------------------------------------------------ clock

    def device_time_s(self) -> float:
        """What the plug believes the time is (differs after lose_clock())."""
        with self.lock:
            now_s = self.clock()
            self._integrate_to(now_s)
            return now_s + self._clock_offset_s

    @property
    def clock_synced(self) -> bool:
        with self.lock:
            self._integrate_to(self.clock())
            return self._clock_offset_s == 0.0

    def lose_clock(self, resync_after_s: float | None) -> None:
        with self.lock:
            now_s = self.clock()
            self._integrate_to(now_s)
            y2000_s = datetime(*_Y2000, tzinfo=self.tz).timestamp()
            self._clock_offset_s = y2000_s - now_s
            self._resync_at_s = None if resync_after_s is None else now_s + resync_after_s

    def set_device_time(self, timestamp_s: float) -> None:
        with self.lock:
            self._integrate_to(self.clock())
            self._clock_offset_s = timestamp_s - self.clock()
            self._resync_at_s = None

    def sync_clock(self) -> None:
        with self.lock:
            self._integrate_to(self.clock())
            self._clock_offset_s = 0.0
            self._resync_at_s = None

    # ------------------------------------------------------------ relay and profile

    def set_profile(self, profile: PowerProfile) -> None:
        with self.lock:
            self._integrate_to(self.clock())
            self._profile = profile

    @property
    def is_on(self) -> bool:
        return self._relay_on

    def set_on(self, on: bool) -> None:
        with self.lock:
            now_s = self.clock()
            self._integrate_to(now_s)
            if on and not self._relay_on:
                self._on_since_s = now_s
            elif not on:
                self._on_since_s = None
            self._relay_on = bool(on)

    @property
    def power_w(self) -> float:
        with self.lock:
            now_s = self.clock()
            self._integrate_to(now_s)
            return self._power_at(now_s)

    def on_time_s(self) -> int:
        with self.lock:
            if not self._relay_on or self._on_since_s is None:
                return 0
            return int(self.clock() - self._on_since_s)

    def _power_at(self, t_s: float) -> float:
        if not self._relay_on:
            return 0.0
        profile = self._profile
        watts = profile(t_s) if callable(profile) else profile
        return max(0.0, float(watts))

    # ------------------------------------------------------------ energy

    def tick(self) -> None:
        with self.lock:
            self._integrate_to(self.clock())

    def advance(self, seconds: float) -> None:
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() needs the plug to run on a ManualClock")
        with self.lock:
            self.clock.advance(seconds)
            self._integrate_to(self.clock())

    @property
    def today_energy_wh(self) -> int:
        with self.lock:
            return self.meter.daily_wh.get(self.meter.local(self.device_time_s()).date(), 0)

    @property
    def month_energy_wh(self) -> int:
        with self.lock:
            local = self.meter.local(self.device_time_s())
            return self.meter.monthly_wh.get((local.year, local.month), 0)

    @property
    def total_energy_wh(self) -> int:
        with self.lock:
            self.tick()
            return self.meter.total_wh

    def hourly_energy_wh(self, start_s: float, end_s: float) -> list[int]:
        with self.lock:
            self.tick()
            return self.meter.hourly(start_s, end_s)

    def _offset_at(self, t_s: float) -> float:
        if self._resync_at_s is not None and t_s >= self._resync_at_s:
            return 0.0
        return self._clock_offset_s

    def _integrate_to(self, now_s: float) -> None:
        t_s = self._last_integrated_s
        if now_s <= t_s:
            return
        constant = not callable(self._profile)
        while t_s < now_s:
            device_s = t_s + self._offset_at(t_s)
            next_hour_s = self.meter.hour_start_s(device_s) + 3600 - self._offset_at(t_s)
            end_s = min(now_s, next_hour_s)
            if not constant:
                end_s = min(end_s, t_s + self.sample_interval_s)
            if self._resync_at_s is not None and t_s < self._resync_at_s:
                end_s = min(end_s, self._resync_at_s)
            self.meter.add(device_s, end_s - t_s, self._power_at(t_s), self._relay_on)
            t_s = end_s
        self._last_integrated_s = now_s
        if self._resync_at_s is not None and now_s >= self._resync_at_s:
            self._clock_offset_s = 0.0
            self._resync_at_s = None
