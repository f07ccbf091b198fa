"""Issue 15, item 7: systemd's notify protocol with a fake NOTIFY_SOCKET (an abstract unix datagram
socket the test binds): READY=1 once BaluPi accepts connections, WATCHDOG=1 pings only while the
HTTP server accepts and the scheduler runs, STOPPING=1 at shutdown."""

from __future__ import annotations

import os
import socket
import time

import pytest
import requests

WATCHDOG_USEC = 400_000  # WatchdogSec=0.4: a ping every 0.2 s


@pytest.fixture
def notify_socket(monkeypatch):
    name = f"balupi-test-notify-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(0.1)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def messages(sock: socket.socket, seconds: float) -> list[str]:
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got += sock.recv(4096).decode().split("\n")
        except socket.timeout:
            pass
    return got


def test_ready_then_watchdog_pings_while_healthy_then_stopping(notify_socket, running_server):
    server = running_server()
    first = messages(notify_socket, 1.5)
    assert first[0] == "READY=1" and first[1].startswith("STATUS=listening on 127.0.0.1:")
    with requests.Session() as s:  # READY came after the port listens
        s.trust_env = False
        assert s.get(server.url + "/api/health", timeout=10).status_code == 200
    assert first.count("WATCHDOG=1") >= 3  # about every 0.2 s
    server.stop()
    assert "STOPPING=1" in messages(notify_socket, 0.5)


def test_no_watchdog_ping_once_the_scheduler_stops(notify_socket, running_server):
    server = running_server()
    assert "WATCHDOG=1" in messages(notify_socket, 1.0)
    server.app.scheduler.stop(5)
    messages(notify_socket, 2.0)  # the heartbeat goes stale within 3 beats and a second
    assert "WATCHDOG=1" not in messages(notify_socket, 1.5)
    assert server.watchdog.skipped > 0


def test_no_watchdog_ping_once_the_http_server_stops_accepting(notify_socket, running_server):
    server = running_server()
    assert "WATCHDOG=1" in messages(notify_socket, 1.0)
    server.httpd.stop()
    messages(notify_socket, 0.5)
    assert "WATCHDOG=1" not in messages(notify_socket, 1.5)


def test_without_notify_socket_nothing_is_sent(monkeypatch, running_server):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    server = running_server()
    assert not server.notifier.enabled and not server.notifier.ready()
