"""Issue 6, points 4 and 5: the JSON API. POST /api/auth/login returns a BaluPi JWT (HS256, exp, iat,
sub, role, issuer and audience checked; key from BALUPI_SECRET_KEY or generated once, mode 0600);
tokens with alg none, another algorithm, a bad signature, a wrong audience or issuer, or past exp
are refused; Basic works too. Every endpoint but GET /api/health needs a login, and the admin-only
ones the admin role (the NAS's, or auth_admins). With no NAS configured, requests are anonymous and
admin only from the Pi itself.
"""

from __future__ import annotations

import base64
import io
import json
import re
import stat
import time

import jwt
import pytest

from balupi.auth.tokens import ALGORITHM, AUDIENCE, ISSUER
from tests.authkit import BOB, BOB_PASSWORD, api, multi_user_stack, restart
from tests.stack import NAS_PASSWORD, NAS_USER, stack, stack_factory  # noqa: F401

ALICE = (NAS_USER, NAS_PASSWORD)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def login(stack, username: str, password: str) -> dict:
    response = api(stack, "POST", "/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


def signing_key(stack) -> bytes:
    return (stack.app.settings.data_dir / "secret.key").read_text().strip().encode()


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**changes) -> dict:
    now = int(time.time())
    out = {"sub": NAS_USER, "role": "admin", "iat": now, "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def assert_401(response) -> None:
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json" and response.json()["detail"]
    assert "Bearer" in response.headers["WWW-Authenticate"]
    sent = response.request.headers.get("Authorization", "")
    # A refused token is answered with a Bearer challenge only, so a browser page never gets the
    # browser's own Basic login box; otherwise both schemes are offered.
    assert ("Basic" in response.headers["WWW-Authenticate"]) == (not sent.lower().startswith("bearer"))


def concrete(pattern: str) -> str:
    return re.sub(r"\{\w+\}", "1", pattern)


# -- tokens --------------------------------------------------------------------------------------


def test_login_returns_a_token_with_the_claims_of_the_issue(stack):
    body = login(stack, *ALICE)

    token = body["access_token"]
    header = jwt.get_unverified_header(token)
    decoded = jwt.decode(token, signing_key(stack), algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER)
    assert header["alg"] == "HS256"
    assert decoded["sub"] == NAS_USER and decoded["role"] == "admin"
    assert decoded["exp"] - decoded["iat"] == stack.app.settings.auth_token_lifetime_minutes * 60
    assert body["token_type"] == "bearer" and body["user"] == {"username": NAS_USER, "role": "admin", "view": "",
                                                               "method": "nas"}
    me = api(stack, "GET", "/auth/me", headers=bearer(token)).json()["user"]
    assert me["username"] == NAS_USER and me["method"] == "token"


def test_a_wrong_password_gets_no_token(stack):
    response = api(stack, "POST", "/auth/login", json={"username": NAS_USER, "password": "nope"})
    assert_401(response)
    assert "access_token" not in response.text
    assert api(stack, "POST", "/auth/login", json={"username": NAS_USER}).status_code == 422


@pytest.mark.parametrize("forge", [
    "alg-none", "alg-none-uppercase", "hs512-same-key", "hs256-other-key", "bad-signature", "no-signature",
    "wrong-audience", "no-audience", "wrong-issuer", "expired", "no-exp", "no-iat", "unknown-role",
    "rs256-header", "garbage",
])
def test_forged_or_stale_tokens_are_refused(stack, forge):
    login(stack, *ALICE)
    key = signing_key(stack)
    token = {
        "alg-none": lambda: b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims()) + ".",
        "alg-none-uppercase": lambda: b64({"alg": "None", "typ": "JWT"}) + "." + b64(claims()) + ".",
        "hs512-same-key": lambda: jwt.encode(claims(), key, algorithm="HS512"),
        "hs256-other-key": lambda: jwt.encode(claims(), b"x" * 64, algorithm="HS256"),
        "bad-signature": lambda: (lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"))(
            jwt.encode(claims(), key, algorithm="HS256")),
        "no-signature": lambda: jwt.encode(claims(), key, algorithm="HS256").rsplit(".", 1)[0] + ".",
        "wrong-audience": lambda: jwt.encode(claims(aud="someone-else"), key, algorithm="HS256"),
        "no-audience": lambda: jwt.encode(claims(aud=None), key, algorithm="HS256"),
        "wrong-issuer": lambda: jwt.encode(claims(iss="baluhost"), key, algorithm="HS256"),
        "expired": lambda: jwt.encode(claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 60), key,
                                      algorithm="HS256"),
        "no-exp": lambda: jwt.encode(claims(exp=None), key, algorithm="HS256"),
        "no-iat": lambda: jwt.encode(claims(iat=None), key, algorithm="HS256"),
        "unknown-role": lambda: jwt.encode(claims(role="superuser"), key, algorithm="HS256"),
        "rs256-header": lambda: b64({"alg": "RS256", "typ": "JWT"}) + "." + b64(claims()) + "."
        + jwt.encode(claims(), key, algorithm="HS256").rsplit(".", 1)[1],
        "garbage": lambda: "not.a.token",
    }[forge]()

    assert_401(api(stack, "GET", "/system/status", headers=bearer(token)))
    assert_401(api(stack, "POST", "/nas/wol", headers=bearer(token)))


def test_a_correctly_signed_token_for_a_user_the_nas_never_accepted_is_refused(stack):
    login(stack, *ALICE)
    token = jwt.encode(claims(sub="mallory"), signing_key(stack), algorithm="HS256")
    assert_401(api(stack, "GET", "/system/status", headers=bearer(token)))


def test_the_generated_key_is_created_once_with_mode_0600_and_survives_a_restart(stack, running_server):
    token = login(stack, *ALICE)["access_token"]
    path = stack.app.settings.data_dir / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()

    stack = restart(stack, running_server)

    assert path.read_bytes() == before
    assert api(stack, "GET", "/system/status", headers=bearer(token)).status_code == 200


def test_a_configured_secret_key_signs_tokens_and_no_key_file_is_made(stack_factory):
    secret = "a-configured-key-of-enough-length-0123456789"
    stack = stack_factory(secret_key=secret)
    token = login(stack, *ALICE)["access_token"]

    assert not (stack.app.settings.data_dir / "secret.key").exists()
    jwt.decode(token, secret, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)


def test_a_key_file_others_can_read_is_warned_about(stack_factory, settings_factory, caplog):
    settings = settings_factory()
    path = settings.data_dir / "secret.key"
    path.write_text("k" * 64 + "\n")
    path.chmod(0o644)
    with caplog.at_level("WARNING"):
        stack_factory()
    assert any("secret.key" in r.getMessage() and "chmod 600" in r.getMessage() for r in caplog.records)


def test_a_token_stops_working_when_the_nas_rejects_the_users_password(stack_factory, tmp_path, running_server):
    stack = multi_user_stack(stack_factory, tmp_path)
    token = login(stack, BOB, BOB_PASSWORD)["access_token"]
    stack.nas.set_password(BOB, "changed")
    stack = restart(stack, running_server)
    assert api(stack, "GET", "/auth/me", auth=(BOB, BOB_PASSWORD)).status_code == 401  # the NAS says no: dropped

    assert_401(api(stack, "GET", "/auth/me", headers=bearer(token)))


# -- who may call what ---------------------------------------------------------------------------


def test_every_endpoint_but_health_and_login_needs_authentication(stack):
    endpoints = [(r.method, r.path) for r in stack.app.api.endpoints()]
    public = {(r.method, r.path) for r in stack.app.api.endpoints() if r.public}
    assert public == {("GET", "/health"), ("POST", "/auth/login")}
    checked = 0
    for method, pattern in endpoints:
        if (method, pattern) in public:
            continue
        assert_401(api(stack, method, concrete(pattern), json={} if method in ("POST", "PUT") else None))
        checked += 1
    assert checked >= 10
    assert api(stack, "GET", "/health").status_code == 200


def test_every_admin_only_endpoint_refuses_a_user_without_the_admin_role(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path)
    admin_only = [(r.method, r.path) for r in stack.app.api.endpoints() if r.admin_only]
    assert ("POST", "/nas/wol") in admin_only and len(admin_only) >= 5
    token = login(stack, BOB, BOB_PASSWORD)["access_token"]
    for method, pattern in admin_only:
        for auth in ({"headers": bearer(token)}, {"auth": (BOB, BOB_PASSWORD)}):
            response = api(stack, method, concrete(pattern), json={}, **auth)
            assert response.status_code == 403, (method, pattern, response.status_code)
            assert response.json()["detail"] == "this endpoint needs the admin role"
    assert stack.nas.magic_packet_count == 0
    assert api(stack, "GET", "/system/status", headers=bearer(token)).status_code == 200  # reading is fine


def test_the_nas_admin_may_call_admin_endpoints_with_a_token_or_basic(stack):
    token = login(stack, *ALICE)["access_token"]
    assert api(stack, "POST", "/nas/wol", headers=bearer(token)).status_code == 200
    assert api(stack, "POST", "/nas/wol", auth=ALICE).status_code == 200


def test_the_admin_list_in_the_configuration_makes_an_admin(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path, auth_admins=BOB)
    body = login(stack, BOB, BOB_PASSWORD)
    assert body["user"]["role"] == "admin" and body["user"]["view"] == BOB  # admin of BaluPi, still his own files
    assert api(stack, "POST", "/nas/wol", headers=bearer(body["access_token"])).status_code == 200


def test_basic_auth_on_the_api_is_checked_like_a_webdav_login(stack):
    assert api(stack, "GET", "/system/status", auth=ALICE).status_code == 200
    assert_401(api(stack, "GET", "/system/status", auth=(NAS_USER, "wrong")))
    assert_401(api(stack, "GET", "/system/status", headers={"Authorization": "Basic !!!"}))
    assert_401(api(stack, "GET", "/system/status", headers={"Authorization": "Digest x"}))


# -- no NAS configured -----------------------------------------------------------------------------


def test_without_a_nas_the_api_is_anonymous_and_admin_from_the_pi_itself(running_server, http):
    server = running_server()
    me = http.get(server.url + "/api/auth/me").json()
    assert me == {"user": {"username": "", "role": "admin", "view": "", "method": "anonymous"}, "open_mode": True}
    assert http.get(server.url + "/api/system/status").status_code == 200
    login = http.post(server.url + "/api/auth/login", json={"username": "a", "password": "b"})
    assert login.status_code == 409


def call(app, method: str, path: str, remote_addr: str) -> tuple[int, dict]:
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "/api", "QUERY_STRING": "",
        "REMOTE_ADDR": remote_addr, "CONTENT_LENGTH": "0", "wsgi.input": io.BytesIO(b""),
        "SERVER_NAME": "balupi", "SERVER_PORT": "8000", "wsgi.url_scheme": "http",
    }
    status = []
    body = b"".join(app.api(environ, lambda s, h, e=None: status.append(s)))
    return int(status[0].split()[0]), json.loads(body)


def test_without_a_nas_and_with_anonymous_lan_access_a_client_on_the_lan_may_read_but_not_use_admin_endpoints(
        running_server, settings_factory):
    app = running_server(settings_factory(anonymous_lan_access=True)).app
    assert call(app, "GET", "/system/status", "192.168.178.20")[0] == 200
    status, body = call(app, "POST", "/nas/wol", "192.168.178.20")
    assert status == 403 and body["detail"] == "this endpoint needs the admin role"
    assert call(app, "POST", "/nas/wol", "127.0.0.1")[0] == 409  # admin from the Pi: no MAC configured
