"""The workload of the replay benchmark: a seeded tree and a seeded sequence of client operations.

Everything here is a pure function of the plan and the seed, so two runs (and the offline cache
models in `bench.replay.offline`) see exactly the same trace.

Tree: `files` files spread over `top_folders` folders at the root, each with `sub_folders`
subfolders (folders get log-normal shares of the files, so some are crowded). File sizes are
log-normal (median `size_median_bytes`, sigma `size_sigma`), clamped to [size_min, size_max].

Popularity: Zipf with exponent `zipf_s` over a seeded permutation of the files (rank r is asked for
in proportion to 1/r^s). A file created by a write joins with the weight of a log-uniform rank
(new files are usually of middling-to-high interest).

Operations, in bursts separated by idle gaps (uniform in [gap_min_s, gap_max_s]):
- list (PROPFIND Depth 1): the folder of a Zipf-drawn file (80%) or any folder, the root included (20%);
- read (GET): a Zipf-drawn file;
- write (PUT): half overwrite a Zipf-drawn file, half create a new file; always in a folder the client
  has already seen (listed, or read a file from), as a file manager or an editor would;
- rename (MOVE): a Zipf-drawn file in a seen folder gets a new name in the same folder.
Each file keeps an id across renames and a version across writes; file content starts with
"<id>:<version>\\n", so a client can tell stale content from current.
"""

from __future__ import annotations

import bisect
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

OP_KINDS = ("list", "read", "write", "rename")
NOMINAL_OP_S = 0.03  # trace time of one operation inside a burst (offline models only)
BLOCK_BYTES = 1 << 20
SEEN_TRIES = 64


@dataclass(frozen=True)
class TracePlan:
    files: int
    top_folders: int
    sub_folders: int
    bursts: int
    ops_per_burst: int  # mean; each burst has between half and one and a half times this
    gap_min_s: float = 5.0
    gap_max_s: float = 10.0
    size_median_bytes: int = 24_000
    size_sigma: float = 1.9
    size_min_bytes: int = 2_000
    size_max_bytes: int = 40_000_000
    new_file_max_bytes: int = 8_000_000
    zipf_s: float = 1.0
    mix: tuple[tuple[str, float], ...] = (("list", 0.30), ("read", 0.60), ("write", 0.07), ("rename", 0.03))

    @classmethod
    def full(cls) -> "TracePlan":
        return cls(files=2000, top_folders=10, sub_folders=9, bursts=24, ops_per_burst=60, gap_min_s=5.0, gap_max_s=9.0)

    @classmethod
    def quick(cls) -> "TracePlan":
        return cls(files=300, top_folders=4, sub_folders=4, bursts=8, ops_per_burst=35, gap_min_s=5.0, gap_max_s=6.5)


@dataclass
class Op:
    index: int
    burst: int
    kind: str  # one of OP_KINDS
    path: str  # the folder (list), the file (read, write), the source (rename)
    dest: str = ""  # rename: the new path
    size: int = 0  # read: expected bytes; write: bytes written
    file_id: int = -1  # -1 for listings
    version: int = 0  # read: the version expected; write: the version written
    new_file: bool = False  # write: creates the file
    t_nominal_s: float = 0.0


@dataclass
class Trace:
    plan: TracePlan
    seed: int
    folders: list[str]  # every folder, parents first ("/" not included)
    files: list[tuple[str, int]]  # the initial tree: (path, size); index = file id
    ops: list[Op]
    gaps_s: list[float]  # gaps_s[b]: idle time after burst b (the last is 0)
    burst_starts: list[int] = field(default_factory=list)  # index of each burst's first op

    @property
    def tree_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def summary(self) -> dict:
        kinds = {k: sum(1 for op in self.ops if op.kind == k) for k in OP_KINDS}
        reads = [op for op in self.ops if op.kind == "read"]
        return {
            "seed": self.seed, "plan": asdict(self.plan), "folders": len(self.folders) + 1,
            "files": len(self.files), "tree_bytes": self.tree_bytes,
            "largest_file_bytes": max(size for _, size in self.files),
            "ops": len(self.ops), "ops_by_kind": kinds, "bursts": len(self.gaps_s),
            "read_bytes": sum(op.size for op in reads),
            "distinct_files_read": len({op.file_id for op in reads}),
            "new_files": sum(1 for op in self.ops if op.kind == "write" and op.new_file),
            "idle_s": round(sum(self.gaps_s), 1),
            "nominal_duration_s": round(self.ops[-1].t_nominal_s if self.ops else 0.0, 1),
        }


def content_header(file_id: int, version: int) -> bytes:
    return f"{file_id}:{version}\n".encode()


def content_blocks(file_id: int, version: int, size: int, pattern: bytes):
    """`size` bytes: the header, then the seeded pattern from an offset that depends on the file."""
    head = content_header(file_id, version)[:size]
    yield head
    left = size - len(head)
    offset = (file_id * 7919 + version * 104729) % (len(pattern) // 2)
    while left > 0:
        n = min(left, BLOCK_BYTES)
        yield pattern[offset:offset + n]
        left -= n


def make_pattern(seed: int) -> bytes:
    """2 MiB of seeded bytes; any 1 MiB window of it is a content block."""
    return random.Random(seed ^ 0x5EED).randbytes(2 * BLOCK_BYTES)


def write_tree(trace: Trace, root: Path, pattern: bytes) -> None:
    """The initial tree on disk, for the simulated NAS to serve."""
    root.mkdir(parents=True, exist_ok=True)
    for folder in trace.folders:
        (root / folder.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for file_id, (path, size) in enumerate(trace.files):
        fd = os.open(root / path.lstrip("/"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for block in content_blocks(file_id, 0, size, pattern):
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)


class _Popularity:
    """Weights per file id, sampled by bisect over cumulative sums (rebuilt when weights change)."""

    def __init__(self, weights: list[float]):
        self.weights = weights
        self._cum: list[float] | None = None

    def add(self, weight: float) -> None:
        self.weights.append(weight)
        self._cum = None

    def draw(self, rng: random.Random) -> int:
        if self._cum is None:
            total, self._cum = 0.0, []
            for w in self.weights:
                total += w
                self._cum.append(total)
        return min(bisect.bisect_right(self._cum, rng.random() * self._cum[-1]), len(self.weights) - 1)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def generate(plan: TracePlan, seed: int) -> Trace:
    rng = random.Random(seed)
    folders: list[str] = []
    for t in range(plan.top_folders):
        top = f"/folder-{t:02d}"
        folders.append(top)
        folders += [f"{top}/sub-{s:02d}" for s in range(plan.sub_folders)]
    shares = [rng.lognormvariate(0.0, 1.0) for _ in folders]
    exts = (".jpg", ".jpg", ".jpg", ".pdf", ".docx", ".mp3", ".txt", ".mkv")
    files: list[tuple[str, int]] = []
    mu = math.log(plan.size_median_bytes)
    for file_id in range(plan.files):
        folder = rng.choices(folders, weights=shares)[0]
        size = int(min(plan.size_max_bytes, max(plan.size_min_bytes, rng.lognormvariate(mu, plan.size_sigma))))
        files.append((f"{folder}/file-{file_id:05d}{rng.choice(exts)}", size))

    ranks = list(range(1, plan.files + 1))
    rng.shuffle(ranks)
    popularity = _Popularity([1.0 / r ** plan.zipf_s for r in ranks])
    paths = [p for p, _ in files]  # current path per file id (renames change it)
    sizes = [s for _, s in files]
    versions = [0] * plan.files
    seen: set[str] = set()
    kinds = [k for k, _ in plan.mix]
    kind_weights = [w for _, w in plan.mix]

    ops: list[Op] = []
    gaps: list[float] = []
    starts: list[int] = []
    t = 0.0
    for burst in range(plan.bursts):
        starts.append(len(ops))
        for _ in range(rng.randint(max(1, plan.ops_per_burst // 2), plan.ops_per_burst * 3 // 2)):
            kind = rng.choices(kinds, weights=kind_weights)[0]
            op = _next_op(kind, rng, plan, popularity, paths, sizes, versions, seen, folders)
            op.index, op.burst, op.t_nominal_s = len(ops), burst, round(t, 3)
            ops.append(op)
            t += NOMINAL_OP_S
        gap = round(rng.uniform(plan.gap_min_s, plan.gap_max_s), 2) if burst < plan.bursts - 1 else 0.0
        gaps.append(gap)
        t += gap
    return Trace(plan, seed, folders, files, ops, gaps, starts)


def _next_op(kind, rng, plan, popularity, paths, sizes, versions, seen, folders) -> Op:
    if kind in ("write", "rename"):
        file_id = _seen_file(rng, popularity, paths, seen)
        if file_id is None:
            kind = "read"  # nothing seen yet: a client starts by reading
    if kind == "list":
        if rng.random() < 0.8:
            folder = _parent(paths[popularity.draw(rng)])
        else:
            folder = rng.choice(["/"] + folders)
        seen.add(folder)
        return Op(0, 0, "list", folder)
    if kind == "read":
        file_id = popularity.draw(rng)
        seen.add(_parent(paths[file_id]))
        return Op(0, 0, "read", paths[file_id], size=sizes[file_id], file_id=file_id, version=versions[file_id])
    if kind == "rename":
        old = paths[file_id]
        stem, dot, ext = old.rpartition(".")
        paths[file_id] = f"{stem}~r{versions[file_id]}x{rng.randrange(1000)}.{ext}" if dot else old + "~r"
        return Op(0, 0, "rename", old, dest=paths[file_id], file_id=file_id)
    # write
    if rng.random() < 0.5:
        versions[file_id] += 1
        sizes[file_id] = _size(rng, plan, plan.size_max_bytes)
        return Op(0, 0, "write", paths[file_id], size=sizes[file_id], file_id=file_id, version=versions[file_id])
    folder = _parent(paths[file_id])
    new_id = len(paths)
    paths.append(f"{folder}/new-{new_id:05d}.txt")
    sizes.append(_size(rng, plan, plan.new_file_max_bytes))
    versions.append(1)
    popularity.add(1.0 / math.exp(rng.uniform(0.0, math.log(plan.files))) ** plan.zipf_s)
    return Op(0, 0, "write", paths[new_id], size=sizes[new_id], file_id=new_id, version=1, new_file=True)


def _size(rng: random.Random, plan: TracePlan, cap: int) -> int:
    size = rng.lognormvariate(math.log(plan.size_median_bytes), plan.size_sigma)
    return int(min(cap, max(plan.size_min_bytes, size)))


def _seen_file(rng, popularity, paths, seen) -> int | None:
    for _ in range(SEEN_TRIES):
        file_id = popularity.draw(rng)
        if _parent(paths[file_id]) in seen:
            return file_id
    return None
