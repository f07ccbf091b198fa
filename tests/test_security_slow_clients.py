"""Issue 16, finding 4: slow clients from many addresses cannot starve the worker threads.

Against the real stack (the simulated NAS, a cached file): 8 addresses with 10 connections each that
trickle their request heads (half of them after a complete first request on the same connection,
the keep-alive path) leave every worker free, and a third client's GETs answer at once. A head that
arrives in pieces is still served; connections still sending their head are capped per address.
"""

from __future__ import annotations

import socket
import threading
import time

from balupi.limits import PENDING_HEADS_PER_ADDRESS
from tests.authkit import from_address
from tests.davkit import listing, stack_with
from tests.stack import stack_factory  # noqa: F401

WAIT_S = 20.0  # only a bound for a hang
PROMPT_S = 2.0  # "promptly": well under the head deadline a worker would otherwise be held for
CONTENT = b"cached bytes " * 1000


def cached_stack(stack_factory, tmp_path):
    stack = stack_with(stack_factory, tmp_path, {"/hot.txt": CONTENT}, http_header_timeout_s=15)
    listing(stack, "/")
    assert stack.http.get(stack.url("/hot.txt")).content == CONTENT  # now cached
    return stack


def connection(port: int, address: str, first_request_whole: bool, auth_header: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((address, 0))
    sock.settimeout(WAIT_S)
    sock.connect(("127.0.0.1", port))
    if first_request_whole:  # a whole request first: the slow head then comes on a keep-alive connection
        sock.sendall(f"GET /dav/hot.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth_header}\r\n\r\n".encode())
        reply = b""
        while not reply.endswith(CONTENT):
            reply += sock.recv(65536)
    return sock


def start_head(sock: socket.socket) -> socket.socket:
    sock.sendall(b"GET /dav/hot.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never the blank line that ends it
    return sock


def slow_connection(port: int, address: str, auth_header: str) -> socket.socket:
    return start_head(connection(port, address, False, auth_header))


def test_eighty_slow_connections_from_eight_addresses_leave_a_third_client_promptly_served(stack_factory, tmp_path):
    stack = cached_stack(stack_factory, tmp_path)
    assert stack.app.settings.server_threads == 32  # fewer than the 80 slow connections
    # the keep-alive ones first: opening a fresh connection takes a worker on cheroot as it comes
    slow = [connection(stack.server.port, f"127.0.0.{10 + a}", whole, stack.auth_header)
            for whole in (True, False) for a in range(8) for n in range(5)]
    for sock in slow:
        start_head(sock)
    stop = threading.Event()

    def trickle() -> None:  # one more header line per connection every 0.5 s, never the blank line
        n = 0
        while not stop.wait(0.5):
            n += 1
            for sock in slow:
                try:
                    sock.sendall(b"X-Slow-%d: 1\r\n" % n)
                except OSError:
                    pass

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        time.sleep(1.0)  # every slow connection has bytes waiting: cheroot would give each a worker
        took = []
        for _ in range(4):
            started = time.monotonic()
            answer = from_address("127.0.0.3", "GET", stack.url("/hot.txt"), auth=stack.auth)
            took.append(time.monotonic() - started)
            assert answer.status == 200 and answer.data == CONTENT
        assert max(took) < PROMPT_S, took
        assert stack.server.limits.heads.pending() >= 70  # they wait in the selector, not on workers
    finally:
        stop.set()
        trickler.join(5)
        for sock in slow:
            sock.close()


def test_a_head_that_arrives_in_pieces_is_served(stack_factory, tmp_path):
    stack = cached_stack(stack_factory, tmp_path)
    head = f"GET /dav/hot.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n{stack.auth_header}\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", stack.server.port), timeout=WAIT_S) as sock:
        for i in range(0, len(head), 7):
            sock.sendall(head[i:i + 7])
            time.sleep(0.02)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(CONTENT)
    assert stack.server.limits.heads.pending() == 0


def test_connections_still_sending_their_head_are_capped_per_address(stack_factory, tmp_path):
    stack = cached_stack(stack_factory, tmp_path)
    port = stack.server.port
    held = [slow_connection(port, "127.0.0.5", stack.auth_header) for _ in range(PENDING_HEADS_PER_ADDRESS)]
    try:
        deadline = time.monotonic() + WAIT_S
        while stack.server.limits.heads.pending("127.0.0.5") < PENDING_HEADS_PER_ADDRESS:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        one_more = slow_connection(port, "127.0.0.5", stack.auth_header)
        with one_more:
            assert one_more.recv(1024) == b""  # closed at once, without an answer
        assert stack.server.limits.heads.refused >= 1
        answer = from_address("127.0.0.6", "GET", stack.url("/hot.txt"), auth=stack.auth)
        assert answer.status == 200  # another address is not affected
    finally:
        for sock in held:
            sock.close()
