"""Issue 4, behaviour 3: a cache miss streams from the NAS to the client while it is cached.

The simulated NAS is throttled (`faults.bandwidth_bytes_per_s`) so that a download takes a while
and the tests can look at BaluPi in the middle of one: the client already has bytes while the
cache entry is not published yet; it becomes a cache entry only complete and verified; a client
that disconnects or an upstream that drops leaves no partial entry; two clients share one upstream
GET; a ranged GET on an uncached file does not wait for the whole file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

import pytest
import requests

from tests.davkit import (
    data_files,
    dropped_ranges,
    index_row,
    listing,
    referenced_keys,
    stack_with,
    temp_files,
    wait_downloads_idle,
    wait_until,
)
from balupi.cache.downloads import DownloadState
from balupi.db import DB_FILENAME
from tests.stack import stack_factory  # noqa: F401

MIB = 1 << 20
BIG = os.urandom(4 * MIB)
BIG_PATH = "/videos/clip.mp4"


@pytest.fixture
def uncached(stack_factory, tmp_path):
    """BIG_PATH on the NAS, listed in the index but not cached."""
    stack = stack_with(stack_factory, tmp_path, {BIG_PATH: BIG})
    listing(stack, "/")
    listing(stack, "/videos")
    assert index_row(stack.app, BIG_PATH)["cache_key"] is None
    return stack


def assert_no_partial_entry(app) -> None:
    """Every content file is one the index references, and no temp file is left."""
    assert data_files(app) <= referenced_keys(app)
    assert temp_files(app) == []


def cached_content(app, path: str) -> bytes:
    key = index_row(app, path)["cache_key"]
    assert key is not None, f"{path} is not cached"
    return app.provider.store.path_of(key).read_bytes()


def test_a_miss_streams_to_the_client_before_the_download_is_finished_and_is_cached_after(uncached):
    stack = uncached
    stack.nas.faults.bandwidth_bytes_per_s = 2 * MIB  # the whole file takes about 2 s

    with stack.http.get(stack.url(BIG_PATH), stream=True) as response:
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(len(BIG))
        chunks = response.iter_content(64 * 1024)
        first = next(chunks)
        # The client has its first bytes, and the download is still going: nothing published yet.
        assert first == BIG[:len(first)]
        assert stack.app.provider.downloads.active("", BIG_PATH) is not None
        assert index_row(stack.app, BIG_PATH)["cache_key"] is None
        assert data_files(stack.app) == set()
        body = first + b"".join(chunks)

    assert body == BIG
    wait_downloads_idle(stack.app)
    assert cached_content(stack.app, BIG_PATH) == BIG
    assert stack.nas.request_count("GET", "/dav" + BIG_PATH) == 1
    assert_no_partial_entry(stack.app)


def test_a_client_that_disconnects_midway_leaves_no_partial_entry(uncached):
    stack = uncached
    stack.nas.faults.bandwidth_bytes_per_s = 4 * MIB

    response = stack.http.get(stack.url(BIG_PATH), stream=True)
    assert response.status_code == 200
    next(response.iter_content(64 * 1024))
    response.close()  # with most of the body unread: the connection is closed, not reused

    wait_downloads_idle(stack.app)
    assert_no_partial_entry(stack.app)
    row = index_row(stack.app, BIG_PATH)
    if row["cache_key"] is not None:  # the download may finish for the next reader: then it is whole
        assert cached_content(stack.app, BIG_PATH) == BIG
    again = stack.http.get(stack.url(BIG_PATH), timeout=30)
    assert again.status_code == 200 and again.content == BIG


def test_an_upstream_that_drops_midway_leaves_no_partial_entry_and_a_later_get_works(uncached):
    stack = uncached
    stack.nas.faults.drop_get(after_bytes=1536 * 1024, count=1)

    received = 0
    failed = False
    with stack.http.get(stack.url(BIG_PATH), stream=True, timeout=30) as response:
        assert response.status_code == 200
        try:
            for chunk in response.iter_content(64 * 1024):
                received += len(chunk)
        except requests.RequestException:
            failed = True
    assert failed or received < len(BIG)  # the client can tell the body is incomplete
    assert received < len(BIG)

    wait_downloads_idle(stack.app)
    assert index_row(stack.app, BIG_PATH)["cache_key"] is None
    assert_no_partial_entry(stack.app)

    again = stack.http.get(stack.url(BIG_PATH), timeout=30)
    assert again.status_code == 200 and again.content == BIG
    wait_downloads_idle(stack.app)
    assert cached_content(stack.app, BIG_PATH) == BIG
    assert_no_partial_entry(stack.app)


def test_a_file_that_changes_on_the_nas_during_the_download_is_not_cached(uncached):
    stack = uncached
    stack.nas.faults.bandwidth_bytes_per_s = 4 * MIB

    with stack.http.get(stack.url(BIG_PATH), stream=True) as response:
        chunks = response.iter_content(64 * 1024)
        first = next(chunks)
        changed = stack.nas.root / "videos" / "clip.mp4.new"
        changed.write_bytes(os.urandom(len(BIG)))
        os.utime(changed, (1_000_000_000, 1_000_000_000))
        os.replace(changed, stack.nas.root / "videos" / "clip.mp4")  # the NAS keeps sending the old one
        body = first + b"".join(chunks)

    assert body == BIG
    wait_downloads_idle(stack.app)
    assert index_row(stack.app, BIG_PATH)["cache_key"] is None  # not verified: not an entry
    assert_no_partial_entry(stack.app)


def test_two_clients_missing_the_same_file_share_one_upstream_get(uncached):
    stack = uncached
    stack.nas.faults.bandwidth_bytes_per_s = 4 * MIB
    bodies: list[bytes] = []
    barrier = threading.Barrier(2)

    def client() -> None:
        with requests.Session() as session:
            session.trust_env = False
            session.auth = stack.auth
            barrier.wait()
            response = session.get(stack.url(BIG_PATH), timeout=30)
            assert response.status_code == 200
            bodies.append(response.content)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert bodies == [BIG, BIG]
    wait_downloads_idle(stack.app)
    assert stack.nas.request_count("GET", "/dav" + BIG_PATH) == 1
    assert cached_content(stack.app, BIG_PATH) == BIG


def test_a_ranged_get_on_an_uncached_file_does_not_wait_for_the_whole_file(uncached):
    stack = uncached
    stack.nas.faults.bandwidth_bytes_per_s = 2 * MIB  # a whole-file download takes about 2 s

    start, end = 3 * MIB + 17, 3 * MIB + 4112
    response = stack.http.get(stack.url(BIG_PATH), headers={"Range": f"bytes={start}-{end}"})

    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(BIG)}"
    assert response.content == BIG[start:end + 1]
    # Answered while the whole file is still on its way into the cache (or not fetched at all).
    assert index_row(stack.app, BIG_PATH)["cache_key"] is None
    download = stack.app.provider.downloads.active("", BIG_PATH)
    assert download is None or download.written < len(BIG)

    wait_downloads_idle(stack.app)
    assert_no_partial_entry(stack.app)
    assert wait_until(lambda: stack.app.provider.downloads.count() == 0)


LONG = os.urandom(40 * MIB)  # five drop steps (balupi.cache.downloads.DROP_STEP_BYTES) of 8 MiB
LONG_PATH = "/videos/long.mp4"


def test_a_miss_gives_the_bytes_its_client_was_sent_back_to_the_page_cache(stack_factory, tmp_path, monkeypatch):
    stack = stack_with(stack_factory, tmp_path, {LONG_PATH: LONG})
    listing(stack, "/")
    listing(stack, "/videos")
    stack.nas.faults.bandwidth_bytes_per_s = 20 * MIB  # as from a NAS: the client keeps up with the download
    dropped = dropped_ranges(monkeypatch)

    response = stack.http.get(stack.url(LONG_PATH))

    assert response.content == LONG
    wait_downloads_idle(stack.app)
    assert cached_content(stack.app, LONG_PATH) == LONG
    # Dropped behind the client, in steps, all but the newest steps of the file.
    assert len(dropped) >= 2
    assert all(offset == 0 for offset, _ in dropped)
    assert max(length for _, length in dropped) >= len(LONG) - 3 * 8 * MIB


def test_a_miss_keeps_in_the_page_cache_what_a_slow_follower_has_not_been_sent(stack_factory, tmp_path, monkeypatch):
    stack = stack_with(stack_factory, tmp_path, {LONG_PATH: LONG})
    listing(stack, "/")
    listing(stack, "/videos")
    stack.nas.faults.bandwidth_bytes_per_s = 10 * MIB  # about 4 s: the slow reader joins early
    dropped = dropped_ranges(monkeypatch)

    with stack.http.get(stack.url(LONG_PATH), stream=True) as response:
        chunks = response.iter_content(64 * 1024)
        body = next(chunks)
        download = stack.app.provider.downloads.active("", LONG_PATH)
        assert download is not None and download.written < 8 * MIB
        slow = download.stream()  # a follower that takes one block and then stalls
        first_block = next(slow)
        body += b"".join(chunks)
    assert body == LONG
    wait_downloads_idle(stack.app)
    slow.close()

    assert first_block == LONG[:len(first_block)]
    assert cached_content(stack.app, LONG_PATH) == LONG
    # The slow follower has been sent nothing past its first block: nothing is dropped at all
    # (a drop waits for two steps behind every follower).
    assert dropped == []


def test_stopping_balupi_ends_a_running_download_before_the_store_and_database_close(uncached, caplog):
    """A download still running when BaluPi stops used to go on writing (and publishing) after the
    store's directory descriptors and the database were closed: "bad file descriptor" from its
    thread. The stop cancels it, nothing of it is published, and its thread is over by the time
    `stop` returns."""
    stack = uncached
    stack.nas.faults.bandwidth_bytes_per_s = 1 * MIB  # the whole file takes about 4 s
    caplog.set_level("INFO", logger="balupi")
    # The client reads the first bytes and goes away; the download goes on without it.
    with requests.get(stack.url(BIG_PATH), auth=stack.auth, stream=True, timeout=30) as response:
        assert response.status_code == 200
        assert next(response.iter_content(64 * 1024))
    download = stack.app.provider.downloads.active("", BIG_PATH)
    assert download is not None and download.written < len(BIG)

    stack.server.stop()

    assert download.join(0)  # its thread is over
    assert download.state is DownloadState.FAILED
    assert stack.app.provider.downloads.count() == 0
    assert temp_files(stack.app) == []  # the temp file is gone, and nothing was published
    assert cache_key_after_stop(stack.app, BIG_PATH) is None
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            and r.name.startswith("balupi")] == []


def cache_key_after_stop(app, path: str):
    """The file's content key, read from the database file (the app's connection is closed)."""
    with sqlite3.connect(Path(app.settings.data_dir) / DB_FILENAME) as conn:
        (key,) = conn.execute("SELECT cache_key FROM entries WHERE view = '' AND path = ?", (path,)).fetchone()
    return key


def test_a_download_refused_for_want_of_a_slot_gives_back_the_room_it_reserved(stack_factory, tmp_path, monkeypatch):
    """The cache reserves a file's size before its download starts; a download that then could not
    start (every slot taken: NasBusy) kept that reservation until BaluPi restarted, so each refused
    prefetch made the cache look fuller."""
    import balupi.cache.downloads as downloads_module
    from balupi.errors import NasBusy

    monkeypatch.setattr(downloads_module, "DOWNLOAD_SLOT_WAIT_S", 0.2)
    other = "/videos/other.mp4"
    stack = stack_with(stack_factory, tmp_path, {BIG_PATH: BIG, other: BIG[:MIB]},
                       server_threads=5, http_max_requests_per_client=4)  # one download slot
    listing(stack, "/")
    listing(stack, "/videos")
    provider = stack.app.provider
    stack.nas.faults.bandwidth_bytes_per_s = 1 * MIB  # the first download holds the slot for seconds
    provider.start_download(provider.index.get("", BIG_PATH), wake=False)
    reserved = provider.cache._reserved

    with pytest.raises(NasBusy):
        provider.start_download(provider.index.get("", other), wake=False)

    assert provider.cache._reserved == reserved
    stack.nas.faults.bandwidth_bytes_per_s = None
    wait_downloads_idle(stack.app)
    assert provider.cache._reserved == 0
