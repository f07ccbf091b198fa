"""What the cache holds and what waits for the NAS, from the database alone.

`GET /api/cache/stats` adds the running server's counters (hit rates, wakes, evictions) to these;
`balupi cache stats` prints them from another process (WAL: it never waits for the server).
"""

from __future__ import annotations

from balupi.cache import index, journal
from balupi.db import Database

BYTES_PER_MB = 1e6
BYTES_PER_GB = 1e9


def percent(part: float, whole: float) -> float | None:
    """`part` of `whole` in percent, one decimal; None when there is no whole (nothing measured)."""
    return round(100.0 * part / whole, 1) if whole else None


def figures(db: Database, max_size_gb: float) -> dict:
    """Cached files and bytes, dirty files, pending and quarantined changes, and conflicts."""
    tree, changes = index.counts(db), journal.counts(db)
    cached, dirty, pending = tree["cached"], tree["dirty"], changes["pending"]
    conflicts, quarantined = changes["conflicts"], changes["quarantined"]
    used_bytes = int(cached[1])
    return {
        "total_files": cached[0],
        "total_size_mb": round(used_bytes / BYTES_PER_MB, 3),
        "max_size_gb": max_size_gb,
        "usage_percent": percent(used_bytes, max_size_gb * BYTES_PER_GB) or 0.0,
        "dirty_files": dirty[0],
        "dirty_bytes": int(dirty[1]),
        "pending_changes": pending[0],
        "oldest_pending_change": pending[1],
        "conflicts": {"count": conflicts[0], "unresolved": int(conflicts[1])},
        "quarantined_changes": quarantined,  # refused by the NAS for good; the Pi keeps the files
    }
