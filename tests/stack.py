"""The whole system on loopback: a simulated NAS (real WebDAV server that sleeps and wakes on a
magic packet) and a BaluPi server configured against it.

Import the fixture into a test module: `from tests.stack import stack  # noqa: F401`.
"""

from __future__ import annotations

import base64
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from balupi.server import Server
from balupi.sim.nas import DEFAULT_MAC, PowerState, SimNas
from tests.helpers import free_port

NAS_USER, NAS_PASSWORD = "alice", "alice-pw"


@dataclass
class Stack:
    nas: SimNas
    server: Server
    http: requests.Session  # logged in as the NAS user alice (an admin: the shared view "")

    @property
    def dav(self) -> str:
        return self.server.url + "/dav"

    @property
    def app(self):
        return self.server.app

    def url(self, path: str) -> str:
        return self.dav + path

    @property
    def auth(self) -> tuple[str, str]:
        return NAS_USER, NAS_PASSWORD

    @property
    def auth_header(self) -> str:
        """`Authorization: Basic ...` of alice, for raw-socket requests."""
        return "Authorization: Basic " + base64.b64encode(f"{NAS_USER}:{NAS_PASSWORD}".encode()).decode()

    def wake_nas(self) -> None:
        """Boot the NAS and let BaluPi notice (which, like any wake, starts a sync run by itself)."""
        self.nas.wake_now()
        assert self.nas.wait_for_state(PowerState.AWAKE)
        self.app.nas.probe()
        assert self.app.nas.is_awake()

    def suspend_nas(self) -> None:
        """Put the NAS to sleep and let BaluPi learn it the way it would: a failed TCP probe.

        alice logs in first (as a household member would have, while the NAS was awake), so her
        offline login works while it sleeps."""
        assert self.http.get(self.server.url + "/api/auth/me").status_code == 200
        self.nas.suspend()
        assert self.nas.wait_for_state(PowerState.SUSPENDED)
        self.app.nas.probe()
        self.nas.reset_counters()


@pytest.fixture
def stack_factory(tmp_path: Path, settings_factory: Callable, running_server: Callable) -> Any:
    made: list[SimNas] = []

    def make(nas_kwargs: dict | None = None, **overrides: Any) -> Stack:
        nas_kwargs = dict(nas_kwargs or {})
        users = {NAS_USER: (NAS_PASSWORD, "admin"), **nas_kwargs.pop("users", {})}  # alice, plus any others
        nas = SimNas(tmp_path / "nas", users=users,
                     wol_port=free_port(socket.SOCK_DGRAM), control_port=None, boot_delay_s=0.3,
                     **nas_kwargs)
        nas.start()
        made.append(nas)
        settings = settings_factory(**{
            "nas_webdav_url": nas.dav_url,
            "nas_url": nas.base_url,
            "nas_username": NAS_USER,
            "nas_password": NAS_PASSWORD,
            "nas_mac_address": DEFAULT_MAC,
            "wol_port": nas.wol_port,
            "nas_wake_timeout_s": 5,
            "nas_boot_time_s": 1,
            "nas_ready_poll_s": 0.05,
            "nas_wol_resend_s": 1,
            "nas_probe_interval_s": 3600,
            **overrides,
        })
        server = running_server(settings)
        session = requests.Session()
        session.trust_env = False
        session.auth = (NAS_USER, NAS_PASSWORD)
        return Stack(nas, server, session)

    yield make
    for nas in made:
        nas.stop()


@pytest.fixture
def stack(stack_factory: Callable) -> Stack:
    return stack_factory()
