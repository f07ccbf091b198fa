"""Shared fixtures: settings in a temporary directory, a running server, and the loopback-only guard.

- `settings_factory(**overrides)`: Settings with data and cache in tmp_path, listening on
  127.0.0.1 port 0, magic packets aimed at a free UDP port on 127.0.0.1 and plug discovery at
  127.0.0.1 (never a broadcast address),
  and no NAS configured unless a test configures one (so nothing goes to the default NAS URL).
- `running_server(settings=None)`: starts BaluPi behind cheroot on 127.0.0.1:<free port> and
  returns the `Server` (`.url`, `.app`); every server started is stopped after the test.
- `http`: a requests session that ignores proxy variables of the environment.
- The loopback guard (tests/loopback.py): a test that opens a socket to anything but
  127.0.0.0/8, ::1 or localhost fails, even if the code under test swallowed the refusal.

Helpers that are not fixtures (`free_port`, `subprocess_env`) live in tests/helpers.py.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from balupi import settings as settings_module
from balupi.settings import Settings, load_settings
from tests import loopback
from tests.helpers import free_port


def pytest_configure(config: pytest.Config) -> None:
    loopback.install()


@pytest.fixture(autouse=True)
def loopback_only() -> Any:
    """Fail the test if anything in it tried to reach a non-loopback address."""
    loopback.take_violations()  # a previous test's stray thread is not this test's fault
    yield
    found = loopback.take_violations()
    if found:
        pytest.fail("the test tried to leave loopback: " + "; ".join(found), pytrace=False)


@pytest.fixture(autouse=True)
def no_system_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A /etc/balupi/balupi.toml on the test machine must not change any test's settings."""
    monkeypatch.setattr(settings_module, "SYSTEM_CONFIG_FILE", Path(os.devnull) / "balupi.toml")


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    wol_port = free_port(socket.SOCK_DGRAM)

    def make(**overrides: Any) -> Settings:
        raw: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "cache_dir": tmp_path / "cache",
            "host": "127.0.0.1",
            "port": 0,
            "wol_address": "127.0.0.1",
            "wol_port": wol_port,
            "tapo_discovery_target": "127.0.0.1",  # plug discovery: no broadcast either
            "dnssd_enabled": False,  # (tests/test_dnssd.py turns it on, on loopback)
        }
        raw.update(overrides)
        raw = {name: str(value) if isinstance(value, Path) else value for name, value in raw.items()}
        return load_settings(env={}, cwd=tmp_path, overrides=raw)

    return make


@pytest.fixture
def running_server(settings_factory: Callable[..., Settings]) -> Any:
    from balupi.app import BaluPi
    from balupi.server import Server

    started: list[Server] = []

    def start(settings: Settings | None = None) -> Server:
        server = Server(BaluPi(settings or settings_factory()))
        server.httpd.expiration_interval = 0.05  # cheroot's stop() waits up to one interval (0.5 s)
        started.append(server)
        server.start()
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def http() -> Any:
    with requests.Session() as session:
        session.trust_env = False  # no HTTP(S)_PROXY detours, even for 127.0.0.1
        yield session
