"""`balupi status` (issue 11, item 5): the summary for an SSH session and `--json`, from the
database and the running server, agreeing with the API."""

from __future__ import annotations

import json
import time

from tests.authkit import api, dav
from tests.dashkit import stack_with_plug
from tests.davkit import listing, wait_downloads_idle
from tests.opskit import balupi
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

ALICE = (NAS_USER, NAS_PASSWORD)
FILES = {"/music/song.flac": b"la " * 30_000}


def test_status_summarises_the_nas_its_wakes_power_cost_cache_and_sync(stack_factory, tmp_path):
    ps = stack_with_plug(stack_factory, tmp_path, FILES, power_w=3600.0)
    stack = ps.stack
    try:
        listing(stack, "/")
        listing(stack, "/music")
        stack.suspend_nas()
        assert dav(stack, "GET", "/music/song.flac", auth=ALICE, headers={"User-Agent": "rclone/v1.60"}).status_code == 200
        wait_downloads_idle(stack.app)
        time.sleep(2.1)
        stack.app.energy.poll_all(wait=True)
        env = {"BALUPI_PORT": str(stack.server.port), "BALUPI_ENERGY_ENABLED": "true"}

        get = lambda path: api(stack, "GET", path, auth=ALICE).json()  # noqa: E731
        # The plug draws 1 Wh a second and the energy thread may poll between two readings, so the
        # CLI's figures are compared with the API's just before and just after each CLI call.
        before = get("/energy/summary")["today"]
        result = balupi(tmp_path, stack.app.settings, "status", "--json", **env)
        after = get("/energy/summary")["today"]
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["server"]["running"] is True
        assert report["nas"]["state"] == get("/nas/status")["nas_state"] == "awake"
        assert report["wakes"][0] == get("/nas/wakes")["wakes"][0] | {"awake_s": report["wakes"][0]["awake_s"]}
        assert report["wakes"][0]["cause"]["client"] == "rclone/v1.60"
        device = get("/energy/current")["devices"][0]
        assert report["energy"]["plugs"][0]["power_w"] == device["power_w"] == 3600.0
        assert 0 < before["energy_wh"] <= report["energy"]["today_wh"] <= after["energy_wh"]
        assert before["cost_cents"] <= report["energy"]["today_cost_cents"] <= after["cost_cents"]
        stats = get("/cache/stats")
        assert report["cache"]["total_files"] == stats["total_files"] == 1
        assert report["sync"]["pending_changes"] == stats["pending_changes"] == 0
        assert report["problems"] == []

        before = get("/energy/summary")["today"]
        text = balupi(tmp_path, stack.app.settings, "status", **env).stdout
        after = get("/energy/summary")["today"]
        assert "NAS:      awake for" in text
        assert f"request by {NAS_USER} (rclone/v1.60): /music/song.flac" in text
        assert "Power:    NAS (nas) 3600.0 W" in text
        today_kwh = float(text.split("Today:    ", 1)[1].split(" kWh", 1)[0])
        assert round(before["energy_wh"] / 1000, 3) <= today_kwh <= round(after["energy_wh"] / 1000, 3)
        assert "Problems: none" in text
    finally:
        ps.plug.stop()


def test_status_on_embedded_defaults_names_what_is_missing(tmp_path, settings_factory):
    settings = settings_factory(port=1)  # nothing listens on port 1: the server is not running
    refused = balupi(tmp_path, settings, "status")  # no database there: a wrong data dir, most likely
    assert refused.returncode != 0 and "no database at" in refused.stderr and "Traceback" not in refused.stderr
    result = balupi(tmp_path, settings, "status", "--init")
    assert result.returncode == 0, result.stderr
    assert "NAS:      unconfigured" in result.stdout
    assert "the server does not answer" in result.stdout
    assert "no NAS is configured" in result.stdout
    assert "Power:    energy monitoring is off" in result.stdout  # opskit turns it off
