"""Issue 16, finding 8: a normal user cannot fill the Pi's memory or slow everyone down with dead
properties or locks. Dead properties are capped per value, per resource and per view (507 in the
PROPPATCH answer, nothing of the request stored); large PROPFIND answers are streamed; locks per
resource and per view are capped. Two NAS users with separate roots; the NAS awake and asleep.
"""

from __future__ import annotations

import re

import pytest

from balupi.dav import locks as dav_locks
from balupi.dav import props as dav_props
from balupi.dav import propfind
from tests.authkit import BOB, BOB_PASSWORD, CAROL, CAROL_PASSWORD, dav, multi_user_stack
from tests.davkit import parse_multistatus
from tests.stack import stack_factory  # noqa: F401

BOB_AUTH, CAROL_AUTH = (BOB, BOB_PASSWORD), (CAROL, CAROL_PASSWORD)
NS = "urn:balupi-test"


@pytest.fixture
def users(stack_factory, tmp_path):
    files = {f"/home/bob/d/f{i:03}.txt": b"x" for i in range(40)}
    files.update({"/home/bob/a.txt": b"a", "/home/carol/c.txt": b"c"})
    return multi_user_stack(stack_factory, tmp_path, files)


def proppatch(stack, auth, path: str, **values: str):
    props = "".join(f"<t:{name}>{value}</t:{name}>" for name, value in values.items())
    body = (f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:t="{NS}"><D:set><D:prop>{props}'
            "</D:prop></D:set></D:propertyupdate>").encode()
    response = dav(stack, "PROPPATCH", path, auth=auth, data=body, headers={"Content-Type": "application/xml"})
    assert response.status_code == 207, response.text[:300]
    return sorted(int(s) for s in re.findall(r"HTTP/1.1 (\d+)", response.text))


def dead(stack, auth, path: str) -> dict:
    response = dav(stack, "PROPFIND", path, auth=auth, headers={"Depth": "0"})
    member = next(iter(parse_multistatus(response.content).values()))
    return {k.split("}")[1]: v for k, v in member.props.items() if k.startswith("{" + NS)}


def test_dead_properties_are_capped_per_value_and_per_resource(users):
    big = "v" * (dav_props.MAX_VALUE_BYTES + 1)
    assert proppatch(users, BOB_AUTH, "/a.txt", ok="small", big=big) == [424, 507]  # one too large: none stored
    assert dead(users, BOB_AUTH, "/a.txt") == {}
    chunk = "w" * 15_000
    for i in range(4):
        assert proppatch(users, BOB_AUTH, "/a.txt", **{f"p{i}": chunk}) == [200]
    assert proppatch(users, BOB_AUTH, "/a.txt", p4=chunk) == [507]  # 75 kB > 64 KiB on one resource
    assert proppatch(users, BOB_AUTH, "/a.txt", p0="replaced") == [200]  # replacing frees room
    assert set(dead(users, BOB_AUTH, "/a.txt")) == {"p0", "p1", "p2", "p3"}
    many = {f"n{i}": "1" for i in range(dav_props.MAX_PER_RESOURCE + 1)}
    assert set(proppatch(users, BOB_AUTH, "/d/f000.txt", **many)) == {424, 507}  # one request over the count
    assert dead(users, BOB_AUTH, "/d/f000.txt") == {}
    assert proppatch(users, BOB_AUTH, "/d/f000.txt", **{f"n{i}": "1" for i in range(dav_props.MAX_PER_RESOURCE)}) == [200]
    assert len(dead(users, BOB_AUTH, "/d/f000.txt")) == dav_props.MAX_PER_RESOURCE
    assert proppatch(users, BOB_AUTH, "/d/f000.txt", one_more="1") == [507]
    five = {f"q{i}": "u" * 15_000 for i in range(5)}  # 75 kB in one request
    assert sorted(set(proppatch(users, BOB_AUTH, "/d/f001.txt", **five))) == [424, 507]
    assert dead(users, BOB_AUTH, "/d/f001.txt") == {}
    assert proppatch(users, CAROL_AUTH, "/c.txt", mine="carol") == [200]  # bob's props are not carol's limit


def test_dead_properties_are_capped_per_view(users, monkeypatch):
    monkeypatch.setattr(dav_props, "MAX_BYTES_PER_VIEW", 100_000)
    chunk = "v" * 15_000
    statuses = [proppatch(users, BOB_AUTH, f"/d/f{i:03}.txt", big=chunk)[0] for i in range(8)]
    assert statuses == [200] * 6 + [507] * 2  # 6 x 15 kB fit in 100 kB, the 7th does not
    assert proppatch(users, CAROL_AUTH, "/c.txt", big=chunk) == [200]  # another view, its own room


@pytest.mark.parametrize("asleep", [False, True], ids=["awake", "asleep"])
def test_large_propfind_answers_are_streamed_small_ones_have_a_length(users, asleep):
    chunk = "p" * 4000
    for i in range(40):  # 40 members x 4 kB of dead properties: 160 kB, over CHUNK_BYTES
        assert proppatch(users, BOB_AUTH, f"/d/f{i:03}.txt", note=chunk) == [200]
    assert dav(users, "PROPFIND", "/d/", auth=BOB_AUTH, headers={"Depth": "1"}).status_code == 207
    if asleep:
        users.suspend_nas()
    large = dav(users, "PROPFIND", "/d/", auth=BOB_AUTH, headers={"Depth": "1"})
    assert large.status_code == 207
    assert "Content-Length" not in large.headers and large.headers["Transfer-Encoding"] == "chunked"
    assert len(large.content) > propfind.CHUNK_BYTES
    members = parse_multistatus(large.content)
    assert len(members) == 41
    assert all(m.props.get("{%s}note" % NS) == chunk for p, m in members.items() if p != "/d")
    small = dav(users, "PROPFIND", "/", auth=BOB_AUTH, headers={"Depth": "1"})
    assert int(small.headers["Content-Length"]) == len(small.content)
    if asleep:
        assert users.nas.request_count() == 0


def lock(stack, auth, path: str, scope: str = "shared"):
    body = (f'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:{scope}/></D:lockscope>'
            "<D:locktype><D:write/></D:locktype><D:owner>t</D:owner></D:lockinfo>").encode()
    return dav(stack, "LOCK", path, auth=auth, data=body, headers={"Timeout": "Second-600", "Depth": "0"})


def test_locks_per_resource_and_per_view_are_capped(users, monkeypatch):
    tokens = []
    for _ in range(dav_locks.MAX_LOCKS_PER_RESOURCE):
        response = lock(users, BOB_AUTH, "/a.txt")
        assert response.status_code == 200
        tokens.append(response.headers["Lock-Token"])
    assert lock(users, BOB_AUTH, "/a.txt").status_code == 507
    # Both listings stay on the fast lane (its own multistatus prefix), streamed and cheap: bob's
    # shows his 32 locks on /a.txt (decision 260), carol's none of them.
    bobs = dav(users, "PROPFIND", "/", auth=BOB_AUTH, headers={"Depth": "1"}).content
    carols = dav(users, "PROPFIND", "/", auth=CAROL_AUTH, headers={"Depth": "1"}).content
    assert b"<D:multistatus" in bobs and b"<D:multistatus" in carols
    assert bobs.count(b"<D:activelock>") == len(tokens) and all(t.strip("<>").encode() in bobs for t in tokens)
    assert b"<D:activelock>" not in carols
    assert lock(users, CAROL_AUTH, "/c.txt").status_code == 200  # carol's file, carol's view
    # Releasing one makes room again; the lookup by token finds it among the others.
    assert dav(users, "UNLOCK", "/a.txt", auth=BOB_AUTH, headers={"Lock-Token": tokens[5]}).status_code == 204
    assert lock(users, BOB_AUTH, "/a.txt").status_code == 200

    monkeypatch.setattr(dav_locks, "MAX_LOCKS_PER_VIEW", dav_locks.MAX_LOCKS_PER_RESOURCE + 3)
    results = [lock(users, BOB_AUTH, f"/d/f{i:03}.txt").status_code for i in range(4)]
    assert results == [200, 200, 200, 507]
    assert lock(users, CAROL_AUTH, "/c.txt").status_code == 200
