"""Issue 4, behaviours 4, 5, 7 and 8: writes, locks and dead properties, large files, paths.

Writes act on the cache and the index first, durably, and are journaled for the NAS; they work
while the NAS sleeps and cause no NAS traffic. Locks and dead properties live in the same SQLite
database and survive a restart; Windows Explorer's copy sequence works end to end. Large files
stream with flat memory. Names with non-ASCII characters (NFC and NFD), spaces, `%`, `#`, `(`, and
long names round-trip unchanged.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import socket
import sqlite3
import subprocess
import threading
import unicodedata
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from xml.etree import ElementTree

import psutil
import pytest

from balupi.db import DB_FILENAME
from tests.davkit import (
    DAV,
    awake_walk,
    data_files,
    dropped_ranges,
    index_row,
    journal,
    listing,
    parse_multistatus,
    propfind,
    stack_with,
    temp_files,
    url_path,
    wait_downloads_idle,
)
from tests.stack import Stack, stack_factory  # noqa: F401

MIB = 1 << 20
TREE = {
    "/docs/a.txt": b"alpha\n" * 100,
    "/docs/b.txt": b"bravo\n" * 100,
    "/docs/sub/c.txt": b"charlie\n" * 100,
    "/photos/p.jpg": os.urandom(50_000),
}
MS = "urn:schemas-microsoft-com:"
WIN_TIME = "Tue, 09 Jan 2024 10:11:12 GMT"


@pytest.fixture
def asleep(stack_factory, tmp_path):
    """TREE on the NAS, walked (listed and cached) while awake; then the NAS is suspended."""
    stack = stack_with(stack_factory, tmp_path, TREE)
    awake_walk(stack)
    stack.suspend_nas()
    return stack


def assert_no_nas_traffic(stack) -> None:
    assert [(r.method, r.path) for r in stack.nas.requests] == []
    assert stack.nas.magic_packet_count == 0


def restart(stack, running_server) -> Stack:
    """Stop BaluPi and start a new one on the same settings (same database and cache)."""
    stack.server.stop()
    return Stack(stack.nas, running_server(stack.app.settings), stack.http)


def request(stack, method: str, path: str, **kwargs):
    return stack.http.request(method, stack.url(url_path(path)), **kwargs)


def proppatch_body(props: dict[tuple[str, str], str], remove: tuple[tuple[str, str], ...] = ()) -> bytes:
    root = ElementTree.Element(DAV + "propertyupdate")
    if props:
        prop = ElementTree.SubElement(ElementTree.SubElement(root, DAV + "set"), DAV + "prop")
        for (ns, name), value in props.items():
            ElementTree.SubElement(prop, f"{{{ns}}}{name}").text = value
    if remove:
        prop = ElementTree.SubElement(ElementTree.SubElement(root, DAV + "remove"), DAV + "prop")
        for ns, name in remove:
            ElementTree.SubElement(prop, f"{{{ns}}}{name}")
    return ElementTree.tostring(root, xml_declaration=True, encoding="utf-8")


def prop_statuses(response) -> dict[str, int]:
    """{Clark name: status} of every property in a PROPPATCH multistatus."""
    assert response.status_code == 207, (response.status_code, response.text[:300])
    statuses = {}
    for propstat in ElementTree.fromstring(response.content).iter(DAV + "propstat"):
        status = int(propstat.findtext(DAV + "status").split()[1])
        for prop in propstat.find(DAV + "prop"):
            statuses[prop.tag] = status
    return statuses


def lock(stack, path: str, **headers) -> str:
    body = (
        b'<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
        b"</D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>WORKGROUP\\alice</D:href>"
        b"</D:owner></D:lockinfo>"
    )
    response = request(stack, "LOCK", path, data=body,
                       headers={"Timeout": "Second-3600", "Content-Type": 'text/xml; charset="utf-8"', **headers})
    assert response.status_code in (200, 201), (response.status_code, response.text[:300])
    token = response.headers["Lock-Token"]
    assert token.startswith("<") and token.endswith(">")
    return token[1:-1]


# -- behaviour 4: writes ------------------------------------------------------------------------


def test_every_write_works_with_the_nas_asleep_causes_no_nas_request_and_is_journaled(asleep):
    stack = asleep
    journal_before = journal(stack.app)

    plain = request(stack, "PUT", "/docs/plain.txt", data=b"plain body")
    assert plain.status_code == 201
    chunked = request(stack, "PUT", "/docs/chunked.txt", data=iter([b"chunk one, ", b"chunk two"]))
    assert chunked.status_code == 201
    finder = request(stack, "PUT", "/docs/finder.txt", data=iter([b"x" * 1000, b"y" * 234]),
                     headers={"X-Expected-Entity-Length": "1234"})
    assert finder.status_code == 201
    replace = request(stack, "PUT", "/docs/a.txt", data=b"new alpha")
    assert replace.status_code == 204
    assert request(stack, "MKCOL", "/newdir").status_code == 201
    copy = request(stack, "COPY", "/docs/b.txt", headers={"Destination": stack.url("/newdir/b-copy.txt")})
    assert copy.status_code == 201
    move = request(stack, "MOVE", "/docs/plain.txt", headers={"Destination": stack.url("/newdir/moved.txt")})
    assert move.status_code == 201
    move_dir = request(stack, "MOVE", "/docs/sub", headers={"Destination": stack.url("/newdir/sub")})
    assert move_dir.status_code == 201
    assert request(stack, "DELETE", "/photos/p.jpg").status_code == 204
    patch = request(stack, "PROPPATCH", "/docs/b.txt", data=proppatch_body({("urn:test", "color"): "blue"}))
    assert prop_statuses(patch) == {"{urn:test}color": 200}

    expected = {
        "/docs/chunked.txt": b"chunk one, chunk two",
        "/docs/finder.txt": b"x" * 1000 + b"y" * 234,
        "/docs/a.txt": b"new alpha",
        "/newdir/b-copy.txt": TREE["/docs/b.txt"],
        "/newdir/moved.txt": b"plain body",
        "/newdir/sub/c.txt": TREE["/docs/sub/c.txt"],
    }
    for path, content in expected.items():
        response = request(stack, "GET", path)
        assert response.status_code == 200 and response.content == content, path
    for gone in ("/docs/plain.txt", "/docs/sub/c.txt", "/photos/p.jpg"):
        assert request(stack, "GET", gone).status_code == 404, gone
    assert set(listing(stack, "/newdir")) == {"/newdir", "/newdir/b-copy.txt", "/newdir/moved.txt", "/newdir/sub"}

    new_entries = journal(stack.app)[len(journal_before):]
    recorded = {(op, path, dest) for op, path, dest in new_entries}
    assert {
        ("put", "/docs/plain.txt", None),
        ("put", "/docs/chunked.txt", None),
        ("put", "/docs/finder.txt", None),
        ("put", "/docs/a.txt", None),
        ("mkcol", "/newdir", None),
        ("put", "/newdir/b-copy.txt", None),
        ("move", "/docs/plain.txt", "/newdir/moved.txt"),
        ("move", "/docs/sub", "/newdir/sub"),
        ("delete", "/photos/p.jpg", None),
    } <= recorded
    assert any(op == "proppatch" and path == "/docs/b.txt" for op, path, _ in new_entries), new_entries
    assert_no_nas_traffic(stack)


def test_a_chunked_put_whose_body_differs_from_x_expected_entity_length_is_refused(asleep):
    stack = asleep
    response = request(stack, "PUT", "/docs/finder-short.txt", data=iter([b"x" * 100]),
                       headers={"X-Expected-Entity-Length": "1234"})
    assert 400 <= response.status_code < 500
    assert request(stack, "GET", "/docs/finder-short.txt").status_code == 404
    assert index_row(stack.app, "/docs/finder-short.txt") is None


def short_put(stack, path: str, announced: int, sent: bytes) -> bytes:
    """A PUT that announces `announced` bytes and sends `sent`, then closes its side. Returns the raw reply."""
    host, port = stack.server.httpd.bind_addr[:2]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"PUT /dav{url_path(path)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {announced}\r\n"
            f"{stack.auth_header}\r\nContent-Type: application/octet-stream\r\n\r\n".encode() + sent
        )
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def test_a_put_shorter_than_its_content_length_is_refused_and_leaves_nothing(asleep):
    stack = asleep
    journal_before = journal(stack.app)
    keys_before = data_files(stack.app)

    new_reply = short_put(stack, "/docs/short.bin", 100_000, os.urandom(40_000))
    replace_reply = short_put(stack, "/docs/a.txt", 100_000, os.urandom(40_000))

    for reply in (new_reply, replace_reply):
        assert not reply.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")), reply[:200]
    assert request(stack, "GET", "/docs/short.bin").status_code == 404
    assert index_row(stack.app, "/docs/short.bin") is None
    assert request(stack, "GET", "/docs/a.txt").content == TREE["/docs/a.txt"]  # the old content stays
    assert journal(stack.app) == journal_before
    assert data_files(stack.app) == keys_before
    assert temp_files(stack.app) == []
    assert_no_nas_traffic(stack)


def test_after_a_201_the_content_file_and_the_index_row_are_durable(asleep):
    stack = asleep
    content = os.urandom(300_000)

    response = request(stack, "PUT", "/docs/durable.bin", data=content)
    assert response.status_code == 201

    # What a fresh process would find after a power cut: another connection to the database file.
    db_path = Path(stack.app.settings.data_dir) / DB_FILENAME
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT cache_key, size, dirty FROM entries WHERE path = ?", ("/docs/durable.bin",)).fetchone()
        pending = conn.execute("SELECT op, cache_key, size FROM journal WHERE path = ? AND state = 'pending'"
                               " ORDER BY id DESC", ("/docs/durable.bin",)).fetchone()
    assert row is not None
    key, size, dirty = row
    assert (size, dirty) == (len(content), 1)
    content_file = Path(stack.app.settings.cache_dir) / "data" / key[:2] / key
    assert content_file.read_bytes() == content
    assert pending == ("put", key, len(content))
    assert temp_files(stack.app) == []


def resident_bytes(path: Path) -> int:
    """How much of `path` the kernel holds in its page cache (util-linux `fincore`)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def on_tmpfs(path: Path) -> bool:
    out = subprocess.run(["stat", "--file-system", "--format", "%T", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "tmpfs"


def content_path(stack, path: str) -> Path:
    key = index_row(stack.app, path)["cache_key"]
    return Path(stack.app.settings.cache_dir) / "data" / key[:2] / key


def test_a_long_upload_goes_around_the_page_cache_and_stays_whole(asleep, monkeypatch):
    """Decision 220: a large upload is written with O_DIRECT (nothing dropped behind it: its pages
    never entered the page cache; only the tail that is not a whole buffer did), and the content
    the 201 acknowledges is all there, on the disk and in a GET."""
    stack = asleep
    if on_tmpfs(Path(stack.app.settings.cache_dir)):
        pytest.skip("the cache is on tmpfs: every file there is in the page cache")
    dropped = dropped_ranges(monkeypatch)
    content = os.urandom(40 * MIB + 12_345)  # a tail that is not a whole number of blocks
    response = request(stack, "PUT", "/docs/long.bin", data=content)
    assert response.status_code == 201
    stored = content_path(stack, "/docs/long.bin")
    assert resident_bytes(stored) <= 4 * MIB  # without O_DIRECT: 8 to 16 MiB (decision 190), all of it before
    assert dropped == []
    assert stored.read_bytes() == content
    assert request(stack, "GET", "/docs/long.bin").content == content
    assert temp_files(stack.app) == []


def refuse_direct_flag(monkeypatch) -> None:
    """A file system that does not take O_DIRECT (tmpfs before Linux 6.6, some FUSE mounts): F_SETFL refuses it."""
    real = fcntl.fcntl

    def refusing(fd, cmd, arg=0):
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", refusing)


def refuse_direct_writes(monkeypatch) -> list[int]:
    """A file system that takes the flag but fails the writes with EINVAL. Returns the refused fds."""
    real = os.write
    refused: list[int] = []

    def refusing(fd, data):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data)

    monkeypatch.setattr(os, "write", refusing)
    return refused


@pytest.mark.parametrize("refusal", ["flag", "writes"])
def test_a_long_upload_where_o_direct_is_refused_drops_its_pages_behind_and_stays_whole(asleep, monkeypatch, refusal):
    """Where O_DIRECT is refused, the upload goes through the page cache and gives it back behind
    itself as before (decision 190: steps of 8 MiB, the newest step kept); nothing is lost."""
    stack = asleep
    if refusal == "flag":
        refuse_direct_flag(monkeypatch)
    else:
        refused = refuse_direct_writes(monkeypatch)
    dropped = dropped_ranges(monkeypatch)
    content = os.urandom(40 * MIB + 12_345)
    response = request(stack, "PUT", "/docs/long.bin", data=content)
    assert response.status_code == 201
    if refusal == "writes":
        assert refused  # a direct write was tried, failed and taken over
    assert len(dropped) >= 2
    assert all(offset == 0 for offset, _ in dropped)
    assert max(length for _, length in dropped) >= len(content) - 3 * 8 * MIB
    assert max(length for _, length in dropped) <= len(content) - 8 * MIB  # the newest step is kept
    assert content_path(stack, "/docs/long.bin").read_bytes() == content
    assert request(stack, "GET", "/docs/long.bin").content == content
    assert temp_files(stack.app) == []


@pytest.mark.parametrize("where", ["a direct write", "the tail"])
def test_a_long_upload_that_fills_the_volume_is_507_and_leaves_nothing(asleep, monkeypatch, where):
    """ENOSPC from an O_DIRECT write, or from the tail written through the page cache when WsgiDAV
    closes the writer: 507, the old content stays, no temp file, nothing in the index."""
    stack = asleep
    real = os.write
    failed: list[int] = []

    def full(fd, data):
        direct = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT
        name = os.readlink(f"/proc/self/fd/{fd}")
        upload_tail = not direct and name.endswith(".part") and ".meta." not in name
        if (direct and where == "a direct write" and failed == [] and len(data) and os.fstat(fd).st_size > 0) \
                or (upload_tail and where == "the tail"):
            failed.append(fd)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", full)
    keys_before = data_files(stack.app)
    response = request(stack, "PUT", "/docs/a.txt", data=os.urandom(12 * MIB + 99))
    assert failed
    assert response.status_code == 507
    monkeypatch.setattr(os, "write", real)
    assert request(stack, "GET", "/docs/a.txt").content == TREE["/docs/a.txt"]
    assert data_files(stack.app) == keys_before
    assert temp_files(stack.app) == []


def test_a_long_put_shorter_than_its_content_length_is_refused_and_leaves_nothing(asleep):
    """The O_DIRECT path (a body announced long) meets a client that stops early: no 2xx, no file."""
    stack = asleep
    keys_before = data_files(stack.app)
    reply = short_put(stack, "/docs/short-long.bin", 12 * MIB, os.urandom(9 * MIB + 100))
    assert not reply.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")), reply[:200]
    assert request(stack, "GET", "/docs/short-long.bin").status_code == 404
    assert index_row(stack.app, "/docs/short-long.bin") is None
    assert data_files(stack.app) == keys_before
    assert temp_files(stack.app) == []


def test_a_long_chunked_put_goes_the_direct_way_and_stays_whole(asleep):
    """A body of unknown length (chunked) is gathered into the O_DIRECT buffer block by block."""
    stack = asleep
    content = os.urandom(9 * MIB + 777)
    pieces = [content[i:i + 300_000] for i in range(0, len(content), 300_000)]
    response = request(stack, "PUT", "/docs/chunked-long.bin", data=iter(pieces))
    assert response.status_code == 201
    assert content_path(stack, "/docs/chunked-long.bin").read_bytes() == content
    assert request(stack, "GET", "/docs/chunked-long.bin").content == content


def test_the_socket_reader_reads_into_a_buffer_what_it_holds_first_then_the_socket():
    """`SocketReader.readinto` (decision 220): the bytes read along with the head come first, then
    the socket's, in order; 0 at the end of the stream; `bytes_read` counts them all."""
    from balupi.httpio import SocketReader

    ours, theirs = socket.socketpair()
    with ours, theirs:
        body = os.urandom(300_000)
        theirs.sendall(b"PUT /x HTTP/1.1\r\n" + body[:1000])
        reader = SocketReader(ours)
        assert reader.readline() == b"PUT /x HTTP/1.1\r\n"  # the head's read brought the body's first bytes
        sender = threading.Thread(target=lambda: (theirs.sendall(body[1000:]), theirs.shutdown(socket.SHUT_WR)))
        sender.start()
        buffer = bytearray(len(body) + 10)
        view = memoryview(buffer)
        got = reader.readinto(view[:400])
        assert got == 400  # from what the reader held, no more than asked
        while True:
            n = reader.readinto(view[got:])
            if n == 0:
                break
            got += n
        sender.join()
        assert bytes(buffer[:got]) == body
        assert reader.bytes_read == len(b"PUT /x HTTP/1.1\r\n") + len(body)


# -- behaviour 5: locks and dead properties -------------------------------------------------------


def test_a_lock_survives_a_restart(asleep, running_server):
    stack = asleep
    token = lock(stack, "/docs/a.txt")

    stack = restart(stack, running_server)

    assert request(stack, "PUT", "/docs/a.txt", data=b"intruder").status_code == 423
    with_token = request(stack, "PUT", "/docs/a.txt", data=b"owner", headers={"If": f"(<{token}>)"})
    assert with_token.status_code == 204
    assert request(stack, "GET", "/docs/a.txt").content == b"owner"
    assert request(stack, "UNLOCK", "/docs/a.txt", headers={"Lock-Token": f"<{token}>"}).status_code == 204
    assert request(stack, "PUT", "/docs/a.txt", data=b"anyone").status_code == 204
    assert_no_nas_traffic(stack)


def test_dead_properties_survive_a_restart(asleep, running_server):
    stack = asleep
    props = {("urn:test", "color"): "blue", (MS, "Win32FileAttributes"): "00000020"}
    assert set(prop_statuses(request(stack, "PROPPATCH", "/docs/b.txt", data=proppatch_body(props))).values()) == {200}

    stack = restart(stack, running_server)

    body = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:T="urn:test" xmlns:Z="' + MS.encode()
            + b'"><D:prop><T:color/><Z:Win32FileAttributes/><D:getcontentlength/></D:prop></D:propfind>')
    member = parse_multistatus(propfind(stack, "/docs/b.txt", "0", body).content)["/docs/b.txt"]
    assert member.props["{urn:test}color"] == "blue"
    assert member.props[f"{{{MS}}}Win32FileAttributes"] == "00000020"
    assert member.props["getcontentlength"] == str(len(TREE["/docs/b.txt"]))
    allprop = parse_multistatus(propfind(stack, "/docs", "1").content)["/docs/b.txt"]
    assert allprop.props["{urn:test}color"] == "blue"
    assert_no_nas_traffic(stack)


def test_windows_explorer_copies_a_file_end_to_end(asleep):
    stack = asleep
    path = "/docs/Report 2024.docx"
    content = os.urandom(123_456)
    win32_props = {
        (MS, "Win32CreationTime"): WIN_TIME,
        (MS, "Win32LastAccessTime"): WIN_TIME,
        (MS, "Win32LastModifiedTime"): WIN_TIME,
        (MS, "Win32FileAttributes"): "00000020",
    }

    assert propfind(stack, path, "0").status_code == 404
    empty = request(stack, "PUT", path, data=b"", headers={"Content-Length": "0"})
    assert empty.status_code == 201
    token = lock(stack, path)
    if_header = {"If": f"(<{token}>)"}
    first = request(stack, "PROPPATCH", path, data=proppatch_body(win32_props), headers=if_header)
    assert prop_statuses(first) == {f"{{{ns}}}{name}": 200 for ns, name in win32_props}
    head = request(stack, "HEAD", path, headers=if_header)
    assert head.status_code == 200 and head.headers["Content-Length"] == "0"
    put = request(stack, "PUT", path, data=content, headers=if_header)
    assert put.status_code == 204
    second = request(stack, "PROPPATCH", path, data=proppatch_body(win32_props), headers=if_header)
    assert set(prop_statuses(second).values()) == {200}
    assert request(stack, "UNLOCK", path, headers={"Lock-Token": f"<{token}>"}).status_code == 204

    got = request(stack, "GET", path)
    assert got.status_code == 200 and got.content == content
    assert got.headers["Last-Modified"] == WIN_TIME  # Win32LastModifiedTime sets the modification time
    body = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="' + MS.encode() + b'"><D:prop>'
            + b"".join(f"<Z:{name}/>".encode() for _, name in win32_props) + b"</D:prop></D:propfind>")
    kept = parse_multistatus(propfind(stack, path, "0", body).content)[path]
    assert {name: kept.props.get(f"{{{ns}}}{name}") for ns, name in win32_props} == {
        name: value for (_, name), value in win32_props.items()}  # accepted with 200, so kept
    assert [op for op, p, _ in journal(stack.app) if p == path] == ["put", "proppatch", "put", "proppatch"]
    assert request(stack, "PUT", path, data=b"unlocked now").status_code == 204
    assert_no_nas_traffic(stack)


def test_lock_on_an_unmapped_url_creates_an_empty_file(asleep):
    stack = asleep
    token = lock(stack, "/docs/lock-null.txt")

    head = request(stack, "HEAD", "/docs/lock-null.txt")
    assert head.status_code == 200 and head.headers["Content-Length"] == "0"
    member = listing(stack, "/docs")["/docs/lock-null.txt"]
    assert not member.is_dir and member.props["getcontentlength"] == "0"
    put = request(stack, "PUT", "/docs/lock-null.txt", data=b"filled", headers={"If": f"(<{token}>)"})
    assert put.status_code == 204
    assert request(stack, "UNLOCK", "/docs/lock-null.txt", headers={"Lock-Token": f"<{token}>"}).status_code == 204
    assert request(stack, "GET", "/docs/lock-null.txt").content == b"filled"
    assert_no_nas_traffic(stack)


def test_x_oc_mtime_sets_the_modification_time(asleep):
    stack = asleep
    mtime = 1_500_000_000
    put = request(stack, "PUT", "/docs/synced.txt", data=b"from a sync client", headers={"X-OC-Mtime": str(mtime)})
    assert put.status_code == 201
    replaced = request(stack, "PUT", "/docs/a.txt", data=b"older", headers={"X-OC-Mtime": str(mtime - 86400)})
    assert replaced.status_code == 204

    for path, expected in (("/docs/synced.txt", mtime), ("/docs/a.txt", mtime - 86400)):
        member = listing(stack, path, "0")[path]
        assert parsedate_to_datetime(member.props["getlastmodified"]).timestamp() == expected
        assert request(stack, "HEAD", path).headers["Last-Modified"] == formatdate(expected, usegmt=True)
    assert_no_nas_traffic(stack)


# -- behaviour 8: paths ---------------------------------------------------------------------------

STRANGE_NAMES = (
    unicodedata.normalize("NFC", "Grüße.txt"),
    unicodedata.normalize("NFD", "Grüße.txt"),
    "with space.txt",
    "100% sure.txt",
    "%41 not A.txt",
    "#hash#.txt",
    "(parens) [brackets] {braces}.txt",
    "semi;colon,comma&amp=plus+'quote'.txt",
    "日本語 ファイル.txt",
    "L" * 196 + ".txt",  # 200 characters
)


def test_strange_names_round_trip_through_put_propfind_and_get(asleep):
    stack = asleep
    assert len(STRANGE_NAMES[-1]) == 200
    assert STRANGE_NAMES[0] != STRANGE_NAMES[1]
    folder = "/docs/Ordner #1 (ü) 100%"
    assert request(stack, "MKCOL", folder).status_code == 201
    contents = {f"{folder}/{name}": f"content of {name!r}".encode() for name in STRANGE_NAMES}

    for path, content in contents.items():
        response = request(stack, "PUT", path, data=content)
        assert response.status_code == 201, (path, response.status_code)

    members = listing(stack, folder)
    assert set(members) == {folder, *contents}
    for path, content in contents.items():
        assert members[path].props["displayname"] == path.rsplit("/", 1)[1]
        assert members[path].props["getcontentlength"] == str(len(content))
        got = request(stack, "GET", path)
        assert got.status_code == 200 and got.content == content, path
    assert folder in listing(stack, "/docs")
    assert {r["path"] for r in map(lambda p: index_row(stack.app, p), contents)} == set(contents)
    assert_no_nas_traffic(stack)


def test_strange_names_on_the_nas_round_trip_through_propfind_and_get(stack_factory, tmp_path):
    folder = "/Ordner #1 (ü) 100%"
    contents = {f"{folder}/{name}": f"NAS content of {name!r}".encode() for name in STRANGE_NAMES}
    stack = stack_with(stack_factory, tmp_path, contents)

    members = listing(stack, folder)
    assert set(members) == {folder, *contents}
    for path, content in contents.items():
        got = request(stack, "GET", path)
        assert got.status_code == 200 and got.content == content, path
    wait_downloads_idle(stack.app)
    for path in contents:
        assert index_row(stack.app, path)["cache_key"] is not None, path


# -- behaviour 7: large files, flat memory --------------------------------------------------------

LARGE_BYTES = 256 * MIB
RSS_GROWTH_LIMIT_BYTES = 64 * MIB


class PatternBody:
    """A request body of `size` bytes made on the fly from a repeating random pattern (never held
    whole), with the SHA-256 of what was sent. `__len__` gives requests the Content-Length."""

    PERIOD = MIB + 7  # not a power of two: no two aligned blocks are alike

    def __init__(self, size: int):
        self.size, self.sent = size, 0
        self.digest = hashlib.sha256()
        self._pattern = memoryview(os.urandom(self.PERIOD))

    def __len__(self) -> int:
        return self.size - self.sent

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.sent
        n = left if n is None or n < 0 else min(n, left)
        offset = self.sent % self.PERIOD
        data = bytes(self._pattern[offset:offset + min(n, MIB)])
        self.sent += len(data)
        self.digest.update(data)
        return data


class PeakRss:
    """Samples this process's RSS in a thread; `growth` is the peak above the start."""

    def __init__(self):
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start


def test_a_large_file_uploads_and_downloads_with_flat_memory(asleep):
    stack = asleep
    path = "/docs/large.bin"
    body = PatternBody(LARGE_BYTES)

    with PeakRss() as upload_rss:
        put = request(stack, "PUT", path, data=body, headers={"Content-Type": "application/octet-stream"})
    assert put.status_code == 201
    assert index_row(stack.app, path)["size"] == LARGE_BYTES

    downloaded = hashlib.sha256()
    received = 0
    with PeakRss() as download_rss:
        with request(stack, "GET", path, stream=True) as response:
            assert response.status_code == 200
            assert response.headers["Content-Length"] == str(LARGE_BYTES)
            for chunk in response.iter_content(MIB):
                downloaded.update(chunk)
                received += len(chunk)

    assert received == LARGE_BYTES
    assert downloaded.hexdigest() == body.digest.hexdigest()
    assert upload_rss.growth < RSS_GROWTH_LIMIT_BYTES, f"upload grew RSS by {upload_rss.growth / MIB:.0f} MiB"
    assert download_rss.growth < RSS_GROWTH_LIMIT_BYTES, f"download grew RSS by {download_rss.growth / MIB:.0f} MiB"
    assert_no_nas_traffic(stack)
