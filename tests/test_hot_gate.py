"""Issue 14, phase four: the workers under a CPU quota (`balupi.httpio`).

- `HotGate`: at most one worker computes a hot-path answer at a time; a request that starts
  waiting for the NAS gives its slot up, so a cached GET is never held behind a waking NAS
  (decisions 2, 42 and 210); a slot held by anything else is waited for at most `wait_s`.
- Fair turns: with more busy keep-alive connections than workers, a worker hands its connection
  back after each request while another connection is queued, so every connection is served in
  turn (decision 211).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from balupi import httpio
from balupi.httpio import HotGate, step_aside
from balupi.sim.nas_state import PowerState
from tests.davkit import awake_walk, index_row, listing, stack_with, wait_downloads_idle, wait_until
from tests.stack import stack_factory  # noqa: F401

CACHED = "/docs/cached.txt"
MISSED = "/docs/missed.bin"
BIG = "/docs/big.bin"
BIG_BODY = bytes(range(256)) * (64 * 1024)  # 16 MiB: far more than the socket buffers take
CACHED_BODY = b"cached content\n" * 200  # ASCII without "HTTP/1.1 ", so answers can be counted in a stream


# -- the gate itself ------------------------------------------------------------------------------


def test_a_slot_given_up_by_step_aside_is_free_for_another_worker_at_once():
    gate = HotGate(slots=1, wait_s=30)
    entered, stepped, done = threading.Event(), threading.Event(), threading.Event()

    def holder():
        gate.enter()
        entered.set()
        stepped.wait(10)
        step_aside()  # as NasWaiters.enter does before a request waits for the NAS
        done.wait(10)
        gate.leave()  # the request's end: gives back nothing, it holds no slot now

    thread = threading.Thread(target=holder)
    thread.start()
    assert entered.wait(10)
    assert not gate._free.acquire(blocking=False)  # the slot is held
    stepped.set()
    assert wait_until(lambda: gate._free.acquire(blocking=False), 10)  # and free once it stepped aside
    gate._free.release()
    done.set()
    thread.join(10)
    gate.enter()  # the holder's late leave() did not release a second time: one slot, one holder
    assert gate.bypassed == 0
    assert not gate._free.acquire(blocking=False)
    gate.leave()
    assert gate._free.acquire(blocking=False)


def test_a_slot_held_past_the_wait_is_bypassed_not_waited_for():
    gate = HotGate(slots=1, wait_s=0.05)
    held, release = threading.Event(), threading.Event()

    def stuck():  # e.g. a send to a client that stopped reading
        gate.enter()
        held.set()
        release.wait(10)
        gate.leave()

    thread = threading.Thread(target=stuck)
    thread.start()
    assert held.wait(10)
    gate.enter()  # returns after wait_s without a slot
    assert gate.bypassed == 1
    gate.leave()  # holds none: must not free the stuck holder's slot
    assert not gate._free.acquire(blocking=False)
    release.set()
    thread.join(10)
    assert gate._free.acquire(blocking=False)


def test_two_slots_admit_two_workers_and_hold_the_third():
    gate = HotGate(slots=2, wait_s=0.05)
    inside = []
    barrier, release = threading.Barrier(3), threading.Event()

    def worker():
        gate.enter()
        inside.append(threading.get_ident())
        barrier.wait(10)
        release.wait(10)
        gate.leave()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    barrier.wait(10)
    gate.enter()
    assert gate.bypassed == 1 and len(inside) == 2
    release.set()
    for t in threads:
        t.join(10)


# -- in the server ---------------------------------------------------------------------------------


@pytest.fixture
def stack(stack_factory, tmp_path):
    stack = stack_with(stack_factory, tmp_path, {CACHED: CACHED_BODY, MISSED: b"m" * 300_000, BIG: BIG_BODY})
    listing(stack, "/")
    listing(stack, "/docs")
    assert stack.http.get(stack.url(CACHED)).content == CACHED_BODY
    assert stack.http.get(stack.url(BIG)).content == BIG_BODY
    wait_downloads_idle(stack.app)
    assert index_row(stack.app, CACHED)["cache_key"] is not None
    assert index_row(stack.app, MISSED)["cache_key"] is None
    stack.suspend_nas()
    return stack


def test_the_server_gates_hot_answers(stack):
    gate = stack.server.httpd.balupi_hot_gate
    assert isinstance(gate, HotGate) and gate.slots == httpio.HOT_GATE_SLOTS
    before = stack.server.httpd.balupi_hot_answers
    assert stack.http.get(stack.url(CACHED)).content == CACHED_BODY
    assert stack.server.httpd.balupi_hot_answers == before + 1
    assert wait_until(lambda: gate._free.acquire(blocking=False), 10)  # given back after the answer
    gate._free.release()


def test_only_webdav_answers_pass_the_gate(stack):
    """An API read may call the NAS or a plug without stepping aside (GET /api/nas/status reads the
    NAS's version while it is awake), so only WebDAV's plain GETs take a slot."""
    gate = stack.server.httpd.balupi_hot_gate = HotGate(slots=1, wait_s=30, prefix=stack.server.httpd.balupi_hot_gate.prefix)
    assert gate.prefix == "/dav/"
    gate.enter()  # held by this thread: a request that takes the gate would wait 30 s
    try:
        hot_before = stack.server.httpd.balupi_hot_answers
        answer = stack.http.get(stack.server.url + "/api/health", timeout=10)
        assert answer.status_code == 200
        assert stack.server.httpd.balupi_hot_answers == hot_before + 1  # the hot path answered it, ungated
        assert gate.bypassed == 0
    finally:
        gate.leave()


def test_a_cached_get_is_not_held_behind_a_miss_waiting_for_the_nas(stack):
    # One slot, and a wait far longer than the boot: only stepping aside can let the cached GET through.
    gate = stack.server.httpd.balupi_hot_gate = HotGate(slots=1, wait_s=60)
    stack.nas.configure(boot_delay_s=4.0)
    hot_before = stack.server.httpd.balupi_hot_answers
    miss: dict = {}

    def fetch_miss():
        response = stack_session(stack).get(stack.url(MISSED), timeout=60)
        miss["status"], miss["size"] = response.status_code, len(response.content)

    thread = threading.Thread(target=fetch_miss)
    thread.start()
    try:
        assert wait_until(lambda: stack.nas.magic_packet_count >= 1, 10)  # the miss waits for the wake now
        cached = stack_session(stack).get(stack.url(CACHED), timeout=60)
        answered_during_the_wake = stack.nas.state is not PowerState.AWAKE
    finally:
        thread.join(60)
    assert cached.status_code == 200 and cached.content == CACHED_BODY
    assert answered_during_the_wake, "the cached GET waited for the NAS to boot"
    assert miss == {"status": 200, "size": 300_000}
    assert gate.bypassed == 0  # not let through by the wait's limit
    assert stack.server.httpd.balupi_hot_answers == hot_before + 2  # both took the hot path (and the gate)


def test_a_client_that_does_not_read_its_answer_holds_no_slot(stack):
    gate = stack.server.httpd.balupi_hot_gate = HotGate(slots=1, wait_s=60)
    hot_before = stack.server.httpd.balupi_hot_answers
    with socket.create_connection(("127.0.0.1", stack.server.port), timeout=30) as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(f"GET /dav{BIG} HTTP/1.1\r\nHost: 127.0.0.1\r\n{stack.auth_header}\r\n\r\n".encode())
        assert wait_until(lambda: stack.server.httpd.balupi_hot_answers == hot_before + 1, 10)
        stalled.recv(1)  # its answer has begun; from here the server's sendfile waits on this reader

        cached = stack_session(stack).get(stack.url(CACHED), timeout=60)

        assert cached.status_code == 200 and cached.content == CACHED_BODY
        assert gate.bypassed == 0


def stack_session(stack):
    import requests

    session = requests.Session()
    session.trust_env = False
    session.auth = stack.auth
    return session


# -- fair turns ------------------------------------------------------------------------------------

CLIENTS = 10
PIPELINED = 60


def test_more_keep_alive_connections_than_workers_are_all_served_in_turn(stack_factory, tmp_path, monkeypatch):
    # Turns that never end by count: only the hand-back while others are queued keeps it fair.
    monkeypatch.setattr(httpio, "MAX_REQUESTS_PER_TURN", 10**6)
    stack = stack_with(stack_factory, tmp_path, {CACHED: CACHED_BODY}, server_threads=4,
                       http_max_requests_per_client=0)
    awake_walk(stack)
    stack.suspend_nas()
    request = (f"GET /dav{CACHED} HTTP/1.1\r\nHost: 127.0.0.1\r\n{stack.auth_header}\r\n\r\n").encode()
    answers = [0] * CLIENTS
    first_done: list[list[int]] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def client(n: int) -> None:
        with socket.create_connection(("127.0.0.1", stack.server.port), timeout=30) as sock:
            start.wait(10)
            sock.sendall(request * PIPELINED)  # every head is there at once: a worker could answer all in one turn
            stream = b""
            while answers[n] < PIPELINED:
                data = sock.recv(65536)
                assert data, f"client {n}: closed after {answers[n]} answers"
                stream += data
                with lock:
                    answers[n] = stream.count(b"HTTP/1.1 200 OK\r\n")
                    if answers[n] == PIPELINED and not first_done:
                        first_done.append(list(answers))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == [PIPELINED] * CLIENTS
    # When the first connection had all its answers, every other one had been served too (without
    # the hand-back, four connections get all theirs while six wait for a worker).
    assert first_done and min(first_done[0]) > 0, first_done
