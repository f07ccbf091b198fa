"""`balupi serve` as a user runs it: a real process, embedded defaults, one-line errors, clean shutdown."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from defusedxml import ElementTree

from tests.helpers import free_port, subprocess_env

START_TIMEOUT_S = 60.0  # generous: only a bound for a hang, never an assertion about speed
STOP_TIMEOUT_S = 30.0
SYSTEM_STATUS_FIELDS = {
    "cpu_percent", "cpu_temp_celsius", "memory_total_mb", "memory_used_mb", "memory_percent",
    "disk_total_gb", "disk_used_gb", "disk_percent", "uptime_seconds", "load_avg",
}  # fmt: skip


def run_balupi(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "balupi", *args],
        cwd=tmp_path,
        env=subprocess_env(tmp_path, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *named: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for name in named:
        assert name in lines[0]


class Served:
    """A `balupi serve` subprocess with its stderr in a file."""

    def __init__(self, tmp_path: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "serve.log"
        self.http = requests.Session()
        self.http.trust_env = False
        env = {"BALUPI_HOST": "127.0.0.1", "BALUPI_PORT": str(self.port), **env}
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "balupi", "serve"],
                cwd=tmp_path,
                env=subprocess_env(tmp_path, **env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"balupi serve exited with {self.process.returncode}:\n{self.log}")
            try:
                if self.http.get(self.url + "/api/health", timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"balupi serve did not answer:\n{self.log}")

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=STOP_TIMEOUT_S)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.http.close()


@pytest.fixture
def serve(tmp_path):
    started: list[Served] = []

    def start(**env: str) -> Served:
        served = Served(tmp_path, **env)
        started.append(served)
        served.wait_until_serving()
        return served

    yield start
    for served in started:
        served.kill()


# -- failing fast --------------------------------------------------------------------------------


def test_serve_with_a_bad_setting_exits_with_one_line_naming_it(tmp_path):
    result = run_balupi(tmp_path, "serve", BALUPI_PORT="eighty")
    assert_one_line_error(result, "BALUPI_PORT", "eighty")
    assert result.returncode == 2


def test_serve_with_several_bad_settings_names_them_all_in_one_line(tmp_path):
    result = run_balupi(tmp_path, "serve", BALUPI_NAS_MAC_ADDRESS="12:34", BALUPI_CACHE_MAX_SIZE_GB="-3", BALUPI_BOGUS="1")
    assert_one_line_error(result, "BALUPI_NAS_MAC_ADDRESS", "BALUPI_CACHE_MAX_SIZE_GB", "BALUPI_BOGUS")


def test_serve_with_a_bad_toml_file_exits_with_one_line(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "balupi.toml").write_text("[nas]\nmac_address = 'not-a-mac'\n")
    result = run_balupi(tmp_path, "serve")
    assert_one_line_error(result, "nas_mac_address", "balupi.toml")


def test_serve_on_a_taken_port_exits_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_balupi(tmp_path, "serve", BALUPI_HOST="127.0.0.1", BALUPI_PORT=str(port))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("balupi:")]
    assert error_lines == [
        f"balupi: configuration error: BALUPI_HOST/BALUPI_PORT: port {port} is already in use on 127.0.0.1 (another "
        f"BaluPi, or another program: `ss -ltnp 'sport = :{port}'` shows which); stop it or set BALUPI_PORT to another port"
    ]


def test_serve_with_an_unwritable_data_directory_exits_with_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_balupi(tmp_path, "serve", BALUPI_DATA_DIR=str(blocker / "data"))
    assert_one_line_error(result, "BALUPI_DATA_DIR", "Not a directory")


# -- embedded defaults ---------------------------------------------------------------------------


def test_serve_with_no_configuration_answers_health_status_and_webdav(serve, tmp_path):
    served = serve()
    health = served.http.get(served.url + "/api/health").json()
    assert health["status"] == "ok" and health["service"] == "balupi"
    assert {"version", "cache_enabled", "energy_enabled", "nas"} <= set(health)
    assert health["nas"]["configured"] is False
    assert health["nas"]["state"] == "unconfigured"
    assert "no NAS configured" in health["nas"]["message"]
    assert "no NAS configured" in served.log  # said in the log too

    status = served.http.get(served.url + "/api/system/status").json()
    assert SYSTEM_STATUS_FIELDS <= set(status)
    assert len(status["load_avg"]) == 3

    listing = served.http.request("PROPFIND", served.url + "/dav/", headers={"Depth": "1"})
    assert listing.status_code == 207
    hrefs = [e.text for e in ElementTree.fromstring(listing.content).iter("{DAV:}href")]
    assert hrefs == ["/dav/"]  # an empty tree, at the mount path

    data_dir = tmp_path / "xdg-data" / "balupi"  # the per-user data directory
    assert (data_dir / "balupi.db").is_file()
    assert (data_dir / "cache").is_dir()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_shuts_down_cleanly_on_signal(serve, tmp_path, signum):
    served = serve()
    assert served.http.put(served.url + "/dav/note.txt", data=b"kept").status_code in (201, 204)
    assert served.stop(signum) == 0
    log = served.log
    assert f"received {signal.Signals(signum).name}" in log
    assert "shutting down" in log
    assert log.rstrip().endswith("BaluPi stopped")
    assert "Traceback" not in log
    db = tmp_path / "xdg-data" / "balupi" / "balupi.db"
    assert not Path(str(db) + "-wal").exists()  # every connection closed: WAL checkpointed and removed
    with pytest.raises(requests.ConnectionError):
        served.http.get(served.url + "/api/health", timeout=5)


def test_secrets_never_reach_the_log(serve):
    secret = "pl4in-hunter2-secret"
    served = serve(BALUPI_LOG_LEVEL="DEBUG", BALUPI_TAPO_PASSWORD=secret, BALUPI_NAS_PASSWORD=secret)
    served.http.get(served.url + "/api/health")
    assert served.stop(signal.SIGTERM) == 0
    assert "BaluPi stopped" in served.log
    assert secret not in served.log


def test_config_show_reports_where_each_setting_came_from(tmp_path):
    result = run_balupi(tmp_path, "config", BALUPI_PORT="8123")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^port +\= 8123  \(environment\)$", result.stdout, re.MULTILINE)  # aligned on the =
    assert re.search(r"^host +\= '0.0.0.0'  \(default\)$", result.stdout, re.MULTILINE)


def test_version(tmp_path):
    from balupi import __version__

    result = run_balupi(tmp_path, "--version")
    assert result.stdout.strip() == f"balupi {__version__}"
