"""Versioned electricity prices: what a kWh costs at a given local hour, and the standing charge per day.

A tariff is valid from a time (inclusive) to a time (exclusive, or open-ended). It has a base
price per kWh, optional time-of-use windows (hours and weekdays, e.g. night 22-6 every day), a
standing charge per day and a currency. Where tariffs overlap the newest wins, so posting a
corrected version of a tariff simply supersedes the old one for the time it covers; a new
open-ended tariff also closes the previous open-ended one at its start. Times no tariff covers
cost `energy_default_price_cents`.

Prices are per local hour (time-of-use windows are whole hours), so an hour's cost is its energy
times one price; changing tariffs reprices every hourly rollup they cover (see rollups.reprice).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from balupi.db import Database

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Unix seconds written out, as in a query string (`?from=1715300000`): digits, maybe a fraction.
# Any all-digit text is seconds, never a compact date: `20240510` is 1970-08-23, not 2024-05-10.
EPOCH_TEXT = re.compile(r"[+-]?\d+(\.\d+)?")


@dataclass(frozen=True)
class TouWindow:
    """A time-of-use price for local hours [from_hour, to_hour) on some weekdays (wraps midnight if from > to)."""

    from_hour: int
    to_hour: int
    price_cents_per_kwh: float
    weekdays: frozenset[int] = frozenset(range(7))  # 0 = Monday

    def covers(self, weekday: int, hour: int) -> bool:
        if weekday not in self.weekdays:
            return False
        if self.from_hour < self.to_hour:
            return self.from_hour <= hour < self.to_hour
        return hour >= self.from_hour or hour < self.to_hour

    def as_dict(self) -> dict:
        return {
            "days": [WEEKDAYS[d] for d in sorted(self.weekdays)],
            "from_hour": self.from_hour,
            "to_hour": self.to_hour,
            "price_cents_per_kwh": self.price_cents_per_kwh,
        }


@dataclass(frozen=True)
class Tariff:
    name: str
    valid_from_s: float
    valid_to_s: float | None
    currency: str
    price_cents_per_kwh: float
    standing_charge_cents_per_day: float = 0.0
    windows: tuple[TouWindow, ...] = ()
    id: int | None = None
    created_at: float = 0.0
    _table: tuple[tuple[float, ...], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        table = tuple(
            tuple(self._lookup(weekday, hour) for hour in range(24)) for weekday in range(7)
        )
        object.__setattr__(self, "_table", table)

    def _lookup(self, weekday: int, hour: int) -> float:
        for window in self.windows:  # the first matching window wins
            if window.covers(weekday, hour):
                return window.price_cents_per_kwh
        return self.price_cents_per_kwh

    def covers(self, t_s: float) -> bool:
        return self.valid_from_s <= t_s and (self.valid_to_s is None or t_s < self.valid_to_s)

    def price_at(self, local: datetime) -> float:
        """Cents per kWh at this local time."""
        return self._table[local.weekday()][local.hour]

    def as_dict(self, zone: ZoneInfo) -> dict:
        def iso(t: float | None) -> str | None:
            return None if t is None else datetime.fromtimestamp(t, zone).isoformat()

        return {
            "id": self.id,
            "name": self.name,
            "valid_from": iso(self.valid_from_s),
            "valid_to": iso(self.valid_to_s),
            "currency": self.currency,
            "price_cents_per_kwh": self.price_cents_per_kwh,
            "standing_charge_cents_per_day": self.standing_charge_cents_per_day,
            "windows": [w.as_dict() for w in self.windows],
        }


def parse_time(value: Any, zone: ZoneInfo, name: str) -> float:
    """A time from JSON or a query string: epoch seconds (a number, or its digits as text), 'YYYY-MM-DD'
    (local midnight) or an ISO date-time (local if naive)."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a date, a date-time or epoch seconds, got {value!r}")
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        if EPOCH_TEXT.fullmatch(value.strip()):
            return float(value)
        try:
            if len(value.strip()) == 10:
                d = date.fromisoformat(value.strip())
                return datetime(d.year, d.month, d.day, tzinfo=zone).timestamp()
            dt = datetime.fromisoformat(value.strip())
            return (dt if dt.tzinfo else dt.replace(tzinfo=zone)).timestamp()
        except ValueError:
            pass
    raise ValueError(f"{name}: expected a date (YYYY-MM-DD), a date-time or epoch seconds, got {value!r}")


def _parse_days(raw: Any, where: str) -> frozenset[int]:
    if raw is None:
        return frozenset(range(7))
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}.days: expected a list of weekdays (mon..sun or 0..6)")
    days = set()
    for item in raw:
        if isinstance(item, str) and item.strip().lower()[:3] in WEEKDAYS:
            days.add(WEEKDAYS.index(item.strip().lower()[:3]))
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 6:
            days.add(item)
        else:
            raise ValueError(f"{where}.days: {item!r} is not a weekday (mon..sun or 0..6, Monday = 0)")
    return frozenset(days)


def _number(body: dict, key: str, errors: list[str], default: float | None = None, where: str = "") -> float:
    raw = body.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw < 0:
        errors.append(f"{where}{key}: expected a number of at least 0, got {raw!r}")
        return 0.0
    return float(raw)


def tariff_from_json(body: dict, zone: ZoneInfo, default_currency: str) -> Tariff:
    """A tariff from an API body. Raises ValueError naming every problem at once."""
    errors: list[str] = []
    name = body.get("name", "tariff")
    if not isinstance(name, str) or not name.strip():
        errors.append("name: expected a non-empty string")
        name = "tariff"
    valid_from = valid_to = None
    try:
        valid_from = parse_time(body.get("valid_from"), zone, "valid_from")
    except ValueError as exc:
        errors.append(str(exc))
    if body.get("valid_to") is not None:
        try:
            valid_to = parse_time(body["valid_to"], zone, "valid_to")
        except ValueError as exc:
            errors.append(str(exc))
    if valid_from is not None and valid_to is not None and valid_to <= valid_from:
        errors.append("valid_to: must be after valid_from")
    currency = body.get("currency", default_currency)
    if not isinstance(currency, str) or not 1 <= len(currency.strip()) <= 8:
        errors.append(f"currency: expected a currency code such as EUR, got {currency!r}")
        currency = default_currency
    price = _number(body, "price_cents_per_kwh", errors)
    standing = _number(body, "standing_charge_cents_per_day", errors, default=0.0)
    windows = []
    raw_windows = body.get("windows", [])
    if not isinstance(raw_windows, list):
        errors.append("windows: expected a list")
        raw_windows = []
    for i, raw in enumerate(raw_windows):
        where = f"windows[{i}]"
        if not isinstance(raw, dict):
            errors.append(f"{where}: expected an object")
            continue
        hours = []
        for key, lo, hi in (("from_hour", 0, 23), ("to_hour", 0, 24)):
            value = raw.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                errors.append(f"{where}.{key}: expected a whole hour from {lo} to {hi}, got {value!r}")
                value = 0
            hours.append(value)
        if hours[0] == hours[1] % 24 and hours[1] != 24:
            errors.append(f"{where}: from_hour and to_hour are the same hour")
        window_price = _number(raw, "price_cents_per_kwh", errors, where=where + ".")
        try:
            days = _parse_days(raw.get("days"), where)
        except ValueError as exc:
            errors.append(str(exc))
            days = frozenset(range(7))
        windows.append(TouWindow(hours[0], hours[1], window_price, days))
    if errors:
        raise ValueError("; ".join(errors))
    assert valid_from is not None
    return Tariff(name.strip(), valid_from, valid_to, currency.strip().upper(), price, standing, tuple(windows))


class TariffBook:
    """Every tariff, asked by time. Immutable: a change builds a new book."""

    def __init__(self, tariffs: list[Tariff], default_price_cents: float, default_currency: str, zone: ZoneInfo):
        # Newest first: where tariffs overlap, the newest wins.
        self.tariffs = sorted(tariffs, key=lambda t: (t.id or 0), reverse=True)
        self.default_price_cents = default_price_cents
        self.currency = self.tariffs[0].currency if self.tariffs else default_currency
        self.zone = zone

    def tariff_at(self, t_s: float) -> Tariff | None:
        for tariff in self.tariffs:
            if tariff.covers(t_s):
                return tariff
        return None

    def price_for_hour(self, hour_s: float) -> float:
        """Cents per kWh for the local hour starting at hour_s."""
        tariff = self.tariff_at(hour_s)
        if tariff is None:
            return self.default_price_cents
        return tariff.price_at(datetime.fromtimestamp(hour_s, self.zone))

    def standing_charge_for_day(self, day: date) -> float:
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=self.zone).timestamp()
        tariff = self.tariff_at(noon)
        return tariff.standing_charge_cents_per_day if tariff else 0.0

    def current(self, now_s: float) -> dict:
        tariff = self.tariff_at(now_s)
        return {
            "tariff_id": tariff.id if tariff else None,
            "name": tariff.name if tariff else "default",
            "currency": tariff.currency if tariff else self.currency,
            "price_cents_per_kwh": self.price_for_hour(now_s),
            "standing_charge_cents_per_day": tariff.standing_charge_cents_per_day if tariff else 0.0,
        }


# -- storage -----------------------------------------------------------------------------------------


def _from_row(row: Any) -> Tariff:
    windows = tuple(
        TouWindow(w["from_hour"], w["to_hour"], w["price_cents_per_kwh"], frozenset(w["weekdays"]))
        for w in json.loads(row["windows_json"] or "[]")
    )
    return Tariff(
        row["name"], row["valid_from_s"], row["valid_to_s"], row["currency"], row["price_cents_per_kwh"],
        row["standing_charge_cents_per_day"], windows, row["id"], row["created_at"],
    )


def load_tariffs(db: Database) -> list[Tariff]:
    return [_from_row(r) for r in db.query("SELECT * FROM energy_tariffs ORDER BY id")]


def store_tariff(db: Database, tariff: Tariff) -> int:
    """Save a new version; an open-ended one closes the earlier open-ended ones at its start. Returns its id."""
    windows = [
        {"from_hour": w.from_hour, "to_hour": w.to_hour, "price_cents_per_kwh": w.price_cents_per_kwh,
         "weekdays": sorted(w.weekdays)}
        for w in tariff.windows
    ]
    with db.write() as d:
        if tariff.valid_to_s is None:
            d.execute(
                "UPDATE energy_tariffs SET valid_to_s = ? WHERE valid_to_s IS NULL AND valid_from_s < ?",
                (tariff.valid_from_s, tariff.valid_from_s),
            )
        cursor = d.execute(
            "INSERT INTO energy_tariffs (name, valid_from_s, valid_to_s, currency, price_cents_per_kwh,"
            " standing_charge_cents_per_day, windows_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (tariff.name, tariff.valid_from_s, tariff.valid_to_s, tariff.currency, tariff.price_cents_per_kwh,
             tariff.standing_charge_cents_per_day, json.dumps(windows), time.time()),
        )
        return int(cursor.lastrowid)
