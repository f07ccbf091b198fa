"""/api/energy and /api/tapo through BaluPi's WSGI app (in process), backed by simulated plugs polled
by the real python-kasa client: shapes, plug management, switching, history, costs, tariff changes,
savings and export."""

from __future__ import annotations

import csv
import io
import json
import socket
import time
from typing import Any, Callable
from wsgiref.util import setup_testing_defaults

import pytest

from balupi.sim.plug import SimulatedPlug
from tests.test_energy_e2e import PASSWORD, USER, Rig, local
from tests.test_energy_e2e import rig_factory  # noqa: F401  (the fixture)


def call(rig: Rig, method: str, path: str, body: Any = None) -> tuple[int, Any, dict]:
    """One request through the WSGI tree; returns (status, parsed JSON or text, headers)."""
    environ: dict = {}
    setup_testing_defaults(environ)
    path, _, query = path.partition("?")
    data = b"" if body is None else json.dumps(body).encode()
    environ.update(REQUEST_METHOD=method, PATH_INFO=path, QUERY_STRING=query, CONTENT_LENGTH=str(len(data)),
                   CONTENT_TYPE="application/json", REMOTE_ADDR="127.0.0.1")  # no NAS: the Pi itself is admin
    environ["wsgi.input"] = io.BytesIO(data)
    seen: dict = {}

    def start_response(status: str, headers: list, exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    raw = b"".join(rig.app.wsgi(environ, start_response))
    headers = seen["headers"]
    parsed = json.loads(raw) if headers.get("Content-Type", "").startswith("application/json") else raw.decode()
    return seen["status"], parsed, headers


@pytest.fixture
def rig(rig_factory: Callable) -> Rig:
    return rig_factory(start=local(2024, 5, 10, 8, 0))


def add_via_api(rig: Rig, power_w: float, role: str = "generic", name: str = "plug", **sim_kwargs: Any) -> tuple[SimulatedPlug, dict]:
    sim = SimulatedPlug(username=USER, password=PASSWORD, clock=rig.clock, power_w=power_w, timezone="Europe/Berlin",
                        **sim_kwargs)
    sim.start()
    rig.sims.append(sim)
    status, body, _ = call(rig, "POST", "/api/tapo/devices", {"host": "127.0.0.1", "port": sim.port, "name": name, "role": role})
    assert status == 201, body
    return sim, body


# -- plugs ----------------------------------------------------------------------------------------------


def test_current_answers_the_seed_shape_with_the_total(rig: Rig) -> None:
    add_via_api(rig, 100.0, name="NAS", role="nas")
    add_via_api(rig, 25.0, name="Router")
    rig.poll(2)
    status, body, _ = call(rig, "GET", "/api/energy/current")
    assert status == 200
    assert body["total_power_w"] == pytest.approx(125.0)
    seed_keys = {"device_id", "device_name", "power_w", "voltage_v", "current_a", "is_online", "timestamp"}
    assert all(seed_keys <= set(d) for d in body["devices"])
    assert [(d["device_name"], d["power_w"], d["is_online"]) for d in body["devices"]] == [("NAS", 100.0, True), ("Router", 25.0, True)]
    assert body["devices"][0]["timestamp"].startswith("2024-05-10T08:00:30")


def test_plugs_are_added_renamed_given_roles_and_removed(rig: Rig) -> None:
    sim, added = add_via_api(rig, 10.0, name="Lamp")
    assert added["model"] == "P110" and added["role"] == "generic" and added["health"]["error_kind"] is None
    _, second = add_via_api(rig, 30.0, name="NAS", role="nas")
    status, body, _ = call(rig, "PUT", f"/api/tapo/devices/{added['id']}", {"role": "nas"})
    assert status == 409 and "only one" in body["detail"]
    status, body, _ = call(rig, "PUT", f"/api/tapo/devices/{added['id']}", {"name": "Desk lamp", "role": "monitor"})
    assert status == 200 and (body["name"], body["role"]) == ("Desk lamp", "monitor")
    status, body, _ = call(rig, "POST", "/api/tapo/devices", {"host": "127.0.0.1", "port": sim.port})
    assert status == 409 and "added already" in body["detail"]
    rig.poll(1)
    status, body, _ = call(rig, "GET", "/api/tapo/devices")
    assert [d["name"] for d in body["devices"]] == ["Desk lamp", "NAS"]
    assert body["devices"][0]["health"]["latency_ms"] is not None
    assert call(rig, "DELETE", f"/api/tapo/devices/{added['id']}")[0] == 200
    assert call(rig, "GET", f"/api/tapo/devices/{added['id']}")[0] == 404
    assert [d["id"] for d in call(rig, "GET", "/api/tapo/devices")[1]["devices"]] == [second["id"]]
    assert rig.db.query_one("SELECT COUNT(*) FROM energy_samples WHERE plug_id = ?", (added["id"],))[0] == 0


def test_adding_a_plug_that_refuses_the_account_answers_502_authentication(rig: Rig) -> None:
    sim = SimulatedPlug(username=USER, password="another", clock=rig.clock)
    with sim:
        status, body, _ = call(rig, "POST", "/api/tapo/devices", {"host": "127.0.0.1", "port": sim.port})
    assert status == 502 and body["error_kind"] == "authentication"


def test_adding_a_plug_nobody_listens_on_answers_502_offline(rig: Rig) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        status, body, _ = call(rig, "POST", "/api/tapo/devices", {"host": "127.0.0.1", "port": port})
    assert status == 502 and body["error_kind"] == "offline"


def test_bad_plug_input_is_422(rig: Rig) -> None:
    assert call(rig, "POST", "/api/tapo/devices", {"port": 80})[0] == 422
    assert call(rig, "POST", "/api/tapo/devices", {"host": "127.0.0.1", "port": 99999})[0] == 422
    assert call(rig, "POST", "/api/tapo/devices", {"host": "127.0.0.1", "role": "toaster"})[0] == 422


def test_switching_off_the_nas_plug_needs_confirmation(rig: Rig) -> None:
    sim, nas = add_via_api(rig, 30.0, role="nas", name="NAS")
    rig.poll(1)
    status, body, _ = call(rig, "POST", f"/api/tapo/devices/{nas['id']}/toggle", {})
    assert status == 409 and "confirm_nas_off" in body["detail"]
    assert sim.is_on
    status, body, _ = call(rig, "POST", f"/api/tapo/devices/{nas['id']}/toggle", {"confirm_nas_off": True})
    assert status == 200 and body["is_on"] is False and not sim.is_on
    status, body, _ = call(rig, "POST", f"/api/tapo/devices/{nas['id']}/toggle", {"on": True})
    assert status == 200 and body["is_on"] is True and sim.is_on


def test_every_changing_endpoint_is_marked_admin_only(rig: Rig) -> None:
    for route in rig.app.api.endpoints():
        if route.path.startswith(("/energy", "/tapo")):
            assert route.admin_only is (route.method != "GET"), (route.method, route.path)


def test_discovery_finds_a_plug_on_loopback(rig_factory: Callable) -> None:
    rig = rig_factory(tapo_discovery_target="127.0.0.1", energy_poll_timeout_s=2)
    try:
        sim = SimulatedPlug(username=USER, password=PASSWORD, clock=rig.clock, discovery_port=20002, nickname="Found")
        sim.start()
    except OSError:
        pytest.skip("UDP port 20002 on 127.0.0.1 is taken")
    rig.sims.append(sim)
    status, body, _ = call(rig, "POST", "/api/tapo/devices/discover")
    assert status == 200
    found = [d for d in body["devices"] if d["port"] == sim.port]
    assert found and found[0]["name"] == "Found" and found[0]["added_as"] is None


def test_energy_endpoints_answer_503_when_disabled(rig_factory: Callable) -> None:
    rig = rig_factory(energy_enabled=False)
    assert call(rig, "GET", "/api/energy/current")[0] == 503
    assert call(rig, "GET", "/api/health")[1]["energy_enabled"] is False


# -- history, costs, tariffs ----------------------------------------------------------------------------


def test_history_by_hour_and_raw_with_gaps_listed(rig: Rig) -> None:
    sim, plug = add_via_api(rig, 120.0)
    rig.poll(240)  # 08:00 .. 10:00
    status, body, _ = call(rig, "GET", f"/api/energy/history?device_id={plug['id']}&period=day")
    assert status == 200 and body["resolution"] == "hour"
    hours = {p["timestamp"][11:13]: p for p in body["points"]}
    assert hours["08"]["energy_wh"] == pytest.approx(120, abs=1) and hours["08"]["coverage"] == pytest.approx(1, abs=0.01)
    assert hours["08"]["avg_power_w"] == pytest.approx(120, abs=1)
    assert body["total_energy_wh"] == pytest.approx(sum(p["energy_wh"] for p in body["points"]))
    assert body["gaps"] == []
    status, raw, _ = call(rig, "GET", f"/api/energy/history?device_id={plug['id']}&period=day&resolution=raw")
    assert len(raw["points"]) == 240 and raw["points"][0]["power_w"] == 120.0
    assert call(rig, "GET", "/api/energy/history?resolution=raw")[0] == 400
    assert call(rig, "GET", "/api/energy/history?period=fortnight")[0] == 400
    assert call(rig, "GET", "/api/energy/history?device_id=99")[0] == 404


def test_history_day_month_year_read_the_rollups(rig: Rig) -> None:
    _, plug = add_via_api(rig, 100.0)
    rig.poll(121)
    for period, resolution, first in (("week", "hour", "2024-05-10T08"), ("month", "day", "2024-05-10"),
                                      ("year", "month", "2024-05-01")):
        status, body, _ = call(rig, "GET", f"/api/energy/history?period={period}")
        assert status == 200 and body["resolution"] == resolution
        assert body["points"][0]["timestamp"].startswith(first)
        assert body["total_energy_wh"] == pytest.approx(100, abs=1)


def test_a_tariff_change_recomputes_the_hours_it_covers(rig: Rig) -> None:
    _, plug = add_via_api(rig, 100.0)
    rig.poll(361)  # 08:00 .. 11:00: 300 Wh, at the default 32 ct
    _, before, _ = call(rig, "GET", "/api/energy/costs?period=day")
    assert before["energy_cost_cents"] == pytest.approx(0.3 * 32, abs=0.1)
    tariff = {"name": "dynamic", "valid_from": "2024-05-10T09:00:00", "price_cents_per_kwh": 50,
              "standing_charge_cents_per_day": 40, "currency": "EUR"}
    status, body, _ = call(rig, "POST", "/api/energy/prices", tariff)
    assert status == 201 and body["repriced_hours"] == 2  # 09:00 and 10:00
    _, after, _ = call(rig, "GET", "/api/energy/costs?period=day")
    assert after["energy_cost_cents"] == pytest.approx(0.1 * 32 + 0.2 * 50, abs=0.1)
    assert after["standing_charge_cents"] == pytest.approx(40)
    assert after["total_cost_cents"] == pytest.approx(after["energy_cost_cents"] + 40)
    # A corrected version of the same tariff supersedes it, and costs follow.
    status, _, _ = call(rig, "POST", "/api/energy/prices", {**tariff, "price_cents_per_kwh": 60,
                                                            "windows": [{"from_hour": 10, "to_hour": 11, "price_cents_per_kwh": 20}]})
    assert status == 201
    _, fixed, _ = call(rig, "GET", "/api/energy/costs?period=day")
    assert fixed["energy_cost_cents"] == pytest.approx(0.1 * 32 + 0.1 * 60 + 0.1 * 20, abs=0.1)
    daily = rig.db.query_one("SELECT cost_cents FROM energy_daily WHERE plug_id = ?", (plug["id"],))[0]
    assert daily == pytest.approx(fixed["energy_cost_cents"], abs=0.01)
    _, prices, _ = call(rig, "GET", "/api/energy/prices")
    assert [t["price_cents_per_kwh"] for t in prices["tariffs"]] == [50, 60]
    assert prices["current"]["price_cents_per_kwh"] == 60


def test_a_bad_tariff_is_422_naming_the_fields(rig: Rig) -> None:
    status, body, _ = call(rig, "POST", "/api/energy/prices", {"valid_from": "soon", "price_cents_per_kwh": "a lot"})
    assert status == 422 and "valid_from" in body["detail"] and "price_cents_per_kwh" in body["detail"]


def test_summary_has_today_month_and_the_nas_state(rig_factory: Callable) -> None:
    rig = rig_factory(start=local(2024, 5, 10, 8, 0), nas_power_min_dwell_s=0)
    add_via_api(rig, 20.0, role="nas", name="NAS")
    rig.poll(121)
    status, body, _ = call(rig, "GET", "/api/energy/summary")
    assert status == 200
    assert body["nas_state"]["state"] == "idle" and body["nas_state"]["power_w"] == 20.0
    assert body["today"]["energy_wh"] == pytest.approx(20, abs=1) and body["month"] == body["today"]
    assert body["devices"] == body["devices_online"] == 1 and body["open_gaps"] == 0


def test_savings_count_sleep_against_idle_power_net_of_the_pi(rig_factory: Callable) -> None:
    rig = rig_factory(start=local(2024, 5, 10, 8, 0), nas_power_min_dwell_s=0, energy_pi_power_w=3.0)
    sim, nas = add_via_api(rig, 20.0, role="nas", name="NAS")
    rig.poll(121)  # one hour idle at 20 W
    sim.set_power_w(4.0)
    rig.poll(240)  # two hours asleep at 4 W
    status, body, _ = call(rig, "GET", "/api/energy/savings?period=day")
    assert status == 200 and body["available"], body
    assert body["idle_power_w"] == pytest.approx(20, abs=1)
    total = body["total"]
    assert total["asleep_hours"] == pytest.approx(2, abs=0.02)
    assert total["saved_wh"] == pytest.approx(2 * 20 - 8, abs=2)  # an always-on NAS would have idled
    assert total["pi_wh"] == pytest.approx(3 * 3, abs=0.2)  # the Pi's 3 W over the three hours
    assert total["net_saved_wh"] == pytest.approx(total["saved_wh"] - total["pi_wh"])
    assert body["months"][0]["month"] == "2024-05"
    assert total["net_saved_cents"] == pytest.approx(total["net_saved_wh"] / 1000 * 32, abs=0.1)


def test_savings_say_why_they_are_not_available(rig: Rig) -> None:
    body = call(rig, "GET", "/api/energy/savings")[1]
    assert body["available"] is False and "nas" in body["detail"]


def test_export_csv_hourly_and_raw(rig: Rig) -> None:
    _, plug = add_via_api(rig, 60.0, name="Desk")
    rig.poll(130)
    status, text, headers = call(rig, "GET", "/api/energy/export.csv?from=2024-05-10&to=2024-05-11&resolution=hour")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert "attachment" in headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["start"][11:16] for r in rows] == ["08:00", "09:00"]
    assert rows[0]["device_name"] == "Desk" and float(rows[0]["energy_wh"]) == pytest.approx(60, abs=1)
    _, raw, _ = call(rig, "GET", f"/api/energy/export.csv?from=2024-05-10&to=2024-05-11&resolution=raw&device_id={plug['id']}")
    assert len(list(csv.DictReader(io.StringIO(raw)))) == 130
    assert call(rig, "GET", "/api/energy/export.csv?from=2024-05-11&to=2024-05-10")[0] == 400


def test_from_and_to_take_unix_seconds_as_well_as_dates(rig: Rig) -> None:
    add_via_api(rig, 60.0, name="Desk")
    rig.poll(130)
    start, end = int(local(2024, 5, 10).timestamp()), int(local(2024, 5, 11).timestamp())
    by_date = call(rig, "GET", "/api/energy/history?resolution=hour&from=2024-05-10&to=2024-05-11")[1]
    status, by_epoch, _ = call(rig, "GET", f"/api/energy/history?resolution=hour&from={start}&to={end}")
    assert status == 200 and (by_epoch["from"], by_epoch["to"]) == (by_date["from"], by_date["to"])
    assert by_epoch["points"] == by_date["points"] and by_epoch["total_energy_wh"] > 0
    status, body, _ = call(rig, "GET", f"/api/energy/history?from={start}.5&to={end}")
    assert status == 200 and body["from"].startswith("2024-05-10T00:00:00.5")
    for odd in ("1e9", "nan", "tomorrow"):
        status, body, _ = call(rig, "GET", f"/api/energy/history?from={odd}")
        assert status == 400 and body["detail"].startswith("from: expected a date"), (odd, body)


def test_a_running_server_polls_its_plugs_on_schedule(running_server: Callable, settings_factory: Callable, http: Any) -> None:
    server = running_server(settings_factory(tapo_username=USER, tapo_password=PASSWORD,
                                             energy_sample_interval_seconds=5, energy_poll_timeout_s=3))
    with SimulatedPlug(username=USER, password=PASSWORD, power_w=42.0) as sim:  # the real clock
        added = http.post(server.url + "/api/tapo/devices", json={"host": "127.0.0.1", "port": sim.port, "name": "TV"})
        assert added.status_code == 201, added.text
        deadline = time.monotonic() + 20
        current = {}
        while time.monotonic() < deadline:
            current = http.get(server.url + "/api/energy/current").json()
            if current["devices"][0]["is_online"]:
                break
            time.sleep(0.2)
        assert current["devices"][0]["power_w"] == 42.0 and current["total_power_w"] == 42.0
        jobs = {j["name"]: j for j in http.get(server.url + "/api/system/jobs").json()["jobs"]}
        assert jobs["energy-poll"]["runs"] >= 2 and jobs["energy-poll"]["last_error"] is None
        assert http.get(server.url + "/api/health").json()["energy_enabled"] is True
