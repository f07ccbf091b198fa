"""Issue 15, item 4: errors that name the real cause. A login the Pi cannot check while the NAS
sleeps wakes it (503 "checking your password with the NAS, which is waking up" when the wake
outlasts the wait, never 401); an untrusted certificate, a refused connection and a NAS that answers
nothing are three different states, logged and shown in /api/health; a port already in use is named
before the database is touched; a plug reading during a boot and a failed request do not flip the
state back and forth."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from balupi.events import Event
from balupi.nas.monitor import NasState
from balupi.nas.tls import format_fingerprint
from balupi.nas.wol import parse_mac, send_magic_packet
from balupi.sim.nas import DEFAULT_MAC, PowerState
from tests.authkit import BOB, BOB_PASSWORD, api, cert_sha256, dav, multi_user_stack, self_signed_cert
from tests.helpers import free_port, subprocess_env
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401


def health(server) -> dict:
    with requests.Session() as s:
        s.trust_env = False
        return s.get(server.url + "/api/health", timeout=30).json()["nas"]


def test_the_first_login_with_the_nas_asleep_wakes_it_and_succeeds(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path)
    stack.suspend_nas()  # bob has never logged in: nothing on the Pi can check his password

    response = api(stack, "POST", "/auth/login", json={"username": BOB, "password": BOB_PASSWORD})

    assert response.status_code == 200, response.text
    assert response.json()["user"]["username"] == BOB
    assert stack.nas.magic_packet_count >= 1
    assert stack.nas.state is PowerState.AWAKE


def test_a_login_whose_wake_outlasts_the_wait_answers_503_not_401(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path, nas_wake_timeout_s=1, nas_boot_time_s=4)
    stack.nas.configure(boot_delay_s=4.0)
    stack.suspend_nas()

    response = api(stack, "POST", "/auth/login", json={"username": BOB, "password": BOB_PASSWORD})
    share = dav(stack, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"})

    assert response.status_code == 503, response.text
    assert response.json()["detail"] == "checking your password with the NAS, which is waking up"
    assert int(response.headers["Retry-After"]) >= 1
    assert share.status_code == 503 and "which is waking up" in share.text and share.headers["Retry-After"]
    assert stack.nas.wait_for_state(PowerState.AWAKE, 10)
    assert api(stack, "POST", "/auth/login", json={"username": BOB, "password": BOB_PASSWORD}).status_code == 200


@pytest.fixture
def nas_cert(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path / "nas-tls", name="nas")


def test_an_untrusted_nas_certificate_is_named_in_the_login_answer_the_log_and_health(stack_factory, nas_cert,
                                                                                     caplog):
    fingerprint = format_fingerprint(cert_sha256(nas_cert[0]))
    with caplog.at_level(logging.INFO, logger="balupi"):
        stack = stack_factory(nas_kwargs={"tls": nas_cert})  # no CA file, no pin: not trusted
        assert stack.app.settings.nas_webdav_url.startswith("https://")

        response = api(stack, "POST", "/auth/login", json={"username": NAS_USER, "password": NAS_PASSWORD})

    expected = f"certificate not trusted (fingerprint {fingerprint})"
    assert response.status_code == 503, response.text
    assert expected in response.json()["detail"]
    assert any(expected in r.getMessage() and r.levelno >= logging.ERROR for r in caplog.records)
    nas = health(stack.server)
    assert nas["state"] == "unreachable" and nas["state_words"].startswith(f"unreachable: {expected}")
    assert stack.app.nas.status()["state_words"].startswith(f"unreachable: {expected}")


def test_the_same_nas_logs_in_once_its_fingerprint_is_pinned(stack_factory, nas_cert):
    stack = stack_factory(nas_kwargs={"tls": nas_cert}, nas_cert_sha256=cert_sha256(nas_cert[0]))

    response = api(stack, "POST", "/auth/login", json={"username": NAS_USER, "password": NAS_PASSWORD})

    assert response.status_code == 200, response.text
    assert health(stack.server)["state"] == "awake"


def test_a_refused_connection_is_unreachable_not_asleep(settings_factory, running_server, caplog):
    port = free_port()  # nothing listens: a mistyped address
    with caplog.at_level(logging.INFO, logger="balupi"):
        server = running_server(settings_factory(nas_webdav_url=f"http://127.0.0.1:{port}/", nas_probe_interval_s=3600))
        deadline = time.monotonic() + 10
        while server.app.nas.state is NasState.UNKNOWN and time.monotonic() < deadline:
            time.sleep(0.05)  # the first probe runs on the scheduler's thread

        assert health(server)["state_words"] == "unreachable: connection refused"
        while time.monotonic() < deadline and not any("unreachable: connection refused" in r.getMessage()
                                                      for r in caplog.records):
            time.sleep(0.05)  # the state is set just before its line is logged
    assert any("unreachable: connection refused" in r.getMessage() and r.levelno >= logging.ERROR
               for r in caplog.records)


def test_a_nas_that_answers_nothing_is_asleep(settings_factory, running_server):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    port = silent.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=5)  # the backlog is full: SYNs are dropped
    try:
        server = running_server(settings_factory(nas_webdav_url=f"http://127.0.0.1:{port}/", nas_connect_timeout_s=0.3,
                                                 nas_probe_interval_s=3600))
        deadline = time.monotonic() + 10
        while server.app.nas.state is NasState.UNKNOWN and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health(server)["state_words"] == "asleep"
        assert "no answer" in server.app.nas.transitions()[-1].cause
    finally:
        filler.close()
        silent.close()


def test_a_plug_reading_during_the_boot_and_a_failed_request_do_not_flip_the_state(stack_factory):
    stack = stack_factory(nas_boot_time_s=2)
    stack.nas.configure(boot_delay_s=1.5)
    stack.suspend_nas()
    monitor = stack.app.nas
    assert monitor.state is NasState.ASLEEP
    send_magic_packet(parse_mac(DEFAULT_MAC), "127.0.0.1", stack.nas.wol_port)  # another device wakes it
    assert stack.nas.wait_for_state(PowerState.BOOTING)  # it boots; its port is still closed

    stack.app.events.emit(Event.NAS_POWER_READING, power_w=40.0, power_state="active", at=time.time())
    assert monitor.state is NasState.WAKING
    monitor.note_unreachable("ConnectionError")  # a request made during the boot fails
    assert monitor.state is NasState.WAKING
    deadline = time.monotonic() + 10
    while monitor.state is not NasState.AWAKE and time.monotonic() < deadline:
        time.sleep(0.05)

    states = [t.to_state for t in monitor.transitions()]
    assert states[-3:] == [NasState.ASLEEP, NasState.WAKING, NasState.AWAKE]
    assert monitor.wakes_sent == 0 and monitor.wakes == 0  # watching a boot sends no packets, counts no wake


def test_a_port_already_in_use_is_named_before_the_database_is_opened(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        data_dir = tmp_path / "data"
        result = subprocess.run(
            [sys.executable, "-m", "balupi", "serve"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
            env=subprocess_env(tmp_path, BALUPI_HOST="127.0.0.1", BALUPI_PORT=str(port), BALUPI_DATA_DIR=str(data_dir)),
        )

    assert result.returncode == 2, result.stderr
    assert f"port {port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (data_dir / "balupi.db").exists()  # no migrations ran
