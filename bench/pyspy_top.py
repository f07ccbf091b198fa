"""Record a Python server with py-spy while a load runs, and summarise the stacks as top frames.

`record(pid, out, load)` runs `py-spy record --gil --format raw` (collapsed stacks, one "a;b;c N"
line per distinct stack, sampling only the thread that holds the GIL, so idle worker threads do not
drown the picture) on the process while `load()` runs, then stops py-spy with SIGINT so it writes
the file, and returns how long the load ran. Samples / (seconds x rate) is then roughly the share of
time some thread held the GIL. `top_frames(path)` counts, per function, the samples in which it is on top of the stack
("self") and the samples in which it appears at all ("total"), as percentages of all samples.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

SAMPLE_RATE_HZ = 250
ATTACH_WAIT_S = 1.0
STOP_TIMEOUT_S = 30.0
FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def executable() -> str | None:
    """py-spy on PATH, or beside this Python (a venv's bin/ need not be on PATH)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def available() -> bool:
    return executable() is not None


def record(pid: int, out: Path, load: Callable[[], None], gil: bool = True) -> float:
    """`gil=False`: sample every thread that is running (not idle), also in system calls that released
    the GIL (recv, write, fsync): for byte-moving loads, where those are the cost."""
    proc = subprocess.Popen([executable() or "py-spy", "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE_HZ),
                             *(["--gil"] if gil else []), "--nonblocking", "--format", "raw", "--output", str(out)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(ATTACH_WAIT_S)
        started = time.monotonic()
        load()
        load_s = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    if not out.exists():
        raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace').strip()[-500:]}")
    return load_s


def _short(frame: str) -> str:
    """'handle (wsgidav/request_server.py:123)' -> 'handle (wsgidav/request_server.py)'."""
    match = FRAME_RE.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def top_frames(path: Path, limit: int = 15) -> dict:
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if not f.startswith(("process ", "thread ("))]
        if not frames:
            continue
        samples += n
        self_counts[frames[-1]] += n
        for frame in set(frames):
            total_counts[frame] += n

    def pct(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(frame, round(100.0 * n / samples, 1)) for frame, n in counter.most_common(limit)]

    return {"samples": samples, "self": pct(self_counts), "total": pct(total_counts)}
