"""The energy monitor end to end: the real python-kasa client polling simulated Tapo plugs (real KLAP
v2 over HTTP on 127.0.0.1), recorded into a real database, on the simulator's manual clock.

Also home of the `rig` fixture the other energy tests use: a BaluPi (its energy service started, the
scheduler not) whose clock is the plugs' ManualClock, so a test moves time instead of sleeping.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Callable
from zoneinfo import ZoneInfo

import pytest

from balupi.app import BaluPi
from balupi.energy.model import GapStatus, LedgerKind, NasPowerState, PlugRole, PlugUnavailable, PollErrorKind
from balupi.energy.service import Plug
from balupi.events import Event
from balupi.scheduler import Scheduler
from balupi.sim.plug import ManualClock, SimulatedPlug
from tests.helpers import free_port

TZ = ZoneInfo("Europe/Berlin")
USER, PASSWORD = "owner@example.com", "tapo-pw"


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=TZ)


@dataclass
class Rig:
    app: BaluPi
    clock: ManualClock
    sims: list[SimulatedPlug] = field(default_factory=list)
    events: list[tuple[Event, dict]] = field(default_factory=list)

    @property
    def energy(self):
        return self.app.energy

    @property
    def db(self):
        return self.app.db

    def add(self, power_w: Any = 100.0, role: PlugRole = PlugRole.GENERIC, name: str | None = None, **kwargs: Any) -> tuple[SimulatedPlug, Plug]:
        sim = SimulatedPlug(username=USER, password=PASSWORD, clock=self.clock, power_w=power_w,
                            timezone="Europe/Berlin", nickname=name or f"plug{len(self.sims) + 1}", **kwargs)
        sim.start()
        self.sims.append(sim)
        plug = self.energy.add_plug("127.0.0.1", sim.port, name, role)
        return sim, plug

    def poll(self, times: int = 1, step_s: float = 30.0) -> None:
        """Poll every plug, then move time on; `times` over."""
        for _ in range(times):
            self.energy.poll_all(wait=True)
            self.clock.advance(step_s)

    def ledger_wh(self, plug_id: int, start_s: float | None = None, end_s: float | None = None) -> float:
        sql = "SELECT COALESCE(SUM(energy_wh), 0) FROM energy_ledger WHERE plug_id = ?"
        params: list = [plug_id]
        if start_s is not None:
            sql += " AND start_s >= ?"
            params.append(start_s)
        if end_s is not None:
            sql += " AND end_s <= ?"
            params.append(end_s)
        return self.db.query_one(sql, tuple(params))[0]

    def daily_wh(self, plug_id: int) -> dict[str, float]:
        return {r["day"]: r["energy_wh"] for r in self.db.query(
            "SELECT day, energy_wh FROM energy_daily WHERE plug_id = ? ORDER BY day", (plug_id,))}

    def hourly_wh(self, plug_id: int) -> dict[int, float]:
        return {r["hour_s"]: r["energy_wh"] for r in self.db.query(
            "SELECT hour_s, energy_wh FROM energy_hourly WHERE plug_id = ? ORDER BY hour_s", (plug_id,))}

    def first_today_wh(self, plug_id: int) -> int:
        """The day counter of the plug's first reading: the baseline (what it counted before is not ours)."""
        return self.db.query_one("SELECT today_wh FROM energy_samples WHERE plug_id = ? ORDER BY at LIMIT 1", (plug_id,))[0]

    def gaps(self, plug_id: int) -> list[dict]:
        return [dict(r) for r in self.db.query("SELECT * FROM energy_gaps WHERE plug_id = ? ORDER BY start_s", (plug_id,))]

    def events_of(self, kind: Event) -> list[dict]:
        return [payload for k, payload in self.events if k is kind]


@pytest.fixture
def rig_factory(settings_factory: Callable) -> Any:
    made: list[Rig] = []

    def make(start: datetime = local(2024, 5, 10, 12, 0), **overrides: Any) -> Rig:
        settings = settings_factory(**{
            "tapo_username": USER,
            "tapo_password": PASSWORD,
            "energy_timezone": "Europe/Berlin",
            "energy_poll_timeout_s": 3,
            **overrides,
        })
        clock = ManualClock(start)
        app = BaluPi(settings)
        app.energy.clock = clock
        rig = Rig(app, clock)
        for kind in Event:
            app.events.subscribe(kind, lambda _k=kind, **payload: rig.events.append((_k, payload)))
        app.energy.start()
        made.append(rig)
        return rig

    yield make
    for rig in made:
        for sim in rig.sims:
            sim.hang = False
            sim.stop()
        rig.app.stop(timeout_s=2)


@pytest.fixture
def rig(rig_factory: Callable) -> Rig:
    return rig_factory()


# -- normal polling ------------------------------------------------------------------------------------


def test_polling_records_power_counters_and_health(rig: Rig) -> None:
    sim, plug = rig.add(power_w=100.0, name="desk")
    start_wh = sim.total_energy_wh
    first = rig.clock()
    rig.poll(11)  # 11 readings, 10 intervals of 30 s: 5 minutes at 100 W
    p = rig.energy.plug(plug.id)
    assert p.last is not None and p.last.power_w == pytest.approx(100.0)
    assert p.last.voltage_v == pytest.approx(230.0) and p.last.current_a == pytest.approx(0.435, abs=0.001)
    assert p.health.error_kind is None and p.health.polls == 11 and p.health.latency_ms is not None
    assert rig.db.query_one("SELECT COUNT(*) FROM energy_samples WHERE plug_id = ?", (plug.id,))[0] == 11
    # The plug's integer counters are the truth: the ledger holds exactly their delta.
    counted = sim.total_energy_wh - start_wh
    assert rig.ledger_wh(plug.id) == pytest.approx(p.last.today_wh - rig.first_today_wh(plug.id))
    assert abs(rig.ledger_wh(plug.id) - counted) <= 1
    kinds = {r[0] for r in rig.db.query("SELECT DISTINCT kind FROM energy_ledger WHERE plug_id = ?", (plug.id,))}
    assert kinds == {LedgerKind.MEASURED.value}
    samples = rig.events_of(Event.PLUG_SAMPLE)
    assert len(samples) == 11 and samples[0] == {"device_id": plug.id, "power_w": 100.0, "at": first}


def test_all_plugs_are_polled_concurrently_each_with_its_own_reading(rig: Rig) -> None:
    plugs = [rig.add(power_w=w)[1] for w in (10.0, 20.0, 30.0)]
    rig.poll(3)
    assert [rig.energy.plug(p.id).last.power_w for p in plugs] == [10.0, 20.0, 30.0]
    assert all(rig.energy.is_online(rig.energy.plug(p.id)) for p in plugs)


# -- failures: each reported as what it is, logged once -------------------------------------------------


def test_wrong_password_is_reported_as_authentication_not_offline(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    sim, plug = rig.add(power_w=50.0)
    _, other = rig.add(power_w=20.0)
    rig.poll(2)
    sim.refuse_password = True
    with caplog.at_level(logging.INFO, logger="balupi.energy"):
        rig.poll(4)
    health = rig.energy.plug(plug.id).health
    assert health.error_kind is PollErrorKind.AUTHENTICATION
    assert health.consecutive_failures == 4
    assert "authentication" in rig.energy.plug(plug.id).as_dict(False)["health"]["error_kind"]
    assert rig.energy.plug(other.id).health.error_kind is None  # the other plug kept going
    failing = [r for r in caplog.records if "polling failed" in r.getMessage()]
    assert len(failing) == 1  # once, not every 30 s
    assert [g["status"] for g in rig.gaps(plug.id)] == [GapStatus.OPEN.value]


def test_adding_a_plug_with_the_wrong_password_says_so(rig: Rig) -> None:
    sim = SimulatedPlug(username=USER, password="something else", clock=rig.clock)
    with sim:
        with pytest.raises(PlugUnavailable) as info:
            rig.energy.add_plug("127.0.0.1", sim.port, "x", PlugRole.GENERIC)
    assert info.value.kind is PollErrorKind.AUTHENTICATION


def test_plug_down_is_offline_logged_once_and_recovery_logged_once(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    sim, plug = rig.add(power_w=60.0)
    rig.poll(2)
    with caplog.at_level(logging.INFO, logger="balupi.energy"):
        sim.down = True
        rig.poll(3)
        assert rig.energy.plug(plug.id).health.error_kind is PollErrorKind.OFFLINE
        assert not rig.energy.is_online(rig.energy.plug(plug.id))
        sim.down = False
        rig.poll(3)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("polling failed (offline)" in m for m in messages) == 1
    assert sum("recovered after 3 failed poll(s)" in m for m in messages) == 1
    health = rig.energy.plug(plug.id).health
    assert health.error_kind is None and health.consecutive_failures == 0 and health.failures == 3
    changes = rig.events_of(Event.PLUG_HEALTH_CHANGED)
    assert [c["error_kind"] for c in changes] == [PollErrorKind.OFFLINE, None]


def test_hung_plug_times_out_at_its_deadline_and_the_next_poll_recovers(rig_factory: Callable) -> None:
    rig = rig_factory(energy_poll_timeout_s=1)
    sim, plug = rig.add(power_w=40.0)
    rig.poll(2)
    sim.hang = True
    rig.poll(1)
    assert rig.energy.plug(plug.id).health.error_kind is PollErrorKind.TIMEOUT
    sim.hang = False
    rig.poll(2)
    assert rig.energy.plug(plug.id).health.error_kind is None
    assert rig.energy.plug(plug.id).last.power_w == 40.0


def test_hung_plug_never_delays_the_other_plugs_or_the_scheduler(rig_factory: Callable) -> None:
    rig = rig_factory(energy_poll_timeout_s=60)  # the hung poll outlives the whole test
    hung_sim, hung = rig.add(power_w=40.0)
    _, fine = rig.add(power_w=20.0)
    rig.poll(1)
    hung_sim.hang = True

    def samples(plug_id: int) -> int:
        return rig.db.query_one("SELECT COUNT(*) FROM energy_samples WHERE plug_id = ?", (plug_id,))[0]

    heartbeat = threading.Event()
    beats = []
    scheduler = Scheduler()
    scheduler.every(0.2, "energy-poll", lambda: (rig.energy.poll_all(), rig.clock.advance(30)))
    scheduler.every(0.2, "heartbeat", lambda: (beats.append(1), heartbeat.set()))
    scheduler.start()
    try:
        deadline = time.monotonic() + 30
        while samples(fine.id) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.stop(timeout_s=5)
    jobs = {j["name"]: j for j in scheduler.status()}
    assert samples(fine.id) >= 6  # the other plug kept its rhythm
    assert samples(hung.id) == 1  # only the reading from before the hang
    assert rig.energy.plug(hung.id).in_flight  # its one poll is still waiting for its deadline
    assert rig.energy.plug(hung.id).health.skipped >= 4  # later ticks skipped it instead of piling up
    assert jobs["energy-poll"]["skipped"] == 0  # poll_all never blocked the job
    assert jobs["heartbeat"]["runs"] >= 5 and heartbeat.is_set()


# -- the ledger across resets and gaps ------------------------------------------------------------------


def test_midnight_reset_daily_totals_match_the_plugs_counters(rig_factory: Callable) -> None:
    rig = rig_factory(start=local(2024, 5, 10, 23, 30))
    sim, plug = rig.add(power_w=137.0)
    rig.poll(121)  # 23:30 -> 00:30, every 30 s
    meter = sim.meter.daily_wh
    daily = rig.daily_wh(plug.id)
    assert abs(daily["2024-05-10"] - (meter[date(2024, 5, 10)] - rig.first_today_wh(plug.id))) <= 1
    assert abs(daily["2024-05-11"] - rig.energy.plug(plug.id).last.today_wh) <= 1
    final = rig.db.query_one("SELECT final_wh FROM energy_plug_days WHERE plug_id = ? AND plug_date = '2024-05-10'", (plug.id,))[0]
    assert final == meter[date(2024, 5, 10)]


def test_month_reset_uses_the_plugs_hourly_history(rig_factory: Callable) -> None:
    rig = rig_factory(start=local(2024, 5, 31, 23, 50))
    sim, plug = rig.add(power_w=200.0)
    rig.poll(41)  # across midnight and the month counter's reset
    daily = rig.daily_wh(plug.id)
    assert abs(daily["2024-05-31"] - (sim.meter.daily_wh[date(2024, 5, 31)] - rig.first_today_wh(plug.id))) <= 1
    assert abs(daily["2024-06-01"] - rig.energy.plug(plug.id).last.today_wh) <= 1
    kinds = {r[0] for r in rig.db.query("SELECT DISTINCT kind FROM energy_ledger WHERE plug_id = ?", (plug.id,))}
    assert LedgerKind.ESTIMATED.value not in kinds  # the history made the split exact
    assert sim.calls["get_energy_data"] >= 1


def test_gap_invents_no_energy_and_is_filled_from_the_plugs_history(rig_factory: Callable) -> None:
    rig = rig_factory(start=local(2024, 5, 10, 9, 0))
    sim, plug = rig.add(power_w=100.0)
    rig.poll(4)  # 09:00 .. 09:01:30 at 100 W
    before = rig.ledger_wh(plug.id)
    sim.down = True
    sim.set_power_w(10.0)
    rig.poll(1)  # fails: the gap opens at the last sample
    assert [g["status"] for g in rig.gaps(plug.id)] == ["open"]
    # Unreachable for about four hours, drawing 10 W, then 50 W from 11:00, then 10 W from 12:00.
    rig.clock.set(local(2024, 5, 10, 10, 0))
    sim.advance(3600)
    sim.set_power_w(50.0)
    sim.advance(3600)
    sim.set_power_w(10.0)
    sim.advance(3600)
    rig.poll(1)  # still down: one more failure, still one open gap
    sim.set_power_w(100.0)
    sim.down = False
    truth_wh = sim.total_energy_wh
    rig.poll(2)
    gap = rig.gaps(plug.id)
    assert len(gap) == 1 and gap[0]["status"] == GapStatus.FILLED.value and gap[0]["source"] == "history"
    filled = gap[0]["filled_wh"]
    # Power x time across the gap would say ~400 Wh (100 W either side); the plug counted ~80 Wh.
    assert 70 < filled < 90
    assert abs(rig.ledger_wh(plug.id) - (rig.energy.plug(plug.id).last.today_wh - rig.first_today_wh(plug.id))) <= 1
    hourly = rig.hourly_wh(plug.id)
    for hour, expected in ((10, 10), (11, 50), (12, 10)):
        assert hourly[int(local(2024, 5, 10, hour).timestamp())] == pytest.approx(expected, abs=1)
    assert truth_wh > before


def test_clock_reset_counts_nothing_twice(rig_factory: Callable) -> None:
    rig = rig_factory(start=local(2024, 5, 10, 10, 0))
    sim, plug = rig.add(power_w=120.0)
    start_wh = sim.total_energy_wh
    rig.poll(20)
    sim.lose_clock()  # back to 2000-01-01 00:00, counting into the year 2000
    rig.poll(40)
    assert rig.energy.plug(plug.id).last.plug_time.year == 2000
    sim.sync_clock()  # today's counter comes back with what it had before the loss
    rig.poll(40)
    truth = sim.total_energy_wh - start_wh
    assert abs(rig.ledger_wh(plug.id) - truth) <= 1.5
    # All of it happened on the real 10 May, whatever the plug believed.
    assert list(rig.daily_wh(plug.id)) == ["2024-05-10"]
    assert abs(rig.daily_wh(plug.id)["2024-05-10"] - truth) <= 1.5


def test_restart_continues_the_ledger_from_the_stored_sample(rig_factory: Callable, settings_factory: Callable) -> None:
    rig = rig_factory(start=local(2024, 5, 10, 10, 0))
    sim, plug = rig.add(power_w=80.0)
    rig.poll(5)
    rig.app.stop(timeout_s=2)
    rig.clock.advance(600)  # ten minutes without BaluPi
    app = BaluPi(rig.app.settings)
    app.energy.clock = rig.clock
    app.energy.start()
    try:
        rig.app = app
        rig.poll(3)
        gaps = rig.gaps(plug.id)
        assert [(g["status"], g["reason"]) for g in gaps] == [(GapStatus.FILLED.value, "no samples")]
        first = rig.db.query_one("SELECT today_wh FROM energy_samples WHERE plug_id = ? ORDER BY at LIMIT 1", (plug.id,))[0]
        assert abs(rig.ledger_wh(plug.id) - (sim.today_energy_wh - first)) <= 1
    finally:
        app.stop(timeout_s=2)
        rig.app = app


# -- the NAS's power state --------------------------------------------------------------------------------


def test_nas_power_states_follow_the_plug_with_dwell_and_hysteresis(rig_factory: Callable) -> None:
    rig = rig_factory(nas_webdav_url=f"http://127.0.0.1:{free_port()}/", nas_power_min_dwell_s=60,
                      nas_power_hysteresis_w=1.0)
    sim, plug = rig.add(power_w=4.0, role=PlugRole.NAS, name="nas")

    def run(watts: float, polls: int) -> None:
        sim.set_power_w(watts)
        rig.poll(polls)

    run(4.0, 3)  # standby (2..8 W) from the first reading
    run(30.0, 1)  # one spike: no state change (dwell)
    run(4.0, 2)
    run(40.0, 4)  # busy for long enough: active
    run(20.0, 4)  # idle
    for w in (24.7, 25.3, 24.8, 25.4, 24.9):  # hovering on the 25 W threshold: no flapping
        run(w, 1)
    run(0.5, 4)  # off
    rows = rig.db.query("SELECT from_state, to_state, left_state_wh FROM nas_power_transitions ORDER BY at")
    assert [(r["from_state"], r["to_state"]) for r in rows] == [
        (None, "standby"), ("standby", "active"), ("active", "idle"), ("idle", "off"),
    ]
    # Energy per state is the ledger's energy while in it.
    assert rows[1]["left_state_wh"] == pytest.approx(rig.db.query_one(
        "SELECT SUM(energy_wh) FROM energy_ledger WHERE nas_state = 'standby'")[0])
    readings = rig.events_of(Event.NAS_POWER_READING)
    assert {r["power_state"] for r in readings} == set(NasPowerState)
    changes = rig.events_of(Event.NAS_POWER_STATE_CHANGED)
    assert [c["to_state"] for c in changes] == [NasPowerState.STANDBY, NasPowerState.ACTIVE, NasPowerState.IDLE, NasPowerState.OFF]
    # The NAS state machine listened: asleep on the first (standby) reading, waking when it went
    # active (drawing power, but nothing answers on its port yet: booting, not awake).
    moves = [(t.to_state.value, t.cause) for t in rig.app.nas.transitions()]
    assert moves[:2] == [("asleep", "plug reads 4.0 W (standby)"), ("waking", "plug reads 40.0 W (active): booting")]
    assert rig.app.nas.last_power_state == "off"


# -- stored connection and retention ---------------------------------------------------------------------


def test_the_plug_config_keeps_a_credentials_hash_never_the_password(rig_factory: Callable, settings_factory: Callable) -> None:
    rig = rig_factory(start=local(2024, 5, 10, 10, 0))
    sim, plug = rig.add(power_w=50.0)
    stored = rig.db.query_one("SELECT config_json FROM energy_plugs WHERE id = ?", (plug.id,))[0]
    assert PASSWORD not in stored and "credentials_hash" in stored
    rig.app.stop(timeout_s=2)
    # Without the account in the settings, the plug is reached with the stored hash alone.
    app = BaluPi(settings_factory(energy_timezone="Europe/Berlin", energy_poll_timeout_s=3))
    app.energy.clock = rig.clock
    app.energy.start()
    rig.app = app
    rig.poll(2)
    assert app.energy.plug(plug.id).health.error_kind is None and app.energy.plug(plug.id).last.power_w == 50.0


def test_retention_drops_raw_data_after_its_days_and_keeps_the_rollups(rig_factory: Callable) -> None:
    rig = rig_factory(start=local(2024, 5, 1, 10, 0), energy_raw_retention_days=7)
    sim, plug = rig.add(power_w=100.0)
    rig.poll(121)  # an hour on 1 May
    sim.turn_off()  # then nothing for eight days
    rig.clock.set(local(2024, 5, 9, 10, 0))
    rig.poll(3)  # after a gap of eight days
    rig.energy.apply_retention()
    samples = [r["at"] for r in rig.db.query("SELECT at FROM energy_samples WHERE plug_id = ?", (plug.id,))]
    assert min(samples) >= local(2024, 5, 2, 10).timestamp() and len(samples) == 3
    assert rig.db.query_one("SELECT MIN(start_s) FROM energy_ledger")[0] >= local(2024, 5, 1, 11).timestamp() - 1
    assert rig.daily_wh(plug.id)["2024-05-01"] == pytest.approx(100, abs=1)  # the rollups stay
    assert len(rig.hourly_wh(plug.id)) > 1


def test_hourly_rollups_are_kept_for_the_energy_hourly_retention_days_setting(rig_factory: Callable) -> None:
    rig = rig_factory(start=local(2024, 5, 1, 10, 0), energy_raw_retention_days=1, energy_hourly_retention_days=3)
    sim, plug = rig.add(power_w=100.0)
    rig.poll(121)  # an hour on 1 May
    sim.turn_off()
    rig.clock.set(local(2024, 5, 5, 10, 0))  # four days later: past the three days of hourly rows
    rig.poll(3)
    assert min(rig.hourly_wh(plug.id)) < local(2024, 5, 2, 10).timestamp()  # still there before retention ran
    deleted = rig.energy.apply_retention()
    assert deleted["energy_hourly"] > 0
    assert min(rig.hourly_wh(plug.id)) >= local(2024, 5, 2, 10).timestamp()
    assert rig.daily_wh(plug.id)["2024-05-01"] == pytest.approx(100, abs=1)  # the day keeps what it summed
