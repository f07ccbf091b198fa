"""The path dispatcher: WsgiDAV at /dav/ (with a matching mount_path), the API at /api/, JSON at /.

Without WsgiDAV's mount_path set to the prefix, PROPFIND hrefs lack /dav and MOVE/COPY fail with
409; these tests pin that down.
"""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from defusedxml import ElementTree

from balupi import __version__
from balupi.app import Dispatcher


@pytest.fixture
def server(running_server):
    return running_server()


@pytest.fixture
def dav(server, http):
    """Send a WebDAV request to a path under /dav/."""

    def request(method: str, path: str, **kwargs):
        return http.request(method, server.url + "/dav" + path, **kwargs)

    return request


def hrefs(response) -> list[str]:
    assert response.status_code == 207
    return [unquote(e.text) for e in ElementTree.fromstring(response.content).iter("{DAV:}href")]


def test_move_under_dav_returns_201_and_the_file_is_at_its_new_path(server, dav):
    assert dav("PUT", "/report.txt", data=b"quarterly numbers").status_code == 201
    moved = dav("MOVE", "/report.txt", headers={"Destination": server.url + "/dav/renamed.txt"})
    assert moved.status_code == 201
    assert dav("GET", "/renamed.txt").content == b"quarterly numbers"
    assert dav("GET", "/report.txt").status_code == 404


def test_move_into_a_subfolder_with_a_path_only_destination(dav):
    assert dav("MKCOL", "/archive").status_code == 201
    assert dav("PUT", "/a.txt", data=b"a").status_code == 201
    assert dav("MOVE", "/a.txt", headers={"Destination": "/dav/archive/a.txt"}).status_code == 201
    assert dav("GET", "/archive/a.txt").content == b"a"


def test_copy_under_dav_keeps_both_files(server, dav):
    assert dav("PUT", "/photo.jpg", data=b"\xff\xd8jpeg").status_code == 201
    copied = dav("COPY", "/photo.jpg", headers={"Destination": server.url + "/dav/photo-copy.jpg"})
    assert copied.status_code == 201
    assert dav("GET", "/photo.jpg").content == dav("GET", "/photo-copy.jpg").content == b"\xff\xd8jpeg"


def test_copy_without_overwrite_onto_an_existing_file_is_refused(server, dav):
    dav("PUT", "/one.txt", data=b"1")
    dav("PUT", "/two.txt", data=b"2")
    refused = dav("COPY", "/one.txt", headers={"Destination": server.url + "/dav/two.txt", "Overwrite": "F"})
    assert refused.status_code == 412
    assert dav("GET", "/two.txt").content == b"2"


def test_propfind_hrefs_start_with_dav(dav):
    dav("MKCOL", "/Music")
    dav("PUT", "/Music/song one.mp3", data=b"la")
    dav("PUT", "/notes.txt", data=b"n")
    found = hrefs(dav("PROPFIND", "/", headers={"Depth": "1"}))
    assert found[0] == "/dav/"
    assert set(found) == {"/dav/", "/dav/Music/", "/dav/notes.txt"}
    deeper = hrefs(dav("PROPFIND", "/Music/", headers={"Depth": "1"}))
    assert set(deeper) == {"/dav/Music/", "/dav/Music/song one.mp3"}


def test_root_answers_json_pointing_at_both_apps_to_a_script_asking_for_json(server, http):
    response = http.get(server.url + "/", headers={"Accept": "application/json"})
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"service": "balupi", "version": __version__, "webdav": "/dav/", "api": "/api/",
                               "dashboard": "/"}


def test_root_answers_the_dashboard_to_a_browser(server, http):
    response = http.get(server.url + "/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert '<script src="/ui/app.js"' in response.text
    script = http.get(server.url + "/ui/app.js")
    assert script.headers["Content-Type"].startswith("text/javascript")
    again = http.get(server.url + "/ui/app.js", headers={"If-None-Match": script.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    assert http.get(server.url + "/ui/nothing.js").status_code == 404
    assert http.get(server.url + "/ui/../app.py").status_code == 404


def test_other_top_level_paths_are_json_404(server, http):
    response = http.get(server.url + "/favicon.ico")
    assert response.status_code == 404
    assert response.json() == {"detail": "no such path: /favicon.ico"}


def test_paths_that_only_share_a_prefix_are_not_mounted(server, http):
    assert http.get(server.url + "/davx").status_code == 404
    assert http.get(server.url + "/apix/health").status_code == 404


def test_api_mount_gets_its_own_path_info():
    seen = {}

    def app(environ, start_response):
        seen.update(script=environ["SCRIPT_NAME"], path=environ["PATH_INFO"])
        return []

    dispatcher = Dispatcher({"/api": app, "/api/v2": app}, fallback=app)
    dispatcher({"PATH_INFO": "/api/v2/things", "SCRIPT_NAME": ""}, None)
    assert seen == {"script": "/api/v2", "path": "/things"}  # the longest prefix wins
    dispatcher({"PATH_INFO": "/api", "SCRIPT_NAME": ""}, None)
    assert seen == {"script": "/api", "path": "/"}


def test_dav_options_advertise_webdav(dav):
    response = dav("OPTIONS", "/")
    assert response.status_code == 200
    assert "1" in response.headers["DAV"]
    assert "PROPFIND" in response.headers["Allow"]


def test_a_move_destination_outside_dav_is_refused(server, dav):
    dav("PUT", "/stay.txt", data=b"s")
    response = dav("MOVE", "/stay.txt", headers={"Destination": server.url + "/api/stay.txt"})
    assert response.status_code in (400, 403, 502)  # 400: DavGuard refuses destinations outside /dav/
    assert dav("GET", "/stay.txt").content == b"s"
