"""Issue 15, item 3: the CLI for daily work, run as a user runs it (real processes): `balupi wake`,
`balupi plugs ...`, maintenance commands that refuse a data directory without a database, a backup
into a folder that does not exist yet, human output with --json beside it, and help that explains."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from balupi.sim.nas import DEFAULT_MAC, PowerState, SimNas
from balupi.sim.plug import SimulatedPlug
from tests.helpers import free_port, subprocess_env

TAPO_USER, TAPO_PASSWORD = "cli@example.com", "plug-pw"


def balupi(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {"BALUPI_DATA_DIR": str(tmp_path / "data"), "BALUPI_HOST": "127.0.0.1", "BALUPI_WOL_ADDRESS": "127.0.0.1",
            "BALUPI_TAPO_DISCOVERY_TARGET": "127.0.0.1"}
    return subprocess.run([sys.executable, "-m", "balupi", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=subprocess_env(tmp_path, **{**base, **env}))


@pytest.fixture
def asleep_nas(tmp_path):
    nas = SimNas(tmp_path / "nas", users={"alice": ("alice-pw", "admin")}, control_port=None, boot_delay_s=1.0,
                 wol_port=free_port(socket.SOCK_DGRAM), initial_state=PowerState.SUSPENDED).start()
    yield nas
    nas.stop()


def test_wake_wakes_the_nas_and_says_how_long_it_took(tmp_path, asleep_nas):
    env = {"BALUPI_NAS_WEBDAV_URL": asleep_nas.dav_url, "BALUPI_NAS_MAC_ADDRESS": DEFAULT_MAC,
           "BALUPI_WOL_PORT": str(asleep_nas.wol_port), "BALUPI_NAS_CONNECT_TIMEOUT_S": "0.5",
           "BALUPI_NAS_READY_POLL_S": "0.1"}
    assert balupi(tmp_path, "vacuum", "--init", **env).returncode == 0  # a data directory with a database

    woken = balupi(tmp_path, "wake", **env)
    again = balupi(tmp_path, "wake", "--json", **env)

    assert woken.returncode == 0, woken.stderr
    match = re.search(r"^The NAS is awake after (\d+\.\d) s \((\d+) magic packet\(s\) sent\)\.$", woken.stdout, re.MULTILINE)
    assert match and float(match.group(1)) >= 1.0 and int(match.group(2)) >= 1, woken.stdout
    assert asleep_nas.state is PowerState.AWAKE
    assert json.loads(again.stdout) == {"awake": True, "already_awake": True, "seconds": 0.0, "magic_packets": 0}


def test_a_maintenance_command_refuses_a_data_directory_without_a_database(tmp_path):
    refused = balupi(tmp_path, "cache", "stats")
    assert refused.returncode == 1
    assert f"no database at {tmp_path / 'data' / 'balupi.db'}" in refused.stderr and "--init" in refused.stderr
    assert not (tmp_path / "data" / "balupi.db").exists()

    created = balupi(tmp_path, "cache", "stats", "--init")
    assert created.returncode == 0, created.stderr
    assert created.stdout.splitlines()[0] == "Cached: 0 file(s), 0.0 MB of 200 GB (0 %)."
    assert (tmp_path / "data" / "balupi.db").is_file()
    figures = json.loads(balupi(tmp_path, "cache", "stats", "--json").stdout)
    assert figures["total_files"] == 0 and figures["conflicts"] == {"count": 0, "unresolved": 0}


def test_backup_db_takes_a_folder_path_as_a_folder_and_creates_it(tmp_path):
    assert balupi(tmp_path, "vacuum", "--init").returncode == 0
    result = balupi(tmp_path, "backup-db", str(tmp_path / "backups" / "nightly") + "/", "--json")
    assert result.returncode == 0, result.stderr
    path = Path(json.loads(result.stdout)["path"])
    assert path.parent == tmp_path / "backups" / "nightly" and re.fullmatch(r"balupi-\d{8}-\d{6}\.db", path.name)
    assert path.is_file()
    missing = balupi(tmp_path, "backup-db", str(tmp_path / "nowhere" / "copy.db"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_plugs_add_list_rename_remove(tmp_path):
    plug = SimulatedPlug(username=TAPO_USER, password=TAPO_PASSWORD, nickname="Steckdose").start()
    env = {"BALUPI_TAPO_USERNAME": TAPO_USER, "BALUPI_TAPO_PASSWORD": TAPO_PASSWORD}
    try:
        assert "No plugs yet" in balupi(tmp_path, "plugs", "list", "--init", **env).stdout
        added = balupi(tmp_path, "plugs", "add", f"127.0.0.1:{plug.port}", "--name", "NAS plug", **env)
        assert added.returncode == 0, added.stderr
        assert added.stdout.startswith("Added plug 1: NAS plug (P110)") and "role nas" in added.stdout
        listed = balupi(tmp_path, "plugs", "list", **env).stdout.splitlines()
        assert re.match(r"^ID +NAME +ROLE +ADDRESS +MODEL +MAC$", listed[0])
        assert re.match(rf"^1 +NAS plug +nas +127\.0\.0\.1:{plug.port} +P110 ", listed[1])
        assert listed[0].index("ROLE") == listed[1].index("nas")  # aligned columns
        assert balupi(tmp_path, "plugs", "rename", "1", "--name", "NAS", **env).returncode == 0
        assert json.loads(balupi(tmp_path, "plugs", "list", "--json", **env).stdout)["plugs"][0]["name"] == "NAS"
        wrong = balupi(tmp_path, "plugs", "add", f"127.0.0.1:{plug.port}", "--role", "pi",
                       BALUPI_TAPO_USERNAME=TAPO_USER, BALUPI_TAPO_PASSWORD="wrong")
        assert wrong.returncode == 1 and "authentication" in wrong.stderr
        assert balupi(tmp_path, "plugs", "remove", "1", **env).returncode == 0
        assert json.loads(balupi(tmp_path, "plugs", "list", "--json", **env).stdout) == {"plugs": []}
    finally:
        plug.stop()


def test_help_explains_serve_options_and_config_choices(tmp_path):
    serve = balupi(tmp_path, "serve", "--help").stdout
    for option in ("--config FILE", "--host HOST", "--port PORT", "--data-dir DIR", "--cache-dir DIR", "--log-level"):
        assert option in serve
    config = " ".join(balupi(tmp_path, "config", "--help").stdout.split())
    assert "show (the default): every setting in force and where it came from" in config
    assert "every setting with its default and help" in config


def test_an_unknown_setting_gets_a_suggestion_on_the_command_line(tmp_path):
    result = balupi(tmp_path, "config", BALUPI_NAS_MAC="aa:bb:cc:dd:ee:ff")
    assert result.returncode == 2
    assert "BALUPI_NAS_MAC: unknown setting, did you mean BALUPI_NAS_MAC_ADDRESS?" in result.stderr
