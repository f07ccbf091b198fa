"""Issue 6, WebDAV logins (points 1 and 3): HTTP Basic checked by the NAS while it is awake, a salted
scrypt verifier for logins while it sleeps, dropped when the NAS rejects the password, unknown users
refused while it sleeps (or the NAS woken, by setting), and one answer for every refusal.
"""

from __future__ import annotations

import sqlite3

import pytest

from balupi.auth.verifiers import check_verifier
from balupi.nas.monitor import NasState
from balupi.sim.nas import PowerState
from tests.authkit import BOB, BOB_PASSWORD, api, dav, multi_user_stack, restart
from tests.davkit import stack_with
from tests.stack import NAS_PASSWORD, NAS_USER, stack, stack_factory  # noqa: F401


def verifier_row(app, username: str):
    return app.db.query_one("SELECT verifier, nas_role, view, verified_at FROM auth_verifiers WHERE username = ?",
                            (username,))


def assert_challenge(response) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="BaluPi"'
    if response.request.method != "HEAD":
        assert b"401 Access not authorized" in response.content


def refusal(response) -> tuple:
    """What a client learns from a refusal: status, challenge, body (not the date)."""
    return response.status_code, response.headers.get("WWW-Authenticate"), response.content


# -- every door asks -----------------------------------------------------------------------------


@pytest.mark.parametrize("method, path, headers", [
    ("GET", "/docs/a.txt", {}),  # a cached file: the fast lane
    ("HEAD", "/docs/a.txt", {}),
    ("PROPFIND", "/docs/", {"Depth": "1"}),  # the fast lane's PROPFIND
    ("PROPFIND", "/", {"Depth": "infinity"}),  # WsgiDAV's
    ("GET", "/docs/", {}),  # WsgiDAV's HTML listing
    ("OPTIONS", "/", {}),
    ("PUT", "/docs/new.txt", {}),
    ("MKCOL", "/docs/new/", {}),
    ("DELETE", "/docs/a.txt", {}),
    ("LOCK", "/docs/a.txt", {}),
    ("MOVE", "/docs/a.txt", {"Destination": "/dav/docs/b.txt"}),
])
def test_every_webdav_request_without_credentials_gets_the_basic_challenge(stack_factory, tmp_path, method, path,
                                                                          headers):
    stack = stack_with(stack_factory, tmp_path, {"/docs/a.txt": b"alpha"})
    assert stack.http.get(stack.url("/docs/a.txt")).status_code == 200  # cached, as alice

    response = dav(stack, method, path, headers=headers, data=b"x" if method == "PUT" else None)

    assert_challenge(response)
    assert stack.http.get(stack.url("/docs/a.txt")).content == b"alpha"  # nothing changed


def test_a_malformed_authorization_header_is_a_challenge_not_an_error(stack):
    for value in ("Basic", "Basic !!!", "Basic " + "YWxpY2U=", "Digest username=alice", "Bearer x.y.z",
                  "Basic " + "A" * 5000):
        response = dav(stack, "PROPFIND", "/", headers={"Authorization": value, "Depth": "0"})
        assert_challenge(response)


# -- the NAS decides while awake -----------------------------------------------------------------


def test_a_login_the_nas_accepts_stores_a_salted_scrypt_verifier_never_the_password(stack):
    response = stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "0"})
    assert response.status_code == 207

    verifier, nas_role, view, _ = verifier_row(stack.app, NAS_USER)
    assert verifier.startswith("scrypt$") and NAS_PASSWORD not in verifier
    assert check_verifier(verifier, NAS_PASSWORD) and not check_verifier(verifier, NAS_PASSWORD + "x")
    assert (nas_role, view) == ("admin", "")
    stack.app.auth.enroll("other", NAS_PASSWORD)  # the same password, salted differently
    assert verifier_row(stack.app, "other")[0] != verifier
    stack.app.db.close()
    raw = b"".join(p.read_bytes() for p in stack.app.settings.data_dir.glob("balupi.db*"))
    assert NAS_PASSWORD.encode() not in raw


def test_a_wrong_password_is_refused_and_never_remembered(stack):
    response = dav(stack, "PROPFIND", "/", auth=(NAS_USER, "wrong"), headers={"Depth": "0"})

    assert_challenge(response)
    assert verifier_row(stack.app, NAS_USER) is None
    assert stack.nas.request_count("POST", "/api/auth/login") == 1  # the NAS was asked
    response = dav(stack, "PROPFIND", "/", auth=(NAS_USER, "wrong"), headers={"Depth": "0"})
    assert_challenge(response)
    assert stack.nas.request_count("POST", "/api/auth/login") == 2  # and asked again: no cached refusal


def test_a_wrong_guess_while_the_nas_is_awake_leaves_the_offline_login_alone(stack, running_server):
    assert stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "0"}).status_code == 207
    assert_challenge(dav(stack, "PROPFIND", "/", auth=(NAS_USER, "a guess"), headers={"Depth": "0"}))

    assert verifier_row(stack.app, NAS_USER) is not None
    stack.suspend_nas()
    stack = restart(stack, running_server)
    assert stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "0"}).status_code == 207


def test_an_unknown_user_and_a_wrong_password_get_the_same_answer(stack_factory):
    stack = stack_factory(auth_wake_nas_for_unknown=False)  # asleep, nobody wakes the NAS to ask it
    known = dav(stack, "PROPFIND", "/", auth=(NAS_USER, "wrong"), headers={"Depth": "0"})
    unknown = dav(stack, "PROPFIND", "/", auth=("mallory", "wrong"), headers={"Depth": "0"})
    assert refusal(known) == refusal(unknown)
    stack.suspend_nas()  # alice has a verifier now; mallory none
    known = dav(stack, "PROPFIND", "/", auth=(NAS_USER, "wrong"), headers={"Depth": "0"})
    unknown = dav(stack, "PROPFIND", "/", auth=("mallory", "wrong"), headers={"Depth": "0"})
    assert refusal(known) == refusal(unknown)
    assert stack.nas.request_count() == 0


def test_the_webdav_check_of_the_nas_works_without_its_rest_api(stack_factory, tmp_path):
    stack = stack_factory(auth_nas_method="webdav")
    assert stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "0"}).status_code == 207
    assert stack.nas.request_count("POST", "/api/auth/login") == 0
    assert verifier_row(stack.app, NAS_USER) is not None
    assert_challenge(dav(stack, "PROPFIND", "/", auth=(NAS_USER, "nope"), headers={"Depth": "0"}))


# -- offline ---------------------------------------------------------------------------------------


def test_offline_login_works_after_the_nas_went_to_sleep(stack_factory, tmp_path, running_server):
    stack = stack_with(stack_factory, tmp_path, {"/docs/a.txt": b"alpha"}, auth_wake_nas_for_unknown=False)
    assert stack.http.get(stack.url("/docs/a.txt")).content == b"alpha"
    stack.suspend_nas()
    stack = restart(stack, running_server)  # nothing remembered in memory: only the verifier counts
    assert stack.app.nas.state is not NasState.AWAKE

    response = stack.http.get(stack.url("/docs/a.txt"))
    me = api(stack, "GET", "/auth/me", auth=(NAS_USER, NAS_PASSWORD)).json()["user"]

    assert response.status_code == 200 and response.content == b"alpha"
    assert me["method"] in ("offline", "remembered") and me["view"] == ""
    assert_challenge(dav(stack, "GET", "/docs/a.txt", auth=(NAS_USER, "wrong")))
    assert stack.nas.request_count() == 0 and stack.nas.magic_packet_count == 0


def test_offline_login_stops_working_after_the_offline_window(stack_factory, tmp_path, running_server):
    stack = stack_factory(auth_offline_days=30, auth_wake_nas_for_unknown=False)
    stack.suspend_nas()
    stack = restart(stack, running_server)
    with stack.app.db.write() as d:  # 31 days since the NAS last accepted the password
        d.execute("UPDATE auth_verifiers SET verified_at = verified_at - 31 * 86400")

    assert_challenge(stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "0"}))
    assert stack.nas.request_count() == 0 and stack.nas.magic_packet_count == 0


def test_no_offline_logins_when_the_window_is_zero(stack_factory, tmp_path, running_server):
    stack = stack_factory(auth_offline_days=0, auth_wake_nas_for_unknown=False)
    stack.suspend_nas()
    assert verifier_row(stack.app, NAS_USER) is None
    stack = restart(stack, running_server)
    assert_challenge(stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "0"}))


def test_a_password_the_nas_later_rejects_drops_the_verifier_and_stops_offline_logins(stack_factory, tmp_path, running_server):
    stack = multi_user_stack(stack_factory, tmp_path, auth_wake_nas_for_unknown=False)
    assert dav(stack, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"}).status_code == 207
    assert verifier_row(stack.app, BOB) is not None
    stack.nas.set_password(BOB, "bob-new-pw")
    stack = restart(stack, running_server)  # the NAS is awake: it is asked again

    assert_challenge(dav(stack, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"}))
    assert verifier_row(stack.app, BOB) is None
    stack.suspend_nas()
    assert_challenge(dav(stack, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"}))
    assert stack.nas.request_count() == 0


def test_the_new_password_works_once_the_nas_accepted_it(stack_factory, tmp_path, running_server):
    stack = multi_user_stack(stack_factory, tmp_path)
    assert dav(stack, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"}).status_code == 207
    stack.nas.set_password(BOB, "bob-new-pw")

    assert dav(stack, "PROPFIND", "/", auth=(BOB, "bob-new-pw"), headers={"Depth": "0"}).status_code == 207
    stack.suspend_nas()
    stack = restart(stack, running_server)
    assert dav(stack, "PROPFIND", "/", auth=(BOB, "bob-new-pw"), headers={"Depth": "0"}).status_code == 207
    assert_challenge(dav(stack, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"}))


def test_a_401_for_a_users_own_nas_request_drops_that_users_login(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path, {"/home/bob/notes.txt": b"bob's notes"})
    bob = (BOB, BOB_PASSWORD)
    assert dav(stack, "PROPFIND", "/", auth=bob, headers={"Depth": "1"}).status_code == 207  # listed, not cached
    stack.nas.set_password(BOB, "changed-on-the-nas")

    # Still remembered by BaluPi for a while, but the NAS refuses bob's credentials for the download:
    response = dav(stack, "GET", "/notes.txt", auth=bob)

    assert response.status_code >= 400
    assert verifier_row(stack.app, BOB) is None
    assert_challenge(dav(stack, "PROPFIND", "/", auth=bob, headers={"Depth": "0"}))


def test_an_unknown_user_while_the_nas_sleeps_is_refused_without_waking_it_when_the_setting_is_off(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path, auth_wake_nas_for_unknown=False)
    stack.suspend_nas()  # bob never logged in

    assert_challenge(dav(stack, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"}))
    assert stack.nas.request_count() == 0 and stack.nas.magic_packet_count == 0
    assert stack.nas.state is PowerState.SUSPENDED


def test_an_unknown_user_wakes_the_nas_by_default(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path)
    stack.suspend_nas()

    response = dav(stack, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"})

    assert response.status_code == 207
    assert stack.nas.magic_packet_count == 1
    assert verifier_row(stack.app, BOB) is not None
    stack.suspend_nas()
    assert_challenge(dav(stack, "PROPFIND", "/", auth=("mallory", "x"), headers={"Depth": "0"}))  # woken, refused
    assert stack.nas.magic_packet_count == 1


def test_a_damaged_verifier_refuses_instead_of_failing(stack_factory, running_server):
    stack = stack_factory(auth_wake_nas_for_unknown=False)
    stack.suspend_nas()
    with stack.app.db.write() as d:
        d.execute("UPDATE auth_verifiers SET verifier = 'scrypt$nonsense'")
    stack = restart(stack, running_server)
    assert_challenge(stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "0"}))


def test_the_verifier_table_is_the_auth_migration(stack):
    con = sqlite3.connect(stack.app.settings.data_dir / "balupi.db")
    try:
        names = {r[0] for r in con.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = 'auth'")}
    finally:
        con.close()
    assert names == {"0001_verifiers"}
