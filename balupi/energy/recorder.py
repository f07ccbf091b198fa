"""Writes plug readings into the database: samples, ledger pieces, gaps, NAS power states, rollups.

One write transaction per batch of readings (one reading when polling; a day of them when the
benchmark loads a year), so the sample, the energy it accounts for and the rollups it changes are
committed together or not at all.

The ledger continues from the newest stored sample of the plug. Whether the new reading is a
regular neighbour or comes after a gap decides how its energy is booked (MEASURED or FILLED, see
ledger.py): after failed polls, with an open gap record, or after more than GAP_FACTOR sample
intervals without a sample (BaluPi was not running), it is a gap; the gap record is then closed
with what the counters could fill.

Called from the energy ingest thread only (the NAS power tracker is not thread-safe).
Lock order: takes Database._write_lock (a leaf) and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from balupi.db import Database
from balupi.energy.ledger import Accounting, account, hour_start
from balupi.energy.model import GapStatus, LedgerKind, NasPowerState, PollErrorKind, Reading
from balupi.energy.nasstate import NasPowerTracker, PowerTransition, Thresholds
from balupi.energy.rollups import LedgerRow, add_pieces, insert_ledger, refresh_days
from balupi.energy.tariffs import TariffBook

GAP_FACTOR = 2.5  # more than this many sample intervals between readings is a gap


@dataclass
class Recorded:
    """What recording one reading did (for events and tests)."""

    reading: Reading
    accounting: Accounting
    gap: bool
    prev_at: float | None = None
    nas_state: NasPowerState | None = None
    transition: PowerTransition | None = None


@dataclass
class PlugMeta:
    plug_id: int
    is_nas: bool
    zone: ZoneInfo | None = None


@dataclass
class _Batch:
    prev: Reading | None
    watermarks: dict[date, int | None] = field(default_factory=dict)


class Recorder:
    def __init__(self, db: Database, zone: ZoneInfo, sample_interval_s: float, thresholds: Thresholds):
        self.db = db
        self.zone = zone
        self.gap_after_s = GAP_FACTOR * sample_interval_s
        self.thresholds = thresholds
        self.nas_tracker: NasPowerTracker | None = None
        self.nas_plug_id: int | None = None

    # -- the NAS power tracker ---------------------------------------------------------------------

    def track_nas(self, plug_id: int | None) -> None:
        """Follow this plug's power as the NAS's (None: no `nas` plug). Resumes from the last transition."""
        if plug_id == self.nas_plug_id and (plug_id is None or self.nas_tracker is not None):
            return
        self.nas_plug_id = plug_id
        self.nas_tracker = None
        if plug_id is None:
            return
        tracker = NasPowerTracker(self.thresholds)
        last = self.db.query_one(
            "SELECT at, to_state FROM nas_power_transitions WHERE plug_id = ? ORDER BY at DESC, id DESC LIMIT 1",
            (plug_id,),
        )
        if last is not None:
            energy = self.db.query_one(
                "SELECT COALESCE(SUM(energy_wh), 0) FROM energy_ledger WHERE plug_id = ? AND start_s >= ?"
                " AND nas_state IS NOT NULL",
                (plug_id, last["at"]),
            )[0]
            tracker.restore(NasPowerState(last["to_state"]), last["at"], energy)
        self.nas_tracker = tracker

    # -- reading ------------------------------------------------------------------------------------

    def last_reading(self, plug_id: int, zone: ZoneInfo) -> Reading | None:
        row = self.db.query_one(
            "SELECT * FROM energy_samples WHERE plug_id = ? ORDER BY at DESC, id DESC LIMIT 1", (plug_id,)
        )
        return None if row is None else _reading_from_row(row, zone)

    # -- writing ------------------------------------------------------------------------------------

    def note_failure(self, plug_id: int, kind: PollErrorKind) -> None:
        """A poll failed: open a gap from the last sample, unless one is open already."""
        with self.db.write() as d:
            if d.execute(
                "SELECT 1 FROM energy_gaps WHERE plug_id = ? AND status = ?", (plug_id, GapStatus.OPEN.value)
            ).fetchone():
                return
            last = d.execute("SELECT MAX(at) FROM energy_samples WHERE plug_id = ?", (plug_id,)).fetchone()[0]
            if last is None:
                return
            d.execute(
                "INSERT INTO energy_gaps (plug_id, start_s, status, reason) VALUES (?, ?, ?, ?)",
                (plug_id, last, GapStatus.OPEN.value, kind.value),
            )

    def record(self, plug: PlugMeta, readings: list[Reading], book: TariffBook, after_failure: bool = False) -> list[Recorded]:
        """Store readings of one plug (oldest first) and everything they account for, in one transaction."""
        if not readings:
            return []
        out: list[Recorded] = []
        zone = readings[0].plug_time.tzinfo
        with self.db.write() as d:
            batch = _Batch(prev=self._last(d, plug.plug_id, zone))
            open_gap = d.execute(
                "SELECT id FROM energy_gaps WHERE plug_id = ? AND status = ? ORDER BY start_s LIMIT 1",
                (plug.plug_id, GapStatus.OPEN.value),
            ).fetchone()
            samples, ledger, transitions, gaps = [], [], [], []
            for i, reading in enumerate(readings):
                recorded, rows = self._one(d, plug, batch, reading, gap_hint=(after_failure or open_gap is not None) and i == 0)
                out.append(recorded)
                ledger += rows
                samples.append(_sample_params(reading))
                if recorded.transition is not None:
                    t = recorded.transition
                    transitions.append((plug.plug_id, t.at, t.from_state.value if t.from_state else None,
                                        t.to_state.value, t.power_w, t.left_state_s, t.left_state_wh))
                if recorded.gap:
                    gaps.append(recorded)
                batch.prev = reading
            d.conn.executemany(
                "INSERT INTO energy_samples (plug_id, at, power_w, voltage_v, current_a, today_wh, month_wh,"
                " plug_time, plug_date, plug_secs, plug_offset_s, is_on) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                samples,
            )
            self._store_days(d, plug.plug_id, readings, out)
            insert_ledger(d, plug.plug_id, ledger)
            refresh_days(d, add_pieces(d, plug.plug_id, ledger, book, self.zone))
            if transitions:
                d.conn.executemany(
                    "INSERT INTO nas_power_transitions (plug_id, at, from_state, to_state, power_w, left_state_s,"
                    " left_state_wh) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    transitions,
                )
            for recorded in gaps:
                self._close_gap(d, plug.plug_id, recorded, open_gap[0] if open_gap else None)
                open_gap = None
        return out

    def _last(self, d, plug_id: int, zone) -> Reading | None:
        row = d.execute(
            "SELECT * FROM energy_samples WHERE plug_id = ? ORDER BY at DESC, id DESC LIMIT 1", (plug_id,)
        ).fetchone()
        return None if row is None else _reading_from_row(row, zone)

    def _watermark(self, d, plug_id: int, batch: _Batch, day: date) -> int | None:
        if day not in batch.watermarks:
            row = d.execute(
                "SELECT today_wh FROM energy_plug_days WHERE plug_id = ? AND plug_date = ?", (plug_id, day.isoformat())
            ).fetchone()
            batch.watermarks[day] = None if row is None else row[0]
        return batch.watermarks[day]

    def _one(self, d, plug: PlugMeta, batch: _Batch, reading: Reading, gap_hint: bool) -> tuple[Recorded, list[LedgerRow]]:
        prev = batch.prev
        gap = prev is not None and (gap_hint or reading.at - prev.at > self.gap_after_s)
        if prev is None:
            accounting = Accounting()
        else:
            accounting = account(
                prev, reading, lambda day: self._watermark(d, plug.plug_id, batch, day), gap=gap, zone=self.zone
            )
        batch.watermarks[reading.plug_date] = reading.today_wh
        for day, total in accounting.day_totals.items():
            batch.watermarks.setdefault(day, total)

        tracker = self.nas_tracker if plug.is_nas and plug.plug_id == self.nas_plug_id else None
        state_before = tracker.state if tracker else None
        rows = []
        for piece in accounting.pieces:
            attributed = piece.kind is not LedgerKind.FILLED
            rows.append(LedgerRow(piece.hour_s, piece.start_s, piece.end_s, piece.energy_wh, piece.kind,
                                  state_before if attributed else None))
        if rows and rows[-1].end_s >= reading.at:
            rows[-1].power_w, rows[-1].samples = reading.power_w, 1
        else:  # no piece ends here (first reading, or unknown energy): keep the sample's power and count
            rows.append(LedgerRow(hour_start(reading.at, self.zone), reading.at, reading.at, 0.0,
                                  LedgerKind.MEASURED, None, reading.power_w, 1))
        transition = None
        if tracker is not None:
            tracker.add_energy(sum(r.energy_wh for r in rows if r.nas_state is not None))
            transition = tracker.feed(reading.power_w, reading.at)
        recorded = Recorded(reading, accounting, gap, prev.at if prev else None, tracker.state if tracker else None, transition)
        return recorded, rows

    def _store_days(self, d, plug_id: int, readings: list[Reading], recorded: list[Recorded]) -> None:
        """The plug-day watermarks: the last day counter seen per plug date, and final totals once known."""
        last: dict[date, Reading] = {}
        first: dict[date, float] = {}
        for r in readings:
            last[r.plug_date] = r
            first.setdefault(r.plug_date, r.at)
        d.conn.executemany(
            "INSERT INTO energy_plug_days (plug_id, plug_date, today_wh, first_at, last_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (plug_id, plug_date) DO UPDATE SET today_wh = excluded.today_wh, last_at = excluded.last_at",
            [(plug_id, day.isoformat(), r.today_wh, first[day], r.at) for day, r in last.items()],
        )
        finals = {day: total for rec in recorded for day, total in rec.accounting.day_totals.items()}
        if finals:
            d.conn.executemany(
                "UPDATE energy_plug_days SET final_wh = ? WHERE plug_id = ? AND plug_date = ?",
                [(total, plug_id, day.isoformat()) for day, total in finals.items()],
            )

    def _close_gap(self, d, plug_id: int, recorded: Recorded, open_gap_id: int | None) -> None:
        acc = recorded.accounting
        filled = sum(p.energy_wh for p in acc.pieces if p.kind is LedgerKind.FILLED)
        status = GapStatus.FILLED if acc.unknown_s <= 0 else GapStatus.PARTIAL
        source = "history" if acc.used_history else "counters"
        start = recorded.prev_at
        if open_gap_id is not None:
            d.execute(
                "UPDATE energy_gaps SET end_s = ?, status = ?, filled_wh = ?, unfilled_s = ?, source = ? WHERE id = ?",
                (recorded.reading.at, status.value, filled, acc.unknown_s, source, open_gap_id),
            )
        else:
            d.execute(
                "INSERT INTO energy_gaps (plug_id, start_s, end_s, status, reason, filled_wh, unfilled_s, source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (plug_id, start, recorded.reading.at, status.value, "no samples", filled, acc.unknown_s, source),
            )


def _sample_params(r: Reading) -> tuple:
    return (
        r.plug_id, r.at, r.power_w, r.voltage_v, r.current_a, r.today_wh, r.month_wh, r.plug_time.isoformat(),
        r.plug_date.isoformat(), r.plug_secs_into_day, r.offset_s, None if r.is_on is None else int(r.is_on),
    )


def _reading_from_row(row, zone) -> Reading:
    plug_time = datetime.fromisoformat(row["plug_time"])
    if zone is not None:
        plug_time = plug_time.astimezone(zone)
    return Reading(
        plug_id=row["plug_id"],
        at=row["at"],
        power_w=row["power_w"],
        today_wh=row["today_wh"],
        month_wh=row["month_wh"],
        plug_time=plug_time,
        voltage_v=row["voltage_v"],
        current_a=row["current_a"],
        is_on=None if row["is_on"] is None else bool(row["is_on"]),
    )
