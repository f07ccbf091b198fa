"""Using the awake time (issue 5, items 5 and 7): one wake learns the whole tree and fetches it
ahead, so afterwards everything is answered while the NAS sleeps."""

from __future__ import annotations

import time

from balupi.sim.nas import PowerState
from tests.stack import stack_factory  # noqa: F401

FOLDERS, FILES_PER_FOLDER = 12, 25  # 300 files, more than one candidate batch of the prefetch


def seed(root) -> dict[str, bytes]:
    files = {}
    for f in range(FOLDERS):
        folder = root / f"Album {f:02d}" / "sub"
        folder.mkdir(parents=True)
        for i in range(FILES_PER_FOLDER):
            data = f"photo {f}-{i} ".encode() * (50 + i)
            (folder / f"img{i:03d}.jpg").write_bytes(data)
            files[f"/Album {f:02d}/sub/img{i:03d}.jpg"] = data
    return files


def wait_for(condition, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_one_wake_lists_the_whole_tree_and_fetches_it_then_everything_is_served_asleep(stack_factory, tmp_path):
    files = seed(tmp_path / "nas")  # the NAS's storage, filled before BaluPi first sees it
    stack = stack_factory()
    db = stack.app.db

    def unlisted() -> int:
        return db.query_one("SELECT count(*) FROM entries WHERE is_dir = 1 AND listed = 0")[0]

    def uncached() -> int:
        return db.query_one("SELECT count(*) FROM entries WHERE is_dir = 0 AND cache_key IS NULL")[0]

    # The NAS is awake now: BaluPi uses the time to learn and fetch everything, by itself.
    stack.app._use_awake_time()
    assert wait_for(lambda: unlisted() == 0 and uncached() == 0 and
                    db.query_one("SELECT count(*) FROM entries WHERE is_dir = 0")[0] == len(files))

    stack.suspend_nas()
    for folder in {p.rsplit("/", 1)[0] for p in files} | {p.rsplit("/", 2)[0] for p in files} | {""}:
        listing = stack.http.request("PROPFIND", stack.url(folder + "/"), headers={"Depth": "1"})
        assert listing.status_code == 207
    for path, data in files.items():
        assert stack.http.get(stack.url(path)).content == data
    assert stack.nas.request_count() == 0
    assert stack.nas.magic_packet_count == 0
    assert stack.nas.state is PowerState.SUSPENDED
