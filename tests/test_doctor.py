"""Issue 15, item 2: `balupi doctor` finds each broken thing it claims to check. A healthy install
(the simulated NAS and plug on 127.0.0.1, a running BaluPi) passes every check; each test below
breaks exactly one thing and asserts that exactly that check fails, with its fix."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from balupi.doctor import Verdict, run_checks
from balupi.energy.model import PlugRole
from balupi.nas.tls import format_fingerprint
from balupi.sim.nas import DEFAULT_MAC
from balupi.sim.plug import SimulatedPlug
from tests.authkit import cert_sha256, self_signed_cert
from tests.helpers import free_port, subprocess_env
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

TAPO_USER, TAPO_PASSWORD = "doctor@example.com", "plug-pw"


class Install:
    """A healthy install: its settings file, and the parts it points at."""

    def __init__(self, tmp_path: Path, stack, plug: SimulatedPlug):
        self.tmp_path, self.stack, self.plug = tmp_path, stack, plug
        s = stack.app.settings
        self.config: dict[str, Any] = {
            "host": "127.0.0.1", "port": stack.server.port, "data_dir": str(s.data_dir), "cache_dir": str(s.cache_dir),
            "nas_webdav_url": s.nas_webdav_url, "nas_url": s.nas_url, "nas_username": NAS_USER,
            "nas_password": NAS_PASSWORD, "nas_mac_address": DEFAULT_MAC, "wol_address": "127.0.0.1",
            "wol_port": s.wol_port, "tapo_username": TAPO_USER, "tapo_password": TAPO_PASSWORD,
            "tapo_discovery_target": "127.0.0.1", "cache_min_free_gb": 0.001, "energy_poll_timeout_s": 5.0,
        }

    def write(self, **changes: Any) -> Path:
        path = self.tmp_path / "balupi.toml"
        lines = [f"{k} = {json.dumps(v)}" for k, v in {**self.config, **changes}.items() if v is not None]
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    def doctor(self, **changes: Any) -> dict[str, list]:
        checks = run_checks(env={"BALUPI_CONFIG": str(self.write(**changes))}, cwd=self.tmp_path)
        found: dict[str, list] = {}
        for c in checks:
            found.setdefault(c.name, []).append(c)
        return found


def verdicts(found: dict[str, list]) -> dict[str, set[Verdict]]:
    return {name: {c.verdict for c in checks} for name, checks in found.items()}


def failing(found: dict[str, list]) -> set[str]:
    return {name for name, checks in found.items() if any(c.verdict is Verdict.FAIL for c in checks)}


@pytest.fixture
def install(stack_factory, tmp_path):
    plug = SimulatedPlug(username=TAPO_USER, password=TAPO_PASSWORD, power_w=30.0).start()
    stack = stack_factory(tapo_username=TAPO_USER, tapo_password=TAPO_PASSWORD)
    stack.app.energy.add_plug("127.0.0.1", plug.port, "NAS", PlugRole.NAS)
    yield Install(tmp_path, stack, plug)
    plug.stop()


def test_a_healthy_install_passes_every_check(install):
    found = install.doctor()
    assert failing(found) == set(), {n: [c.message for c in cs] for n, cs in found.items()}
    assert set(found) == {"config", "data_dir", "cache_dir", "disk_space", "nas_tcp", "nas_tls", "nas_http", "nas_login",
                          "wake_on_lan", "plugs", "clock", "service"}
    assert verdicts(found)["plugs"] == {Verdict.OK} and "logged in" in found["plugs"][0].message
    assert "on " in found["cache_dir"][0].message  # which device
    assert found["nas_tls"][0].verdict is Verdict.SKIP  # plain http


def test_a_bad_setting_fails_the_config_check(install):
    found = install.doctor(nas_mac="aa:bb:cc:dd:ee:ff")
    assert failing(found) == {"config"}
    assert "did you mean 'nas_mac_address'" in found["config"][0].message


def test_a_data_dir_that_cannot_be_written_fails(install, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    found = install.doctor(data_dir=str(blocker / "data"))
    assert "data_dir" in failing(found)
    assert failing(found) <= {"data_dir", "plugs"}  # (no database there: the plugs are not known)
    assert found["data_dir"][0].fix


def test_a_cache_dir_that_cannot_be_written_fails(install, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    found = install.doctor(cache_dir=str(blocker / "cache"))
    assert "cache_dir" in failing(found) and failing(found) <= {"cache_dir", "disk_space"}


def test_too_little_disk_space_fails(install):
    found = install.doctor(cache_min_free_gb=10_000_000)
    assert failing(found) == {"disk_space"}


def test_a_nas_address_that_refuses_fails_the_tcp_check(install):
    found = install.doctor(nas_webdav_url=f"http://127.0.0.1:{free_port()}/webdav/")
    assert failing(found) == {"nas_tcp"}
    assert "refuses connections" in found["nas_tcp"][0].message
    assert verdicts(found)["nas_login"] == {Verdict.SKIP}


def test_an_untrusted_nas_certificate_fails_the_tls_check_with_its_fingerprint(stack_factory, tmp_path):
    cert = self_signed_cert(tmp_path / "tls", name="nas")
    stack = stack_factory(nas_kwargs={"tls": cert})
    install = Install(tmp_path, stack, plug=None)
    install.config.update(tapo_username="", tapo_password="")
    found = install.doctor()
    fingerprint = format_fingerprint(cert_sha256(cert[0]))
    assert failing(found) == {"nas_tls"}
    assert f"certificate not trusted (fingerprint {fingerprint})" in found["nas_tls"][0].message
    assert f'nas_cert_sha256 = "{fingerprint}"' in found["nas_tls"][0].fix
    pinned = install.doctor(nas_cert_sha256=fingerprint)
    assert failing(pinned) == set() and verdicts(pinned)["nas_tls"] == {Verdict.OK}


def test_a_port_that_does_not_speak_http_fails_the_http_check(install):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:  # answers every connection with something that is not HTTP
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        found = install.doctor(nas_webdav_url=f"http://127.0.0.1:{server.getsockname()[1]}/webdav/")
    finally:
        stop.set()
        thread.join(2)
        server.close()
    assert failing(found) == {"nas_http"}


def test_a_wrong_nas_password_fails_the_login_check(install):
    found = install.doctor(nas_password="not-the-password")
    assert failing(found) == {"nas_login"}
    assert NAS_USER in found["nas_login"][0].message


def test_no_mac_address_fails_the_wake_on_lan_check(install):
    found = install.doctor(nas_mac_address="")
    assert failing(found) == {"wake_on_lan"}


def test_a_wrong_tapo_password_fails_the_plug_check(install):
    found = install.doctor(tapo_password="wrong")
    assert failing(found) == {"plugs"}
    assert "authentication" in found["plugs"][0].message


def test_a_plug_without_power_fails_the_plug_check(install):
    install.plug.stop()
    found = install.doctor()
    assert failing(found) == {"plugs"}


def test_a_clock_behind_the_database_fails_the_clock_check(install):
    # The clock itself cannot be turned back in a test; a record stored "in the future" is the
    # same finding: the clock is behind what BaluPi already wrote.
    with install.stack.app.db.write() as d:
        d.execute("INSERT INTO nas_transitions (at, from_state, to_state, cause) VALUES (?, 'awake', 'awake', 'test')",
                  (time.time() + 86400,))
    found = install.doctor()
    assert failing(found) == {"clock"}
    assert "behind" in found["clock"][0].message


def test_a_stopped_service_fails_the_service_check(install):
    install.stack.server.stop()
    found = install.doctor()
    assert failing(found) == {"service"}


def test_the_command_exits_non_zero_and_speaks_json(install):
    path = install.write(nas_mac_address="")
    env = subprocess_env(install.tmp_path, BALUPI_CONFIG=str(path))
    human = subprocess.run([sys.executable, "-m", "balupi", "doctor"], env=env, capture_output=True, text=True,
                           timeout=120, cwd=install.tmp_path)
    as_json = subprocess.run([sys.executable, "-m", "balupi", "doctor", "--json"], env=env, capture_output=True,
                             text=True, timeout=120, cwd=install.tmp_path)
    assert human.returncode == 1 and as_json.returncode == 1, human.stderr
    line = next(line for line in human.stdout.splitlines() if "wake_on_lan" in line)
    assert line.startswith("FAIL") and "Fix: set nas_mac_address" in line
    body = json.loads(as_json.stdout)
    assert body["ok"] is False
    assert [c["verdict"] for c in body["checks"] if c["check"] == "wake_on_lan"] == ["fail"]
