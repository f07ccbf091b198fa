"""Issue 6, point 7: XML request bodies (PROPFIND, PROPPATCH, LOCK). Entity expansion ("billion
laughs"), external entities and DTDs are refused at once with 400, as is malformed or absurdly deep
XML; bodies are bounded (413), however they are sent. WsgiDAV 4.4.0 itself parses with defusedxml
when lxml is absent (as here), which refuses entities but not a plain DTD; DavGuard refuses both
before WsgiDAV or the fast lane sees the body.
"""

from __future__ import annotations

import pytest
from defusedxml import DefusedXmlException

from balupi.nas.client import NasClient
from tests.authkit import dav, raw_request, status_of
from tests.davkit import stack_with
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">]>
<D:propfind xmlns:D="DAV:"><D:prop><D:displayname>&lol9;</D:displayname></D:prop></D:propfind>"""
QUADRATIC = (b'<?xml version="1.0"?><!DOCTYPE q [<!ENTITY a "' + b"x" * 50_000 + b'">]><D:propfind xmlns:D="DAV:">'
             b"<D:prop><D:displayname>" + b"&a;" * 1000 + b"</D:displayname></D:prop></D:propfind>")
XXE_FILE = b"""<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<D:propfind xmlns:D="DAV:"><D:prop><D:displayname>&x;</D:displayname></D:prop></D:propfind>"""
XXE_PARAMETER = b"""<?xml version="1.0"?><!DOCTYPE d [<!ENTITY % p SYSTEM "http://127.0.0.1:9/evil.dtd"> %p;]>
<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"""
DTD_ONLY = b"""<?xml version="1.0"?><!DOCTYPE propfind [<!ELEMENT propfind ANY>]>
<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?><!DOCTYPE propfind SYSTEM "file:///etc/passwd">
<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"""
MALFORMED = (b"<D:propfind xmlns:D='DAV:'><D:prop>", b"not xml at all", b"<?xml version='1.0'?><a></b>",
             b"\xff\xfe<\x00a\x00", b"<D:propfind xmlns:D='DAV:'>&undefined;</D:propfind>")
DEEP = b"<a>" * 5000 + b"</a>" * 5000
HOSTILE = {"billion-laughs": BILLION_LAUGHS, "quadratic": QUADRATIC, "xxe-file": XXE_FILE,
           "xxe-parameter": XXE_PARAMETER, "dtd-only": DTD_ONLY, "external-dtd": EXTERNAL_DTD, "deep": DEEP,
           **{f"malformed-{i}": body for i, body in enumerate(MALFORMED)}}
LOCKINFO_WRAP = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY x SYSTEM "file:///etc/passwd">]><D:lockinfo '
                 b'xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>'
                 b"<D:owner>&x;</D:owner></D:lockinfo>")


@pytest.fixture
def stack(stack_factory, tmp_path):
    return stack_with(stack_factory, tmp_path, {"/docs/a.txt": b"alpha"})


def test_wsgidav_parses_request_xml_with_defusedxml_here():
    from wsgidav import xml_tools

    assert xml_tools.use_lxml is False
    assert xml_tools.etree.__name__ == "defusedxml.ElementTree"


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("method, path, depth", [
    ("PROPFIND", "/docs/", "1"),  # the fast lane's
    ("PROPFIND", "/docs/", "infinity"),  # WsgiDAV's
    ("PROPPATCH", "/docs/a.txt", None),
    ("LOCK", "/docs/a.txt", None),
])
def test_hostile_xml_bodies_are_refused_with_400(stack, name, method, path, depth):
    headers = {"Content-Type": "application/xml", **({"Depth": depth} if depth else {})}

    response = stack.http.request(method, stack.url(path), data=HOSTILE[name], headers=headers, timeout=30)

    assert response.status_code == 400, (name, response.status_code, response.text[:200])
    assert b"root:" not in response.content and b"lollol" not in response.content
    assert stack.app.db.query_one("SELECT count(*) FROM dav_locks")[0] == 0
    assert stack.app.db.query_one("SELECT count(*) FROM dav_props")[0] == 0
    assert stack.http.get(stack.url("/docs/a.txt")).content == b"alpha"  # still serving


def test_an_external_entity_in_a_lock_owner_is_refused(stack):
    response = stack.http.request("LOCK", stack.url("/docs/a.txt"), data=LOCKINFO_WRAP)
    assert response.status_code == 400 and b"root:" not in response.content


def test_the_refusal_names_the_reason(stack):
    response = stack.http.request("PROPFIND", stack.url("/"), data=BILLION_LAUGHS, headers={"Depth": "1"})
    assert "dtd" in response.text.lower()
    response = stack.http.request("PROPFIND", stack.url("/"), data=MALFORMED[0], headers={"Depth": "1"})
    assert "malformed" in response.text


def test_an_xml_body_over_the_limit_is_413_without_being_read(stack_factory, tmp_path):
    stack = stack_with(stack_factory, tmp_path, {}, dav_max_xml_body_kib=16)
    body = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/>' + b" " * 20_000 + b"</D:propfind>"

    response = stack.http.request("PROPFIND", stack.url("/"), data=body, headers={"Depth": "1"})
    chunked = stack.http.request("PROPPATCH", stack.url("/"), data=iter([body[:10_000], body[10_000:]]))

    assert response.status_code == 413 and chunked.status_code == 413
    assert stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "0"}).status_code == 207


def test_a_huge_announced_body_is_refused_before_a_byte_is_sent(stack):
    port = stack.server.port
    head = (f"PROPFIND /dav/ HTTP/1.1\r\nHost: 127.0.0.1\r\n{stack.auth_header}\r\nDepth: 1\r\n"
            f"Content-Length: 10000000000\r\nContent-Type: application/xml\r\n\r\n").encode()
    assert status_of(raw_request(port, head)) == 413


def test_a_content_length_that_lies_is_400(stack):
    port = stack.server.port
    head = (f"PROPPATCH /dav/docs/a.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n{stack.auth_header}\r\n"
            f"Content-Length: 500\r\nConnection: close\r\n\r\n<short/>").encode()
    with __import__("socket").create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        sock.shutdown(__import__("socket").SHUT_WR)
        reply = sock.recv(65536)
    assert status_of(reply) == 400


def test_ordinary_xml_still_works(stack):
    body = b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>'
    assert stack.http.request("PROPFIND", stack.url("/docs/"), data=body, headers={"Depth": "1"}).status_code == 207
    assert dav(stack, "PROPFIND", "/docs/", auth=(NAS_USER, NAS_PASSWORD), data=body,
               headers={"Depth": "infinity"}).status_code == 207


@pytest.mark.parametrize("name", ["billion-laughs", "xxe-file", "quadratic"])
def test_the_nas_client_refuses_entities_in_a_nas_answer_too(settings_factory, name):
    client = NasClient(settings_factory(nas_webdav_url="http://127.0.0.1:9/dav/"), monitor=None)
    with pytest.raises(DefusedXmlException):
        list(client._parse_multistatus(HOSTILE[name].replace(b"propfind", b"multistatus")))
