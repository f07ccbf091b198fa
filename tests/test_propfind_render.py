"""The fast lane's PROPFIND answers say what WsgiDAV's say (issue 14, decision 180).

The fast lane writes a listing's multistatus from templates (`balupi.dav.propfind`); WsgiDAV, behind
it, builds the same answer from its resources. For a folder with odd names (spaces, unicode, &, <,
%, #, quotes), a subfolder, dead properties (on the folder, a file, the subfolder) and then a lock,
each answer is compared with WsgiDAV's for the same request, property by property: same hrefs,
same properties with the same values under the same status codes, dead properties and lock
discovery included. WsgiDAV's answer is had by letting the fast lane pass the PROPFIND on.
"""

from __future__ import annotations

from urllib.parse import quote
from xml.etree import ElementTree

import pytest

from balupi.dav import propfind
from balupi.dav.fastlane import FastLane
from tests.davkit import awake_walk, stack_with, url_path
from tests.stack import stack_factory  # noqa: F401

DAV = "{DAV:}"
WIN = "urn:schemas-microsoft-com:"
ODD = "urn:x&\"odd\""  # a namespace that needs escaping in an attribute

FOLDER = "/Ordner #1 & <co> 100%"
NAMES = (
    "a b.txt", "ünï cödé.txt", "a&b.txt", "a<b>.txt", "100%.txt", "#tag.txt", "plain.txt",
    "(x)!'$*|.txt", "日本語 ファイル.txt", "semi;colon=eq+plus,txt", "q?mark.txt", 'quote"d.txt',
)
SUBFOLDER = "sub dir & co"
DEAD_ON = (FOLDER, f"{FOLDER}/a b.txt", f"{FOLDER}/a&b.txt", f"{FOLDER}/{SUBFOLDER}", f"{FOLDER}/日本語 ファイル.txt")

NAMED = (
    b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"'
    b' xmlns:X="urn:x&amp;&quot;odd&quot;"><D:prop><D:displayname/><Z:Win32FileAttributes/><D:getetag/>'
    b"<X:nothing/><D:creationdate/><D:resourcetype/><D:getcontentlength/><D:lockdiscovery/><D:supportedlock/>"
    b"<D:nosuch/><D:getlastmodified/><D:getcontenttype/></D:prop></D:propfind>"
)
BODIES = {
    "empty body": b"",
    "allprop": b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>',
    "named": NAMED,
    "as bench": b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/>'
                b"<D:getcontentlength/><D:getlastmodified/><D:getetag/><D:getcontenttype/></D:prop></D:propfind>",
}
FAST_HEAD = propfind.HEAD.encode()


def href(path: str, collection: bool = False) -> str:
    return quote("/dav" + path + ("/" if collection else ""), safe="/!*'(),$-_|.")  # as WsgiDAV quotes them


def proppatch_body() -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="{WIN}">'
        "<D:set><D:prop><Z:Win32CreationTime>Mon, 07 Dec 2026 10:00:00 GMT</Z:Win32CreationTime>"
        "<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>"
    ).encode()


def shape(element) -> tuple:
    """An element as what it says: tag (namespace URI, not prefix), text, attributes, children."""
    return (element.tag, element.text or "", tuple(sorted(element.attrib.items())),
            tuple(shape(child) for child in element))


def meaning(body: bytes) -> dict[str, dict[int, dict[str, tuple]]]:
    """{href: {status: {property: shape}}} of a multistatus."""
    root = ElementTree.fromstring(body)
    assert root.tag == DAV + "multistatus"
    answer = {}
    for response in root.findall(DAV + "response"):
        href = response.findtext(DAV + "href")
        assert href not in answer, f"{href} twice"
        by_status: dict[int, dict[str, tuple]] = {}
        for propstat in response.findall(DAV + "propstat"):
            status = int(propstat.findtext(DAV + "status").split()[1])
            props = by_status.setdefault(status, {})
            for prop in propstat.find(DAV + "prop"):
                assert prop.tag not in props, f"{href}: {prop.tag} twice"
                props[prop.tag] = shape(prop)
        answer[href] = by_status
    return answer


def ask(stack, path: str, depth: str, body: bytes) -> bytes:
    response = stack.http.request("PROPFIND", stack.url(url_path(path)), headers={"Depth": depth}, data=body)
    assert response.status_code == 207, (path, response.status_code, response.text[:300])
    return response.content


def wsgidav_answer(stack, monkeypatch, path: str, depth: str, body: bytes) -> bytes:
    with monkeypatch.context() as patch:
        patch.setattr(FastLane, "propfind", lambda self, environ, start_response, path: self.next_app(environ, start_response))
        return ask(stack, path, depth, body)


@pytest.fixture
def odd_folder(stack_factory, tmp_path):  # noqa: F811
    files = {f"{FOLDER}/{name}": f"content of {name}\n".encode() * (i + 1) for i, name in enumerate(NAMES)}
    files[f"{FOLDER}/{SUBFOLDER}/inner.txt"] = b"inner"
    stack = stack_with(stack_factory, tmp_path, files)
    awake_walk(stack)
    for path in DEAD_ON:
        response = stack.http.request("PROPPATCH", stack.url(url_path(path)), data=proppatch_body())
        assert response.status_code == 207 and response.content.count(b"200 OK") == 1, (path, response.text)
    return stack


@pytest.mark.parametrize("nas", ["awake", "asleep"])
def test_the_fast_answer_says_what_wsgidavs_says_odd_names_dead_properties_and_a_lock(odd_folder, monkeypatch, nas):
    stack = odd_folder
    if nas == "asleep":
        stack.suspend_nas()
    monkeypatch.setattr(propfind, "DEAD_BATCH", 2)  # several reads of dead properties in one listing
    member_hrefs = {href(f"{FOLDER}/{name}") for name in NAMES} | {href(f"{FOLDER}/{SUBFOLDER}", True)}
    for label, body in BODIES.items():
        for depth in ("1", "0"):
            for path in (FOLDER, f"{FOLDER}/a&b.txt"):
                fast = ask(stack, path, depth, body)
                slow = wsgidav_answer(stack, monkeypatch, path, depth, body)
                assert fast.startswith(FAST_HEAD) and not slow.startswith(FAST_HEAD), "not the two paths compared"
                assert meaning(fast) == meaning(slow), (label, depth, path)
        listed = meaning(ask(stack, FOLDER, "1", body))
        assert set(listed) == {href(FOLDER, True)} | member_hrefs, label
        if body != BODIES["as bench"]:  # the dead properties are there (else the comparison says little)
            dead = {href for href, found in listed.items() if f"{{{WIN}}}Win32FileAttributes" in found.get(200, {})}
            assert dead == {href(p, p in (FOLDER, f"{FOLDER}/{SUBFOLDER}")) for p in DEAD_ON}, label

    # A lock in the view: its discovery must show, on the locked member, in the same answer either way.
    lock = stack.http.request(
        "LOCK", stack.url(url_path(f"{FOLDER}/a b.txt")), headers={"Timeout": "Second-600", "Depth": "0"},
        data=b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
             b"<D:locktype><D:write/></D:locktype><D:owner>tester</D:owner></D:lockinfo>")
    assert lock.status_code == 200, lock.text
    token = lock.headers["Lock-Token"].strip("<>")
    for label, body in BODIES.items():
        answer = ask(stack, FOLDER, "1", body)
        assert meaning(answer) == meaning(wsgidav_answer(stack, monkeypatch, FOLDER, "1", body)), label
        if body != BODIES["as bench"]:
            found = meaning(answer)[href(f"{FOLDER}/a b.txt")][200][DAV + "lockdiscovery"]
            assert token in repr(found), label
    if nas == "asleep":
        assert stack.nas.request_count() == 0
