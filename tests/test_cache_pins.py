"""Pins added at run time (POST/DELETE /api/cache/pins, the dashboard's Pin button): listed, kept
through eviction, fetched when the NAS is awake, removable; the setting's pins stay."""

from __future__ import annotations

from tests.authkit import BOB, BOB_PASSWORD, api, dav, multi_user_stack
from tests.davkit import index_row, listing, wait_downloads_idle, wait_until
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

ALICE = (NAS_USER, NAS_PASSWORD)
FILES = {"/photos/a.jpg": b"a" * 40_000, "/photos/b.jpg": b"b" * 30_000, "/docs/c.txt": b"c" * 1000}


def indexed(stack_factory, tmp_path, **overrides):
    stack = multi_user_stack(stack_factory, tmp_path, FILES, **overrides)
    for folder in ("/", "/photos", "/docs"):
        listing(stack, folder)
    return stack


def test_a_pinned_file_stays_through_eviction_and_a_pinned_folder_is_fetched(stack_factory, tmp_path):
    stack = indexed(stack_factory, tmp_path, cache_pinned="/docs/*")
    assert dav(stack, "GET", "/photos/a.jpg", auth=ALICE).status_code == 200
    wait_downloads_idle(stack.app)
    added = api(stack, "POST", "/cache/pins", auth=ALICE, json={"path": "/photos/a.jpg"})
    assert added.status_code == 201, added.text
    assert added.json() == {"pattern": "/photos/a.jpg", "added": True, "files": 1, "bytes": 40_000,
                            "cached_files": 1, "cached_bytes": 40_000}
    assert api(stack, "POST", "/cache/pins", auth=ALICE, json={"path": "/photos/a.jpg"}).status_code == 200

    assert api(stack, "POST", "/cache/evict", auth=ALICE, json={"to_gb": 0}).status_code == 200
    assert index_row(stack.app, "/photos/a.jpg")["cache_key"] is not None  # pinned: kept

    folder = api(stack, "POST", "/cache/pins", auth=ALICE, json={"path": "/photos/"}).json()
    assert folder["pattern"] == "/photos/*" and folder["files"] == 2
    assert api(stack, "POST", "/cache/prefetch", auth=ALICE, json={"budget_mb": 10}).status_code == 202
    assert wait_until(lambda: index_row(stack.app, "/photos/b.jpg")["cache_key"] is not None, timeout_s=20)
    # What the awake time was used for, on the wake list: the awake period now counts the prefetch.
    awake_now = lambda: api(stack, "GET", "/nas/wakes", auth=ALICE).json()["wakes"][0]  # noqa: E731
    assert wait_until(lambda: awake_now()["used_for"]["files_prefetched"] >= 1, timeout_s=20)
    assert awake_now()["ongoing"] is True and awake_now()["used_for"]["bytes_prefetched"] >= 30_000

    pins = {p["pattern"]: p for p in api(stack, "GET", "/cache/pins", auth=ALICE).json()["pins"]}
    assert pins["/docs/*"]["source"] == "settings"
    assert pins["/photos/a.jpg"]["source"] == "api" and pins["/photos/a.jpg"]["added_by"] == NAS_USER
    assert pins["/photos/*"]["cached_files"] == 2

    assert api(stack, "DELETE", "/cache/pins", auth=ALICE, params={"pattern": "/docs/*"}).status_code == 409
    assert api(stack, "DELETE", "/cache/pins", auth=ALICE, params={"pattern": "/photos/a.jpg"}).status_code == 200
    assert api(stack, "DELETE", "/cache/pins", auth=ALICE, params={"pattern": "/photos/a.jpg"}).status_code == 404
    assert "/photos/a.jpg" not in stack.app.provider.cache.pinned


def test_pins_are_for_admins_and_must_be_share_paths(stack_factory, tmp_path):
    stack = indexed(stack_factory, tmp_path)
    bob = (BOB, BOB_PASSWORD)
    assert api(stack, "GET", "/cache/pins", auth=bob).status_code == 200
    assert api(stack, "POST", "/cache/pins", auth=bob, json={"path": "/photos/a.jpg"}).status_code == 403
    for bad in ("photos/a.jpg", "", 5, "/a/../b"):
        assert api(stack, "POST", "/cache/pins", auth=ALICE, json={"path": bad}).status_code == 422, bad
