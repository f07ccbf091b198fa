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

from balupi.cache.index import parent_of

if TYPE_CHECKING:
    from balupi.cache.store import ContentStore
    from balupi.db import Database

log = logging.getLogger("balupi.cache.integrity")

KIND_DAMAGED = "damaged"


@dataclass
class Damage:
    key: str
    quarantined: str | None
    pending: bool  # the Pi's only copy of a change was damaged: recorded for a person
    clean_entries: int  # entries that became uncached (fetched again from the NAS)


def handle_damaged(db: "Database", store: "ContentStore", key: str, detail: str) -> Damage:
    where = store.quarantine(key)
    now = time.time()
    pending = False
    clean = 0
    with db.write() as d:
        rows = d.execute("SELECT id, view, path, dirty, local_only, remote, base_etag FROM entries WHERE cache_key = ?",
                         (key,)).fetchall()
        jrows = d.execute("SELECT id, view, path FROM journal WHERE state = 'pending' AND cache_key = ?", (key,)).fetchall()
        d.execute("UPDATE journal SET state = 'damaged', last_error = ? WHERE state = 'pending' AND cache_key = ?",
                  (f"content damaged on the Pi's disk: {detail}"[:500], key))
        for row in rows:
            entry_id, view, path, dirty, local_only, remote, base_etag = row
            if not dirty and not local_only:
                d.execute("UPDATE entries SET cache_key = NULL WHERE id = ?", (entry_id,))
                clean += 1
                continue
            pending = True
            if base_etag or remote:
                # Back to the NAS's version this change was based on; the next listing of the folder
                # brings its size and times.
                d.execute("UPDATE entries SET cache_key = NULL, dirty = 0, remote = 1, etag = coalesce(?, etag),"
                          " nas_etag = ?, base_etag = NULL WHERE id = ?", (base_etag, base_etag, entry_id))
                d.execute("UPDATE entries SET listed = 0 WHERE view = ? AND path = ?", (view, parent_of(path) or "/"))
            else:
                d.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
            d.execute("INSERT INTO conflicts (at, view, path, conflict_path, kind) VALUES (?, ?, ?, ?, ?)",
                      (now, view, path, str(where or key), KIND_DAMAGED))
        recorded = {(r[1], r[2]) for r in rows}
        for _, view, path in jrows:
            pending = True
            if (view, path) not in recorded:  # an older version of the file, superseded but still waiting
                d.execute("INSERT INTO conflicts (at, view, path, conflict_path, kind) VALUES (?, ?, ?, ?, ?)",
                          (now, view, path, str(where or key), KIND_DAMAGED))
                recorded.add((view, path))
    paths = ", ".join(sorted({p for _, p in recorded})) or "no entry"
    if pending:
        log.error("DAMAGED: content %s of %s no longer matches its checksum (%s); it is NOT uploaded. Kept in %s"
                  " for a person to resolve (GET /api/cache/conflicts)", key, paths, detail, where)
    else:
        log.error("damaged: cached content %s of %s no longer matches its checksum (%s); moved to %s, the NAS's"
                  " copy is fetched again when asked for", key, ", ".join(sorted({r[2] for r in rows})) or "no entry",
                  detail, where)
    return Damage(key, str(where) if where else None, pending, clean)
