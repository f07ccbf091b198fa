"""The in-process server: start and stop, and what shutdown does to work in flight."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from balupi.db import IDLE_CONNECTIONS
from balupi.errors import NasUnavailable
from balupi.nas.monitor import NasState
from tests.helpers import free_port

WAIT_S = 30.0  # only a bound for a hang


@pytest.fixture
def sleeping_nas_settings(settings_factory):
    """A NAS on a loopback port where nothing listens: it never wakes."""
    return settings_factory(
        nas_webdav_url=f"http://127.0.0.1:{free_port()}/",
        nas_mac_address="02:00:00:00:00:01",
        nas_probe_enabled=False,
        nas_wake_timeout_s=WAIT_S * 4,
    )


def test_shutdown_releases_a_request_waiting_for_the_nas_to_wake(running_server, sleeping_nas_settings):
    server = running_server(sleeping_nas_settings)
    outcome: dict = {}

    def wait_for_nas():
        try:
            server.app.nas.ensure_awake(reason="GET /dav/film.mkv")
            outcome["woke"] = True
        except NasUnavailable as exc:
            outcome["error"] = exc

    waiter = threading.Thread(target=wait_for_nas)
    waiter.start()
    deadline = time.monotonic() + WAIT_S
    while server.app.nas.state is not NasState.WAKING:
        assert time.monotonic() < deadline, "the wake never started"
        time.sleep(0.01)
    server.stop()
    waiter.join(WAIT_S)  # far less than its own deadline (nas_wake_timeout_s)
    assert not waiter.is_alive()
    assert str(outcome["error"]) == "BaluPi is shutting down"
    assert outcome["error"].retry_after_s > 0
    with pytest.raises(NasUnavailable, match="shutting down"):
        server.app.nas.ensure_awake()  # and nobody starts a new wait


def test_stopped_server_refuses_connections(running_server):
    server = running_server()
    host, port = "127.0.0.1", server.port
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=5).close()


def test_stop_twice_is_harmless(running_server):
    server = running_server()
    server.stop()
    server.stop()
    assert server.app.db._closed


def test_a_worker_hands_its_database_connection_back_when_it_is_done_with_a_client(running_server):
    server = running_server()
    db = server.app.db

    def workers_holding_one() -> list[str]:
        with db._conns._lock:
            threads = [thread for thread, _ in db._conns._items.values()]
        return [t.name for t in threads if t in server.httpd.requests._threads]

    for _ in range(8):  # each on its own connection, so on whichever worker is free
        with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as sock:
            sock.sendall(b"PROPFIND /dav/ HTTP/1.1\r\nHost: 127.0.0.1\r\nDepth: 1\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 207"), answer[:200]
    deadline = time.monotonic() + WAIT_S
    while workers_holding_one():  # the worker hands it back as it finishes the connection
        assert time.monotonic() < deadline, workers_holding_one()
        time.sleep(0.01)
    assert db.open_connections() - len(db._conns) <= IDLE_CONNECTIONS  # the rest of those handed back are closed


def test_a_request_waiting_for_the_nas_to_wake_holds_no_database_connection(running_server, sleeping_nas_settings):
    server = running_server(sleeping_nas_settings)
    db, waiting = server.app.db, {}

    def wait_for_nas():
        db.query("SELECT 1")  # as a request that looked in the index first
        waiting["thread"] = threading.current_thread()
        try:
            server.app.nas.ensure_awake(reason="GET /dav/film.mkv")
        except NasUnavailable:
            pass

    def holding() -> bool:
        with db._conns._lock:
            return any(thread is waiting.get("thread") for thread, _ in db._conns._items.values())

    waiter = threading.Thread(target=wait_for_nas)
    waiter.start()
    deadline = time.monotonic() + WAIT_S
    while server.app.nas.state is not NasState.WAKING or holding():
        assert time.monotonic() < deadline, ("still holding its connection", server.app.nas.state)
        time.sleep(0.01)
    assert waiter.is_alive()  # still waiting, without a connection
    server.stop()
    waiter.join(WAIT_S)
