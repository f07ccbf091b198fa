"""Issue 6, point 10: no secret (the NAS and users' passwords, tokens, the Tapo password, the JWT key)
ever appears in logs, error answers or /api responses; the database holds no password; the log
filter knows every password and key BaluPi has handled; files holding secrets that others can read
are warned about (the TOML file: tests/test_settings.py; the TLS key and token key: their tests).
"""

from __future__ import annotations

import logging
import re

from balupi.log import redact
from tests.authkit import BOB, BOB_PASSWORD, CAROL, CAROL_PASSWORD, api, dav, multi_user_stack, restart
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

TAPO_PASSWORD = "tapo-account-secret-9321"
SECRET_KEY = "configured-token-signing-key-0123456789abcdef"
WRONG_PASSWORD = "an-attempt-that-failed-77"


def concrete(pattern: str) -> str:
    return re.sub(r"\{\w+\}", "1", pattern)


def test_no_secret_in_logs_answers_or_the_database(stack_factory, tmp_path, running_server, caplog):
    caplog.set_level(logging.DEBUG)
    stack = multi_user_stack(stack_factory, tmp_path, {"/home/bob/notes.txt": b"notes", "/docs/a.txt": b"a"},
                             tapo_username="me@example.org", tapo_password=TAPO_PASSWORD, secret_key=SECRET_KEY)
    answers: list = []

    def keep(response):
        answers.append(response)
        return response

    token = keep(api(stack, "POST", "/auth/login", json={"username": NAS_USER, "password": NAS_PASSWORD})).json()["access_token"]
    bob_token = keep(api(stack, "POST", "/auth/login", json={"username": BOB, "password": BOB_PASSWORD})).json()["access_token"]
    keep(api(stack, "POST", "/auth/login", json={"username": BOB, "password": WRONG_PASSWORD}))
    keep(api(stack, "POST", "/auth/login", json={"username": "nobody", "password": WRONG_PASSWORD}))
    keep(dav(stack, "GET", "/notes.txt", auth=(BOB, BOB_PASSWORD)))
    keep(dav(stack, "PROPFIND", "/", auth=(CAROL, CAROL_PASSWORD), headers={"Depth": "1"}))
    keep(dav(stack, "PROPFIND", "/", auth=(CAROL, WRONG_PASSWORD), headers={"Depth": "1"}))
    keep(dav(stack, "GET", "/docs/a.txt", headers={"Authorization": f"Bearer {token}"}))  # tokens are not for /dav
    for route in stack.app.api.endpoints():
        if route.method == "GET":
            keep(api(stack, "GET", concrete(route.path), headers={"Authorization": f"Bearer {token}"}))
            keep(api(stack, "GET", concrete(route.path), headers={"Authorization": f"Bearer {bob_token}x"}))
    keep(api(stack, "POST", "/energy/prices", headers={"Authorization": f"Bearer {token}"}, data=b"{not json"))
    stack.nas.set_password(BOB, "changed-on-the-nas")
    stack.suspend_nas()
    stack = restart(stack, running_server)
    keep(dav(stack, "PROPFIND", "/", auth=(NAS_USER, NAS_PASSWORD), headers={"Depth": "0"}))  # offline
    keep(dav(stack, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"}))

    secrets = [NAS_PASSWORD, BOB_PASSWORD, CAROL_PASSWORD, WRONG_PASSWORD, TAPO_PASSWORD, SECRET_KEY, token, bob_token]
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    for secret in secrets:
        assert secret not in logged
        for response in answers:
            text = response.text + "".join(f"{k}: {v}\n" for k, v in response.headers.items())
            if secret == token and response.request.path_url == "/api/auth/login":
                continue  # the login answer carries its own token, and nothing else
            if secret == bob_token and "/auth/login" in response.request.path_url:
                continue
            assert secret not in text, (secret, response.request.method, response.request.path_url)
    stack.app.db.close()
    stored = b"".join(p.read_bytes() for p in stack.app.settings.data_dir.glob("balupi.db*"))
    for secret in (NAS_PASSWORD, BOB_PASSWORD, CAROL_PASSWORD, WRONG_PASSWORD, TAPO_PASSWORD, SECRET_KEY):
        assert secret.encode() not in stored


def test_the_log_filter_knows_the_passwords_and_keys_it_handled(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path)
    assert dav(stack, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"}).status_code == 207
    assert dav(stack, "PROPFIND", "/", auth=(CAROL, "not-carols-password"), headers={"Depth": "0"}).status_code == 401
    key = (stack.app.settings.data_dir / "secret.key").read_text().strip()

    assert redact(f"the password was {BOB_PASSWORD}") == "the password was ***"
    assert redact(f"key={key}") == "key=***"
    assert "not-carols-password" in redact("not-carols-password")  # failed attempts are not remembered anywhere


def test_reprs_never_show_secrets(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path, tapo_password=TAPO_PASSWORD, secret_key=SECRET_KEY)
    assert TAPO_PASSWORD not in repr(stack.app.settings) and SECRET_KEY not in repr(stack.app.settings)
    assert NAS_PASSWORD not in repr(stack.app.settings)
    assert dav(stack, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"}).status_code == 207
    assert BOB_PASSWORD not in repr(stack.app.auth.tokens) and "***" in repr(
        __import__("balupi.auth.basic", fromlist=["BasicCredentials"]).BasicCredentials(BOB, BOB_PASSWORD))
