"""The operations API of the hot cache and the write-back (issue 5, behaviour 9): stats, conflicts,
and the admin triggers for sync, eviction, prefetch and refresh, against the whole stack."""

from __future__ import annotations

import time

from balupi.sim.nas import PowerState
from tests.authkit import BOB, BOB_PASSWORD, CAROL, CAROL_PASSWORD, dav, multi_user_stack
from tests.authkit import api as api_as
from tests.davkit import seed, stack_with, wait_downloads_idle, wait_until
from tests.stack import NAS_PASSWORD, NAS_USER, stack, stack_factory  # noqa: F401

STATS_FIELDS = {
    "total_files", "total_size_mb", "max_size_gb", "usage_percent", "dirty_files", "dirty_bytes",
    "hit_rate_percent", "byte_hit_rate_percent", "nas_wakes_caused", "conflicts", "oldest_pending_change",
    "pending_changes", "evictions",
}  # fmt: skip


def seeded(stack_factory, tmp_path, files: dict[str, bytes], **overrides):
    """The stack with `files` on the NAS from the start, and the cache filled by clients only (no
    prefetch, no first walk on the wake at start-up), so what the test reads is what is cached."""
    return stack_with(stack_factory, tmp_path, files, **overrides)


def api(stack, path: str) -> str:
    return stack.server.url + "/api" + path


def job(stack, name: str) -> dict:
    return next(j for j in stack.http.get(api(stack, "/system/jobs")).json()["jobs"] if j["name"] == name)


def test_stats_count_cached_and_dirty_files_hits_misses_and_wakes(stack_factory, tmp_path):
    stack = seeded(stack_factory, tmp_path, {"/a.bin": b"a" * 300_000, "/b.bin": b"b" * 100_000})
    empty = stack.http.get(api(stack, "/cache/stats")).json()
    assert STATS_FIELDS <= set(empty)
    assert empty["total_files"] == 0 and empty["hit_rate_percent"] is None and empty["oldest_pending_change"] is None

    assert stack.http.get(stack.url("/a.bin")).content == b"a" * 300_000  # miss
    wait_downloads_idle(stack.app)
    for _ in range(3):
        assert stack.http.get(stack.url("/a.bin")).status_code == 200  # hits
    stack.suspend_nas()
    before_put = time.time()
    assert stack.http.put(stack.url("/new.txt"), data=b"n" * 5000).status_code == 201  # dirty, pending
    stack.nas.faults.fail(507, count=None, method="PUT")  # the NAS refuses the upload: it stays pending
    got = stack.http.get(stack.url("/b.bin"))
    assert got.content == b"b" * 100_000, (got.status_code, got.text[:500])  # a miss that wakes the NAS
    wait_downloads_idle(stack.app)

    body = stack.http.get(api(stack, "/cache/stats")).json()
    assert body["total_files"] == 3  # a.bin, b.bin, new.txt
    assert body["total_size_mb"] == round(405_000 / 1e6, 3)
    assert body["max_size_gb"] == stack.app.settings.cache_max_size_gb
    assert body["usage_percent"] == round(100 * 405_000 / (body["max_size_gb"] * 1e9), 1)
    assert body["dirty_files"] == 1 and body["dirty_bytes"] == 5000
    assert body["requests"] == {"hits": 3, "misses": 2, "hit_bytes": 900_000, "miss_bytes": 400_000}
    assert body["hit_rate_percent"] == 60.0
    assert body["byte_hit_rate_percent"] == round(100 * 900_000 / 1_300_000, 1)
    assert body["nas_wakes_caused"] == 1
    assert body["pending_changes"] == 1
    assert before_put <= body["oldest_pending_change"] <= time.time()
    assert body["conflicts"] == {"count": 0, "unresolved": 0}
    assert body["evictions"] == 0


def test_a_conflict_is_listed_with_both_names(stack_factory, tmp_path):
    stack = seeded(stack_factory, tmp_path, {"/notes.txt": b"original"})
    assert stack.http.get(stack.url("/notes.txt")).content == b"original"
    stack.suspend_nas()
    assert stack.http.put(stack.url("/notes.txt"), data=b"edited on the Pi").status_code == 204
    (stack.nas.root / "notes.txt").write_bytes(b"edited on the NAS meanwhile")
    stack.wake_nas()
    stack.app.sync.run_once()

    body = stack.http.get(api(stack, "/cache/conflicts")).json()
    assert body["count"] == 1 and body["unresolved"] == 1
    [conflict] = body["conflicts"]
    assert conflict["path"] == "/notes.txt"
    assert conflict["conflict_path"].startswith("/notes (conflict ") and conflict["conflict_path"].endswith(".txt")
    assert conflict["resolved"] is False and conflict["at"] <= time.time()
    # Both versions are there, under the names the listing gives.
    assert stack.http.get(stack.url("/notes.txt")).content == b"edited on the NAS meanwhile"
    assert stack.http.get(stack.url(conflict["conflict_path"])).content == b"edited on the Pi"
    assert (stack.nas.root / conflict["conflict_path"].lstrip("/")).read_bytes() == b"edited on the Pi"
    stats = stack.http.get(api(stack, "/cache/stats")).json()
    assert stats["conflicts"] == {"count": 1, "unresolved": 1}
    assert stack.http.get(api(stack, "/cache/conflicts?unresolved=1")).json()["conflicts"] == body["conflicts"]


def test_users_see_only_the_conflicts_of_their_own_files(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path, {"/home/bob/plan.txt": b"original"})
    bob = (BOB, BOB_PASSWORD)
    assert dav(stack, "GET", "/plan.txt", auth=bob).content == b"original"  # bob's view: /home/bob
    stack.suspend_nas()
    assert dav(stack, "PUT", "/plan.txt", auth=bob, data=b"bob's edit").status_code == 204
    (stack.nas.root / "home" / "bob" / "plan.txt").write_bytes(b"changed on the NAS")
    stack.wake_nas()
    stack.app.sync.run_once()

    for who, auth, expected in (("bob", bob, 1), ("carol", (CAROL, CAROL_PASSWORD), 0),
                                ("the admin", (NAS_USER, NAS_PASSWORD), 1)):
        response = api_as(stack, "GET", "/cache/conflicts", auth=auth)
        assert response.status_code == 200, who
        body = response.json()
        assert body["count"] == len(body["conflicts"]) == expected, who
        assert all(c["view"] == "bob" and c["path"] == "/plan.txt" for c in body["conflicts"]), who
    for path in ("/cache/sync", "/cache/evict", "/cache/prefetch", "/cache/refresh"):  # admin only
        assert api_as(stack, "POST", path, auth=bob).status_code == 403, path
    assert api_as(stack, "GET", "/cache/stats", auth=bob).status_code == 200


def test_post_sync_applies_pending_changes_while_the_nas_is_awake(stack):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    stack.suspend_nas()
    assert stack.http.put(stack.url("/doc.txt"), data=b"written while asleep").status_code == 201
    stack.nas.wake_now()
    assert stack.nas.wait_for_state(PowerState.AWAKE)
    # BaluPi has not noticed (no probe yet): a plain trigger does not wake anything ...
    response = stack.http.post(api(stack, "/cache/sync"))
    assert response.status_code == 202 and response.json()["job"] == "sync"
    assert wait_until(lambda: not job(stack, "sync")["running"], 10)
    assert not (stack.nas.root / "doc.txt").exists()
    # ... and with "wake" it makes sure the NAS is up (here: finds it so), then syncs.
    response = stack.http.post(api(stack, "/cache/sync"), json={"wake": True})
    assert response.status_code == 202 and response.json()["wake"] is True
    assert wait_until(lambda: (stack.nas.root / "doc.txt").exists() and not stack.app.sync.has_pending(), 20)
    assert (stack.nas.root / "doc.txt").read_bytes() == b"written while asleep"


def test_post_evict_frees_clean_files_down_to_the_target(stack_factory, tmp_path):
    stack = seeded(stack_factory, tmp_path, {f"/f{i}.bin": bytes([i]) * 100_000 for i in range(5)})
    for i in range(5):
        assert stack.http.get(stack.url(f"/f{i}.bin")).status_code == 200
    wait_downloads_idle(stack.app)
    stack.suspend_nas()
    assert stack.http.put(stack.url("/dirty.bin"), data=b"d" * 100_000).status_code == 201

    response = stack.http.post(api(stack, "/cache/evict"), json={"to_gb": 0})
    assert response.status_code == 200
    body = response.json()
    assert body["evicted_files"] == 5 and body["freed_bytes"] == 500_000
    assert body["used_bytes"] == 100_000  # the dirty file stays
    assert stack.app.provider.index.get("", "/dirty.bin").cached
    assert stack.http.get(api(stack, "/cache/stats")).json()["evictions"] == 5
    assert stack.http.get(stack.url("/dirty.bin")).content == b"d" * 100_000
    assert stack.http.post(api(stack, "/cache/evict"), json={"to_gb": "lots"}).status_code == 422
    assert stack.http.post(api(stack, "/cache/evict")).json()["evicted_files"] == 0  # under the limits already


def test_post_refresh_and_prefetch_use_an_awake_nas(stack):
    seed(stack.nas.root, {"/docs/a.txt": b"alpha", "/docs/sub/b.txt": b"beta" * 1000})
    stack.wake_nas()
    response = stack.http.post(api(stack, "/cache/refresh"))
    assert response.status_code == 202 and response.json()["job"] == "refresh"
    index = stack.app.provider.index
    assert wait_until(lambda: index.get("", "/docs/sub/b.txt") is not None, 20)
    response = stack.http.post(api(stack, "/cache/prefetch"), json={"budget_mb": 10})
    assert response.status_code == 202 and response.json()["job"] == "prefetch"
    assert wait_until(lambda: index.get("", "/docs/sub/b.txt").cached and index.get("", "/docs/a.txt").cached, 20)
    stack.suspend_nas()
    assert stack.http.get(stack.url("/docs/sub/b.txt")).content == b"beta" * 1000
    assert stack.nas.request_count() == 0


def test_triggers_are_admin_only_and_need_a_nas(running_server, http):
    server = running_server()
    routes = dict.fromkeys(server.app.api.routes())
    for path in ("/cache/sync", "/cache/evict", "/cache/prefetch", "/cache/refresh"):
        assert ("POST", path) in routes
    for path in ("/cache/sync", "/cache/evict", "/cache/prefetch", "/cache/refresh"):
        assert server.app.api.find("POST", path).admin_only, path
    for path in ("/cache/stats", "/cache/conflicts"):
        assert not server.app.api.find("GET", path).admin_only, path
    for path in ("/cache/sync", "/cache/prefetch", "/cache/refresh"):
        response = http.post(server.url + "/api" + path)
        assert response.status_code == 409 and "BALUPI_NAS_WEBDAV_URL" in response.json()["detail"]
