"""Hourly, daily and monthly rollups of the ledger, their prices, and retention.

- Hourly rows grow by the ledger pieces of each reading (`add_pieces`, in the reading's write
  transaction); each gets the price of its hour from the tariff book, and its cost.
- Daily rows are recomputed from the hourly rows of the days touched, monthly rows from the daily
  ones, so they can never drift from what they sum.
- `reprice` applies a tariff change to every hour it covers (and the days and months above them).
  Days older than the hourly retention (`energy_hourly_retention_days`) keep the cost they had.
- `apply_retention`: raw samples and ledger pieces for `energy_raw_retention_days`, hourly rows,
  gaps and plug-day counters for `energy_hourly_retention_days` (two years), daily and monthly rows forever. The newest sample of
  every plug is always kept: it is where the ledger continues from.

All writers expect to run inside `Database.write()` (they take the sqlite-utils handle it yields).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable
from zoneinfo import ZoneInfo

from balupi.energy.model import LedgerKind, NasPowerState
from balupi.energy.tariffs import TariffBook

DAY_S = 86400
STATES = tuple(s.value for s in NasPowerState)
STATE_COLUMNS = tuple(f"{s}_{u}" for s in STATES for u in ("s", "wh"))
SUM_COLUMNS = ("energy_wh", "filled_wh", "covered_s", "cost_cents", "samples") + STATE_COLUMNS


@dataclass
class LedgerRow:
    """A ledger piece as stored: a Piece plus what the recorder knows about it."""

    hour_s: int
    start_s: float
    end_s: float
    energy_wh: float
    kind: LedgerKind
    nas_state: NasPowerState | None = None
    power_w: float | None = None  # the reading that ends this piece, if one does
    samples: int = 0


@dataclass
class _HourSum:
    energy_wh: float = 0.0
    filled_wh: float = 0.0
    covered_s: float = 0.0
    max_power_w: float | None = None
    samples: int = 0
    states: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def insert_ledger(d, plug_id: int, rows: list[LedgerRow]) -> None:
    d.conn.executemany(
        "INSERT INTO energy_ledger (plug_id, start_s, end_s, hour_s, energy_wh, kind, nas_state, power_w, samples)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (plug_id, r.start_s, r.end_s, r.hour_s, r.energy_wh, r.kind.value,
             r.nas_state.value if r.nas_state else None, r.power_w, r.samples)
            for r in rows
        ],
    )


def add_pieces(d, plug_id: int, rows: Iterable[LedgerRow], book: TariffBook, zone: ZoneInfo) -> set[tuple[int, str]]:
    """Add ledger rows to their hourly rollups. Returns the (plug_id, day) pairs touched."""
    sums: dict[int, _HourSum] = defaultdict(_HourSum)
    for r in rows:
        s = sums[r.hour_s]
        s.energy_wh += r.energy_wh
        s.covered_s += r.end_s - r.start_s
        if r.kind is LedgerKind.FILLED:
            s.filled_wh += r.energy_wh
        if r.power_w is not None:
            s.max_power_w = r.power_w if s.max_power_w is None else max(s.max_power_w, r.power_w)
        s.samples += r.samples
        if r.nas_state is not None:
            s.states[f"{r.nas_state.value}_s"] += r.end_s - r.start_s
            s.states[f"{r.nas_state.value}_wh"] += r.energy_wh
    if not sums:
        return set()
    params = []
    touched = set()
    for hour_s, s in sums.items():
        day = datetime.fromtimestamp(hour_s, zone).date().isoformat()
        touched.add((plug_id, day))
        price = book.price_for_hour(hour_s)
        params.append(
            (plug_id, hour_s, day, price, s.energy_wh, s.filled_wh, s.covered_s, s.energy_wh * price / 1000,
             s.max_power_w, s.samples, *(s.states.get(c, 0.0) for c in STATE_COLUMNS))
        )
    state_cols = ", ".join(STATE_COLUMNS)
    state_marks = ", ".join("?" for _ in STATE_COLUMNS)
    state_updates = ", ".join(f"{c} = {c} + excluded.{c}" for c in STATE_COLUMNS)
    d.conn.executemany(
        f"INSERT INTO energy_hourly (plug_id, hour_s, day, price_cents_per_kwh, energy_wh, filled_wh, covered_s,"
        f" cost_cents, max_power_w, samples, {state_cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {state_marks})"
        f" ON CONFLICT (plug_id, hour_s) DO UPDATE SET"
        f" energy_wh = energy_wh + excluded.energy_wh, filled_wh = filled_wh + excluded.filled_wh,"
        f" covered_s = covered_s + excluded.covered_s, price_cents_per_kwh = excluded.price_cents_per_kwh,"
        f" cost_cents = (energy_wh + excluded.energy_wh) * excluded.price_cents_per_kwh / 1000,"
        f" max_power_w = max(coalesce(max_power_w, excluded.max_power_w), coalesce(excluded.max_power_w, max_power_w)),"
        f" samples = samples + excluded.samples, {state_updates}",
        params,
    )
    return touched


def refresh_days(d, days: Iterable[tuple[int, str]]) -> None:
    """Recompute daily rows from their hours, then the months above them."""
    days = sorted(set(days))
    if not days:
        return
    sums = ", ".join(f"SUM({c})" for c in SUM_COLUMNS)
    cols = ", ".join(SUM_COLUMNS)
    d.conn.executemany(
        f"INSERT OR REPLACE INTO energy_daily (plug_id, day, month, {cols}, max_power_w)"
        f" SELECT plug_id, day, substr(day, 1, 7), {sums}, MAX(max_power_w) FROM energy_hourly"
        f" WHERE plug_id = ? AND day = ? GROUP BY plug_id, day",
        days,
    )
    months = sorted({(plug_id, day[:7]) for plug_id, day in days})
    d.conn.executemany(
        f"INSERT OR REPLACE INTO energy_monthly (plug_id, month, {cols}, max_power_w)"
        f" SELECT plug_id, month, {sums}, MAX(max_power_w) FROM energy_daily"
        f" WHERE plug_id = ? AND month = ? GROUP BY plug_id, month",
        months,
    )


def reprice(d, book: TariffBook, from_s: float, to_s: float | None, now_s: float, hourly_retention_days: int) -> int:
    """Recompute price and cost of every hourly row in [from_s, to_s), and the days above. Returns hours repriced."""
    if to_s is None:
        rows = d.execute("SELECT DISTINCT hour_s FROM energy_hourly WHERE hour_s >= ?", (from_s,)).fetchall()
    else:
        rows = d.execute(
            "SELECT DISTINCT hour_s FROM energy_hourly WHERE hour_s >= ? AND hour_s < ?", (from_s, to_s)
        ).fetchall()
    hours = [r[0] for r in rows]
    # Days at the retention horizon have lost hours; recomputing them from what is left would shrink them.
    complete_from = datetime.fromtimestamp(now_s - (hourly_retention_days - 1) * DAY_S, book.zone).date().isoformat()
    hours = [h for h in hours if datetime.fromtimestamp(h, book.zone).date().isoformat() >= complete_from]
    if not hours:
        return 0
    updates = []
    for hour_s in hours:
        price = book.price_for_hour(hour_s)
        updates.append((price, price, hour_s))
    d.conn.executemany(
        "UPDATE energy_hourly SET price_cents_per_kwh = ?, cost_cents = energy_wh * ? / 1000 WHERE hour_s = ?",
        updates,
    )
    lo, hi = min(hours), max(hours)
    days = d.execute(
        "SELECT DISTINCT plug_id, day FROM energy_hourly WHERE hour_s >= ? AND hour_s <= ?", (lo, hi)
    ).fetchall()
    refresh_days(d, [(r[0], r[1]) for r in days])
    return len(hours)


def apply_retention(d, now_s: float, raw_retention_days: int, hourly_retention_days: int) -> dict[str, int]:
    """Delete what has outlived its retention. Returns rows deleted per table."""
    raw_cutoff = now_s - raw_retention_days * DAY_S
    long_cutoff = now_s - hourly_retention_days * DAY_S
    deleted = {}
    deleted["energy_samples"] = d.execute(
        "DELETE FROM energy_samples WHERE at < ? AND id NOT IN (SELECT MAX(id) FROM energy_samples GROUP BY plug_id)",
        (raw_cutoff,),
    ).rowcount
    deleted["energy_ledger"] = d.execute("DELETE FROM energy_ledger WHERE end_s < ?", (raw_cutoff,)).rowcount
    deleted["energy_hourly"] = d.execute("DELETE FROM energy_hourly WHERE hour_s < ?", (long_cutoff,)).rowcount
    deleted["energy_gaps"] = d.execute(
        "DELETE FROM energy_gaps WHERE end_s IS NOT NULL AND end_s < ?", (long_cutoff,)
    ).rowcount
    deleted["energy_plug_days"] = d.execute("DELETE FROM energy_plug_days WHERE last_at < ?", (long_cutoff,)).rowcount
    deleted["nas_power_transitions"] = d.execute(
        "DELETE FROM nas_power_transitions WHERE at < ?", (long_cutoff,)
    ).rowcount
    return deleted
