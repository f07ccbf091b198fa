"""Write-back cases found by the crash test (tests/test_crash.py), each on its own against the whole
stack: empty files, a NAS dropping uploads mid-body, and content replaced after a move."""

from __future__ import annotations

import hashlib
import os
import random

from balupi.sim.nas import PowerState
from tests.stack import stack, stack_factory  # noqa: F401


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wake(stack) -> None:
    stack.nas.wake_now()
    assert stack.nas.wait_for_state(PowerState.AWAKE)
    stack.app.nas.probe()
    assert stack.app.nas.is_awake()


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
    wake(stack)
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
    wake(stack)
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
    wake(stack)
    sync_until_done(stack, runs=3)
    assert (stack.nas.root / "final.txt").read_bytes() == b"second"
    assert not (stack.nas.root / "draft.txt").exists()
    assert (stack.nas.root / "other.txt").read_bytes() == b"other"
