"""Issue 15, item 5: with no NAS configured, BaluPi serves the share and the API to the Pi itself
only; another machine needs the local admin password (`local_admin_password`, user `admin`), or
anonymous access when `anonymous_lan_access` says so explicitly. The log and /api/health say which.

A request "from the LAN" is the server's WSGI tree called with that REMOTE_ADDR (what cheroot sets
from the socket's peer): tests may not open sockets to other addresses, and every 127.x address is
the Pi itself."""

from __future__ import annotations

import base64
import io
import json
import logging

import requests

LAN = "192.168.178.20"


def call(app, method: str, path: str, remote_addr: str, auth: tuple[str, str] | None = None,
         body: bytes = b"") -> tuple[int, bytes]:
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "REMOTE_ADDR": remote_addr, "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
        "SERVER_NAME": "balupi", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(), "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    if method == "PROPFIND":
        environ["HTTP_DEPTH"] = "0"
    if auth is not None:
        environ["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    status: list[str] = []
    result = app.wsgi(environ, lambda s, h, e=None: status.append(s))
    try:
        data = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return int(status[0].split()[0]), data


def test_by_default_without_a_nas_only_the_pi_itself_may_use_the_share_and_the_api(running_server, caplog):
    with caplog.at_level(logging.WARNING, logger="balupi"):
        server = running_server()
    app = server.app

    for method, path in (("PROPFIND", "/dav/"), ("GET", "/api/system/status"), ("PUT", "/dav/x.txt")):
        status, body = call(app, method, path, LAN, body=b"x" if method == "PUT" else b"")
        assert status == 403, (method, path, status)
        assert b"serves only the Pi itself" in body
    assert call(app, "PROPFIND", "/dav/", "127.0.0.1")[0] == 207
    with requests.Session() as s:  # a real client on the Pi itself
        s.trust_env = False
        assert s.put(server.url + "/dav/from-the-pi.txt", data=b"hi", timeout=30).status_code == 201
        health = s.get(server.url + "/api/health", timeout=30).json()
    assert health["nas"]["access"].startswith("the Pi itself only")
    assert any("the Pi itself only" in r.getMessage() for r in caplog.records)
    assert app.db.query("SELECT path FROM entries WHERE path LIKE '%x.txt'") == []  # the LAN's PUT left nothing


def test_the_local_admin_password_lets_another_machine_in(running_server, settings_factory):
    app = running_server(settings_factory(local_admin_password="household-secret")).app

    assert call(app, "PROPFIND", "/dav/", LAN)[0] == 401  # a login prompt, not a refusal
    assert call(app, "PROPFIND", "/dav/", LAN, auth=("admin", "wrong"))[0] == 401
    assert call(app, "PROPFIND", "/dav/", LAN, auth=("admin", "household-secret"))[0] == 207
    status, body = call(app, "GET", "/api/auth/me", LAN, auth=("admin", "household-secret"))
    assert status == 200 and json.loads(body)["user"] == {"username": "admin", "role": "admin", "view": "",
                                                          "method": "local"}
    assert "local admin password" in app.nas_summary()["access"]


def test_anonymous_lan_access_only_when_a_setting_says_so(running_server, settings_factory):
    app = running_server(settings_factory(anonymous_lan_access=True)).app

    assert call(app, "PROPFIND", "/dav/", LAN)[0] == 207
    status, body = call(app, "GET", "/api/auth/me", LAN)
    assert status == 200 and json.loads(body)["user"]["role"] == "user"
    assert call(app, "POST", "/api/nas/wol", LAN)[0] == 403  # never the admin endpoints
    assert app.nas_summary()["access"].startswith("anyone on the network")
