"""Small cached content answered from memory (decision 200): the copy is used only while its file
is exactly the one it was read from, and content removed, evicted, taken aside or replaced is
never served from it. First the store's copies on their own (real files in a temp directory),
then through the whole stack (the real simulated NAS, real HTTP)."""

from __future__ import annotations

import os

from balupi.cache.store import ContentStore, SmallCopies
from tests.davkit import awake_walk, index_row, stack_with
from tests.stack import stack_factory  # noqa: F401


def stored(store: ContentStore, data: bytes) -> str:
    key, tmp, f = store.open_temp()
    with f:
        f.write(data)
    store.publish(key, tmp)
    return key


def kept(store: ContentStore, key: str) -> bytes:
    """Read `key` as the fast lane does and keep its copy."""
    with open(store.open_content(key), "rb", buffering=0) as f:
        data = f.read()
        store.small.keep(key, data, os.fstat(f.fileno()))
    return data


def test_a_kept_copy_is_served_while_its_file_is_unchanged(tmp_path):
    store = ContentStore(tmp_path)
    data = os.urandom(4096)
    key = stored(store, data)
    assert store.small_copy(key) is None  # nothing kept yet
    kept(store, key)
    assert store.small_copy(key) == data and store.small_copy(key) == data
    assert store.small.hits == 2 and store.small.bytes == 4096


def test_a_file_replaced_under_its_key_is_never_served_from_the_copy(tmp_path):
    store = ContentStore(tmp_path)
    key = stored(store, b"a" * 1000)
    kept(store, key)
    other = tmp_path / "other"
    other.write_bytes(b"a" * 1000)  # even the same bytes: another file
    os.replace(other, store.file_of(key))
    assert store.small_copy(key) is None
    assert len(store.small) == 0 and store.small.bytes == 0


def test_a_file_whose_times_changed_is_never_served_from_the_copy(tmp_path):
    store = ContentStore(tmp_path)
    key = stored(store, b"b" * 1000)
    kept(store, key)
    st = os.stat(store.file_of(key))
    os.utime(store.file_of(key), ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert store.small_copy(key) is None


def test_a_hard_link_to_the_content_makes_the_copy_unusable(tmp_path):
    store = ContentStore(tmp_path)
    key = stored(store, b"c" * 1000)
    kept(store, key)
    os.link(store.file_of(key), tmp_path / "a-link")
    assert store.small_copy(key) is None


def test_content_deleted_behind_the_stores_back_is_never_served_from_the_copy(tmp_path):
    store = ContentStore(tmp_path)
    key = stored(store, b"d" * 1000)
    kept(store, key)
    os.unlink(store.file_of(key))
    assert store.small_copy(key) is None and len(store.small) == 0


def test_removed_or_quarantined_content_drops_its_copy_at_once(tmp_path):
    store = ContentStore(tmp_path)
    removed, taken_aside, left = (stored(store, os.urandom(2000)) for _ in range(3))
    for key in (removed, taken_aside, left):
        kept(store, key)
    assert len(store.small) == 3
    store.remove(removed)
    store.quarantine(taken_aside)
    assert store.small.lookup(removed) is None and store.small.lookup(taken_aside) is None
    assert store.small.lookup(left) is not None and store.small.bytes == 2000


def test_the_copies_stay_within_their_bounds_oldest_first(tmp_path):
    store = ContentStore(tmp_path)
    store.small = SmallCopies(file_bytes=100, total_bytes=250)
    keys = [stored(store, bytes([i]) * 100) for i in range(3)]
    too_large = stored(store, b"x" * 101)
    for key in keys + [too_large]:
        kept(store, key)
    assert store.small.bytes <= 250
    assert store.small.lookup(keys[0]) is None  # the oldest made room
    assert store.small_copy(keys[1]) == bytes([1]) * 100 and store.small_copy(keys[2]) == bytes([2]) * 100
    assert store.small.lookup(too_large) is None


# -- through the whole stack --------------------------------------------------------------------

SMALL = os.urandom(4096)
PATH = "/notes/small.bin"


def _stack_with_a_copy(stack_factory, tmp_path, asleep: bool):
    """A stack whose PATH has been read three times, so its bytes are kept in memory; (stack, store, key)."""
    stack = stack_with(stack_factory, tmp_path, {PATH: SMALL})
    awake_walk(stack)
    if asleep:
        stack.suspend_nas()
    store = stack.app.provider.store
    for _ in range(3):
        response = stack.http.get(stack.url(PATH))
        assert response.status_code == 200 and response.content == SMALL
    key = index_row(stack.app, PATH)["cache_key"]
    assert store.small.lookup(key) is not None
    return stack, store, key


def test_a_small_hit_is_served_from_memory_whole_and_ranged(stack_factory, tmp_path):
    stack, store, key = _stack_with_a_copy(stack_factory, tmp_path, asleep=True)
    assert store.small.hits >= 1
    hits = store.small.hits
    ranged = stack.http.get(stack.url(PATH), headers={"Range": "bytes=100-199"})
    assert ranged.status_code == 206 and ranged.content == SMALL[100:200]
    assert ranged.headers["Content-Range"] == f"bytes 100-199/{len(SMALL)}"
    assert store.small.hits == hits + 1
    assert stack.nas.request_count() == 0


def test_an_evicted_file_is_fetched_again_not_served_from_memory(stack_factory, tmp_path):
    stack, store, old_key = _stack_with_a_copy(stack_factory, tmp_path, asleep=False)
    files, _ = stack.app.provider.cache.evict_to(0)
    assert files == 1 and index_row(stack.app, PATH)["cache_key"] is None
    assert store.small.lookup(old_key) is None
    before = stack.nas.request_count("GET", path_prefix="/")
    response = stack.http.get(stack.url(PATH))
    assert response.status_code == 200 and response.content == SMALL
    assert stack.nas.request_count("GET", path_prefix="/") > before  # a miss: the NAS was asked


def test_a_new_version_is_served_and_the_old_copy_never_again(stack_factory, tmp_path):
    stack, store, old_key = _stack_with_a_copy(stack_factory, tmp_path, asleep=True)
    new = os.urandom(4000)
    assert stack.http.put(stack.url(PATH), data=new).status_code in (201, 204)
    for _ in range(3):
        response = stack.http.get(stack.url(PATH))
        assert response.status_code == 200 and response.content == new
    assert index_row(stack.app, PATH)["cache_key"] != old_key
