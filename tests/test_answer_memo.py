"""The answer memo (decision 230): a repeated cached GET on one keep-alive connection is answered
again without the WSGI tree, and never once anything its answer rests on has changed: the login
(a password changed on the NAS, a user the NAS no longer knows, a login forgotten), the file
(deleted, replaced by a PUT, evicted, its content file replaced on disk) or the request itself
(conditionals, ranges, another path). Each test talks HTTP on a raw keep-alive socket to the real
stack (the real simulated NAS); `balupi_answer_replays` counts the answers sent from the memo.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import time

import pytest

from tests.davkit import awake_walk, index_row, stack_with
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

CONTENT = os.urandom(4096)
OTHER = os.urandom(4096)
PATH = "/docs/note.txt"
RECHECK_S = 1.0
BOB_PASSWORD = "bob's password"


def basic(user: str, password: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


AUTH = basic(NAS_USER, NAS_PASSWORD)


def get(target: str = "/dav/docs/note.txt", *headers: str, auth: str = AUTH) -> bytes:
    return "\r\n".join([f"GET {target} HTTP/1.1", "Host: 127.0.0.1", auth, *headers, "", ""]).encode()


class Client:
    """One keep-alive connection: send a request, read exactly one answer."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def ask(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._recv()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def _recv(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buf += data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def stack(stack_factory, tmp_path):
    stack = stack_with(stack_factory, tmp_path, {PATH: CONTENT}, auth_recheck_s=RECHECK_S,
                       nas_kwargs={"users": {"bob": (BOB_PASSWORD, "admin")}})
    awake_walk(stack)
    assert index_row(stack.app, PATH)["cache_key"] is not None
    return stack


def replays(stack) -> int:
    return getattr(stack.server.httpd, "balupi_answer_replays", 0)


def warmed(stack) -> Client:
    """A connection whose GET of the file was answered the long way and then from the memo."""
    client = Client(stack.server.port)
    before = replays(stack)
    for _ in range(40):  # (background jobs' writes after the walk send some the long way)
        status, _, body = client.ask(get())
        assert status == 200 and body == CONTENT
        if replays(stack) > before:
            return client
        time.sleep(0.05)
    raise AssertionError("the repeated GET was never answered from the memo")


def without_date(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != "date"}


def test_a_repeated_get_is_replayed_with_the_same_answer_and_its_bookkeeping(stack):
    client = Client(stack.server.port)
    parts = stack.app.provider.parts
    first_status, first_headers, first_body = client.ask(get())
    hits_before, hit_bytes_before, replays_before = parts.stats.hits, parts.stats.hit_bytes, replays(stack)
    answers = [client.ask(get()) for _ in range(5)]
    # (A write by a background job, the hits' own flush among them, sends one the long way again.)
    assert 1 <= replays(stack) - replays_before <= 5
    for status, headers, body in answers:
        assert (status, without_date(headers), body) == (first_status, without_date(first_headers), first_body)
        assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", headers["date"])
    assert first_status == 200 and first_body == CONTENT
    # The side effects of a cached GET happen for a replayed one too: hit counters, the read for the heat.
    assert parts.stats.hits - hits_before == 5
    assert parts.stats.hit_bytes - hit_bytes_before == 5 * len(CONTENT)
    hits_in_db = stack.app.db.query_one("SELECT hits FROM entries WHERE view = '' AND path = ?", (PATH,))[0]
    parts.index.flush_access()
    assert stack.app.db.query_one("SELECT hits FROM entries WHERE view = '' AND path = ?", (PATH,))[0] \
        >= hits_in_db + 6
    client.close()


def test_another_request_head_is_not_replayed(stack):
    client = warmed(stack)
    before = replays(stack)
    status, headers, _ = client.ask(get("/dav/docs/note.txt", 'If-None-Match: "' + index_row(stack.app, PATH)["etag"] + '"'))
    assert status == 304
    status, headers, body = client.ask(get("/dav/docs/note.txt", "Range: bytes=0-9"))
    assert status == 206 and body == CONTENT[:10]
    status, _, _ = client.ask(get("/dav/docs/missing.txt"))
    assert status == 404
    assert replays(stack) == before
    client.close()


def test_a_password_changed_on_the_nas_is_refused_once_the_login_is_due_for_a_recheck(stack):
    client = warmed(stack)
    stack.nas.set_password(NAS_USER, "a new password")
    time.sleep(RECHECK_S + 0.2)
    before = replays(stack)
    status, _, body = client.ask(get())
    assert status == 401 and body != CONTENT
    assert replays(stack) == before
    client.close()


def test_a_user_the_nas_no_longer_knows_is_refused_once_due_for_a_recheck(stack):
    bob = basic("bob", BOB_PASSWORD)
    client = Client(stack.server.port)
    for _ in range(3):
        status, _, body = client.ask(get(auth=bob))
        assert status == 200 and body == CONTENT
    stack.nas.delete_user("bob")
    time.sleep(RECHECK_S + 0.2)
    before = replays(stack)
    status, _, _ = client.ask(get(auth=bob))
    assert status == 401
    assert replays(stack) == before
    client.close()


def test_a_forgotten_login_is_never_replayed(stack_factory, tmp_path):
    """`forget` is what the Authenticator does when the NAS rejects a password it had accepted (a
    NAS request with the user's credentials refused): the memo's login goes with it at once, long
    before a recheck would be due."""
    stack = stack_with(stack_factory, tmp_path, {PATH: CONTENT}, auth_recheck_s=3600)
    awake_walk(stack)
    client = warmed(stack)
    stack.nas.set_password(NAS_USER, "a new password")
    stack.app.auth.forget(NAS_USER)
    before = replays(stack)
    status, _, body = client.ask(get())
    assert status == 401 and body != CONTENT  # checked with the NAS again, which refuses the old password
    assert replays(stack) == before
    client.close()


def test_a_deleted_file_is_never_replayed(stack):
    client = warmed(stack)
    assert stack.http.delete(stack.url(PATH)).status_code in (200, 204)
    before = replays(stack)
    status, _, body = client.ask(get())
    assert status == 404 and body != CONTENT
    assert replays(stack) == before
    client.close()


def test_a_file_replaced_by_a_put_is_never_replayed(stack):
    client = warmed(stack)
    put = stack.http.put(stack.url(PATH), data=OTHER)
    assert put.status_code in (200, 201, 204)
    before = replays(stack)
    status, _, body = client.ask(get())
    assert status == 200 and body == OTHER
    assert replays(stack) == before
    client.close()


def test_an_evicted_file_is_never_replayed(stack):
    client = warmed(stack)
    evicted = stack.http.post(stack.server.url + "/api/cache/evict", json={"to_gb": 0})
    assert evicted.status_code == 200 and evicted.json()["evicted_files"] >= 1
    assert index_row(stack.app, PATH)["cache_key"] is None
    before = replays(stack)
    status, _, body = client.ask(get())  # a miss now: fetched again from the (awake) NAS
    assert status == 200 and body == CONTENT
    assert replays(stack) == before
    client.close()


def test_a_content_file_replaced_on_disk_is_never_answered_from_memory(stack):
    client = warmed(stack)
    store = stack.app.provider.store
    key = index_row(stack.app, PATH)["cache_key"]
    other = os.path.join(os.path.dirname(store.file_of(key)), "replacement")
    with open(other, "wb") as f:
        f.write(OTHER)  # the same size, another file: the stat identity differs
    os.replace(other, store.file_of(key))
    before = replays(stack)
    status, _, body = client.ask(get())
    assert (status, body) == (200, OTHER)  # the long way reads the file now on disk
    assert replays(stack) == before
    client.close()
