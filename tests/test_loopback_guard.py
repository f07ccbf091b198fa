"""The loopback-only guard of the test suite refuses and records every other address.

192.0.2.1 is TEST-NET-1 (RFC 5737), reserved for documentation: even if the guard failed, nothing
real would be reached.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests import loopback
from tests.helpers import subprocess_env

OUTSIDE = "192.0.2.1"


def test_tcp_connect_outside_loopback_is_refused_and_recorded():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(loopback.NonLoopbackAddress):
            sock.connect((OUTSIDE, 9))
    assert loopback.take_violations() == [f"connect to non-loopback address ('{OUTSIDE}', 9)"]


def test_udp_sendto_broadcast_is_refused_and_recorded():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(PermissionError):
            sock.sendto(b"x", ("255.255.255.255", 9))
    assert len(loopback.take_violations()) == 1


def test_multicast_is_refused_unless_its_interface_is_loopback():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(loopback.NonLoopbackAddress):
            sock.sendto(b"x", ("224.0.0.251", 5353))  # the default interface may be any
        assert len(loopback.take_violations()) == 1
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        sock.sendto(b"x", ("224.0.0.251", 5353))  # out on lo only (mDNS tests)
    assert loopback.take_violations() == []


def test_create_connection_to_a_host_name_is_refused_before_resolving():
    with pytest.raises(loopback.NonLoopbackAddress):
        socket.create_connection(("nas.example.invalid", 80), timeout=1)
    assert len(loopback.take_violations()) == 1


def test_a_swallowed_refusal_is_still_recorded():
    try:
        socket.create_connection((OUTSIDE, 80), timeout=1)
    except OSError:
        pass  # what a NAS probe does with a failed connect
    assert loopback.take_violations(), "the conftest fixture would fail this test"


def test_loopback_addresses_are_allowed():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        with socket.create_connection(("localhost", port), timeout=2):
            pass
    assert loopback.is_loopback("127.8.9.10")
    assert loopback.is_loopback("::1")
    assert loopback.is_loopback("::ffff:127.0.0.1")
    assert loopback.is_loopback("0.0.0.0")  # "this host"
    assert not loopback.is_loopback("10.0.0.1")
    assert not loopback.is_loopback("192.168.178.53")
    assert loopback.take_violations() == []


def test_the_guard_also_runs_in_subprocesses(tmp_path):
    code = f"import socket; socket.socket().connect(('{OUTSIDE}', 9))"
    result = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert f"LOOPBACK GUARD: refused connect to non-loopback address ('{OUTSIDE}', 9)" in result.stderr
