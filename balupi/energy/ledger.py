"""The ledger's arithmetic: energy between two readings of a plug, from the plug's own Wh counters.

Pure functions; no database, no network. `account(prev, cur, ...)` answers "how many Wh did the
plug book between these two readings, and where in time did they go?" as pieces that never cross
a local hour.

The rules:
- The counters are the truth. A Tapo plug keeps an integer Wh counter per local day (it restarts at
  the plug's midnight) and per month. Within one plug date the energy is `today` minus the last
  `today` seen for that date (the date's *watermark*); a plug that lost its clock books into
  2000-01-01, so a date seen before (e.g. today again after the clock came back) continues from
  its watermark and nothing is counted twice.
- When the date changes, the rest of the previous date is its final total minus its watermark. The
  final total comes from the plug's hourly history (`Reading.history`, fetched in the same poll),
  or from the month counter when both readings fall in one month. Without either, a regular
  30-second interval uses sampled power for the few seconds before midnight (ESTIMATED); a gap
  leaves that stretch unknown.
- Sampled power only shapes energy inside an interval (linear between the two readings); across a
  gap the plug's hourly history shapes it, else it is spread evenly. Never power x time across a gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Callable
from zoneinfo import ZoneInfo

from balupi.energy.model import LedgerKind, Reading

HOUR_S = 3600


@dataclass(frozen=True)
class Piece:
    """Energy the plug booked in [start_s, end_s), all inside the local hour `hour_s`."""

    hour_s: int
    start_s: float
    end_s: float
    energy_wh: float
    kind: LedgerKind


@dataclass
class Accounting:
    pieces: list[Piece] = field(default_factory=list)
    unknown_s: float = 0.0  # seconds between the readings that no counter covers (they stay a gap)
    counter_reset: bool = False  # a day counter went backwards on the same date (the plug lost it)
    used_history: bool = False
    day_totals: dict[date, int] = field(default_factory=dict)  # plug dates whose final total became known

    @property
    def energy_wh(self) -> float:
        return sum(p.energy_wh for p in self.pieces)


@dataclass
class _Segment:
    """Energy booked on one plug date (or several, when only their sum is known), placed in time."""

    start_s: float
    end_s: float
    energy_wh: float | None  # None: unknown
    kind: LedgerKind
    buckets: list[int] | None = None  # the plug's hourly Wh for this date, from its midnight
    day_start_s: float = 0.0  # BaluPi time of that midnight
    counter_start_wh: float = 0.0  # the day counter at start_s (for placing it among the buckets)


def hour_start(t_s: float, zone: ZoneInfo) -> int:
    """Epoch of the start of the local hour containing t_s."""
    local = datetime.fromtimestamp(t_s, zone)
    return int(t_s - (local.minute * 60 + local.second + local.microsecond / 1e6) + 0.5)


def plug_midnight(d: date, like: datetime) -> datetime:
    """The plug's local midnight starting date d, in the zone of `like`."""
    return datetime(d.year, d.month, d.day, tzinfo=like.tzinfo)


def _day_length_s(d: date, like: datetime) -> float:
    return plug_midnight(d + timedelta(days=1), like).timestamp() - plug_midnight(d, like).timestamp()


def account(
    prev: Reading,
    cur: Reading,
    watermark: Callable[[date], int | None],
    *,
    gap: bool,
    zone: ZoneInfo,
) -> Accounting:
    """The energy between two successive readings of one plug.

    `watermark(d)` is the last day counter recorded for plug date d (None if never seen); `gap` says
    the readings are not neighbours (polls failed, or BaluPi was not running), so the energy is
    FILLED and power does not shape it.
    """
    out = Accounting()
    if cur.at <= prev.at:
        return out
    kind = LedgerKind.FILLED if gap else LedgerKind.MEASURED
    power = None if gap else (prev.at, prev.power_w, cur.at, cur.power_w)
    segments: list[_Segment] = []

    if cur.plug_date == prev.plug_date:
        energy = cur.today_wh - prev.today_wh
        start_counter = prev.today_wh
        if energy < 0:  # the plug lost today's counter (reset, firmware): what it counted since
            out.counter_reset = True
            energy, start_counter = cur.today_wh, 0
        segments.append(_day_segment(prev.at, cur.at, energy, kind, cur, start_counter))
    else:
        segments, used = _across_dates(prev, cur, watermark, kind, gap, out)
        out.used_history = used
    if cur.history.get(cur.plug_date) is not None or any(s.buckets for s in segments):
        out.used_history = True

    for seg in segments:
        if seg.energy_wh is None:
            out.unknown_s += seg.end_s - seg.start_s
            continue
        out.pieces += _place(seg, power, zone)
    return out


def _day_segment(start_s: float, end_s: float, energy: float, kind: LedgerKind, day_reading: Reading, counter_start: float) -> _Segment:
    return _Segment(
        start_s,
        end_s,
        float(energy),
        kind,
        buckets=day_reading.history.get(day_reading.plug_date),
        day_start_s=day_reading.at - day_reading.plug_secs_into_day,
        counter_start_wh=counter_start,
    )


def _across_dates(
    prev: Reading, cur: Reading, watermark: Callable[[date], int | None], kind: LedgerKind, gap: bool, out: Accounting
) -> tuple[list[_Segment], bool]:
    used_history = False
    # The current date: everything booked on it since we last saw it.
    base = watermark(cur.plug_date) or 0
    if base > cur.today_wh:
        out.counter_reset = True
        base = 0
    cur_energy = cur.today_wh - base
    cur_day_start = cur.at - cur.plug_secs_into_day
    cur_seg_start = min(max(prev.at, cur_day_start), cur.at)
    cur_seg = _day_segment(cur_seg_start, cur.at, cur_energy, kind, cur, base)

    # The previous date's rest, and any whole dates in between (only when both clocks are right).
    both_valid = prev.clock_valid and cur.clock_valid and cur.plug_date > prev.plug_date
    between: list[date] = []
    if both_valid:
        d = prev.plug_date + timedelta(days=1)
        while d < cur.plug_date:
            between.append(d)
            d += timedelta(days=1)
        prev_day_end = prev.at + _day_length_s(prev.plug_date, prev.plug_time) - prev.plug_secs_into_day
    else:
        prev_day_end = cur_seg_start
    prev_day_end = min(max(prev_day_end, prev.at), cur_seg_start)

    def day_span(d: date) -> tuple[float, float]:
        start = plug_midnight(d, prev.plug_time).timestamp() + prev.offset_s
        end = plug_midnight(d + timedelta(days=1), prev.plug_time).timestamp() + prev.offset_s
        return max(start, prev_day_end), min(end, cur_seg_start)

    segments: list[_Segment] = []
    prev_buckets = cur.history.get(prev.plug_date)
    same_month = both_valid and (prev.plug_date.year, prev.plug_date.month) == (cur.plug_date.year, cur.plug_date.month)
    month_rest = cur.month_wh - prev.month_wh - cur_energy if same_month else None
    if month_rest is not None and month_rest < 0:
        month_rest = None  # counters that disagree with each other prove nothing

    if prev_buckets is not None and all(d in cur.history for d in between):
        used_history = True
        total = sum(prev_buckets)
        out.day_totals[prev.plug_date] = total
        segments.append(
            _Segment(prev.at, prev_day_end, float(max(0, total - prev.today_wh)), kind, prev_buckets,
                     prev.at - prev.plug_secs_into_day, prev.today_wh)
        )
        for d in between:
            start, end = day_span(d)
            out.day_totals[d] = sum(cur.history[d])
            segments.append(_Segment(start, end, float(sum(cur.history[d])), kind, cur.history[d],
                                     plug_midnight(d, prev.plug_time).timestamp() + prev.offset_s, 0.0))
    elif month_rest is not None:
        # One month: the month counter gives the rest of the previous date plus the dates between exactly.
        if not between:
            out.day_totals[prev.plug_date] = prev.today_wh + month_rest
        segments.append(_Segment(prev.at, cur_seg_start, float(month_rest), kind))
    elif not gap and not between:
        # A regular interval across a month's (or the clock's) reset, and no history: the seconds
        # before the reset by sampled power. Tiny (30 s at 40 W is 0.3 Wh).
        segments.append(_Segment(prev.at, prev_day_end, _trapezoid_wh(prev, cur, prev.at, prev_day_end), LedgerKind.ESTIMATED))
        if cur_seg_start > prev_day_end:
            segments.append(_Segment(prev_day_end, cur_seg_start, 0.0, LedgerKind.ESTIMATED))
    else:
        segments.append(_Segment(prev.at, cur_seg_start, None, kind))
    segments.append(cur_seg)
    return segments, used_history


def _trapezoid_wh(prev: Reading, cur: Reading, start_s: float, end_s: float) -> float:
    span = cur.at - prev.at
    if span <= 0 or end_s <= start_s:
        return 0.0

    def p(t: float) -> float:
        return prev.power_w + (cur.power_w - prev.power_w) * (t - prev.at) / span

    return (p(start_s) + p(end_s)) / 2 * (end_s - start_s) / HOUR_S


def _place(seg: _Segment, power: tuple[float, float, float, float] | None, zone: ZoneInfo) -> list[Piece]:
    """Spread a segment's energy over local hours: by the plug's hourly buckets, else sampled power, else evenly."""
    assert seg.energy_wh is not None
    if seg.end_s <= seg.start_s:
        return []
    if seg.buckets:
        spans = _spans_from_buckets(seg)
    else:
        spans = [(seg.start_s, seg.end_s, seg.energy_wh)]
    pieces: list[Piece] = []
    for start, end, energy in spans:
        pieces += _split_by_hour(start, end, energy, seg.kind, power, zone)
    return pieces


def _spans_from_buckets(seg: _Segment) -> list[tuple[float, float, float]]:
    """Place [counter_start, counter_start + energy] among the day's cumulative hourly buckets.

    Bucket i covers [day_start + i h, +1 h). The part of the segment's counter range that falls in
    bucket i's cumulative range is booked in that hour (clamped to the segment's own time span).
    What the buckets do not explain (history lagging behind the counter) goes to the last span.
    """
    assert seg.energy_wh is not None and seg.buckets is not None
    lo, hi = seg.counter_start_wh, seg.counter_start_wh + seg.energy_wh
    spans: list[tuple[float, float, float]] = []
    placed = 0.0
    cum = 0.0
    for i, bucket_wh in enumerate(seg.buckets):
        b_lo, b_hi = cum, cum + bucket_wh
        cum = b_hi
        t0 = max(seg.start_s, seg.day_start_s + i * HOUR_S)
        t1 = min(seg.end_s, seg.day_start_s + (i + 1) * HOUR_S)
        if t1 <= t0:
            # An hour outside the segment's time: its share (clock skew) goes to the nearest edge.
            share = max(0.0, min(hi, b_hi) - max(lo, b_lo))
            if share:
                edge = seg.start_s if t1 <= seg.start_s else seg.end_s
                spans.append((edge, edge, share))
                placed += share
            continue
        share = max(0.0, min(hi, b_hi) - max(lo, b_lo))
        spans.append((t0, t1, share))
        placed += share
    rest = seg.energy_wh - placed
    if not spans:
        return [(seg.start_s, seg.end_s, seg.energy_wh)]
    if rest > 1e-9:
        t0, t1, e = spans[-1]
        spans[-1] = (t0, t1, e + rest)
    # Fold zero-length spans into their neighbour with a real span.
    real = [s for s in spans if s[1] > s[0]]
    if not real:
        return [(seg.start_s, seg.end_s, seg.energy_wh)]
    for t0, t1, e in spans:
        if t1 <= t0 and e:
            idx = 0 if t0 <= real[0][0] else len(real) - 1
            a, b, x = real[idx]
            real[idx] = (a, b, x + e)
    return real


def _split_by_hour(
    start_s: float,
    end_s: float,
    energy_wh: float,
    kind: LedgerKind,
    power: tuple[float, float, float, float] | None,
    zone: ZoneInfo,
) -> list[Piece]:
    """Cut [start, end) at local hour boundaries; share energy by the integral of linear power (or time)."""
    if end_s <= start_s:
        return []
    bounds = [start_s]
    h = hour_start(start_s, zone) + HOUR_S
    while h < end_s:
        bounds.append(float(h))
        h += HOUR_S
    bounds.append(end_s)
    if len(bounds) == 2:
        return [Piece(hour_start(start_s, zone), start_s, end_s, energy_wh, kind)]

    def weight(a: float, b: float) -> float:
        if power is None:
            return b - a
        t0, p0, t1, p1 = power

        def p(t: float) -> float:
            return p0 + (p1 - p0) * (t - t0) / (t1 - t0) if t1 > t0 else p0

        return (p(a) + p(b)) / 2 * (b - a)

    weights = [weight(a, b) for a, b in zip(bounds, bounds[1:])]
    total = sum(weights)
    if total <= 0:
        weights = [b - a for a, b in zip(bounds, bounds[1:])]
        total = end_s - start_s
    return [
        Piece(hour_start(a, zone), a, b, energy_wh * w / total, kind)
        for (a, b), w in zip(zip(bounds, bounds[1:]), weights)
    ]
