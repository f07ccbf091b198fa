"""Issue 16, finding 3: one user's file cannot stall everyone's write-back. Names the NAS cannot store
are refused when they are created (awake and asleep); a change the NAS refuses for good is
quarantined, shown in /api/cache/stats (to its own user and admins), and the Pi keeps the file; a
change that fails for a while holds back only the later changes on the same paths. Two NAS users
with separate roots (bob: <storage>/home/bob, carol: <storage>/home/carol).
"""

from __future__ import annotations

import time

import pytest

from tests.authkit import BOB, BOB_PASSWORD, CAROL, CAROL_PASSWORD, api, dav, multi_user_stack
from tests.davkit import journal, wait_downloads_idle
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

ALICE, BOB_AUTH, CAROL_AUTH = (NAS_USER, NAS_PASSWORD), (BOB, BOB_PASSWORD), (CAROL, CAROL_PASSWORD)
LONG = "n" * 300 + ".txt"


@pytest.fixture
def users(stack_factory, tmp_path):
    return multi_user_stack(stack_factory, tmp_path, {"/home/bob/keep.txt": b"keep", "/home/carol/c.txt": b"c"},
                            nas_reserved_name_chars=":")


def move(stack, auth, src: str, dest: str):
    return dav(stack, "MOVE", src, auth=auth, headers={"Destination": stack.url(dest), "Overwrite": "F"})


@pytest.mark.parametrize("asleep", [False, True], ids=["awake", "asleep"])
def test_names_the_nas_cannot_store_are_refused_when_created(users, asleep):
    assert dav(users, "PROPFIND", "/", auth=BOB_AUTH, headers={"Depth": "1"}).status_code == 207
    assert dav(users, "GET", "/keep.txt", auth=BOB_AUTH).content == b"keep"  # cached
    wait_downloads_idle(users.app)
    if asleep:
        users.suspend_nas()
    for path in ("/" + LONG, "/" + "é" * 128, "/a:b.txt"):  # 300 bytes, 256 bytes in UTF-8, reserved
        response = dav(users, "PUT", path, auth=BOB_AUTH, data=b"x")
        assert response.status_code == 400, (path, response.status_code)
        assert "the NAS cannot store a name" in response.text
        assert dav(users, "MKCOL", path, auth=BOB_AUTH).status_code == 400
    refused = move(users, BOB_AUTH, "/keep.txt", "/" + LONG)
    assert refused.status_code == 400 and "Destination" in refused.text
    assert dav(users, "GET", "/keep.txt", auth=BOB_AUTH).content == b"keep"  # nothing moved
    # 255 bytes is fine.
    assert dav(users, "PUT", "/" + "m" * 251 + ".txt", auth=BOB_AUTH, data=b"ok").status_code == 201
    assert [op for op, path, _ in journal(users.app) if op == "put"] == ["put"]
    if asleep:
        assert users.nas.magic_packet_count == 0


def test_a_change_the_nas_refuses_for_good_is_quarantined_and_stops_nobody(users):
    users.nas.faults.fail(403, count=None, method="PUT", path="/dav/refused/")
    assert dav(users, "MKCOL", "/refused", auth=BOB_AUTH).status_code == 201
    assert dav(users, "PUT", "/refused/x.txt", auth=BOB_AUTH, data=b"bob's file").status_code == 201
    assert dav(users, "PUT", "/later.txt", auth=CAROL_AUTH, data=b"carol's later file").status_code == 201
    assert dav(users, "PUT", "/bob-later.txt", auth=BOB_AUTH, data=b"bob's later file").status_code == 201

    result = users.app.sync.run_once()

    assert (result.quarantined, result.remaining) == (1, 0)
    assert (users.nas.root / "home/carol/later.txt").read_bytes() == b"carol's later file"
    assert (users.nas.root / "home/bob/bob-later.txt").read_bytes() == b"bob's later file"
    assert not (users.nas.root / "home/bob/refused/x.txt").exists()
    # The Pi keeps bob's file (dirty: never evicted), and says so.
    assert dav(users, "GET", "/refused/x.txt", auth=BOB_AUTH).content == b"bob's file"
    bob_stats = api(users, "GET", "/cache/stats", auth=BOB_AUTH).json()
    assert bob_stats["quarantined_changes"] == 1 and bob_stats["pending_changes"] == 0
    assert [(q["op"], q["path"]) for q in bob_stats["quarantined"]] == [("put", "/refused/x.txt")]
    assert "403" in bob_stats["quarantined"][0]["last_error"]
    assert api(users, "GET", "/cache/stats", auth=CAROL_AUTH).json()["quarantined"] == []  # not carol's business
    assert [q["path"] for q in api(users, "GET", "/cache/stats", auth=ALICE).json()["quarantined"]] == ["/refused/x.txt"]
    assert users.app.sync.run_once().applied == 0  # quarantined is not retried
    assert not users.app.sync.has_pending()  # so it never keeps the NAS awake

    # Renamed to a place the NAS takes, the file reaches the NAS after all.
    assert move(users, BOB_AUTH, "/refused/x.txt", "/fine.txt").status_code == 201
    users.app.sync.run_once()
    assert (users.nas.root / "home/bob/fine.txt").read_bytes() == b"bob's file"
    assert not users.app.sync.has_pending()


def test_a_failing_change_holds_back_only_later_changes_of_the_same_paths(users):
    users.nas.faults.fail(503, count=None, method="PUT", path="/dav/slow/")
    assert dav(users, "MKCOL", "/slow", auth=BOB_AUTH).status_code == 201
    assert dav(users, "PUT", "/slow/a.txt", auth=BOB_AUTH, data=b"a").status_code == 201
    assert move(users, BOB_AUTH, "/slow/a.txt", "/moved.txt").status_code == 201  # depends on the upload
    assert dav(users, "PUT", "/other.txt", auth=BOB_AUTH, data=b"other").status_code == 201
    assert dav(users, "PUT", "/c2.txt", auth=CAROL_AUTH, data=b"c2").status_code == 201

    result = users.app.sync.run_once()

    assert result.failed == 1 and result.quarantined == 0
    assert (users.nas.root / "home/bob/other.txt").read_bytes() == b"other"
    assert (users.nas.root / "home/carol/c2.txt").read_bytes() == b"c2"
    assert not (users.nas.root / "home/bob/moved.txt").exists()
    assert [(op, path) for op, path, _ in journal(users.app)][-4:] == [
        ("put", "/slow/a.txt"), ("move", "/slow/a.txt"), ("put", "/other.txt"), ("put", "/c2.txt")]
    assert users.app.sync.pending()["count"] == 2  # the upload and the move behind it

    users.nas.faults.clear()
    time.sleep(2.1)  # the retry delay after one failure
    users.app.sync.run_once()
    assert (users.nas.root / "home/bob/moved.txt").read_bytes() == b"a"
    assert not users.app.sync.has_pending()


def test_a_change_journaled_before_its_name_was_known_to_be_unstorable_is_quarantined(users, running_server):
    """A change accepted before the rule (here: before '#' was configured as reserved) reaches the
    write-back: it is quarantined at once, not retried for ever, and nothing waits behind it."""
    import dataclasses

    assert dav(users, "PUT", "/a%23b.txt", auth=BOB_AUTH, data=b"kept on the Pi").status_code == 201  # /a#b.txt
    assert dav(users, "PUT", "/fine.txt", auth=BOB_AUTH, data=b"fine").status_code == 201
    settings = dataclasses.replace(users.app.settings, nas_reserved_name_chars=":#")
    users.server.stop()
    stack = type(users)(users.nas, running_server(settings), users.http)
    assert dav(stack, "GET", "/a%23b.txt", auth=BOB_AUTH).content == b"kept on the Pi"  # and logs bob in
    stack.app.sync.run_once()  # (the start-up's own sync run may have done it already)
    assert not stack.app.sync.has_pending()
    assert (stack.nas.root / "home/bob/fine.txt").read_bytes() == b"fine"
    assert not (stack.nas.root / "home/bob/a#b.txt").exists()
    quarantined = stack.app.sync.quarantined()
    assert [(q["op"], q["path"]) for q in quarantined] == [("put", "/a#b.txt")]
    assert "cannot store a name with '#'" in quarantined[0]["last_error"]
