"""Reading the ledger back: history, costs, savings and CSV export, from the rollups.

Each resolution reads the smallest table that answers it: `raw` the samples (7 days), `hour` the
hourly rollups (two years), `day` and `month` the daily and monthly ones (forever), so a year's
history never touches more than a few hundred rows per plug.
"""

from __future__ import annotations

import csv
import enum
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from balupi.db import Database
from balupi.energy.ledger import hour_start
from balupi.energy.tariffs import TariffBook


class Period(enum.Enum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


class Resolution(enum.Enum):
    RAW = "raw"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


DEFAULT_RESOLUTION = {
    Period.DAY: Resolution.HOUR,
    Period.WEEK: Resolution.HOUR,
    Period.MONTH: Resolution.DAY,
    Period.YEAR: Resolution.MONTH,
}


@dataclass(frozen=True)
class Window:
    """[start_s, end_s) in epoch seconds, and the same as local days/months for the day and month tables."""

    start_s: float
    end_s: float
    zone: ZoneInfo

    @property
    def first_day(self) -> str:
        return datetime.fromtimestamp(self.start_s, self.zone).date().isoformat()

    @property
    def end_day(self) -> str:
        """The first local day not in the window (exclusive)."""
        end = datetime.fromtimestamp(self.end_s, self.zone)
        day = end.date()
        if end.time() != datetime.min.time():
            day += timedelta(days=1)
        return day.isoformat()

    def days(self) -> list[date]:
        d, end = date.fromisoformat(self.first_day), date.fromisoformat(self.end_day)
        out = []
        while d < end:
            out.append(d)
            d += timedelta(days=1)
        return out


def _midnight(d: date, zone: ZoneInfo) -> float:
    return datetime(d.year, d.month, d.day, tzinfo=zone).timestamp()


def period_window(period: Period, now_s: float, zone: ZoneInfo) -> Window:
    """The window a period means, ending now: the last 24 hours, 7 days, 30 days or 12 months."""
    today = datetime.fromtimestamp(now_s, zone).date()
    if period is Period.DAY:
        start = hour_start(now_s, zone) - 23 * 3600
    elif period is Period.WEEK:
        start = _midnight(today - timedelta(days=6), zone)
    elif period is Period.MONTH:
        start = _midnight(today - timedelta(days=29), zone)
    else:
        month = today.month - 11
        year = today.year + (month - 1) // 12
        month = (month - 1) % 12 + 1
        start = datetime(year, month, 1, tzinfo=zone).timestamp()
    return Window(float(start), now_s + 1, zone)


def _iso(t_s: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(t_s, zone).isoformat()


def _plug_filter(plug_id: int | None) -> tuple[str, tuple]:
    return ("AND plug_id = ?", (plug_id,)) if plug_id is not None else ("", ())


def _bucket_s(resolution: Resolution, label: str, zone: ZoneInfo) -> tuple[float, float]:
    if resolution is Resolution.DAY:
        d = date.fromisoformat(label)
        return _midnight(d, zone), _midnight(d + timedelta(days=1), zone)
    y, m = int(label[:4]), int(label[5:7])
    start = datetime(y, m, 1, tzinfo=zone).timestamp()
    end = datetime(y + m // 12, m % 12 + 1, 1, tzinfo=zone).timestamp()
    return start, end


def rollup_points(db: Database, plug_id: int | None, window: Window, resolution: Resolution, plugs: int = 1) -> list[dict]:
    """Energy points of one plug (or all plugs summed) at hour, day or month resolution."""
    where, params = _plug_filter(plug_id)
    avg = "SUM(CASE WHEN covered_s > 0 THEN energy_wh * 3600.0 / covered_s ELSE 0 END)"
    cols = f"SUM(energy_wh), SUM(cost_cents), SUM(covered_s), MAX(max_power_w), {avg}, SUM(filled_wh), COUNT(*)"
    if resolution is Resolution.HOUR:
        rows = db.query(
            f"SELECT hour_s, {cols} FROM energy_hourly WHERE hour_s >= ? AND hour_s < ? {where}"
            " GROUP BY hour_s ORDER BY hour_s",
            (window.start_s, window.end_s, *params),
        )
    elif resolution is Resolution.DAY:
        rows = db.query(
            f"SELECT day, {cols} FROM energy_daily WHERE day >= ? AND day < ? {where} GROUP BY day ORDER BY day",
            (window.first_day, window.end_day, *params),
        )
    else:
        rows = db.query(
            f"SELECT month, {cols} FROM energy_monthly WHERE month >= ? AND month < ? {where}"
            " GROUP BY month ORDER BY month",
            (window.first_day[:7], _month_after(window.end_day), *params),
        )
    zone = window.zone
    points = []
    for key, energy, cost, covered, max_power, avg_power, filled, n in rows:
        if resolution is Resolution.HOUR:
            start, end = float(key), float(key) + 3600
        else:
            start, end = _bucket_s(resolution, key, zone)
        points.append({
            "timestamp": _iso(start, zone),
            "energy_wh": round(energy, 3),
            "avg_power_w": round(avg_power, 2) if covered else None,
            "max_power_w": max_power,
            "cost_cents": round(cost, 4),
            "filled_wh": round(filled, 3),
            "coverage": round(min(1.0, covered / ((end - start) * n)), 4) if end > start else None,
        })
    return points


def _month_after(day_iso: str) -> str:
    """The first month label after the one containing the exclusive end day."""
    d = date.fromisoformat(day_iso) - timedelta(days=1)
    return f"{d.year + d.month // 12:04d}-{d.month % 12 + 1:02d}"


def raw_points(db: Database, plug_id: int, window: Window) -> list[dict]:
    rows = db.query(
        "SELECT at, power_w, voltage_v, current_a FROM energy_samples WHERE plug_id = ? AND at >= ? AND at < ? ORDER BY at",
        (plug_id, window.start_s, window.end_s),
    )
    return [
        {"timestamp": _iso(r[0], window.zone), "power_w": r[1], "voltage_v": r[2], "current_a": r[3]} for r in rows
    ]


def gaps_in(db: Database, plug_id: int | None, window: Window) -> list[dict]:
    where, params = _plug_filter(plug_id)
    rows = db.query(
        f"SELECT plug_id, start_s, end_s, status, reason, filled_wh, unfilled_s, source FROM energy_gaps"
        f" WHERE start_s < ? AND COALESCE(end_s, ?) > ? {where} ORDER BY start_s",
        (window.end_s, window.end_s, window.start_s, *params),
    )
    return [
        {
            "device_id": r[0],
            "start": _iso(r[1], window.zone),
            "end": _iso(r[2], window.zone) if r[2] is not None else None,
            "status": r[3],
            "reason": r[4],
            "filled_wh": r[5],
            "unfilled_s": r[6],
            "source": r[7],
        }
        for r in rows
    ]


def energy_by_plug(db: Database, window: Window) -> dict[int, tuple[float, float]]:
    """Energy (Wh) and cost (cents) per plug over the window, from whole days plus the hours at its edges."""
    first_full = date.fromisoformat(window.first_day)
    if _midnight(first_full, window.zone) < window.start_s:
        first_full += timedelta(days=1)
    last_full_end = date.fromisoformat(window.end_day)
    if _midnight(last_full_end, window.zone) > window.end_s:
        last_full_end -= timedelta(days=1)
    out: dict[int, list[float]] = {}
    if first_full < last_full_end:
        for plug_id, energy, cost in db.query(
            "SELECT plug_id, SUM(energy_wh), SUM(cost_cents) FROM energy_daily WHERE day >= ? AND day < ? GROUP BY plug_id",
            (first_full.isoformat(), last_full_end.isoformat()),
        ):
            out.setdefault(plug_id, [0.0, 0.0])
            out[plug_id][0] += energy
            out[plug_id][1] += cost
        edges = [(window.start_s, _midnight(first_full, window.zone)), (_midnight(last_full_end, window.zone), window.end_s)]
    else:
        edges = [(window.start_s, window.end_s)]
    for lo, hi in edges:
        if hi <= lo:
            continue
        for plug_id, energy, cost in db.query(
            "SELECT plug_id, SUM(energy_wh), SUM(cost_cents) FROM energy_hourly WHERE hour_s >= ? AND hour_s < ?"
            " GROUP BY plug_id",
            (lo, hi),
        ):
            out.setdefault(plug_id, [0.0, 0.0])
            out[plug_id][0] += energy
            out[plug_id][1] += cost
    return {k: (v[0], v[1]) for k, v in out.items()}


def standing_charges(book: TariffBook, window: Window) -> float:
    return sum(book.standing_charge_for_day(d) for d in window.days())


# -- savings -------------------------------------------------------------------------------------------

IDLE_BASELINE_DAYS = 30
MIN_IDLE_S = 600  # at least 10 minutes of idle before its power counts as measured


def idle_power_w(db: Database, nas_plug_id: int, now_s: float) -> float | None:
    """The NAS's measured idle power: idle energy over idle time, last 30 days (else all daily data)."""
    row = db.query_one(
        "SELECT SUM(idle_wh), SUM(idle_s) FROM energy_hourly WHERE plug_id = ? AND hour_s >= ?",
        (nas_plug_id, now_s - IDLE_BASELINE_DAYS * 86400),
    )
    if not row or not row[1] or row[1] < MIN_IDLE_S:
        row = db.query_one("SELECT SUM(idle_wh), SUM(idle_s) FROM energy_daily WHERE plug_id = ?", (nas_plug_id,))
    if not row or not row[1] or row[1] < MIN_IDLE_S:
        return None
    return row[0] * 3600.0 / row[1]


def savings_by_day(
    db: Database, window: Window, nas_plug_id: int, idle_w: float, pi_plug_id: int | None, pi_power_w: float
) -> list[dict]:
    """Per local day: what sleeping saved against an always-on NAS at idle power, net of the Pi's draw.

    From the hourly rollups (two years), each hour priced by the tariff in force.
    """
    asleep_s = "(off_s + standby_s)"
    asleep_wh = "(off_wh + standby_wh)"
    rows = db.query(
        f"SELECT day, SUM({asleep_s}), SUM({asleep_wh}), SUM({asleep_s} / 3600.0 * ? * price_cents_per_kwh / 1000),"
        f" SUM({asleep_wh} * price_cents_per_kwh / 1000), SUM(covered_s), SUM(covered_s / 3600.0 * ? * price_cents_per_kwh / 1000)"
        f" FROM energy_hourly WHERE plug_id = ? AND hour_s >= ? AND hour_s < ? GROUP BY day ORDER BY day",
        (idle_w, pi_power_w, nas_plug_id, window.start_s, window.end_s),
    )
    pi_by_day: dict[str, tuple[float, float]] = {}
    if pi_plug_id is not None:
        for day, energy, cost in db.query(
            "SELECT day, SUM(energy_wh), SUM(cost_cents) FROM energy_hourly WHERE plug_id = ? AND hour_s >= ?"
            " AND hour_s < ? GROUP BY day",
            (pi_plug_id, window.start_s, window.end_s),
        ):
            pi_by_day[day] = (energy, cost)
    out = []
    for day, slept_s, slept_wh, baseline_cents, slept_cents, covered_s, pi_setting_cents in rows:
        baseline_wh = slept_s / 3600.0 * idle_w
        if pi_plug_id is not None:
            pi_wh, pi_cents = pi_by_day.get(day, (0.0, 0.0))
        else:
            pi_wh, pi_cents = covered_s / 3600.0 * pi_power_w, pi_setting_cents
        saved_wh, saved_cents = baseline_wh - slept_wh, baseline_cents - slept_cents
        out.append({
            "date": day,
            "asleep_hours": round(slept_s / 3600.0, 3),
            "baseline_wh": round(baseline_wh, 2),
            "asleep_wh": round(slept_wh, 2),
            "saved_wh": round(saved_wh, 2),
            "saved_cents": round(saved_cents, 3),
            "pi_wh": round(pi_wh, 2),
            "pi_cents": round(pi_cents, 3),
            "net_saved_wh": round(saved_wh - pi_wh, 2),
            "net_saved_cents": round(saved_cents - pi_cents, 3),
        })
    return out


def sum_savings(days: list[dict], key_len: int = 7) -> list[dict]:
    """Group per-day savings by month (key_len 7) or in total (key_len 0)."""
    groups: dict[str, dict] = {}
    for day in days:
        key = day["date"][:key_len] if key_len else "total"
        g = groups.setdefault(key, {"month" if key_len else "period": key})
        for name, value in day.items():
            if name != "date":
                g[name] = round(g.get(name, 0.0) + value, 3)
    return list(groups.values())


# -- export --------------------------------------------------------------------------------------------


def export_csv(db: Database, window: Window, resolution: Resolution, plug_id: int | None, names: dict[int, str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    where, params = _plug_filter(plug_id)
    zone = window.zone
    if resolution is Resolution.RAW:
        writer.writerow(["device_id", "device_name", "timestamp", "power_w", "voltage_v", "current_a", "today_wh", "month_wh"])
        for r in db.query(
            f"SELECT plug_id, at, power_w, voltage_v, current_a, today_wh, month_wh FROM energy_samples"
            f" WHERE at >= ? AND at < ? {where} ORDER BY plug_id, at",
            (window.start_s, window.end_s, *params),
        ):
            writer.writerow([r[0], names.get(r[0], ""), _iso(r[1], zone), r[2], r[3], r[4], r[5], r[6]])
        return out.getvalue()
    writer.writerow(["device_id", "device_name", "start", "end", "energy_wh", "filled_wh", "covered_s", "max_power_w",
                     "cost_cents", "price_cents_per_kwh"])
    if resolution is Resolution.HOUR:
        rows = db.query(
            f"SELECT plug_id, hour_s, energy_wh, filled_wh, covered_s, max_power_w, cost_cents, price_cents_per_kwh"
            f" FROM energy_hourly WHERE hour_s >= ? AND hour_s < ? {where} ORDER BY plug_id, hour_s",
            (window.start_s, window.end_s, *params),
        )
        for r in rows:
            writer.writerow([r[0], names.get(r[0], ""), _iso(r[1], zone), _iso(r[1] + 3600, zone), round(r[2], 3),
                             round(r[3], 3), round(r[4], 1), r[5], round(r[6], 4), r[7]])
        return out.getvalue()
    table, key, lo, hi = (
        ("energy_daily", "day", window.first_day, window.end_day)
        if resolution is Resolution.DAY
        else ("energy_monthly", "month", window.first_day[:7], _month_after(window.end_day))
    )
    for r in db.query(
        f"SELECT plug_id, {key}, energy_wh, filled_wh, covered_s, max_power_w, cost_cents FROM {table}"
        f" WHERE {key} >= ? AND {key} < ? {where} ORDER BY plug_id, {key}",
        (lo, hi, *params),
    ):
        start, end = _bucket_s(resolution, r[1], zone)
        price = r[6] / r[2] * 1000 if r[2] else None
        writer.writerow([r[0], names.get(r[0], ""), _iso(start, zone), _iso(end, zone), round(r[2], 3), round(r[3], 3),
                         round(r[4], 1), r[5], round(r[6], 4), None if price is None else round(price, 4)])
    return out.getvalue()


def plugs_and_latest_samples(db) -> list[tuple]:
    """Each plug (id, name, role) with its newest sample (at, power_w) or None, by plug id."""
    out = []
    for plug in db.query("SELECT id, name, role FROM energy_plugs ORDER BY id"):
        sample = db.query_one("SELECT at, power_w FROM energy_samples WHERE plug_id = ? ORDER BY at DESC LIMIT 1",
                              (plug["id"],))
        out.append((plug, sample))
    return out


def plug_addresses(conn) -> list:
    """(id, name, role, host, port) of every plug, by id (`conn`: anything with sqlite3's `execute`)."""
    return conn.execute("SELECT id, name, role, host, port FROM energy_plugs ORDER BY id").fetchall()


def newest_sample_at(conn) -> float | None:
    """When the newest sample was taken (`conn`: anything with sqlite3's `execute`)."""
    return conn.execute("SELECT MAX(at) FROM energy_samples").fetchone()[0]


def power_buckets(db, plug_id: int, start: float, end: float, bucket_s: float) -> list:
    """(bucket start, average W, maximum W) of `plug_id`'s samples in [start, end), per `bucket_s`."""
    return db.query(
        "SELECT CAST(at / ? AS INTEGER) * ? AS bucket, avg(power_w), max(power_w) FROM energy_samples"
        " WHERE plug_id = ? AND at >= ? AND at < ? AND power_w IS NOT NULL GROUP BY bucket ORDER BY bucket",
        (bucket_s, bucket_s, plug_id, start, end),
    )


def open_gap_count(db) -> int:
    """Gaps in the record not filled yet."""
    return db.query_one("SELECT COUNT(*) FROM energy_gaps WHERE status = 'open'")[0]
