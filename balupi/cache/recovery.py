"""Rebuilding the index from the SSD: content the index does not know, taken back by its sidecar.

Used when the database was lost or damaged (at start-up, `Database.fresh`) and by
`balupi cache verify --repair` (content older than the orphan grace period). Nothing here deletes
the only copy of anything:

- pending or local content (the sidecar says so: written on the Pi, not yet on the NAS) is always
  taken back: at its path when that is free or holds only the NAS's version, else beside it as
  `name (recovered <date>).ext`, with its pending upload journaled again;
- clean content (a copy of the NAS's) is taken back at its path when that is free or is the same
  NAS version without content, else removed (the NAS has it);
- content without a readable sidecar (from before sidecars, or damaged) is moved to `quarantine/`.
"""

from __future__ import annotations

import enum
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from balupi.cache.integrity import ContentDamaged, Meta, State
from balupi.cache import index, journal, versions
from balupi.cache.index import guess_type, name_of, parent_of
from balupi.cache.store import KEY_PATTERN

if TYPE_CHECKING:
    from balupi.cache.store import ContentStore
    from balupi.db import Database

log = logging.getLogger("balupi.cache.recovery")

RECOVERY_BATCH = 256


class Outcome(enum.Enum):
    RECOVERED = "recovered"  # a pending or local change, back in the index (and the journal)
    ADOPTED = "adopted"  # a clean copy, back in the index
    REDUNDANT = "redundant"  # a clean copy the index does not want: removed
    QUARANTINED = "quarantined"  # no readable sidecar: moved aside, never deleted


@dataclass
class RecoveryReport:
    recovered: list[str] = field(default_factory=list)
    adopted: int = 0
    redundant: int = 0
    quarantined: list[str] = field(default_factory=list)


def recovered_name(path: str, when: float) -> str:
    name = name_of(path)
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    new = f"{stem} (recovered {time.strftime('%Y-%m-%d %H%M%S', time.localtime(when))})" + (f".{ext}" if ext else "")
    parent = parent_of(path) or "/"
    return (parent.rstrip("/") + "/" + new) if parent != "/" else "/" + new


def _ensure_parents(d, view: str, path: str, now: float) -> None:
    """Folders above `path` that the index lacks, as unlisted folders (the NAS lists them later;
    one the NAS lacks is created by the upload)."""
    missing = []
    parent = parent_of(path)
    while parent is not None:
        if index.exists_at(d, view, parent):
            break
        missing.append(parent)
        parent = parent_of(parent)
    for folder in reversed(missing):
        index.add_unlisted_folder(d, view, folder, now)


def _insert_file(d, meta: Meta, path: str, key: str, pending: bool, local: bool, now: float) -> None:
    _ensure_parents(d, meta.view, path, now)
    clean = not (pending or local)
    # The ETag clients see (balupi.cache.versions): the Pi's own for content written here, else the NAS's.
    etag = (meta.client_etag or versions.nas_version_etag(meta.etag)) if clean else versions.local_version_etag(key)
    index.add_recovered_file(d, meta.view, path, meta.size, meta.mtime or meta.at, now, etag,
                             meta.etag if clean else None, meta.content_type or guess_type(path), key, pending, local,
                             clean, meta.base_etag if pending else None)


def _journal_put(d, meta: Meta, path: str, key: str, base_etag: str | None) -> None:
    journal.add(d, meta.view, journal.Op.PUT, path, cache_key=key, size=meta.size, base_etag=base_etag, at=meta.at)


def take_back(db: "Database", store: "ContentStore", key: str) -> tuple[str, str]:
    """Bring one unreferenced content file back into the index. Returns (outcome, label)."""
    try:
        meta = store.read_meta(key)
    except ContentDamaged:
        meta = None
    if meta is None or meta.state not in (State.PENDING, State.CLEAN, State.LOCAL) or not meta.path.startswith("/"):
        where = store.quarantine(key)
        return Outcome.QUARANTINED, str(where or key)
    now = time.time()
    label = f"{meta.view}:{meta.path}" if meta.view else meta.path
    drop: str | None = None
    with db.write() as d:
        row = index.row_at(d, meta.view, meta.path)
        if meta.state in (State.PENDING, State.LOCAL):
            pending, local = meta.state == State.PENDING, meta.state == State.LOCAL
            path = meta.path
            if row is None:
                _insert_file(d, meta, path, key, pending, local, now)
            elif not row["is_dir"] and not row["dirty"]:
                # Only the NAS's version is there (a restored backup, a listing): this change is newer.
                drop = row["cache_key"]
                index.take_back_change(d, row["id"], key, meta.size, meta.mtime or meta.at,
                                       versions.local_version_etag(key), pending, local,
                                       (meta.base_etag or (row["nas_etag"] if row["remote"] else None)) if pending else None)
            else:  # a folder, or another change of the same file: keep both
                path = recovered_name(meta.path, meta.at)
                if index.exists_at(d, meta.view, path):
                    path = recovered_name(meta.path + f".{key[:8]}", meta.at)
                _insert_file(d, meta, path, key, pending, local, now)
                label += f" (as {path})"
            if pending:
                base = meta.base_etag if path == meta.path else None
                if row is not None and not row["is_dir"] and not row["dirty"] and path == meta.path:
                    base = meta.base_etag or (row["nas_etag"] if row["remote"] else None)
                _journal_put(d, meta, path, key, base)
            outcome = Outcome.RECOVERED
        else:
            if row is None:
                _insert_file(d, meta, meta.path, key, False, False, now)
                outcome = Outcome.ADOPTED
            elif (not row["is_dir"] and not row["dirty"] and row["cache_key"] is None
                  and versions.same_nas_version(row["nas_etag"], row["size"], meta.etag, meta.size)):
                index.adopt_content(d, row["id"], key, meta.size)
                outcome = Outcome.ADOPTED
            else:
                outcome = Outcome.REDUNDANT
    if outcome == Outcome.REDUNDANT:
        store.remove(key)
    if drop and drop != key and not _referenced(db, drop):
        store.remove(drop)
    if outcome == Outcome.RECOVERED and path != meta.path:
        store.update_meta(key, path=path)  # the sidecar follows the entry
    return outcome, label


def _referenced(db: "Database", key: str) -> bool:
    return index.key_in_use(db, key)


def recover_from_store(db: "Database", store: "ContentStore") -> RecoveryReport:
    """After the database was lost or damaged: take back every content file of the store (before
    the server serves, or with it stopped: a batch holds the write lock)."""
    report = RecoveryReport()
    keys = []
    for sub in sorted(os.scandir(store.data_dir), key=lambda e: e.name):
        if not sub.is_dir(follow_symlinks=False):
            continue
        keys += [item.name for item in os.scandir(sub.path)
                 if KEY_PATTERN.fullmatch(item.name) and item.name[:2] == sub.name]
    for start in range(0, len(keys), RECOVERY_BATCH):
        with db.write():  # one transaction (one fsync) per batch: take_back's own writes join it
            for name in keys[start:start + RECOVERY_BATCH]:
                if _referenced(db, name):
                    continue
                outcome, label = take_back(db, store, name)
                if outcome == Outcome.RECOVERED:
                    report.recovered.append(label)
                elif outcome == Outcome.ADOPTED:
                    report.adopted += 1
                elif outcome == Outcome.REDUNDANT:
                    report.redundant += 1
                else:
                    report.quarantined.append(label)
    if report.recovered or report.adopted or report.quarantined:
        log.warning("recovered from the cache: %d pending change(s) journaled again, %d cached file(s) back in the index,"
                    " %d unknown file(s) moved to quarantine", len(report.recovered), report.adopted, len(report.quarantined))
    for label in report.recovered:
        log.info("recovered pending upload: %s", label)
    return report


def reconcile_restored(db: "Database", store: "ContentStore") -> dict:
    """After a backup of the database was put back: what changed on the SSD since the backup.

    - a pending upload whose sidecar says clean went to the NAS after the backup: done;
    - a pending upload or dirty entry whose content is gone was synced and evicted after the
      backup (content of a change is never removed before its upload): done, the entry uncached;
    - clean entries whose content is gone become uncached (fetched again when asked for);
    then every content file the backup does not know is taken back (`recover_from_store`).
    """
    settled = uncached = 0
    with db.write() as d:
        rows = journal.pending_uploads(d)
        for row_id, view, path, key in rows:
            meta = None
            if store.exists(key):
                try:
                    meta = store.read_meta(key)
                except ContentDamaged:
                    continue  # the sync finds it damaged and takes it aside
                if meta is None or meta.state != State.CLEAN:
                    continue
            journal.mark_done(d, row_id, "synced after the backup that was restored")
            index.settle_restored_upload(d, view, path, key, meta.etag if meta else None, meta is not None)
            settled += 1
        for entry_id, key in index.cached_keys(d):
            if not store.exists(key):
                index.uncache_lost(d, entry_id, key)
                uncached += 1
    report = recover_from_store(db, store)
    return {"settled": settled, "uncached": uncached, "recovered": len(report.recovered), "adopted": report.adopted,
            "quarantined": len(report.quarantined), "recovered_paths": report.recovered}
