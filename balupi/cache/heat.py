"""Heat: how much a file is used, with past use fading (half-life), as one sortable number.

A file's heat is its access count decayed exponentially: every `half_life_s` without use halves it.
Comparing decayed counts at a common moment T: h_a * 2^-(T - t_a)/H versus h_b * 2^-(T - t_b)/H,
whose order is that of log2(h) + t/H whatever T is. So each entry stores `heat_key = log2(heat) +
last_access / H - size_weight * log2(size / 1 MiB)` when it is used, and eviction takes the lowest
keys through an index, without recomputing anything for the files that were not touched.

The size term ("aware of size"): of two files used alike, the much larger one goes first, mildly
(a 64 MiB file counts like a 1 MiB file used about a third as often with the default weight), so a
few huge files do not push out many small ones that are each asked for as often.
"""

from __future__ import annotations

import math

from balupi.settings import SETTINGS_BY_NAME

# The default half-life, where none is configured (the setting's default is the one definition).
HALF_LIFE_S = SETTINGS_BY_NAME["cache_heat_half_life_hours"].default * 3600.0
SIZE_WEIGHT = 0.25
SIZE_UNIT_BYTES = 1 << 20


def decayed(heat: float, last_t: float | None, now: float, half_life_s: float) -> float:
    if not heat or last_t is None:
        return 0.0
    return heat * 2.0 ** (-(max(0.0, now - last_t)) / half_life_s)


def bump(heat: float, last_t: float | None, now: float, count: int, half_life_s: float) -> float:
    """The heat after `count` more accesses at `now`."""
    return decayed(heat, last_t, now, half_life_s) + count


def heat_key(heat: float, t: float, size_bytes: int, half_life_s: float) -> float:
    return (math.log2(max(heat, 1e-9)) + t / half_life_s
            - SIZE_WEIGHT * math.log2(max(size_bytes, SIZE_UNIT_BYTES) / SIZE_UNIT_BYTES))

