"""The hot cache's eviction (issue 5, behaviour 6), against the whole stack with a tiny cache: the
limit holds at admission (never more than one in-flight file over it), dirty, pinned and open
files are never evicted, and files used often stay while files used once go."""

from __future__ import annotations

import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from balupi.events import Event
from tests.davkit import CLIENT_DRIVEN, seed, wait_downloads_idle
from tests.helpers import sha
from tests.stack import stack_factory  # noqa: F401

LIMIT_BYTES = 2_000_000
TINY_CACHE = {"cache_max_size_gb": LIMIT_BYTES / 1e9, "cache_min_free_gb": 0, **CLIENT_DRIVEN}  # only reads fill it


def tiny_stack(stack_factory, tmp_path: Path, files: dict[str, bytes], **overrides):
    seed(tmp_path / "nas", files)
    return stack_factory(**{**TINY_CACHE, **overrides})


def disk_bytes(cache_dir: Path) -> int:
    """What the cache occupies on the volume: published content and files being written."""
    total = 0
    for folder in (cache_dir / "data", cache_dir / "tmp"):
        for root, _, names in os.walk(folder):
            for name in names:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except FileNotFoundError:
                    pass
    return total


class Sampler:
    """Samples the cache's size (index and disk) on a thread until stopped; keeps the maxima."""

    def __init__(self, app, check=None):
        self.app, self.check = app, check
        self.max_used = self.max_disk = self.samples = 0
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.max_used = max(self.max_used, self.app.provider.cache.used_bytes())
            self.max_disk = max(self.max_disk, disk_bytes(self.app.settings.cache_dir))
            if self.check is not None:
                self.violations += self.check()
            self.samples += 1
            self._stop.wait(0.002)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def cached(app, path: str) -> bool:
    entry = app.provider.index.get("", path)
    return entry is not None and entry.cached


def test_reading_many_files_never_overshoots_the_limit_by_more_than_one_file(stack_factory, tmp_path):
    rng = random.Random(5)
    files = {f"/f{i:02}.bin": os.urandom(rng.randrange(20_000, 400_000)) for i in range(40)}  # ~8 MB
    largest = max(len(body) for body in files.values())
    stack = tiny_stack(stack_factory, tmp_path, files)
    order = list(files) * 2
    rng.shuffle(order)

    def read(path: str) -> None:
        response = stack.http.get(stack.url(path))
        assert response.status_code == 200 and sha(response.content) == sha(files[path])

    with Sampler(stack.app) as sampler:
        with ThreadPoolExecutor(4) as pool:  # concurrent misses must not overshoot together
            list(pool.map(read, order))
        wait_downloads_idle(stack.app)

    assert sampler.samples > 50
    assert stack.app.provider.cache.evictions > 0
    assert sampler.max_used <= LIMIT_BYTES  # the index never counts more than the limit
    assert sampler.max_disk <= LIMIT_BYTES + largest  # the volume: at most one file in flight over it
    assert stack.app.provider.cache.used_bytes() <= LIMIT_BYTES


def test_dirty_and_pinned_files_are_never_evicted(stack_factory, tmp_path):
    pinned = {f"/pinned/p{i}.bin": os.urandom(150_000) for i in range(3)}
    others = {f"/other/o{i:02}.bin": os.urandom(120_000) for i in range(30)}
    stack = tiny_stack(stack_factory, tmp_path, {**pinned, **others}, cache_pinned="/pinned/*")
    for path, body in pinned.items():
        assert stack.http.get(stack.url(path)).content == body
    wait_downloads_idle(stack.app)
    stack.nas.faults.fail(507, count=None, method="PUT")  # the NAS refuses uploads: these stay dirty
    assert stack.http.request("MKCOL", stack.url("/mine")).status_code == 201
    dirty = {f"/mine/d{i}.bin": os.urandom(150_000) for i in range(3)}
    for path, body in dirty.items():
        assert stack.http.put(stack.url(path), data=body).status_code == 201
    keep = list(pinned) + list(dirty)

    def check() -> list[str]:
        return [path for path in keep if not cached(stack.app, path)]

    with Sampler(stack.app, check) as sampler:
        for path, body in others.items():
            assert sha(stack.http.get(stack.url(path)).content) == sha(body)
        wait_downloads_idle(stack.app)

    assert stack.app.provider.cache.evictions >= 20  # the others pushed each other out
    assert sampler.violations == []
    for path in keep:
        assert stack.app.provider.index.get("", path).cached
    assert all(stack.app.provider.index.get("", p).dirty for p in dirty)
    stack.suspend_nas()  # served from the Pi alone
    for path, body in {**pinned, **dirty}.items():
        assert stack.http.get(stack.url(path)).content == body
    assert stack.nas.request_count() == 0


def test_files_used_often_stay_while_files_used_once_go(stack_factory, tmp_path):
    hot = {f"/hot/h{i}.bin": os.urandom(100_000) for i in range(5)}
    cold = {f"/cold/c{i:02}.bin": os.urandom(100_000) for i in range(40)}
    room = LIMIT_BYTES // 100_000  # files that fit
    stack = tiny_stack(stack_factory, tmp_path, {**hot, **cold})
    added, evicted = [], []
    stack.app.events.subscribe(Event.CACHE_FILE_ADDED, lambda path, **_: added.append(path))
    stack.app.events.subscribe(Event.CACHE_FILE_EVICTED, lambda path, **_: evicted.append(path))
    for _ in range(4):
        for path in hot:
            assert stack.http.get(stack.url(path)).status_code == 200
    wait_downloads_idle(stack.app)
    stack.app.provider.index.flush_access()  # what the cache-access-flush job does every 30 s
    # From now on the hot files are the least recently used: plain LRU would evict them first.
    for path, body in cold.items():
        assert stack.http.get(stack.url(path)).content == body
    wait_downloads_idle(stack.app)

    assert sorted(added) == sorted([*hot, *cold])  # every miss was cached (room made for each)
    assert stack.app.provider.cache.evictions >= len(cold) + len(hot) - room
    heat = [tuple(r) for r in stack.app.db.query("SELECT path, heat, heat_key, hits FROM entries WHERE path LIKE '/hot/%'")]
    assert [path for path in hot if not cached(stack.app, path)] == [], (heat, evicted, stack.app.provider.stats)
    cold_kept = [path for path in cold if cached(stack.app, path)]
    assert 0 < len(cold_kept) <= room - len(hot)
    assert cold_kept == list(cold)[-len(cold_kept):]  # among files used once, the oldest went first


def test_a_file_being_read_is_not_evicted(stack_factory, tmp_path):
    # Larger than the socket buffers of a loopback connection, so the server is still sending it
    # while the client waits: the content is open, not handed to the kernel already.
    big = os.urandom(16_000_000)
    others = {f"/o{i:02}.bin": os.urandom(1_000_000) for i in range(12)}
    limit_bytes = 20_000_000
    stack = tiny_stack(stack_factory, tmp_path, {"/big.bin": big, **others}, cache_max_size_gb=limit_bytes / 1e9)
    assert sha(stack.http.get(stack.url("/big.bin")).content) == sha(big)
    wait_downloads_idle(stack.app)
    assert cached(stack.app, "/big.bin")

    with stack.http.get(stack.url("/big.bin"), stream=True) as reading:  # a slow client, mid-file
        first = reading.raw.read(65536)
        for path, body in others.items():  # each needs room: only the others can give it
            assert sha(stack.http.get(stack.url(path)).content) == sha(body)
            wait_downloads_idle(stack.app)  # this one cached before the next asks for room
            assert cached(stack.app, "/big.bin")
        rest = reading.raw.read()
    assert sha(first + rest) == sha(big)
    assert stack.app.provider.cache.evictions >= len(others) - 4  # the others made room among themselves
    assert stack.app.provider.cache.used_bytes() <= limit_bytes
