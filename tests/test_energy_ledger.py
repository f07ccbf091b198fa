"""The ledger's arithmetic, tariffs and the NAS power state machine, without plugs or network:
counter deltas, day/month/clock resets, gaps, hourly shaping, prices, hysteresis and dwell."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from balupi.energy.ledger import account, hour_start
from balupi.energy.model import LedgerKind, NasPowerState, Reading
from balupi.energy.nasstate import NasPowerTracker, Thresholds, propose_thresholds
from balupi.energy.tariffs import Tariff, TariffBook, TouWindow, tariff_from_json

TZ = ZoneInfo("Europe/Berlin")


def at(*args: int) -> float:
    return datetime(*args, tzinfo=TZ).timestamp()


def reading(t: float, today: int, month: int, power: float = 100.0, plug_time: datetime | None = None,
            history: dict | None = None) -> Reading:
    return Reading(1, t, power, today, month, plug_time or datetime.fromtimestamp(t, TZ), history=history or {})


def no_marks(_day: date) -> int | None:
    return None


def marks(**by_day: int):
    table = {date.fromisoformat(k.replace("_", "-")[1:]): v for k, v in by_day.items()}
    return lambda day: table.get(day)


# -- counter deltas ---------------------------------------------------------------------------------


def test_energy_within_a_day_is_the_day_counters_delta():
    prev, cur = reading(at(2024, 5, 10, 12), 500, 9000), reading(at(2024, 5, 10, 12, 0, 30), 501, 9001)
    acc = account(prev, cur, no_marks, gap=False, zone=TZ)
    assert acc.energy_wh == 1 and [p.kind for p in acc.pieces] == [LedgerKind.MEASURED]
    assert acc.unknown_s == 0


def test_pieces_never_cross_an_hour_and_power_shapes_the_split():
    prev = reading(at(2024, 5, 10, 12, 59, 50), 500, 9000, power=0.0)
    cur = reading(at(2024, 5, 10, 13, 0, 10), 510, 9010, power=100.0)
    acc = account(prev, cur, no_marks, gap=False, zone=TZ)
    assert [p.hour_s for p in acc.pieces] == [at(2024, 5, 10, 12), at(2024, 5, 10, 13)]
    assert acc.energy_wh == pytest.approx(10)
    # Power rose linearly 0 -> 100 W: a quarter of the energy before the hour, three quarters after.
    assert acc.pieces[0].energy_wh == pytest.approx(2.5) and acc.pieces[1].energy_wh == pytest.approx(7.5)


def test_a_day_counter_that_goes_backwards_counts_from_zero():
    prev, cur = reading(at(2024, 5, 10, 12), 500, 9000), reading(at(2024, 5, 10, 12, 0, 30), 3, 9003)
    acc = account(prev, cur, no_marks, gap=False, zone=TZ)
    assert acc.counter_reset and acc.energy_wh == 3


# -- midnight, month and clock resets --------------------------------------------------------------------


def test_midnight_splits_exactly_by_the_counters():
    prev = reading(at(2024, 5, 10, 23, 59, 45), 2390, 20000)
    cur = reading(at(2024, 5, 11, 0, 0, 15), 4, 20007)  # the month counter saw 7 Wh, today's 4 of them
    acc = account(prev, cur, marks(), gap=False, zone=TZ)
    before = sum(p.energy_wh for p in acc.pieces if p.end_s <= at(2024, 5, 11))
    after = sum(p.energy_wh for p in acc.pieces if p.start_s >= at(2024, 5, 11))
    assert (before, after) == (3, 4)
    assert acc.day_totals == {date(2024, 5, 10): 2393}


def test_month_reset_uses_hourly_history_for_the_last_day():
    buckets = [100] * 24  # the plug says: 2400 Wh on the 31st
    prev = reading(at(2024, 5, 31, 23, 59, 45), 2398, 70000)
    cur = reading(at(2024, 6, 1, 0, 0, 15), 1, 1, history={date(2024, 5, 31): buckets})
    acc = account(prev, cur, marks(), gap=False, zone=TZ)
    assert acc.energy_wh == 3 and acc.day_totals == {date(2024, 5, 31): 2400}
    assert LedgerKind.ESTIMATED not in {p.kind for p in acc.pieces}


def test_month_reset_without_history_estimates_only_seconds_by_power():
    prev = reading(at(2024, 5, 31, 23, 59, 45), 2398, 70000, power=120.0)
    cur = reading(at(2024, 6, 1, 0, 0, 15), 1, 1, power=120.0)
    acc = account(prev, cur, marks(), gap=False, zone=TZ)
    estimated = [p for p in acc.pieces if p.kind is LedgerKind.ESTIMATED]
    assert sum(p.energy_wh for p in estimated) == pytest.approx(120 * 15 / 3600)  # 0.5 Wh, never more than 30 s worth
    assert acc.energy_wh == pytest.approx(1.5)


def test_a_gap_across_a_month_reset_without_history_stays_unknown_not_invented():
    prev = reading(at(2024, 5, 31, 20), 2000, 60000, power=100.0)
    cur = reading(at(2024, 6, 1, 2), 150, 150, power=100.0)
    acc = account(prev, cur, marks(), gap=True, zone=TZ)
    assert acc.energy_wh == 150  # what the new day's counter proves, nothing more
    assert acc.unknown_s == pytest.approx(4 * 3600)  # 20:00 .. midnight stays a gap


def test_clock_loss_books_into_2000_and_resync_counts_nothing_twice():
    day = date(2024, 5, 10)
    prev = reading(at(2024, 5, 10, 10), 1000, 9000)
    # The plug lost its clock: 60 s after it restarted it believes 2000-01-01 00:01 and counted 2 Wh.
    lost_time = datetime(2000, 1, 1, 0, 1, tzinfo=TZ)
    cur = reading(at(2024, 5, 10, 10, 2), 2, 2, plug_time=lost_time,
                  history={day: [0] * 10 + [1001 - 0]})  # its 10 May hourly history: 1001 Wh, 1 after our reading
    acc = account(prev, cur, marks(), gap=False, zone=TZ)
    assert acc.energy_wh == pytest.approx(3)
    # The clock comes back: today's counter continues from its old value (1001) plus what came since.
    back = reading(at(2024, 5, 10, 11), 1001 + 50, 9051)
    acc2 = account(cur, back, marks(_2024_05_10=1001, _2000_01_01=2), gap=False, zone=TZ)
    assert acc2.energy_wh == pytest.approx(50 + 0)  # nothing of the 1001 counted again


# -- gaps ---------------------------------------------------------------------------------------------


def test_a_gap_is_filled_from_counters_spread_evenly_without_history():
    prev = reading(at(2024, 5, 10, 9, 30), 900, 9000, power=100.0)
    cur = reading(at(2024, 5, 10, 12, 30), 960, 9060, power=100.0)
    acc = account(prev, cur, no_marks, gap=True, zone=TZ)
    assert acc.energy_wh == 60  # the counters, not 100 W x 3 h
    assert {p.kind for p in acc.pieces} == {LedgerKind.FILLED}
    assert [round(p.energy_wh, 3) for p in acc.pieces] == [10, 20, 20, 10]


def test_a_gap_is_shaped_by_the_plugs_hourly_history():
    buckets = [0] * 9 + [100, 10, 40, 5]  # 09..12 h
    prev = reading(at(2024, 5, 10, 9, 30), 50, 9000)
    cur = reading(at(2024, 5, 10, 12, 30), 155, 9105, history={date(2024, 5, 10): buckets})
    acc = account(prev, cur, no_marks, gap=True, zone=TZ)
    by_hour = {datetime.fromtimestamp(p.hour_s, TZ).hour: p.energy_wh for p in acc.pieces}
    assert by_hour == {9: 50, 10: 10, 11: 40, 12: 5} and acc.used_history


def test_a_gap_over_days_uses_each_days_history():
    history = {date(2024, 5, 10): [10] * 24, date(2024, 5, 11): [20] * 24, date(2024, 5, 12): [5] * 6}
    prev = reading(at(2024, 5, 10, 12), 120, 9000)
    cur = reading(at(2024, 5, 12, 6), 30, 9000 + 120 + 480 + 30, history=history)
    acc = account(prev, cur, marks(), gap=True, zone=TZ)
    assert acc.energy_wh == 120 + 480 + 30
    assert acc.day_totals == {date(2024, 5, 10): 240, date(2024, 5, 11): 480}
    assert all(hour_start(p.start_s, TZ) == p.hour_s for p in acc.pieces)


def test_hour_start_follows_the_zone_across_daylight_saving():
    # 2024-10-27 has two 02:00 hours in Berlin; each is its own hour.
    first = at(2024, 10, 27, 2, 30)
    assert hour_start(first + 3600, TZ) - hour_start(first, TZ) == 3600


# -- NAS power state --------------------------------------------------------------------------------------


def test_nas_state_needs_dwell_and_ignores_a_spike():
    tracker = NasPowerTracker(Thresholds(min_dwell_s=60))
    assert tracker.feed(4.0, 0).to_state is NasPowerState.STANDBY
    assert tracker.feed(40.0, 30) is None  # a spike
    assert tracker.feed(4.0, 60) is None and tracker.state is NasPowerState.STANDBY
    assert tracker.feed(40.0, 90) is None and tracker.feed(40.0, 120) is None
    moved = tracker.feed(40.0, 150)
    assert moved is not None and moved.to_state is NasPowerState.ACTIVE and moved.left_state_s == 150


def test_nas_state_hysteresis_keeps_a_hovering_reading_where_it_is():
    tracker = NasPowerTracker(Thresholds(hysteresis_w=1.0, min_dwell_s=0))
    tracker.feed(20.0, 0)
    for i, w in enumerate((24.9, 25.4, 24.6, 25.3)):
        assert tracker.feed(w, i + 1) is None
    assert tracker.state is NasPowerState.IDLE
    assert tracker.feed(25.6, 10).to_state is NasPowerState.ACTIVE  # past the band
    assert tracker.feed(24.6, 11) is None  # not below 24.5
    assert tracker.feed(24.4, 12).to_state is NasPowerState.IDLE


def test_calibration_puts_thresholds_between_the_clusters():
    powers = [0.3] * 300 + [3.1, 3.3, 3.0] * 400 + [18.0, 18.5, 19.0] * 300 + [47.0, 45.0, 52.0] * 100
    result = propose_thresholds(powers, Thresholds())
    t = result.proposed
    assert t is not None
    assert 0.3 < t.off_below_w < 3.0
    assert 3.3 < t.standby_below_w < 18.0
    assert 19.0 < t.idle_below_w < 45.0
    assert [c["state"] for c in result.clusters] == ["off", "standby", "idle", "active"]


def test_calibration_needs_enough_samples():
    assert propose_thresholds([1.0] * 10, Thresholds()).proposed is None


def test_thresholds_must_not_decrease(settings_factory):
    from balupi.errors import ConfigError

    with pytest.raises(ConfigError, match="must not decrease"):
        Thresholds.from_settings(settings_factory(nas_power_standby_below_w=30))


# -- tariffs -----------------------------------------------------------------------------------------------


def test_time_of_use_windows_wrap_midnight_and_pick_weekdays():
    night = TouWindow(22, 6, 20.0)
    weekend = TouWindow(10, 16, 10.0, frozenset({5, 6}))
    t = Tariff("tou", at(2024, 1, 1), None, "EUR", 30.0, 25.0, (night, weekend))
    book = TariffBook([t], 32.0, "EUR", TZ)
    assert book.price_for_hour(at(2024, 5, 10, 23)) == 20.0  # Friday night
    assert book.price_for_hour(at(2024, 5, 11, 3)) == 20.0
    assert book.price_for_hour(at(2024, 5, 11, 12)) == 10.0  # Saturday noon
    assert book.price_for_hour(at(2024, 5, 10, 12)) == 30.0  # Friday noon
    assert book.price_for_hour(at(2023, 5, 10, 12)) == 32.0  # before the tariff: the default
    assert book.standing_charge_for_day(date(2024, 5, 10)) == 25.0


def test_the_newest_tariff_wins_where_tariffs_overlap():
    old = Tariff("old", at(2024, 1, 1), None, "EUR", 30.0, id=1)
    new = Tariff("new", at(2024, 3, 1), at(2024, 4, 1), "EUR", 40.0, id=2)
    book = TariffBook([old, new], 32.0, "EUR", TZ)
    assert [book.price_for_hour(at(2024, m, 15, 12)) for m in (2, 3, 4)] == [30.0, 40.0, 30.0]


def test_a_bad_tariff_names_every_problem_at_once():
    with pytest.raises(ValueError) as info:
        tariff_from_json({"valid_from": "tomorrow", "price_cents_per_kwh": -1,
                          "windows": [{"from_hour": 25, "to_hour": 3, "price_cents_per_kwh": 1, "days": ["xyz"]}]},
                         TZ, "EUR")
    message = str(info.value)
    for part in ("valid_from", "price_cents_per_kwh", "windows[0].from_hour", "windows[0].days"):
        assert part in message


def test_a_tariff_from_json_reads_dates_as_local_midnight():
    t = tariff_from_json({"name": "x", "valid_from": "2024-06-01", "price_cents_per_kwh": 30,
                          "windows": [{"days": ["sat", "sun"], "from_hour": 0, "to_hour": 24, "price_cents_per_kwh": 25}]},
                         TZ, "EUR")
    assert t.valid_from_s == at(2024, 6, 1) and t.valid_to_s is None
    assert t.price_at(datetime(2024, 6, 1, 13, tzinfo=TZ)) == 25 and t.price_at(datetime(2024, 6, 3, 13, tzinfo=TZ)) == 30
    assert t.currency == "EUR"


def test_daily_periods_cover_whole_local_days():
    from balupi.energy.queries import Period, period_window

    window = period_window(Period.WEEK, at(2024, 5, 10, 15), TZ)
    assert window.start_s == at(2024, 5, 4) and len(window.days()) == 7
    assert period_window(Period.YEAR, at(2024, 5, 10, 15), TZ).start_s == at(2023, 6, 1)
    assert timedelta(seconds=window.end_s - window.start_s) > timedelta(days=6)
