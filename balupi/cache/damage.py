"""What happens to content found damaged (see `balupi.cache.integrity` for how it is found).

The content file and its sidecar go to `quarantine/` (never deleted). Then, in one transaction:
- entries whose clean content it was become uncached: the NAS's copy is fetched when next asked for;
- a pending upload of it is never made: its journal rows become `damaged` (the sync skips them),
  the entry goes back to the NAS's version it was based on (or, for a file the NAS never had, is
  removed from the tree), and a `conflicts` row of kind `damaged` names the quarantined file, for a
  person to resolve (`GET /api/cache/conflicts`, `/api/cache/stats`, and an ERROR line in the log).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from balupi.cache import index

if TYPE_CHECKING:
    from balupi.cache.store import ContentStore
    from balupi.db import Database

log = logging.getLogger("balupi.cache.integrity")

@dataclass
class Damage:
    key: str
    quarantined: str | None
    pending: bool  # the Pi's only copy of a change was damaged: recorded for a person
    clean_entries: int  # entries that became uncached (fetched again from the NAS)


def handle_damaged(db: "Database", store: "ContentStore", key: str, detail: str) -> Damage:
    where = store.quarantine(key)
    now = time.time()
    rows, recorded, pending, clean = index.record_damage(db, key, str(where or key),
                                                         f"content damaged on the Pi's disk: {detail}", now)
    paths = ", ".join(sorted({p for _, p in recorded})) or "no entry"
    if pending:
        log.error("DAMAGED: content %s of %s no longer matches its checksum (%s); it is NOT uploaded. Kept in %s"
                  " for a person to resolve (GET /api/cache/conflicts)", key, paths, detail, where)
    else:
        log.error("damaged: cached content %s of %s no longer matches its checksum (%s); moved to %s, the NAS's"
                  " copy is fetched again when asked for", key, ", ".join(sorted({path for _, path in rows})) or "no entry",
                  detail, where)
    return Damage(key, str(where) if where else None, pending, clean)
