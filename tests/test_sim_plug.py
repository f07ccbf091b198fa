"""The simulated Tapo plug, exercised through the real python-kasa client on 127.0.0.1."""

from __future__ import annotations

import asyncio
import errno
import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from kasa import (
    AuthenticationError,
    Credentials,
    Device,
    DeviceConfig,
    DeviceConnectionParameters,
    DeviceEncryptionType,
    DeviceError,
    DeviceFamily,
    Discover,
    KasaException,
    Module,
)
from kasa.exceptions import SmartErrorCode

from balupi.sim.plug import EnergyInterval, ManualClock, SimulatedPlug

TZ = ZoneInfo("Europe/Berlin")
USER = "nas-owner@example.com"
PASSWORD = "correct horse"

T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=TZ)


def make_plug(start: datetime, **kwargs: Any) -> tuple[SimulatedPlug, ManualClock]:
    clock = ManualClock(start)
    plug = SimulatedPlug(username=USER, password=PASSWORD, clock=clock, timezone="Europe/Berlin", **kwargs)
    return plug, clock


@pytest.fixture
def plug_100w():
    plug, clock = make_plug(local(2024, 5, 10, 12, 0), power_w=100.0)
    with plug:
        yield plug


def config_for(plug: SimulatedPlug, *, password: str = PASSWORD, timeout_s: int = 2) -> DeviceConfig:
    # Spelled out (rather than plug.device_config()) to pin down python-kasa's own API.
    return DeviceConfig(
        host="127.0.0.1",
        port_override=plug.port,
        timeout=timeout_s,
        credentials=Credentials(USER, password),
        connection_type=DeviceConnectionParameters(
            DeviceFamily.SmartTapoPlug, DeviceEncryptionType.Klap, login_version=2
        ),
    )


async def connect(plug: SimulatedPlug, **kwargs: Any) -> Device:
    return await Device.connect(config=config_for(plug, **kwargs))


def test_connect_and_update_reports_a_p110(plug_100w: SimulatedPlug) -> None:
    async def scenario() -> None:
        dev = await connect(plug_100w)
        try:
            await dev.update()
            assert dev.model == "P110"
            assert dev.alias == "NAS"
            assert dev.is_on is True
            assert dev.device_info.device_family == "SMART.TAPOPLUG"
            assert dev.device_info.firmware_version == "1.3.1"
            assert dev.mac == plug_100w.mac.replace("-", ":")
            assert Module.Energy in dev.modules
            assert dev.time == local(2024, 5, 10, 12, 0)
        finally:
            await dev.disconnect()
        # one KLAP handshake served both updates, which went out as multipleRequests
        assert plug_100w.calls["handshake1"] == 1
        assert plug_100w.calls["component_nego"] == 1
        assert plug_100w.calls["get_energy_usage"] == 2

    run(scenario)


def test_energy_values_match_constant_and_callable_profiles() -> None:
    plug, clock = make_plug(local(2024, 5, 10, 12, 0), power_w=123.4, voltage_v=230.0)

    async def scenario() -> None:
        dev = await connect(plug)
        try:
            energy = dev.modules[Module.Energy]
            assert energy.current_consumption == pytest.approx(123.4)
            assert energy.voltage == pytest.approx(230.0)
            assert energy.current == pytest.approx(123.4 / 230.0, abs=0.001)

            plug.set_profile(lambda now_s: 10.0 + datetime.fromtimestamp(now_s, TZ).hour)
            await dev.update()
            assert energy.current_consumption == pytest.approx(22.0)  # 10 W + 12 (noon)
            plug.set_power_w(45.0)
            await dev.update()
            assert energy.current_consumption == pytest.approx(45.0)
            assert energy.current == pytest.approx(45.0 / 230.0, abs=0.001)
        finally:
            await dev.disconnect()

    with plug:
        run(scenario)


def test_counters_integrate_one_hour_at_100w_to_100wh(plug_100w: SimulatedPlug) -> None:
    async def scenario() -> None:
        dev = await connect(plug_100w)
        try:
            energy = dev.modules[Module.Energy]
            today_kwh, month_kwh = energy.consumption_today, energy.consumption_this_month
            plug_100w.advance(3600)
            await dev.update()
            assert energy.consumption_today == pytest.approx(today_kwh + 0.100)
            assert energy.consumption_this_month == pytest.approx(month_kwh + 0.100)
            assert plug_100w.today_energy_wh == 100
            # 90 more minutes in 1-minute steps: whole Wh only, fractions carried over
            for _ in range(90):
                plug_100w.advance(60)
            await dev.update()
            assert energy.consumption_today == pytest.approx(0.250)
            assert energy.energy["today_runtime"] == 150
        finally:
            await dev.disconnect()

    run(scenario)


def test_today_counter_resets_at_plug_local_midnight() -> None:
    plug, _clock = make_plug(local(2024, 5, 10, 23, 30), power_w=100.0)

    async def scenario() -> None:
        dev = await connect(plug)
        try:
            energy = dev.modules[Module.Energy]
            plug.advance(1799)  # 23:30 -> 23:59:59
            await dev.update()
            assert energy.consumption_today == pytest.approx(0.049)  # whole Wh only
            plug.advance(1)  # midnight
            await dev.update()
            assert energy.consumption_today == 0.0
            assert energy.consumption_this_month == pytest.approx(0.050)
            plug.advance(1800)  # 00:00 -> 00:30 the next local day
            await dev.update()
            assert dev.time == local(2024, 5, 11, 0, 30)
            assert energy.consumption_today == pytest.approx(0.050)  # only since midnight
            assert energy.consumption_this_month == pytest.approx(0.100)  # month keeps counting
        finally:
            await dev.disconnect()

    with plug:
        run(scenario)


def test_month_counter_resets_on_the_first() -> None:
    plug, _clock = make_plug(local(2024, 4, 30, 23, 0), power_w=100.0)

    async def scenario() -> None:
        dev = await connect(plug)
        try:
            energy = dev.modules[Module.Energy]
            plug.advance(3599)  # 23:00 -> 23:59:59 on April 30th
            await dev.update()
            assert energy.consumption_this_month == pytest.approx(0.099)
            plug.advance(1)  # midnight, May 1st
            await dev.update()
            assert energy.consumption_this_month == 0.0
            assert energy.consumption_today == 0.0
            plug.advance(2 * 3600)  # 00:00 -> 02:00 on May 1st
            await dev.update()
            assert energy.consumption_this_month == pytest.approx(0.200)
            assert energy.consumption_today == pytest.approx(0.200)
            monthly = await dev._query_helper(
                "get_energy_data",
                {
                    "start_timestamp": int(local(2024, 1, 1).timestamp()),
                    "end_timestamp": int(local(2024, 12, 31).timestamp()),
                    "interval": EnergyInterval.MONTHLY,
                },
            )
            assert monthly["get_energy_data"]["data"][3:5] == [100, 200]
        finally:
            await dev.disconnect()

    with plug:
        run(scenario)


def test_follow_tracks_a_changing_source(plug_100w: SimulatedPlug) -> None:
    nas = {"power_w": 1.5}  # asleep
    plug_100w.follow(lambda: nas["power_w"], tick_s=None)

    async def scenario() -> None:
        dev = await connect(plug_100w)
        try:
            energy = dev.modules[Module.Energy]
            assert energy.current_consumption == pytest.approx(1.5)
            nas["power_w"] = 40.0  # booting
            await dev.update()
            assert energy.current_consumption == pytest.approx(40.0)
            plug_100w.advance(3600)
            nas["power_w"] = 25.0  # idle
            await dev.update()
            assert energy.current_consumption == pytest.approx(25.0)
            assert energy.consumption_today == pytest.approx(0.040)
        finally:
            await dev.disconnect()

    run(scenario)


def test_turn_off_drops_power_to_zero_and_stops_counting(plug_100w: SimulatedPlug) -> None:
    async def scenario() -> None:
        dev = await connect(plug_100w)
        try:
            energy = dev.modules[Module.Energy]
            await dev.turn_off()
            await dev.update()
            assert dev.is_on is False
            assert plug_100w.is_on is False
            assert energy.current_consumption == 0.0
            before_kwh = energy.consumption_today
            plug_100w.advance(3600)
            await dev.update()
            assert energy.consumption_today == before_kwh
            await dev.turn_on()
            await dev.update()
            assert dev.is_on is True
            assert energy.current_consumption == pytest.approx(100.0)
        finally:
            await dev.disconnect()

    run(scenario)


def test_wrong_password_and_refused_password_raise_authentication_error(plug_100w: SimulatedPlug) -> None:
    async def scenario() -> None:
        with pytest.raises(AuthenticationError):
            await connect(plug_100w, password="wrong")
        plug_100w.refuse_password = True
        with pytest.raises(AuthenticationError):
            await connect(plug_100w)  # right password, but the plug proves another account
        plug_100w.refuse_password = False
        dev = await connect(plug_100w)
        await dev.disconnect()
        assert dev.is_on is True

    run(scenario)


def test_hang_times_out_and_a_later_poll_recovers(plug_100w: SimulatedPlug) -> None:
    async def scenario() -> None:
        dev = await connect(plug_100w, timeout_s=1)
        try:
            energy = dev.modules[Module.Energy]
            plug_100w.hang = True
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(dev.update(), 2)
            assert time.monotonic() - started < 3
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(connect(plug_100w, timeout_s=1), 1.5)

            plug_100w.hang = False
            plug_100w.set_power_w(60.0)
            await asyncio.wait_for(dev.update(), 10)  # same Device object
            assert energy.current_consumption == pytest.approx(60.0)
            fresh = await asyncio.wait_for(connect(plug_100w), 10)  # and a fresh one
            await fresh.disconnect()
            assert fresh.modules[Module.Energy].current_consumption == pytest.approx(60.0)
        finally:
            await dev.disconnect()

    run(scenario)


def test_down_refuses_connections_until_back_up(plug_100w: SimulatedPlug) -> None:
    port = plug_100w.port
    plug_100w.down = True
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()

    async def connect_fails() -> None:
        with pytest.raises(KasaException, match="Cannot connect"):
            await connect(plug_100w, timeout_s=1)

    run(connect_fails)
    plug_100w.advance(3600)  # the meter keeps counting while the network is down
    plug_100w.down = False
    assert plug_100w.port == port

    async def reconnect() -> None:
        dev = await connect(plug_100w)
        await dev.disconnect()
        assert dev.modules[Module.Energy].consumption_today == pytest.approx(0.100)

    run(reconnect)


def test_get_energy_data_returns_hourly_and_daily_history() -> None:
    # power in watts = local hour of day, for one whole day
    plug, clock = make_plug(
        local(2024, 5, 10, 0, 0), power_w=lambda now_s: float(datetime.fromtimestamp(now_s, TZ).hour)
    )
    day_start = int(local(2024, 5, 10).timestamp())

    async def scenario() -> None:
        plug.advance(24 * 3600)
        dev = await connect(plug)
        try:
            resp = await dev._query_helper(
                "get_energy_data",
                {"start_timestamp": day_start, "end_timestamp": day_start + 86400, "interval": 60},
            )
            hourly = resp["get_energy_data"]
            assert hourly["interval"] == 60
            assert hourly["data"] == list(range(24))  # h W for one hour = h Wh
            assert hourly["data"] == plug.hourly_energy_wh(day_start, day_start + 86400)

            quarter_start = int(local(2024, 4, 1).timestamp())
            daily = (
                await dev.protocol.query(
                    {"get_energy_data": {"start_timestamp": quarter_start, "end_timestamp": quarter_start, "interval": 1440}}
                )
            )["get_energy_data"]["data"]
            assert len(daily) == 30 + 31 + 30
            assert daily[30 + 9] == sum(range(24))  # May 10th
            assert sum(daily) == sum(range(24))
            assert dev.modules[Module.Energy].consumption_this_month == pytest.approx(sum(range(24)) / 1000)

            with pytest.raises(DeviceError) as too_long:
                await dev._query_helper(
                    "get_energy_data",
                    {"start_timestamp": day_start - 9 * 86400, "end_timestamp": day_start, "interval": 60},
                )
            assert too_long.value.error_code is SmartErrorCode.PARAMS_ERROR
            with pytest.raises(DeviceError) as not_quarter:
                await dev._query_helper(
                    "get_energy_data", {"start_timestamp": day_start, "end_timestamp": day_start, "interval": 1440}
                )
            assert not_quarter.value.error_code is SmartErrorCode.PARAMS_ERROR
        finally:
            await dev.disconnect()

    with plug:
        run(scenario)


def test_config_to_dict_round_trip_reconnects_with_credentials_hash(plug_100w: SimulatedPlug) -> None:
    async def scenario() -> None:
        dev = await connect(plug_100w)
        try:
            stored = dev.config.to_dict_control_credentials(credentials_hash=dev.credentials_hash)
            assert "credentials" not in stored and stored["credentials_hash"]
            assert PASSWORD not in repr(stored)
            again = await Device.connect(config=DeviceConfig.from_dict(stored))
            await again.disconnect()
            assert again.device_id == dev.device_id
            assert again.modules[Module.Energy].current_consumption == pytest.approx(100.0)

            plain = await Device.connect(config=DeviceConfig.from_dict(dev.config.to_dict()))
            await plain.disconnect()
            assert plain.device_id == dev.device_id
        finally:
            await dev.disconnect()

    run(scenario)


def test_lost_clock_books_into_year_2000_until_time_sync(plug_100w: SimulatedPlug) -> None:
    async def scenario() -> None:
        dev = await connect(plug_100w)
        try:
            energy = dev.modules[Module.Energy]
            plug_100w.advance(3600)
            plug_100w.lose_clock()
            plug_100w.advance(1800)
            await dev.update()
            assert dev.time == local(2000, 1, 1, 0, 30)
            assert energy.consumption_today == pytest.approx(0.050)  # a "new day" in 2000
            assert plug_100w.clock_synced is False

            time_module = dev.modules[Module.Time]
            await time_module.set_time(datetime.fromtimestamp(plug_100w.now_s(), TZ))
            await dev.update()
            assert dev.time == local(2024, 5, 10, 13, 30)
            assert plug_100w.clock_synced is True
            assert energy.consumption_today == pytest.approx(0.100)  # the lost half hour stays in 2000

            plug_100w.lose_clock(resync_after_s=600)
            plug_100w.advance(900)
            await dev.update()
            assert dev.time == local(2024, 5, 10, 13, 45)
        finally:
            await dev.disconnect()

    run(scenario)


def test_raw_klap_surface_cookies_and_rejections(plug_100w: SimulatedPlug) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", plug_100w.port, timeout=2)
    conn.request("POST", "/app/handshake1", body=os.urandom(16))
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200 and len(body) == 48
    cookie = resp.getheader("Set-Cookie") or ""
    assert cookie.startswith("TP_SESSIONID=") and ";TIMEOUT=86400" in cookie
    conn.close()

    conn = http.client.HTTPConnection("127.0.0.1", plug_100w.port, timeout=2)
    conn.request("POST", "/app/request?seq=1", body=os.urandom(64), headers={"Cookie": "TP_SESSIONID=nope"})
    assert conn.getresponse().status == 403  # unknown session: python-kasa re-handshakes
    conn.close()

    async def unknown_method() -> None:
        dev = await connect(plug_100w)
        try:
            with pytest.raises(DeviceError) as err:
                await dev._query_helper("get_wireless_scan_info", {"start_index": 0})
            assert err.value.error_code is SmartErrorCode.UNKNOWN_METHOD_ERROR
        finally:
            await dev.disconnect()

    run(unknown_method)


def test_discover_single_finds_the_plug_on_loopback() -> None:
    plug, _clock = make_plug(local(2024, 5, 10, 12, 0), power_w=42.0, discovery_port=20002)
    try:
        plug.start()
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            pytest.skip("UDP 127.0.0.1:20002 is taken by another process")
        raise

    async def scenario() -> None:
        dev = await Discover.discover_single(
            "127.0.0.1", credentials=Credentials(USER, PASSWORD), discovery_timeout=3, timeout=2
        )
        assert dev is not None
        try:
            assert dev.config.connection_type.http_port == plug.port
            await dev.update()
            assert dev.model == "P110"
            assert dev.modules[Module.Energy].current_consumption == pytest.approx(42.0)
        finally:
            await dev.disconnect()

    with plug:
        run(scenario)
    assert plug.calls["discovery"] >= 1


def test_cli_runs_a_plug_for_the_demo() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "balupi.sim.plug", "--port", "0", "--user", USER, "--password", PASSWORD, "--power-w", "31.5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert "127.0.0.1:" in line, line
        port = int(line.split("127.0.0.1:")[1].split()[0])

        async def scenario() -> None:
            config = DeviceConfig(
                host="127.0.0.1",
                port_override=port,
                timeout=2,
                credentials=Credentials(USER, PASSWORD),
                connection_type=DeviceConnectionParameters(
                    DeviceFamily.SmartTapoPlug, DeviceEncryptionType.Klap, login_version=2
                ),
            )
            dev = await Device.connect(config=config)
            await dev.disconnect()
            assert dev.modules[Module.Energy].current_consumption == pytest.approx(31.5)

        run(scenario)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_manual_clock_only_moves_forward() -> None:
    clock = ManualClock(local(2024, 1, 1))
    clock.advance(60)
    assert clock() == local(2024, 1, 1, 0, 1).timestamp()
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(local(2023, 1, 1))
    clock.set(local(2024, 1, 1) + timedelta(days=1))
    assert clock() == local(2024, 1, 2).timestamp()
