"""Issue 16, findings 1, 2 and 10: a web page the admin visits cannot act through the admin's browser
(CSRF), files on the share never run on BaluPi's origin (stored XSS), and a name an attacker's DNS
points at the Pi is refused (DNS rebinding). Two NAS users with separate roots; the NAS awake and
asleep where the answer could come from another place (the fast lane's cache, a miss streamed from
the NAS, a ranged pass-through, WsgiDAV's own path).
"""

from __future__ import annotations

import socket

import pytest

from balupi.websec import CSP
from tests.authkit import BOB, BOB_PASSWORD, CAROL, CAROL_PASSWORD, api, dav, multi_user_stack, session
from tests.davkit import wait_downloads_idle
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

ALICE = (NAS_USER, NAS_PASSWORD)
BOB_AUTH = (BOB, BOB_PASSWORD)
TARIFF = {"name": "forged", "valid_from": "2024-05-10T09:00:00", "price_cents_per_kwh": 99, "currency": "EUR"}
EVIL_HTML = b"<html><script>fetch('/api/nas/wol',{method:'POST'})</script></html>"
EVIL_SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


@pytest.fixture
def users(stack_factory, tmp_path):
    return multi_user_stack(stack_factory, tmp_path, {"/home/bob/seeded.html": EVIL_HTML,
                                                      "/home/bob/ranged.xhtml": EVIL_HTML,
                                                      "/home/carol/notes.txt": b"carol"})


def bearer(stack, auth) -> dict:
    body = api(stack, "POST", "/auth/login", json={"username": auth[0], "password": auth[1]}).json()
    return {"Authorization": f"Bearer {body['access_token']}"}


def tariffs(stack) -> list[str]:
    return [t["name"] for t in api(stack, "GET", "/energy/prices", auth=ALICE).json()["tariffs"]]


# -- CSRF -------------------------------------------------------------------------------------------


def test_forms_and_text_plain_bodies_cannot_change_anything(users):
    packets = users.nas.magic_packet_count
    forged = [
        ("POST", "/energy/prices", {"Content-Type": "text/plain"}, b'{"name": "forged", "price_cents_per_kwh": 99}'),
        ("POST", "/nas/wol", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=b"),
        ("POST", "/cache/evict", {"Content-Type": "multipart/form-data; boundary=x"}, b"--x--\r\n"),
        ("POST", "/tapo/devices", {"Content-Type": "text/plain"}, b'{"host": "127.0.0.1"}'),
    ]
    for method, path, headers, body in forged:
        response = api(users, method, path, auth=ALICE, headers=headers, data=body)
        assert response.status_code == 415, (path, response.status_code, response.text)
        assert "application/json" in response.json()["detail"]
    assert "forged" not in tariffs(users)
    assert users.nas.magic_packet_count == packets
    assert api(users, "GET", "/tapo/devices", auth=ALICE).json()["devices"] == []


def test_requests_another_site_makes_a_browser_send_are_refused(users):
    origin = users.server.url
    cross = [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
             {"Sec-Fetch-Site": "same-site"}, {"Origin": origin.replace("127.0.0.1", "localhost")}]
    token = bearer(users, ALICE)
    for headers in cross:
        response = api(users, "POST", "/energy/prices", headers={**token, **headers}, json=TARIFF)
        assert response.status_code == 403, (headers, response.status_code)
    assert "forged" not in tariffs(users)
    # The same request from BaluPi's own page (the dashboard: same origin, a Bearer token) works.
    same = {"Origin": origin, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    assert api(users, "POST", "/energy/prices", headers={**token, **same}, json=TARIFF).status_code == 201
    assert "forged" in tariffs(users)


def test_a_browser_never_changes_things_with_ambient_basic_credentials(users):
    same = {"Origin": users.server.url, "Sec-Fetch-Site": "same-origin"}
    packets = users.nas.magic_packet_count
    response = api(users, "POST", "/nas/wol", auth=ALICE, headers=same)
    assert response.status_code == 403 and "Bearer" in response.json()["detail"]
    assert users.nas.magic_packet_count == packets
    # Reading with Basic from a browser is harmless and still works; so do tools (no browser headers).
    assert api(users, "GET", "/nas/status", auth=ALICE, headers=same).status_code == 200
    assert api(users, "POST", "/nas/wol", auth=ALICE).status_code == 200
    assert api(users, "POST", "/nas/wol", headers={**bearer(users, ALICE), **same}).status_code == 200


def test_every_api_answer_carries_the_security_headers(users):
    token = bearer(users, ALICE)
    answers = [api(users, "GET", "/health"), api(users, "GET", "/nas/status"), api(users, "GET", "/nope", headers=token),
               api(users, "POST", "/nas/wol", headers={"Content-Type": "text/plain"}, data=b"x")]
    for route in users.app.api.endpoints():
        if route.method == "GET" and "{" not in route.path:
            answers.append(api(users, "GET", route.path, headers=token))
    with session() as s:
        answers.append(s.get(users.server.url + "/", timeout=10))
    for response in answers:
        assert response.headers["X-Content-Type-Options"] == "nosniff", response.url
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Content-Security-Policy"] == CSP
    assert "frame-ancestors 'none'" in CSP and "script-src 'self'" in CSP and "default-src 'none'" in CSP


# -- DNS rebinding ----------------------------------------------------------------------------------


def test_a_host_name_that_is_not_the_pis_is_refused_everywhere(users, settings_factory, running_server):
    evil = {"Host": "rebind.evil.example"}
    for response in (dav(users, "PUT", "/rebound.txt", auth=BOB_AUTH, headers=evil, data=b"x"),
                     dav(users, "GET", "/notes.txt", auth=(CAROL, CAROL_PASSWORD), headers=evil),
                     api(users, "GET", "/health", headers=evil),
                     api(users, "POST", "/nas/wol", auth=ALICE, headers=evil)):
        assert response.status_code == 421, (response.url, response.status_code)
    assert dav(users, "GET", "/rebound.txt", auth=BOB_AUTH).status_code == 404
    port = users.server.port
    own = socket.gethostname().split(".")[0]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "127.0.0.1", f"{own}:{port}",
                 f"{own}.local:{port}"):
        assert api(users, "GET", "/health", headers={"Host": host}).status_code == 200, host

    # Open mode (no NAS: anonymous requests) is where rebinding hurt most; a listed name is welcome.
    server = running_server(settings_factory(data_dir=users.app.settings.data_dir.parent / "open",
                                             cache_dir=users.app.settings.data_dir.parent / "open-cache",
                                             http_allowed_hosts=["balupi.home.arpa"]))
    with session() as s:
        refused = s.put(server.url + "/dav/x.txt", data=b"x", headers=evil, timeout=10)
        assert refused.status_code == 421
        assert s.put(server.url + "/dav/x.txt", data=b"x", headers={"Host": "balupi.home.arpa"}, timeout=10).status_code == 201
        assert s.get(server.url + "/api/health", headers={"Host": "BALUPI.home.arpa:8000"}, timeout=10).status_code == 200


# -- stored XSS -------------------------------------------------------------------------------------


def assert_not_runnable(response, content: bytes) -> None:
    assert response.status_code in (200, 206), (response.url, response.status_code)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.headers["Content-Security-Policy"].split(";")[0]
    assert response.headers["Content-Type"] == "application/octet-stream", response.url
    assert response.headers["Content-Disposition"] == "attachment"
    if response.status_code == 200:
        assert response.content == content


def upload_active_files(stack) -> None:
    for name, body, ctype in (("evil.html", EVIL_HTML, "text/html"), ("evil.svg", EVIL_SVG, "image/svg+xml"),
                              ("disguised.png", EVIL_HTML, "text/html; charset=utf-8"),
                              ("evil.js", b"alert(1)", "application/javascript")):
        assert dav(stack, "PUT", f"/{name}", auth=BOB_AUTH, data=body, headers={"Content-Type": ctype}).status_code == 201


@pytest.mark.parametrize("asleep", [False, True], ids=["awake", "asleep"])
def test_files_from_the_share_never_run_on_balupis_origin(users, asleep):
    upload_active_files(users)
    assert dav(users, "PUT", "/plain.txt", auth=BOB_AUTH, data=b"hello", headers={"Content-Type": "text/plain"}).status_code == 201
    assert dav(users, "PUT", "/pic.png", auth=BOB_AUTH, data=b"\x89PNG", headers={"Content-Type": "image/png"}).status_code == 201
    if asleep:
        dav(users, "GET", "/seeded.html", auth=BOB_AUTH)
        wait_downloads_idle(users.app)
        users.suspend_nas()
    for name, body in (("evil.html", EVIL_HTML), ("evil.svg", EVIL_SVG), ("disguised.png", EVIL_HTML),
                       ("evil.js", b"alert(1)"), ("seeded.html", EVIL_HTML)):
        assert_not_runnable(dav(users, "GET", f"/{name}", auth=BOB_AUTH), body)
        assert_not_runnable(dav(users, "HEAD", f"/{name}", auth=BOB_AUTH), b"")
        assert_not_runnable(dav(users, "GET", f"/{name}", auth=BOB_AUTH, headers={"Range": "bytes=0-3"}), b"")
    if not asleep:  # the admin opening bob's file in the shared view (a miss from the NAS) gets the same
        assert_not_runnable(dav(users, "GET", "/home/bob/seeded.html", auth=ALICE), EVIL_HTML)
        wait_downloads_idle(users.app)
    # Inert types keep their type, inline, still with nosniff and the sandbox.
    plain = dav(users, "GET", "/plain.txt", auth=BOB_AUTH)
    assert plain.headers["Content-Type"].startswith("text/plain") and "Content-Disposition" not in plain.headers
    assert plain.headers["X-Content-Type-Options"] == "nosniff" and "sandbox" in plain.headers["Content-Security-Policy"]
    assert dav(users, "GET", "/pic.png", auth=BOB_AUTH).headers["Content-Type"] == "image/png"
    # BaluPi's own HTML listing of a folder stays a page (sandboxed), not a download.
    listing = dav(users, "GET", "/", auth=BOB_AUTH)
    assert listing.headers["Content-Type"].startswith("text/html") and "Content-Disposition" not in listing.headers
    assert "sandbox" in listing.headers["Content-Security-Policy"]
    if asleep:
        assert users.nas.request_count() == 0


def test_a_miss_streamed_from_the_nas_is_not_runnable_either(users):
    """The miss path (whole file) and the ranged pass-through carry the NAS's or the index's type."""
    misses = users.app.provider.stats.misses
    assert_not_runnable(dav(users, "GET", "/ranged.xhtml", auth=BOB_AUTH, headers={"Range": "bytes=0-5"}), b"")
    assert_not_runnable(dav(users, "GET", "/seeded.html", auth=BOB_AUTH), EVIL_HTML)
    assert users.app.provider.stats.misses == misses + 2  # both came from the NAS, not the cache
    wait_downloads_idle(users.app)


def test_wsgidavs_own_get_path_is_covered_too(users):
    """A GET the fast lane hands to WsgiDAV (a path it does not take, here with an empty segment)."""
    upload_active_files(users)
    assert_not_runnable(dav(users, "GET", "//evil.html", auth=BOB_AUTH), EVIL_HTML)
    assert_not_runnable(dav(users, "GET", "//evil.svg", auth=BOB_AUTH), EVIL_SVG)
