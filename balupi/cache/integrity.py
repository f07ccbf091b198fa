"""Verifiable content: a checksum per block of every content file, checked before bytes go out.

Every content file in the store has a sidecar (`<key>.meta`, see `balupi.cache.store`) written
durably with it: what the content is (view, path, state, size, the NAS's ETag), the checksum
algorithm, and a checksum of each `BLOCK_BYTES` block. New content gets XXH3-128 (decision 170):
the checksums find bit rot and torn writes, never an adversary, and XXH3 costs a few hundredths of
a CPU second per GB where BLAKE2b-128 (decision 50, what sidecars written before it name) cost 2.4.
A sidecar is always checked with the algorithm it names, so a cache filled by an older BaluPi
verifies clean. The checksum is computed while the bytes are written (a PUT's body, a download
from the NAS), in one pass over data already in hand.

Policy (docs/decisions/0050-content-checksums-per-block-verified-once-per-process.md, 0170):
- a read of content not yet verified by this process checks each block it sends before it sends
  it (a range checks only the blocks it touches); a file read whole once is then trusted for the
  rest of the process's life and served by sendfile(2) again. Damage found before the first byte
  went out: a clean file is taken aside and fetched again from the NAS; damage found later cuts the
  connection (the client sees a short body, never a complete wrong one).
- a write-back checks every block before it is sent: a damaged pending file is never uploaded.
- `balupi cache verify` checks every block of every file.
- a sidecar naming an algorithm this version does not know (one written by a newer BaluPi) cannot
  be checked: its content is treated as damaged (taken aside, never deleted, never uploaded).
Damaged content is moved to `<cache_dir>/quarantine/` (never deleted); a damaged pending file is
recorded beside the sync conflicts (kind `damaged`) for a person to resolve.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator

import xxhash

from balupi.errors import ContentDamaged

ALGORITHM = "xxh3-128"  # what new content is checksummed with (decision 170)
LEGACY_ALGORITHM = "blake2b-128"  # sidecars written before decision 170 (decision 50)
BLOCK_BYTES = 1 << 20  # checksum block; also the block content is read, streamed and copied in
DIGEST_BYTES = 16  # both algorithms: 128 bits


class State(str, enum.Enum):
    """What a content file is to the NAS (the sidecar's `state`)."""

    PENDING = "pending"  # written on the Pi, not yet on the NAS: the only copy
    CLEAN = "clean"  # the NAS has it (downloaded, or uploaded since)
    LOCAL = "local"  # never goes to the NAS (client noise such as .DS_Store)


def _blake2b_128(data=b""):
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES)


# algorithm name -> a constructor of an incremental hash (optionally fed its first bytes)
_HASHES = {
    ALGORITHM: xxhash.xxh3_128,
    LEGACY_ALGORITHM: _blake2b_128,
}


def known_algorithm(alg: str) -> bool:
    return alg in _HASHES


def block_digest(alg: str, data) -> bytes:
    """The checksum of one block under `alg`. Raises KeyError for an algorithm not known here."""
    return _HASHES[alg](data).digest()


class BlockHasher:
    """Checksums of consecutive `BLOCK_BYTES` blocks of a stream fed in pieces of any size.

    Always the current `ALGORITHM`: content is checksummed with the older one only when it was."""

    alg = ALGORITHM

    def __init__(self) -> None:
        self._new = _HASHES[self.alg]
        self._hash = self._new()
        self._filled = 0
        self._digests: list[bytes] = []
        self.size = 0

    def update(self, data) -> None:
        view = memoryview(data)
        self.size += len(view)
        while view:
            take = min(len(view), BLOCK_BYTES - self._filled)
            if take == len(view) and self._filled == 0 and take == BLOCK_BYTES:
                self._digests.append(self._new(view).digest())
                return
            self._hash.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == BLOCK_BYTES:
                self._digests.append(self._hash.digest())
                self._hash, self._filled = self._new(), 0

    def blocks_hex(self) -> str:
        """All block checksums, concatenated in hex (an empty file has one: that of no bytes)."""
        digests = list(self._digests)
        if self._filled or not digests:
            digests.append(self._hash.digest())
        return b"".join(digests).hex()


def hash_fd(fd: int, size: int) -> str:
    """The block checksums of an open file's first `size` bytes."""
    hasher = BlockHasher()
    offset = 0
    while offset < size:
        block = os.pread(fd, min(BLOCK_BYTES, size - offset), offset)
        if not block:
            break
        hasher.update(block)
        offset += len(block)
    return hasher.blocks_hex()


@dataclass
class Meta:
    """The sidecar of one content file: enough to rebuild its index entry from the SSD alone."""

    view: str
    path: str
    state: str
    size: int
    blocks: str  # hex block checksums (see BlockHasher)
    alg: str = ALGORITHM
    block_bytes: int = BLOCK_BYTES
    at: float = field(default_factory=time.time)  # when the content was written or downloaded
    mtime: float | None = None
    etag: str | None = None  # the NAS's ETag of this content (clean), or None
    base_etag: str | None = None  # the NAS's ETag of the version a pending change was based on
    client_etag: str | None = None  # the ETag clients saw, when not the NAS's (content written on the Pi)
    content_type: str | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Meta":
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        known.setdefault("alg", LEGACY_ALGORITHM)  # only BaluPi before decision 170 could leave it out
        meta = cls(**known)
        if not isinstance(meta.alg, str):
            raise ValueError("the checksum algorithm is not a name")
        if not isinstance(meta.block_bytes, int) or meta.block_bytes <= 0 or not isinstance(meta.size, int) or meta.size < 0:
            raise ValueError("block size or size is not a count")
        if not isinstance(meta.blocks, str) or len(meta.blocks) != 2 * DIGEST_BYTES * max(1, -(-meta.size // meta.block_bytes)):
            raise ValueError("block checksums do not fit the size")
        return meta

    def digest(self, index: int) -> bytes:
        width = 2 * DIGEST_BYTES
        return bytes.fromhex(self.blocks[index * width:(index + 1) * width])

    @property
    def block_count(self) -> int:
        return max(1, -(-self.size // self.block_bytes))


def check_block(key: str, meta: Meta, index: int, data: bytes) -> None:
    """Raise ContentDamaged unless `data` is block `index` of the content `meta` describes."""
    expected_len = min(meta.block_bytes, meta.size - index * meta.block_bytes) if meta.size else 0
    if len(data) != expected_len:
        raise ContentDamaged(key, f"block {index} has {len(data)} bytes, expected {expected_len}")
    if not known_algorithm(meta.alg):
        raise ContentDamaged(key, unknown_algorithm(meta.alg))
    if block_digest(meta.alg, data) != meta.digest(index):
        raise ContentDamaged(key, f"block {index} does not match its {meta.alg} checksum")


def unknown_algorithm(alg) -> str:
    known = ", ".join(sorted(_HASHES))
    return f"its sidecar names checksum algorithm {alg!r}, not one this BaluPi knows ({known}): written by a newer version?"


def verified_range(fd: int, key: str, meta: Meta, start: int, length: int) -> Iterator[bytes]:
    """Bytes [start, start+length) of the open content `fd`, each block checked before it is yielded."""
    if not known_algorithm(meta.alg):
        raise ContentDamaged(key, unknown_algorithm(meta.alg))
    end = start + length
    index = start // meta.block_bytes
    while index * meta.block_bytes < end or (meta.size == 0 and index == 0):
        offset = index * meta.block_bytes
        data = os.pread(fd, meta.block_bytes, offset)
        check_block(key, meta, index, data)
        lo, hi = max(start, offset) - offset, min(end, offset + len(data)) - offset
        if hi > lo:
            yield data[lo:hi]
        index += 1
        if meta.size == 0:
            return


def check_whole(fd: int, key: str, meta: Meta) -> None:
    """Read and check every block; raises ContentDamaged."""
    size = os.fstat(fd).st_size
    if size != meta.size:
        raise ContentDamaged(key, f"{size} bytes, its sidecar says {meta.size}")
    for _ in verified_range(fd, key, meta, 0, meta.size):
        pass


class VerifiedKeys:
    """Content this process has read whole and found intact (trusted for the process's life).

    Keys are kept as 16-byte values: 100,000 files cost about 6 MB.
    """

    def __init__(self) -> None:
        self._keys: set[bytes] = set()
        self._lock = threading.Lock()
        self.checked_files = 0
        self.checked_bytes = 0
        self.damaged_found = 0

    def __contains__(self, key: str) -> bool:
        return bytes.fromhex(key) in self._keys

    def add(self, key: str, size: int) -> None:
        with self._lock:
            self._keys.add(bytes.fromhex(key))
            self.checked_files += 1
            self.checked_bytes += size

    def discard(self, key: str) -> None:
        with self._lock:
            self._keys.discard(bytes.fromhex(key))

    def note_damaged(self) -> None:
        with self._lock:
            self.damaged_found += 1


class VerifyingReader:
    """A content file as a request body, each block checked before any of it is handed on (a
    write-back upload reads the file once and never sends a damaged byte). On damage, `damage` is
    set and ContentDamaged raised (the HTTP library may wrap it: callers check `damage`)."""

    def __init__(self, f, key: str, meta: Meta):
        self._f, self.key, self.meta = f, key, meta
        self._buf = memoryview(b"")
        self._index = 0
        self.damage: ContentDamaged | None = None

    def __len__(self) -> int:
        return self.meta.size

    def _fail(self, exc: ContentDamaged):
        self.damage = exc
        raise exc

    def read(self, n: int | None = -1) -> bytes:
        if not self._buf:
            if self._index >= self.meta.block_count:
                extra = self._f.read(1)
                if extra:
                    self._fail(ContentDamaged(self.key, f"longer than the {self.meta.size} bytes of its sidecar"))
                return b""
            data = self._f.read(self.meta.block_bytes)
            try:
                check_block(self.key, self.meta, self._index, data)
            except ContentDamaged as exc:
                self._fail(exc)
            self._index += 1
            self._buf = memoryview(data)
            if not data:
                return b""
        if n is None or n < 0:
            n = len(self._buf)
        out = self._buf[:n].tobytes()
        self._buf = self._buf[n:]
        return out
