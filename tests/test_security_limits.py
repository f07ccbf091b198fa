"""Issue 6, point 8: request limits. The request head has a size limit and a deadline (a client that
trickles its headers is cut off, so slow clients cannot hold threads); one client address may have
only so many requests in progress, so it cannot take every thread; the server keeps serving others.
"""

from __future__ import annotations

import select
import socket
import time

import pytest

from tests.authkit import from_address, raw_request, status_of

WAIT_S = 20.0  # only a bound for a hang


def test_a_request_line_over_the_limit_is_414(running_server, settings_factory):
    server = running_server(settings_factory(http_max_header_kib=8))
    reply = raw_request(server.port, b"GET /api/health?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status_of(reply) == 414


def test_headers_over_the_limit_are_413(running_server, settings_factory):
    server = running_server(settings_factory(http_max_header_kib=8))
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"b" * 100) for i in range(100))
    reply = raw_request(server.port, b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")
    assert status_of(reply) == 413


def test_a_client_that_trickles_its_headers_is_cut_off_at_the_deadline(running_server, settings_factory, http):
    server = running_server(settings_factory(http_header_timeout_s=1))
    closed = False
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        deadline = time.monotonic() + WAIT_S
        n = 0
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0.25)  # each byte well within the socket timeout
            if readable:  # the server closed the connection (perhaps after an error answer)
                closed = True
                break
            try:
                sock.sendall(b"X-Slow-%d: 1\r\n" % n)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            n += 1
    assert closed
    assert server.limits.watchdog.cut >= 1
    assert http.get(server.url + "/api/health").status_code == 200


def test_a_client_that_sends_its_headers_in_time_is_served(running_server, settings_factory):
    server = running_server(settings_factory(http_header_timeout_s=5))
    reply = raw_request(server.port, b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 200 and server.limits.watchdog.cut == 0


@pytest.fixture
def capped(running_server, settings_factory):
    return running_server(settings_factory(server_threads=8, http_max_requests_per_client=2))


def hold_put(port: int, n: int) -> socket.socket:
    """A PUT whose body never finishes: a request in progress, holding a worker thread."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    sock.sendall(f"PUT /dav/held-{n}.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n".encode() + b"x" * 10)
    return sock


def wait_in_progress(server, address: str, count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while server.limits.clients.in_progress(address) != count:
        assert time.monotonic() < deadline, server.limits.clients.in_progress(address)
        time.sleep(0.02)


def test_one_client_cannot_take_more_than_its_share_of_threads(capped, http):
    held = [hold_put(capped.port, n) for n in range(2)]
    try:
        wait_in_progress(capped, "127.0.0.1", 2)

        refused = http.get(capped.url + "/api/health")
        other_client = from_address("127.0.0.2", "GET", capped.url + "/api/health")

        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert other_client.status == 200
        assert capped.limits.clients.refused >= 1
    finally:
        for sock in held:
            sock.close()
    wait_in_progress(capped, "127.0.0.1", 0)
    assert http.get(capped.url + "/api/health").status_code == 200


def test_the_cap_scales_down_with_fewer_threads_unless_set(settings_factory):
    assert settings_factory(server_threads=8).http_max_requests_per_client == 6
    assert settings_factory().http_max_requests_per_client == 24
