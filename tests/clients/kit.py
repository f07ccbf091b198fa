"""Real WebDAV clients against the whole stack (tests/stack.py): davfs2's kernel mount, rclone,
cadaver, and raw-HTTP replays of clients that cannot run here.

What each client needs is checked once (`require`): a client test skips with the reason when it
is missing, except in CI (`CI=true`, as `.ci/run` sets), where it must run and fails instead.
The write-back runs every second in these stacks (`FAST_SYNC`), so it happens between a client's
steps the way it does in life only more often; davfs2's own upload delay is left at its default.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

FAST_SYNC = {"sync_interval_s": 1, "prefetch_budget_mb": 0, "refresh_walk_budget_s": 0}


def require(*tools: str, root: bool = False, fuse: bool = False) -> None:
    """Skip (or, in CI, fail) unless the tools are installed and, if asked, we are root with FUSE."""
    missing = [t for t in tools if shutil.which(t) is None]
    reasons = [f"{', '.join(missing)} not installed (scripts/test-deps.sh installs it)"] if missing else []
    if root and os.geteuid() != 0:
        reasons.append("needs root (a kernel mount)")
    if fuse and not (Path("/dev/fuse").exists() and _kernel_has("fuse")):
        reasons.append("needs /dev/fuse and the fuse file system in the kernel (davfs2 mounts through it)")
    if reasons:
        message = "; ".join(reasons)
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run this test: {message}", pytrace=False)
        pytest.skip(message)


def _kernel_has(fs: str) -> bool:
    try:
        return any(line.split()[-1] == fs for line in Path("/proc/filesystems").read_text().splitlines() if line.strip())
    except OSError:
        return False


def version_of(command: list[str]) -> str:
    """The first line a client prints about its version (for the test's record)."""
    out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    return ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]


def tree_files(root: Path) -> dict[str, bytes]:
    """Every file under `root`, by path relative to it, with its content."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)
