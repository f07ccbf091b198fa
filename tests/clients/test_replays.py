"""Clients that cannot run here, replayed as HTTP from their documented behaviour, with a write-back
between every step (issue 12): what a client learnt in one step (an ETag, a lock, a size) must
still hold in the next, although BaluPi synced the file to the NAS in between.

- Windows' WebClient (the Mini-Redirector, `Microsoft-WebDAV-MiniRedir/10.0.19045`, Windows 10
  22H2): OPTIONS on `/`, PROPFIND with the Win32 properties, LOCK, a 0-byte PUT, the PUT of the
  content, PROPPATCH of Win32LastModifiedTime (and the other Win32 times), UNLOCK.
- macOS Finder (`WebDAVFS/3.0.0 (03008000) Darwin/22.1.0`, macOS 13): `._` AppleDouble files and
  `.DS_Store` (kept on the Pi only), a 0-byte PUT, LOCK, then the content as a chunked PUT with
  `X-Expected-Entity-Length`, UNLOCK.
- DAVx5 (`DAVx5/4.3.16-ose (okhttp/4.12.0) Android/14`): ranged GETs with If-Match, PUT with
  If-Match, and a stale If-Match refused.
- Solid Explorer (`Solid Explorer/2.8.40 (Android 14)`): MKCOL, PUT, PROPFIND Depth 1, MOVE with
  Overwrite F, COPY, DELETE.
"""

from __future__ import annotations

import os
from xml.etree import ElementTree

import pytest

from tests.clients.kit import FAST_SYNC
from tests.davkit import listing, parse_multistatus
from tests.stack import stack_factory  # noqa: F401

WIN32_PROPFIND = b"""<?xml version="1.0" encoding="utf-8" ?><D:propfind xmlns:D="DAV:"><D:prop
 xmlns:Z="urn:schemas-microsoft-com:"><D:creationdate/><D:getcontentlength/><D:displayname/><D:getcontenttype/>
<D:getetag/><D:getlastmodified/><D:resourcetype/><Z:Win32FileAttributes/><Z:Win32CreationTime/>
<Z:Win32LastAccessTime/><Z:Win32LastModifiedTime/></D:prop></D:propfind>"""
WIN32_PROPPATCH = b"""<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:"
 xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop><Z:Win32CreationTime>Mon, 02 Mar 2026 09:00:00 GMT</Z:Win32CreationTime>
<Z:Win32LastAccessTime>Mon, 02 Mar 2026 09:30:00 GMT</Z:Win32LastAccessTime>
<Z:Win32LastModifiedTime>Mon, 02 Mar 2026 09:15:00 GMT</Z:Win32LastModifiedTime>
<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>"""


def lock_body(owner: str) -> bytes:
    return (b'<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            b"</D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>" + owner.encode()
            + b"</D:href></D:owner></D:lockinfo>")


class Replay:
    """A client's session: every step is one request; a write-back runs after each step."""

    def __init__(self, stack, user_agent: str):
        self.stack = stack
        self.user_agent = user_agent
        self.write_backs = 0

    def __call__(self, method: str, path: str, expect: int | tuple[int, ...], headers: dict | None = None,
                 data=None, root: bool = False):
        url = (self.stack.server.url + path) if root else self.stack.url(path)
        response = self.stack.http.request(method, url, data=data,
                                           headers={"User-Agent": self.user_agent, **(headers or {})})
        allowed = expect if isinstance(expect, tuple) else (expect,)
        assert response.status_code in allowed, f"{method} {path}: {response.status_code} {response.text[:300]}"
        self.write_back()
        return response

    def write_back(self) -> None:
        self.stack.app.sync.run_once()
        self.write_backs += 1


def props(response) -> dict:
    (member,) = parse_multistatus(response.content).values()
    return member.props


@pytest.fixture
def stack(stack_factory):
    stack = stack_factory(**FAST_SYNC)
    listing(stack, "/")
    return stack


def test_windows_webclient_copies_a_file_in(stack):
    client = Replay(stack, "Microsoft-WebDAV-MiniRedir/10.0.19045")
    body = os.urandom(150_000)
    options = client("OPTIONS", "/", 200, root=True)
    assert "2" in options.headers["DAV"]
    client("PROPFIND", "/", 207, {"Depth": "0", "Content-Type": "text/xml"}, WIN32_PROPFIND)
    client("PROPFIND", "/Report.docx", 404, {"Depth": "0"}, WIN32_PROPFIND)
    locked = client("LOCK", "/Report.docx", 201, {"Timeout": "Second-3600"}, lock_body("DOMAIN\\user"))
    token = locked.headers["Lock-Token"]
    if_token = {"If": f"({token})"}
    client("PUT", "/Report.docx", (200, 201, 204), {**if_token, "Content-Length": "0"}, b"")
    seen = props(client("PROPFIND", "/Report.docx", 207, {"Depth": "0"}, WIN32_PROPFIND))
    client("PUT", "/Report.docx", 204, {**if_token, "If-Match": seen["getetag"]}, body)
    seen = props(client("PROPFIND", "/Report.docx", 207, {"Depth": "0"}, WIN32_PROPFIND))
    assert seen["getcontentlength"] == str(len(body))
    client("PROPPATCH", "/Report.docx", 207, {**if_token, "Content-Type": "text/xml"}, WIN32_PROPPATCH)
    client("UNLOCK", "/Report.docx", 204, {"Lock-Token": token})
    final = props(client("PROPFIND", "/Report.docx", 207, {"Depth": "0"}, WIN32_PROPFIND))
    assert final["getlastmodified"] == "Mon, 02 Mar 2026 09:15:00 GMT"
    assert final["{urn:schemas-microsoft-com:}Win32FileAttributes"] == "00000020"
    assert final["getetag"] == seen["getetag"]  # times and attributes are not content
    assert client("GET", "/Report.docx", 200).content == body
    assert (stack.nas.root / "Report.docx").read_bytes() == body
    assert stack.app.sync.pending()["count"] == 0 and client.write_backs >= 10


def test_macos_finder_copies_a_file_in(stack):
    client = Replay(stack, "WebDAVFS/3.0.0 (03008000) Darwin/22.1.0 (arm64)")
    body = os.urandom(300_000)
    apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4096 - 24)
    client("PROPFIND", "/", 207, {"Depth": "1"})
    client("PROPFIND", "/photo.heic", 404, {"Depth": "0"})
    client("PUT", "/photo.heic", 201, {"Content-Length": "0"}, b"")
    locked = client("LOCK", "/photo.heic", 200, {"Timeout": "Second-600", "Depth": "0"}, lock_body("finder"))
    token = locked.headers["Lock-Token"]
    etag = client("HEAD", "/photo.heic", 200).headers["ETag"]

    def chunks():
        for start in range(0, len(body), 65536):
            yield body[start:start + 65536]

    # A generator body goes out chunked (Transfer-Encoding: chunked), as Finder sends it.
    client("PUT", "/photo.heic", 204, {"If": f"({token} [{etag}])", "X-Expected-Entity-Length": str(len(body))},
           chunks())
    client("PUT", "/._photo.heic", 201, {}, apple_double)
    client("PUT", "/.DS_Store", 201, {}, b"Bud1" + bytes(6140))
    client("UNLOCK", "/photo.heic", 204, {"Lock-Token": token})
    names = {m.path for m in listing(stack, "/").values()}
    assert {"/photo.heic", "/._photo.heic", "/.DS_Store"} <= names
    assert client("GET", "/photo.heic", 200).content == body
    assert client("GET", "/._photo.heic", 200).content == apple_double
    assert (stack.nas.root / "photo.heic").read_bytes() == body
    assert not (stack.nas.root / "._photo.heic").exists() and not (stack.nas.root / ".DS_Store").exists()


def test_davx5_ranged_reads_and_conditional_writes(stack):
    client = Replay(stack, "DAVx5/4.3.16-ose (okhttp/4.12.0) Android/14")
    body = bytes(range(256)) * 2000
    client("PUT", "/notes.txt", 201, {"Content-Type": "text/plain"}, body)
    etag = props(client("PROPFIND", "/notes.txt", 207, {"Depth": "0"}))["getetag"]
    first = client("GET", "/notes.txt", 206, {"Range": "bytes=0-4095", "If-Match": etag})
    assert first.content == body[:4096] and first.headers["ETag"] == etag
    second = client("GET", "/notes.txt", 206, {"Range": "bytes=4096-", "If-Match": etag})
    assert first.content + second.content == body and second.headers["ETag"] == etag
    stack.app.provider.cache.evict_to(0)  # and after an eviction: the same version, the same ETag
    third = client("GET", "/notes.txt", 206, {"Range": "bytes=100-199", "If-Match": etag})
    assert third.content == body[100:200] and third.headers["ETag"] == etag
    client("PUT", "/notes.txt", 204, {"If-Match": etag}, b"edited on the phone")
    new_etag = client("HEAD", "/notes.txt", 200).headers["ETag"]
    assert new_etag != etag
    client("PUT", "/notes.txt", 412, {"If-Match": etag}, b"a stale edit must not land")
    client("GET", "/notes.txt", 304, {"If-None-Match": new_etag})
    client("PUT", "/new.txt", 201, {"If-None-Match": "*"}, b"created only if absent")
    client("PUT", "/new.txt", 412, {"If-None-Match": "*"}, b"not twice")
    assert (stack.nas.root / "notes.txt").read_bytes() == b"edited on the phone"
    assert (stack.nas.root / "new.txt").read_bytes() == b"created only if absent"


def test_solid_explorer_organises_a_folder(stack):
    client = Replay(stack, "Solid Explorer/2.8.40 (Android 14)")
    client("MKCOL", "/Camera", 201)
    client("PUT", "/Camera/IMG_0001.jpg", 201, {"Content-Type": "image/jpeg"}, b"\xff\xd8" + os.urandom(80_000))
    client("PUT", "/Camera/IMG_0002.jpg", 201, {"Content-Type": "image/jpeg"}, b"\xff\xd8" + os.urandom(60_000))
    members = parse_multistatus(client("PROPFIND", "/Camera/", 207, {"Depth": "1"}).content)
    assert members["/Camera/IMG_0001.jpg"].props["getcontentlength"] == "80002"
    etag = members["/Camera/IMG_0001.jpg"].props["getetag"]
    client("MOVE", "/Camera/IMG_0002.jpg", 412, {"Destination": stack.url("/Camera/IMG_0001.jpg"), "Overwrite": "F"})
    client("MOVE", "/Camera/IMG_0001.jpg", 201, {"Destination": stack.url("/Camera/Holiday.jpg"), "Overwrite": "F"})
    moved = props(client("PROPFIND", "/Camera/Holiday.jpg", 207, {"Depth": "0"}))
    assert moved["getetag"] == etag  # a rename is not a new version
    client("COPY", "/Camera/Holiday.jpg", 201, {"Destination": stack.url("/Camera/Holiday copy.jpg"), "Overwrite": "F"})
    client("DELETE", "/Camera/IMG_0002.jpg", 204)
    names = sorted(p.name for p in (stack.nas.root / "Camera").iterdir())
    assert names == ["Holiday copy.jpg", "Holiday.jpg"]
    assert (stack.nas.root / "Camera/Holiday.jpg").read_bytes() == (stack.nas.root / "Camera/Holiday copy.jpg").read_bytes()
    ElementTree.fromstring(client("PROPFIND", "/Camera/", 207, {"Depth": "1"}).content)
