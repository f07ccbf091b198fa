"""Issue 6, point 2 and "Done when": each user sees exactly what the NAS shows that user, awake and
asleep. Two users with different roots on the simulated NAS (bob: <storage>/home/bob, carol:
<storage>/home/carol) never see each other's files, content, dead properties or locks; the admin
alice sees the whole storage; NAS requests for a user's view carry that user's credentials.
"""

from __future__ import annotations

import pytest

from tests.authkit import BOB, BOB_PASSWORD, CAROL, CAROL_PASSWORD, dav, multi_user_stack
from tests.davkit import parse_multistatus, wait_downloads_idle
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

FILES = {
    "/home/bob/notes.txt": b"bob's notes",
    "/home/bob/photos/b1.jpg": b"bob photo" * 1000,
    "/home/carol/notes.txt": b"carol's notes, longer than bob's",
    "/home/carol/diary/c1.txt": b"carol's diary",
    "/shared-root.txt": b"only the admin's root has this",
}
BOB_SEES = {"/", "/notes.txt", "/photos", "/photos/b1.jpg"}
CAROL_SEES = {"/", "/notes.txt", "/diary", "/diary/c1.txt"}
AUTH = {BOB: (BOB, BOB_PASSWORD), CAROL: (CAROL, CAROL_PASSWORD), NAS_USER: (NAS_USER, NAS_PASSWORD)}


def tree(stack, user: str) -> dict[str, bytes | None]:
    """Every path `user` can list (PROPFIND Depth 1, walked), with the content of each file (GET)."""
    found: dict[str, bytes | None] = {}
    todo = ["/"]
    while todo:
        path = todo.pop()
        response = dav(stack, "PROPFIND", path if path == "/" else path + "/", auth=AUTH[user], headers={"Depth": "1"})
        assert response.status_code == 207, (user, path, response.status_code)
        for member in parse_multistatus(response.content).values():
            if member.path in found:
                continue
            if member.is_dir:
                found[member.path] = None
                if member.path != path:
                    todo.append(member.path)
            else:
                got = dav(stack, "GET", member.path, auth=AUTH[user])
                assert got.status_code == 200, (user, member.path, got.status_code)
                found[member.path] = got.content
    wait_downloads_idle(stack.app)
    return found


@pytest.fixture
def users(stack_factory, tmp_path):
    return multi_user_stack(stack_factory, tmp_path, FILES)


def assert_each_sees_only_their_own(stack) -> None:
    bob, carol = tree(stack, BOB), tree(stack, CAROL)
    assert set(bob) == BOB_SEES
    assert set(carol) == CAROL_SEES
    assert bob["/notes.txt"] == FILES["/home/bob/notes.txt"]
    assert carol["/notes.txt"] == FILES["/home/carol/notes.txt"]
    for user, other in ((BOB, "/diary/c1.txt"), (CAROL, "/photos/b1.jpg"), (BOB, "/shared-root.txt"),
                        (BOB, "/home/carol/notes.txt"), (CAROL, "/home/bob/notes.txt")):
        assert dav(stack, "GET", other, auth=AUTH[user]).status_code == 404, (user, other)


def test_two_users_with_different_roots_never_see_each_others_files_awake(users):
    assert_each_sees_only_their_own(users)


def test_two_users_with_different_roots_never_see_each_others_files_asleep(users):
    tree(users, BOB), tree(users, CAROL)  # logged in, listed and cached while the NAS was awake
    users.suspend_nas()

    assert_each_sees_only_their_own(users)
    assert users.nas.request_count() == 0 and users.nas.magic_packet_count == 0


def test_the_admin_sees_the_whole_storage_in_the_shared_view(users):
    alice = tree(users, NAS_USER)
    assert {"/home/bob/notes.txt", "/home/carol/diary/c1.txt", "/shared-root.txt"} <= set(alice)
    assert users.app.db.query_one("SELECT count(*) FROM entries WHERE view = '' AND path = '/home/bob/notes.txt'")[0] == 1


def test_the_index_and_cache_are_scoped_per_view(users):
    tree(users, BOB), tree(users, CAROL)
    rows = users.app.db.query("SELECT view, path, cache_key FROM entries WHERE path = '/notes.txt'")
    by_view = {r[0]: r[2] for r in rows}
    assert set(by_view) == {BOB, CAROL}
    assert by_view[BOB] and by_view[CAROL] and by_view[BOB] != by_view[CAROL]  # content stored per view


def test_requests_for_a_users_view_use_that_users_own_credentials(users):
    tree(users, BOB)
    # Paths of bob's view (his root is <storage>/home/bob; the shared view would say /dav/home/bob/...):
    bob_requests = [r for r in users.nas.requests if r.path.rstrip("/") in ("/dav/notes.txt", "/dav/photos", "/dav/photos/b1.jpg")]
    assert len(bob_requests) >= 3 and {r.user for r in bob_requests} == {BOB}


def test_a_write_while_asleep_stays_in_the_writers_view(users):
    tree(users, BOB), tree(users, CAROL)
    users.suspend_nas()

    assert dav(users, "PUT", "/new.txt", auth=AUTH[BOB], data=b"bob wrote this").status_code == 201

    assert dav(users, "GET", "/new.txt", auth=AUTH[BOB]).content == b"bob wrote this"
    assert dav(users, "GET", "/new.txt", auth=AUTH[CAROL]).status_code == 404
    journal = users.app.db.query("SELECT view, op, path FROM journal WHERE path = '/new.txt'")
    assert [tuple(r) for r in journal] == [(BOB, "put", "/new.txt")]


def test_dead_properties_of_the_same_path_belong_to_each_view(users):
    tree(users, BOB), tree(users, CAROL)
    proppatch = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x-test:"><D:set><D:prop>'
                 b"<Z:secret>bob only</Z:secret></D:prop></D:set></D:propertyupdate>")
    propfind = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:x-test:"><D:prop><Z:secret/></D:prop></D:propfind>'

    assert dav(users, "PROPPATCH", "/notes.txt", auth=AUTH[BOB], data=proppatch).status_code == 207

    mine = dav(users, "PROPFIND", "/notes.txt", auth=AUTH[BOB], data=propfind, headers={"Depth": "0"})
    theirs = dav(users, "PROPFIND", "/notes.txt", auth=AUTH[CAROL], data=propfind, headers={"Depth": "0"})
    assert parse_multistatus(mine.content)["/notes.txt"].props["{urn:x-test:}secret"] == "bob only"
    assert "{urn:x-test:}secret" not in parse_multistatus(theirs.content)["/notes.txt"].props
    assert b"bob only" not in theirs.content


def test_locks_of_the_same_path_belong_to_each_view(users):
    tree(users, BOB), tree(users, CAROL)
    lockinfo = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
                b"<D:locktype><D:write/></D:locktype><D:owner>bob's laptop</D:owner></D:lockinfo>")

    locked = dav(users, "LOCK", "/notes.txt", auth=AUTH[BOB], data=lockinfo, headers={"Timeout": "Second-600"})
    assert locked.status_code == 200

    # carol's /notes.txt is another file: not locked, and bob's lock is nowhere in her answers
    assert dav(users, "PUT", "/notes.txt", auth=AUTH[CAROL], data=b"carol rewrote her notes").status_code == 204
    discovery = dav(users, "PROPFIND", "/notes.txt", auth=AUTH[CAROL], headers={"Depth": "0"},
                    data=b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:lockdiscovery/></D:prop></D:propfind>')
    assert b"bob's laptop" not in discovery.content and b"opaquelocktoken" not in discovery.content
    token = locked.headers["Lock-Token"]
    assert dav(users, "UNLOCK", "/notes.txt", auth=AUTH[CAROL], headers={"Lock-Token": token}).status_code >= 400
    # bob's lock holds for bob
    assert dav(users, "PUT", "/notes.txt", auth=AUTH[BOB], data=b"no token").status_code == 423
    assert dav(users, "UNLOCK", "/notes.txt", auth=AUTH[BOB], headers={"Lock-Token": token}).status_code == 204


def test_a_change_made_while_asleep_reaches_the_writers_own_root_on_the_nas_with_their_credentials(users):
    tree(users, BOB), tree(users, CAROL)
    users.suspend_nas()
    proppatch = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x-test:"><D:set><D:prop>'
                 b"<Z:tag>bob's tag</Z:tag></D:prop></D:set></D:propertyupdate>")
    assert dav(users, "PUT", "/from-bob.txt", auth=AUTH[BOB], data=b"bob wrote this asleep").status_code == 201
    assert dav(users, "PROPPATCH", "/notes.txt", auth=AUTH[BOB], data=proppatch).status_code == 207
    assert dav(users, "PUT", "/from-carol.txt", auth=AUTH[CAROL], data=b"carol's").status_code == 201

    users.nas.wake_now()
    users.app.nas.probe()
    users.app.sync.run_once()

    root = users.nas.root
    assert (root / "home" / "bob" / "from-bob.txt").read_bytes() == b"bob wrote this asleep"
    assert (root / "home" / "carol" / "from-carol.txt").read_bytes() == b"carol's"
    assert not (root / "from-bob.txt").exists() and not (root / "from-carol.txt").exists()
    writes = [r for r in users.nas.requests if r.method in ("PUT", "MOVE", "PROPPATCH")]
    assert writes and all(r.user in (BOB, CAROL) for r in writes)
    assert {r.user for r in writes if r.method == "PROPPATCH"} == {BOB}
    assert users.app.db.query("SELECT op FROM journal WHERE state = 'pending'") == []
