"""Issue 14: the hot path for plain GETs and HEADs (`balupi.httpio.FastConnection._answer_hot`)
answers byte for byte what cheroot's own request path answers.

Each case is sent on a raw socket twice to the same server, once with the hot path on and once
with it off (`HeadGatedServer.balupi_hot_path`); the two byte streams must be the same but for the
Date header and a multipart boundary. Each case also says whether the hot path should have taken
it (a plain GET/HEAD) or left it to cheroot (smuggling attempts, bodies, odd framing), and the
server's count of hot answers must agree. The cached file is served with the NAS asleep, so cache
hits, 304s, ranges, 401s and 404s all come from BaluPi itself.
"""

from __future__ import annotations

import base64
import os
import re
import socket

import pytest

from tests.davkit import awake_walk, index_row, stack_with
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

CONTENT = os.urandom(4096)
PATH = "/docs/note.txt"
SPACED = "/docs/a b.txt"
AUTH = "Authorization: Basic " + base64.b64encode(f"{NAS_USER}:{NAS_PASSWORD}".encode()).decode()
BAD_AUTH = "Authorization: Basic " + base64.b64encode(f"{NAS_USER}:wrong".encode()).decode()
FUTURE = "Fri, 01 Jan 2100 00:00:00 GMT"


def req(line: str, *headers: str, body: str = "") -> str:
    return "\r\n".join([line, "Host: 127.0.0.1", *headers, "", ""]) + body


def get(target: str, *headers: str, method: str = "GET", version: str = "HTTP/1.1") -> str:
    return req(f"{method} {target} {version}", *headers)


CLOSE = "Connection: close"
CLOSING_GET = get("/dav/docs/note.txt", AUTH, CLOSE)

# (name, raw bytes to send, hot answers expected)
CASES = [
    ("GET", get("/dav/docs/note.txt", AUTH, CLOSE), 1),
    ("HEAD", get("/dav/docs/note.txt", AUTH, CLOSE, method="HEAD"), 1),
    ("304 If-None-Match *", get("/dav/docs/note.txt", AUTH, "If-None-Match: *", CLOSE), 1),
    ("304 If-Modified-Since", get("/dav/docs/note.txt", AUTH, f"If-Modified-Since: {FUTURE}", CLOSE), 1),
    ("412 If-Match", get("/dav/docs/note.txt", AUTH, 'If-Match: "nope"', CLOSE), 1),
    ("Range 206", get("/dav/docs/note.txt", AUTH, "Range: bytes=100-199", CLOSE), 1),
    ("Range suffix", get("/dav/docs/note.txt", AUTH, "Range: bytes=-10", CLOSE), 1),
    ("Ranges multipart", get("/dav/docs/note.txt", AUTH, "Range: bytes=0-9,100-109", CLOSE), 1),
    ("Range 416", get("/dav/docs/note.txt", AUTH, "Range: bytes=99999-", CLOSE), 1),
    ("If-Range stale", get("/dav/docs/note.txt", AUTH, "Range: bytes=0-9", 'If-Range: "old"', CLOSE), 1),
    ("401 without credentials", get("/dav/docs/note.txt", CLOSE), 1),
    ("401 bad credentials", get("/dav/docs/note.txt", BAD_AUTH, CLOSE), 1),
    ("404", get("/dav/docs/missing.txt", AUTH, CLOSE), 1),
    ("percent-encoded name", get("/dav/docs/a%20b.txt", AUTH, CLOSE), 1),
    ("query string", get("/dav/docs/note.txt?x=1&y=%41", AUTH, CLOSE), 1),
    ("folder redirect", get("/dav/docs", AUTH, CLOSE), 1),
    ("421 foreign Host", req("GET /dav/docs/note.txt HTTP/1.1", "Host: evil.example", AUTH, CLOSE).replace(
        "Host: 127.0.0.1\r\n", "", 1), 1),
    ("dot segment", get("/dav/docs/../docs/note.txt", AUTH, CLOSE), 1),
    ("API", get("/api/auth/me", AUTH, CLOSE), 1),
    ("Content-Length 0", get("/dav/docs/note.txt", AUTH, "Content-Length: 0", CLOSE), 1),
    ("keep-alive, pipelined", get("/dav/docs/note.txt", AUTH) + get("/dav/docs/note.txt", AUTH, method="HEAD")
     + CLOSING_GET, 3),
    ("repeated GET (the answer memo's replays, decision 230)", get("/dav/docs/note.txt", AUTH) * 3 + CLOSING_GET, 4),
    ("Connection: Close is not close for cheroot", get("/dav/docs/note.txt", AUTH, "Connection: Close")
     + CLOSING_GET, 2),
    ("HTTP/1.0", get("/dav/docs/note.txt", AUTH, version="HTTP/1.0"), 1),
    ("HTTP/1.0 keep-alive", get("/dav/docs/note.txt", AUTH, "Connection: Keep-Alive", version="HTTP/1.0")
     + get("/dav/docs/note.txt", AUTH, version="HTTP/1.0"), 2),
    ("HTTP/1.0 401", get("/dav/docs/note.txt", version="HTTP/1.0"), 1),
    # Left to cheroot: bodies, smuggling attempts, odd framing.
    ("CL and TE", req("GET /dav/docs/note.txt HTTP/1.1", AUTH, "Content-Length: 5", "Transfer-Encoding: chunked",
                      body="0\r\n\r\n") + CLOSING_GET, 0),  # (cheroot leaves the chunked body unread: 400 next)
    ("two Content-Lengths", req("GET /dav/docs/note.txt HTTP/1.1", AUTH, "Content-Length: 0", "Content-Length: 5",
                                body="GET /") + CLOSING_GET, 1),
    ("a body", req("GET /dav/docs/note.txt HTTP/1.1", AUTH, "Content-Length: 5", body="hello") + CLOSING_GET, 1),
    ("space before the colon", req("GET /dav/docs/note.txt HTTP/1.1", AUTH, "Content-Length : 5", body="hello")
     + CLOSING_GET, 1),
    ("obs-fold", req("GET /dav/docs/note.txt HTTP/1.1", AUTH, "X-Folded: a", " b", CLOSE), 0),
    ("two Hosts", req("GET /dav/docs/note.txt HTTP/1.1", "Host: evil.example", AUTH, CLOSE), 0),
    ("two Authorizations", get("/dav/docs/note.txt", AUTH, BAD_AUTH, CLOSE), 0),
    ("Expect", get("/dav/docs/note.txt", AUTH, "Expect: 100-continue", CLOSE), 0),
    ("lower-case method", get("/dav/docs/note.txt", AUTH, CLOSE, method="get"), 0),
    ("HTTP/1.2", get("/dav/docs/note.txt", AUTH, CLOSE, version="HTTP/1.2"), 0),
    ("encoded slash", get("/dav/docs%2Fnote.txt", AUTH, CLOSE), 0),
    ("absolute form", get("http://127.0.0.1/dav/docs/note.txt", AUTH, CLOSE), 0),
    ("fragment", get("/dav/docs/note.txt#x", AUTH, CLOSE), 0),
    ("bare LF", get("/dav/docs/note.txt", AUTH, CLOSE).replace("Host: 127.0.0.1\r\n", "Host: 127.0.0.1\n"), 0),
    ("NUL in a value", get("/dav/docs/note.txt", AUTH, "X-A: a\x00b", CLOSE), 0),
    ("leading empty line", "\r\n" + get("/dav/docs/note.txt", AUTH, CLOSE), 0),
    ("PROPFIND", req("PROPFIND /dav/docs/ HTTP/1.1", AUTH, "Depth: 0", "Content-Length: 0", CLOSE), 0),
]


@pytest.fixture
def stack(stack_factory, tmp_path):
    # Both paths see the same failed logins: no throttling, or the second would see a 429.
    stack = stack_with(stack_factory, tmp_path, {PATH: CONTENT, SPACED: b"spaced\n"}, auth_throttle_free_attempts=1000)
    awake_walk(stack)
    assert index_row(stack.app, PATH)["cache_key"] is not None
    stack.suspend_nas()
    return stack


def exchange(port: int, raw: bytes) -> bytes:
    """Send `raw` at once and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def normalized(answer: bytes) -> bytes:
    answer = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", answer)
    answer = re.sub(rb"</a> - \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+", b"</a> - TIME", answer)  # WsgiDAV's error pages
    for boundary in set(re.findall(rb"boundary=([0-9a-f]+)", answer)):
        answer = answer.replace(boundary, b"BOUNDARY")
    return answer


def test_the_hot_path_answers_as_cheroot_does(stack):
    httpd = stack.server.httpd
    port = stack.server.port
    differences, wrongly_taken = [], []
    for name, raw, expected_hot in CASES:
        httpd.balupi_hot_path = False
        before = httpd.balupi_hot_answers
        through_cheroot = exchange(port, raw.encode("latin-1"))
        assert httpd.balupi_hot_answers == before, f"{name}: the hot path answered while switched off"
        httpd.balupi_hot_path = True
        before = httpd.balupi_hot_answers
        hot = exchange(port, raw.encode("latin-1"))
        taken = httpd.balupi_hot_answers - before
        assert through_cheroot.startswith(b"HTTP/1.1 "), f"{name}: no answer: {through_cheroot[:200]!r}"
        if normalized(hot) != normalized(through_cheroot):
            a, b = normalized(through_cheroot), normalized(hot)
            at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            differences.append(f"{name}: {len(a)} bytes through cheroot, {len(b)} hot, first difference at {at}:\n"
                               f"  cheroot: {a[max(0, at - 200):at + 200]!r}\n  hot:     {b[max(0, at - 200):at + 200]!r}")
        if taken != expected_hot:
            wrongly_taken.append(f"{name}: {taken} hot answers, expected {expected_hot}")
    assert not differences, "\n".join(differences)
    assert not wrongly_taken, "\n".join(wrongly_taken)
    assert getattr(httpd, "balupi_answer_replays", 0) >= 2  # the repeated GETs were compared as replayed


def test_the_cached_file_itself_comes_back_whole(stack):
    """The comparison above would pass if both paths were wrong the same way: the body is the file."""
    answer = exchange(stack.server.port, get("/dav/docs/note.txt", AUTH, CLOSE).encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nContent-Length: 4096\r\n" in head
    assert body == CONTENT
    assert stack.server.httpd.balupi_hot_answers >= 1
