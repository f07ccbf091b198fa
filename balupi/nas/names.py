"""Names the NAS cannot store, refused when a client creates them (PUT, MKCOL, MOVE, COPY, LOCK)
instead of accepted on the Pi and failing at write-back for ever.

A name (one path segment) longer than `MAX_NAME_BYTES` in UTF-8 fails on every common NAS
filesystem (ext4, btrfs, XFS, ZFS: 255 bytes); `nas_reserved_name_chars` adds the characters the
configured NAS does not take (none on a Linux NAS; `\\:*?"<>|` where an SMB or Windows volume lies
behind it).
"""

from __future__ import annotations

MAX_NAME_BYTES = 255
CREATING_METHODS = frozenset({"PUT", "MKCOL", "LOCK"})


def nas_name_problem(path: str, reserved_chars: str = "") -> str | None:
    """Why the NAS cannot store the last name of `path` (a decoded path), or None."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"the NAS cannot store a name longer than {MAX_NAME_BYTES} bytes"
    bad = sorted({c for c in name if c in reserved_chars})
    if bad:
        return f"the NAS cannot store a name with {' '.join(repr(c) for c in bad)}"
    return None
