"""Write-back cases found by the crash test (tests/test_crash.py), each on its own against the whole
stack: empty files, a NAS dropping uploads mid-body, and content replaced after a move."""

from __future__ import annotations

import random
import threading
import time

from balupi.sim.nas import PowerState
from tests.davkit import stack_with, wait_until
from tests.helpers import sha
from tests.stack import stack, stack_factory  # noqa: F401


def sync_until_done(stack, runs: int = 50) -> None:
    """Run the sync until nothing waits, skipping the retries' backoff (not what is tested here)."""
    for _ in range(runs):
        stack.app.sync.run_once()
        if not stack.app.sync.has_pending():
            return
        stack.app.db.raw().execute("UPDATE journal SET next_at = 0 WHERE state = 'pending'")
    rows = stack.app.db.query("SELECT op, path, attempts, last_error FROM journal WHERE state = 'pending'")
    raise AssertionError(f"the sync is stuck: {[tuple(r) for r in rows]}")


def test_an_empty_file_reaches_the_nas(stack):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    stack.suspend_nas()
    assert stack.http.put(stack.url("/empty.txt"), data=b"").status_code == 201
    assert stack.http.put(stack.url("/after.txt"), data=b"after").status_code == 201
    stack.wake_nas()
    sync_until_done(stack, runs=3)
    assert (stack.nas.root / "empty.txt").read_bytes() == b""
    assert (stack.nas.root / "after.txt").read_bytes() == b"after"  # not stuck behind it


def test_uploads_the_nas_drops_mid_body_are_retried_until_all_arrive(stack):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    stack.suspend_nas()
    rng = random.Random(7)
    files = {f"/d{i}.bin": rng.randbytes(rng.choice([1, 5_000, 300_000, 1_500_000])) for i in range(12)}
    for path, body in files.items():
        assert stack.http.put(stack.url(path), data=body).status_code == 201
    stack.wake_nas()
    for after in (0, 1, 4_000, 250_000, 1_000_000):
        stack.nas.faults.drop_put(after_bytes=after, count=2)
        stack.app.sync.run_once()
        stack.app.db.raw().execute("UPDATE journal SET next_at = 0 WHERE state = 'pending'")
    stack.nas.faults.clear()
    sync_until_done(stack)

    assert any(r.fault == "drop_put" for r in stack.nas.requests)
    for path, body in files.items():
        assert sha((stack.nas.root / path.lstrip("/")).read_bytes()) == sha(body), path
    assert not list(stack.nas.root.glob(".balupi-upload-*"))  # no temporary upload left behind
    assert stack.app.db.query_one("SELECT count(*) FROM conflicts")[0] == 0


def test_content_replaced_after_a_move_does_not_block_the_sync(stack):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    stack.suspend_nas()
    assert stack.http.put(stack.url("/draft.txt"), data=b"first").status_code == 201
    moved = stack.http.request("MOVE", stack.url("/draft.txt"), headers={"Destination": stack.url("/final.txt")})
    assert moved.status_code == 201
    assert stack.http.put(stack.url("/final.txt"), data=b"second").status_code == 204
    assert stack.http.put(stack.url("/other.txt"), data=b"other").status_code == 201
    stack.wake_nas()
    sync_until_done(stack, runs=3)
    assert (stack.nas.root / "final.txt").read_bytes() == b"second"
    assert not (stack.nas.root / "draft.txt").exists()
    assert (stack.nas.root / "other.txt").read_bytes() == b"other"


# -- what a kill -9 in the middle of an upload leaves, and the next attempt ---------------------------


def pending_put(stack, path: str):
    return stack.app.db.query_one("SELECT * FROM journal WHERE state = 'pending' AND op = 'put' AND path = ?", (path,))


def crash_after_move(stack, path: str, body: bytes) -> None:
    """Leave the state of BaluPi killed right after the NAS did our MOVE, before `phase` said so:
    the file is at its name on the NAS, the temp name is gone, the row says 'uploaded'."""
    row = pending_put(stack, path)
    entry = stack.app.db.query_one("SELECT dirty, etag, base_etag, nas_etag FROM entries WHERE path = ?", (path,))
    stack.app.sync.run_once()  # the real upload
    assert (stack.nas.root / path.lstrip("/")).read_bytes() == body
    db = stack.app.db.raw()
    db.execute("UPDATE journal SET state = 'pending', done_at = NULL, phase = 'uploaded' WHERE id = ?", (row["id"],))
    db.execute("UPDATE entries SET dirty = ?, etag = ?, base_etag = ?, nas_etag = ? WHERE path = ?", (*tuple(entry), path))


def test_an_upload_moved_just_before_a_crash_is_not_taken_for_a_conflict(stack):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    stack.suspend_nas()
    assert stack.http.put(stack.url("/a.txt"), data=b"mine").status_code == 201
    stack.wake_nas()
    stack.app.sync.run_once()  # whatever the wake's own run did, this one waits for it
    stack.app.db.raw().execute("UPDATE journal SET state = 'pending', phase = NULL WHERE path = '/a.txt'")
    crash_after_move(stack, "/a.txt", b"mine")

    sync_until_done(stack, runs=2)

    assert stack.app.db.query_one("SELECT count(*) FROM conflicts")[0] == 0
    assert [p.name for p in stack.nas.root.iterdir() if p.is_file()] == ["a.txt"]
    entry = stack.app.provider.index.get("", "/a.txt")
    assert not entry.dirty and entry.cached and entry.nas_etag and not entry.nas_etag.startswith("l-")


def test_a_newer_version_after_an_upload_cut_off_by_a_crash_is_no_conflict_either(stack):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    stack.suspend_nas()
    assert stack.http.put(stack.url("/b.txt"), data=b"version 1").status_code == 201
    stack.nas.wake_now()
    assert stack.nas.wait_for_state(PowerState.AWAKE)
    stack.app.nas.note_success()  # awake, without the wake's own sync run
    crash_after_move(stack, "/b.txt", b"version 1")
    assert stack.http.put(stack.url("/b.txt"), data=b"version 2").status_code == 204  # after the restart

    sync_until_done(stack, runs=3)

    assert stack.app.db.query_one("SELECT count(*) FROM conflicts")[0] == 0
    assert (stack.nas.root / "b.txt").read_bytes() == b"version 2"
    assert [p.name for p in stack.nas.root.iterdir() if p.is_file()] == ["b.txt"]


def test_a_partial_temp_upload_left_by_a_crash_is_replaced_or_removed(stack):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    stack.suspend_nas()
    for name in ("c.txt", "d.txt"):
        assert stack.http.put(stack.url(f"/{name}"), data=b"first " + name.encode()).status_code == 201
    assert stack.http.put(stack.url("/d.txt"), data=b"second d.txt").status_code == 204  # supersedes
    for row in stack.app.db.query("SELECT id, path, cache_key FROM journal WHERE op = 'put'"):
        # Killed mid-PUT: a torn temp file on the NAS, the row says 'uploading'.
        (stack.nas.root / f".balupi-upload-{row['cache_key'][:16]}.part").write_bytes(b"fir")
        stack.app.db.raw().execute("UPDATE journal SET phase = 'uploading' WHERE id = ?", (row["id"],))
    stack.wake_nas()

    sync_until_done(stack, runs=3)

    assert (stack.nas.root / "c.txt").read_bytes() == b"first c.txt"
    assert (stack.nas.root / "d.txt").read_bytes() == b"second d.txt"
    assert sorted(p.name for p in stack.nas.root.iterdir()) == ["c.txt", "d.txt"]  # no temp left


def test_a_version_written_during_a_conflicting_upload_stays_and_is_kept_too(stack_factory, tmp_path):
    stack = stack_with(stack_factory, tmp_path, {"/n.txt": b"original"})
    assert stack.http.get(stack.url("/n.txt")).content == b"original"
    stack.suspend_nas()
    assert stack.http.put(stack.url("/n.txt"), data=b"pi 1").status_code == 204
    (stack.nas.root / "n.txt").write_bytes(b"changed on the NAS")  # a real conflict
    stack.nas.faults.latency_s = 0.3  # a slow NAS: the next version arrives mid-upload
    stack.nas.wake_now()
    assert stack.nas.wait_for_state(PowerState.AWAKE)
    stack.app.nas.note_success()
    run = threading.Thread(target=stack.app.sync.run_once)
    run.start()
    # Mid-upload: the PUT of "pi 1" is on its way (a fixed sleep could send "pi 2" before the
    # write-back started on a loaded machine: the test then passed without testing this moment).
    assert wait_until(lambda: stack.app.db.query_one(
        "SELECT 1 FROM journal WHERE path = '/n.txt' AND phase = 'uploading'") is not None)
    assert stack.http.put(stack.url("/n.txt"), data=b"pi 2").status_code in (201, 204)
    assert stack.http.get(stack.url("/n.txt")).content == b"pi 2"  # never replaced under the client
    run.join()
    stack.nas.faults.latency_s = 0
    sync_until_done(stack)

    copies = [tuple(r) for r in stack.app.db.query("SELECT conflict_path FROM conflicts ORDER BY id")]
    served = {c[0]: stack.http.get(stack.url(c[0])).content for c in copies}
    assert b"pi 1" in served.values() and b"pi 2" in served.values()  # both kept, both reachable
    assert (stack.nas.root / "n.txt").read_bytes() == b"changed on the NAS"
    for path, content in served.items():
        assert (stack.nas.root / path.lstrip("/")).read_bytes() == content
