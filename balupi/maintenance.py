"""The cron-style maintenance commands, each safe to run while `balupi serve` runs.

They open the same SQLite database (WAL: readers never wait; `busy_timeout`: a writer waits for
the server's short transactions instead of failing) and the same cache directory, and build their
own NAS client and monitor from the same settings. Rules that keep them from hurting the server:

- never remove temp files (`cache/tmp/`): the server's uploads in progress live there;
- talk to the NAS only when a TCP connect shows it awake (never an HTTP poll), except
  `balupi sync --wake`, which wakes it on purpose;
- sync runs are one at a time across processes (`SyncWorker` takes a file lock), so a change is
  never applied twice by the server and a command together;
- `cache verify` touches only content no entry and no pending change refers to, and only once it
  is older than `ORPHAN_GRACE_S` (the server publishes content a moment before it commits the index
  entry that refers to it), and changes an entry only if it still names the content it checked. It
  never deletes the only copy of anything: unreferenced pending content is taken back into the
  index by its sidecar, content without one goes to `quarantine/`; only copies of the NAS's files
  and sidecars without content are removed.

Long runs show a progress bar on stderr when it is a terminal.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import sqlite3
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from tqdm import tqdm

from balupi.cache import index
from balupi.cache.store import META_SUFFIX, QUARANTINE
from balupi.db import DB_FILENAME, Database, open_database
from balupi.errors import DatabaseError
from balupi.errors import NasUnavailable
from balupi.events import Event, Events
from balupi.nas.wakes import WakeCause, WakeKind
from balupi.settings import Settings

if TYPE_CHECKING:
    from balupi.cache.manager import CacheManager
    from balupi.cache.index import Index
    from balupi.dav.provider import CacheProvider
    from balupi.cache.store import ContentStore
    from balupi.nas.client import NasClient
    from balupi.nas.monitor import NasMonitor
    from balupi.sync.refresh import Refresher, RefreshOutcome
    from balupi.sync.worker import SyncWorker

log = logging.getLogger("balupi.maintenance")

ORPHAN_GRACE_S = 600.0
VERIFY_BATCH = 1000
CONTENT_NAME = re.compile(r"[0-9a-f]{32}")  # a content key (balupi.cache.store)


def progress(total: int | None, desc: str, unit: str = "it", **kwargs) -> tqdm:
    """A progress bar on stderr, shown only when stderr is a terminal (cron gets none)."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty(),
                leave=False, dynamic_ncols=True, **kwargs)


class Parts:
    """What a command needs of BaluPi, built from the settings like the server builds it, and
    nothing that runs by itself (no scheduler, no HTTP server, no clearing of temp files)."""

    def __init__(self, settings: Settings):
        from balupi.cache.manager import CacheManager
        from balupi.cache.index import Index
        from balupi.cache.store import ContentStore
        from balupi.nas.client import NasClient
        from balupi.nas.monitor import NasMonitor

        self.settings = settings
        # A damaged database is for `balupi serve` to move aside and rebuild (or `restore-db`): a
        # command running beside the server must not pull the file from under it.
        self.db: Database = open_database(settings.data_dir / DB_FILENAME, recover=False)
        self.events = Events()
        self.monitor: NasMonitor = NasMonitor(settings, self.db, self.events)
        self.client: NasClient = NasClient(settings, self.monitor)
        self.store: ContentStore = ContentStore(settings.cache_dir)
        self.index: Index = Index(self.db, half_life_s=settings.cache_heat_half_life_hours * 3600)
        self.cache: CacheManager = CacheManager(settings, self.db, self.store, self.events)
        self._provider: CacheProvider | None = None
        # The plugins' vetoes and eviction order apply to these commands too (observers are not run).
        from balupi.plugins import PluginHost

        self.plugins = PluginHost(settings, self.events)
        self.monitor.wake_veto = self.plugins.veto_wake
        self.cache.eviction_order, self.cache.evict_veto = self.plugins.eviction_order, self.plugins.veto_evict

    def provider(self) -> "CacheProvider":
        if self._provider is None:
            from balupi.dav.parts import CacheParts
            from balupi.dav.provider import CacheProvider

            parts = CacheParts.build(self.index, self.store, self.client, self.monitor, self.events, self.cache)
            self._provider = CacheProvider(parts, local_only_names=self.settings.dav_local_only_names)
        return self._provider

    def sync_worker(self) -> "SyncWorker":
        from balupi.dav.props import dead_prop_values
        from balupi.sync.worker import SyncWorker

        return SyncWorker(self.settings, self.db, self.index, self.store, self.client, self.monitor, self.events,
                          dead_props=functools.partial(dead_prop_values, self.db))

    def nas_awake(self) -> bool:
        """Whether the NAS is awake, by one TCP connect (never an HTTP request: it would keep it up)."""
        if not self.monitor.configured:
            return False
        self.monitor.probe()
        return self.monitor.is_awake()

    def close(self) -> None:
        self.monitor.stop()
        close_store = getattr(self.store, "close", None)
        if close_store is not None:
            close_store()
        self.db.close()


# -- sync ----------------------------------------------------------------------------------------


@dataclass
class SyncOutcome:
    applied: int = 0
    conflicts: int = 0
    remaining: int = 0
    failed: bool = False
    note: str = ""
    last_error: str | None = None


def sync(parts: Parts, wake: bool = False, budget_s: float = 3600.0) -> SyncOutcome:
    """Apply pending changes to the NAS now: if it is awake, or (`wake`) after waking it."""
    outcome = SyncOutcome()
    worker = parts.sync_worker()
    pending = worker.pending()["count"]
    outcome.remaining = pending
    if not parts.monitor.configured:
        outcome.note = "no NAS is configured (BALUPI_NAS_WEBDAV_URL is empty)"
        return outcome
    if not pending:
        outcome.note = "nothing to sync"
        return outcome
    if not parts.nas_awake():
        if not wake:
            outcome.note = f"the NAS is {parts.monitor.state.value}; {pending} change(s) wait (--wake wakes it)"
            return outcome
        try:
            from balupi.sync.worker import SYNC_WAKE_TIMEOUT_S

            parts.monitor.ensure_awake(timeout_s=max(parts.settings.nas_wake_timeout_s, SYNC_WAKE_TIMEOUT_S),
                                       reason=WakeCause(WakeKind.MANUAL, detail="balupi sync --wake",
                                                        pending_changes=pending))
        except NasUnavailable as exc:
            outcome.failed, outcome.note = True, f"the NAS did not wake: {exc}"
            return outcome
    deadline = time.monotonic() + budget_s
    with progress(pending, "sync", unit="change") as bar:
        parts.events.subscribe(Event.SYNC_DONE, lambda **_: bar.update(1))
        parts.events.subscribe(Event.SYNC_CONFLICT, lambda **_: bar.update(1))
        while time.monotonic() < deadline:
            result = worker.run_once(budget_s=min(60.0, max(1.0, deadline - time.monotonic())))
            outcome.applied += result.applied
            outcome.conflicts += result.conflicts
            outcome.remaining = result.remaining
            if result.failed or not result.remaining:
                outcome.failed = bool(result.failed)
                break
            if not result.applied:
                break  # the next change waits for its retry time, or the NAS went away
    outcome.last_error = worker.last_error if outcome.failed else None
    if outcome.remaining and not outcome.failed and not parts.monitor.is_awake():
        outcome.note = f"the NAS stopped answering; {outcome.remaining} change(s) wait"
    return outcome


# -- evict, prefetch, refresh ---------------------------------------------------------------------


def evict(parts: Parts, to_gb: float | None = None) -> tuple[int, int]:
    """Evict the coldest clean files down to `to_gb` (default: down to the configured limits).
    Returns (files, bytes) evicted. Never dirty, pinned or journaled content."""
    cache = parts.cache
    if to_gb is None:
        before = cache.evictions
        freed = cache.sweep()
        return cache.evictions - before, freed
    return cache.evict_to(int(to_gb * 1e9))


def prefetch(parts: Parts, budget_mb: float | None = None):
    """Fetch pinned, hot, then recent files while the NAS is awake (never waking it)."""
    from balupi.cache.prefetch import Prefetcher, PrefetchResult

    if not parts.nas_awake():
        return PrefetchResult(stopped=f"the NAS is {parts.monitor.state.value}; prefetch never wakes it")
    provider = parts.provider()
    prefetcher = Prefetcher(parts.settings, provider, parts.monitor)
    with progress(None, "prefetch", unit="B", unit_scale=True) as bar:
        parts.events.subscribe(Event.CACHE_FILE_ADDED, lambda size_bytes=0, **_: bar.update(size_bytes))
        budget = None if budget_mb is None else int(budget_mb * 1e6)
        return prefetcher.run(budget_bytes=budget)


def refresh(parts: Parts, budget_s: float = 3600.0) -> RefreshOutcome:
    """Bring the index in step with the NAS now, if it is awake (never waking it)."""
    from balupi.sync.refresh import Refresher, RefreshOutcome, refresh_all

    if not parts.nas_awake():
        return RefreshOutcome(note=f"the NAS is {parts.monitor.state.value}; refresh never wakes it")
    parts.index.ensure_root("", listed=False)
    refresher = Refresher(parts.settings, parts.index, parts.store, parts.client, parts.monitor)
    total = index.collection_count(parts.db)
    with progress(total, "refresh", unit="folder") as bar:
        return refresh_all(refresher, parts.index, budget_s=budget_s, on_step=bar.update)


# -- the database ---------------------------------------------------------------------------------


def _db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def vacuum(db: Database) -> dict:
    """Rebuild the database file compactly, then fold the write-ahead log back into it."""
    before = _db_bytes(db.path)
    conn = db.raw()
    conn.execute("VACUUM")
    busy, wal_pages, checkpointed = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return {"before_bytes": before, "after_bytes": _db_bytes(db.path), "checkpoint_busy": bool(busy),
            "wal_pages": wal_pages, "checkpointed_pages": checkpointed}


def backup_db(db: Database, target: Path) -> dict:
    """An online, consistent copy of the database at `target` (a directory gets a dated name).

    Written beside the target and renamed into place once checked (`integrity_check`), so `target`
    is never a partial file; the copy is a single file (rollback journal), ready to open anywhere.
    """
    target = Path(target)
    if target.is_dir():
        target = target / time.strftime("balupi-%Y%m%d-%H%M%S.db")
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        with progress(None, "backup", unit="page") as bar:
            def step(_status: int, remaining: int, total: int) -> None:
                bar.total = total
                bar.n = total - remaining
                bar.refresh()

            db.backup(tmp, progress=step)
        copy = sqlite3.connect(str(tmp))
        try:
            copy.execute("PRAGMA journal_mode = DELETE")
            check = copy.execute("PRAGMA integrity_check").fetchone()[0]
            tables = [r[0] for r in copy.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            rows = {name: copy.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in tables}
        finally:
            copy.close()
        if check != "ok":
            raise sqlite3.DatabaseError(f"the backup failed its integrity check: {check}")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"path": str(target), "bytes": target.stat().st_size, "rows": rows}


def restore_db(settings: Settings, backup: Path) -> dict:
    """Put a backup of the database back (the server must be stopped), then bring it up to date
    with the SSD (`balupi.cache.recovery.reconcile_restored`): changes written after the backup
    come back from the cache's sidecars. The database it replaces is moved aside, never deleted."""
    from balupi.cache.recovery import reconcile_restored
    from balupi.cache.store import ContentStore
    from balupi.db import move_aside

    backup = Path(backup)
    try:
        copy = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
        try:
            check = copy.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            copy.close()
    except sqlite3.Error as exc:
        raise DatabaseError(f"{backup} is not a usable backup: {exc}") from None
    if check != "ok":
        raise DatabaseError(f"{backup} failed its integrity check: {check}")
    target = Path(settings.data_dir) / DB_FILENAME
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = move_aside(target, "replaced") if target.exists() else None
    tmp = target.with_name(f".{target.name}.restore")
    shutil.copyfile(backup, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)
    db = open_database(target)
    store = ContentStore(settings.cache_dir)
    try:
        result = reconcile_restored(db, store)
    finally:
        store.close()
        db.close()
    return {"restored": str(backup), "moved_aside": str(aside) if aside else None, **result}


# -- cache verify ---------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    checked: int = 0
    checked_files: int = 0  # files whose content was read and checked against its checksums
    checked_bytes: int = 0  # content read and checked against its block checksums
    content_complete: bool = True  # False: a content budget stopped the checks (the rest next run)
    files_seen: int = 0
    missing: list[str] = field(default_factory=list)  # clean entries whose content is gone
    wrong_size: list[str] = field(default_factory=list)  # clean entries whose content has another size
    damaged: list[str] = field(default_factory=list)  # clean entries whose content fails its checksums, "path (why)"
    damaged_pending: list[str] = field(default_factory=list)  # the Pi's only copy fails its checksums
    data_loss: list[str] = field(default_factory=list)  # the Pi's only copy is gone or of another size
    orphans: list[str] = field(default_factory=list)  # content (or a sidecar) nothing refers to
    unindexed: list[str] = field(default_factory=list)  # pending changes the index lost (taken back with repair)
    recovered: list[str] = field(default_factory=list)  # ... taken back: in the index and journal again
    adopted: int = 0  # clean copies the index lost, taken back
    quarantined: list[str] = field(default_factory=list)  # moved to quarantine/ (never deleted)
    sidecars_added: int = 0  # content from before sidecars, given one (its bytes taken as good)
    refetched: int = 0  # damaged clean files fetched again from the NAS
    recent_orphans: int = 0  # unreferenced but too new to judge
    repaired: int = 0

    @property
    def problems(self) -> int:
        return (len(self.missing) + len(self.wrong_size) + len(self.damaged) + len(self.damaged_pending)
                + len(self.data_loss) + len(self.orphans) + len(self.unindexed))

    @property
    def clean(self) -> bool:
        """Nothing wrong is left (all repaired) and nothing was lost or needs a person."""
        fixable = len(self.missing) + len(self.wrong_size) + len(self.damaged) + len(self.orphans) + len(self.unindexed)
        return not self.data_loss and not self.damaged_pending and self.repaired >= fixable


def _content_size(store: "ContentStore", key: str) -> int | None:
    """The size of `key`'s content file, or None when it is missing (or not a plain file)."""
    try:
        st = os.lstat(store.file_of(key))
    except FileNotFoundError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _cached_entries(db: Database, after_id: int = 0, up_to_id: int | None = None) -> Iterator:
    last_id = after_id
    while True:
        rows = index.cached_files_after(db, last_id, up_to_id if up_to_id is not None else 2 ** 62, VERIFY_BATCH)
        if not rows:
            return
        yield from rows
        last_id = rows[-1]["id"]


OWNS = ("kv",)  # the only user of the core `kv` table (created by balupi.schema)
VERIFY_CURSOR_KEY = "cache_verify_content_cursor"  # in `kv`: the entry id a budgeted run stopped after


def _rolling(db: Database) -> Iterator:
    """Every cached entry once, starting after where the last budgeted content check stopped."""
    row = db.query_one("SELECT value FROM kv WHERE key = ?", (VERIFY_CURSOR_KEY,))
    cursor = int(row[0]) if row and str(row[0]).isdigit() else 0
    yield from _cached_entries(db, after_id=cursor)
    if cursor:
        yield from _cached_entries(db, after_id=0, up_to_id=cursor)


def _set_cursor(db: Database, entry_id: int) -> None:
    with db.write() as d:
        d.execute("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                  (VERIFY_CURSOR_KEY, str(entry_id)))


def _check_content(store: "ContentStore", key: str) -> tuple[str | None, "Meta | None"]:
    """(what is wrong with `key`'s content, or None; its sidecar, or None when it has none)."""
    from balupi.cache.integrity import ContentDamaged, check_whole

    try:
        meta = store.read_meta(key)
        if meta is None:
            return None, None
        fd = store.open_content(key)
        try:
            check_whole(fd, key, meta)
        finally:
            os.close(fd)
    except ContentDamaged as exc:
        return exc.detail, None
    except FileNotFoundError:
        return "missing", None
    return None, meta


def verify_cache(parts: Parts, repair: bool = False, now: float | None = None,
                 content_budget_bytes: int | None = None) -> VerifyReport:
    """Check every cached file's content against its block checksums and the index, then look for
    content nothing refers to.

    - content missing or of another size than the index says, or failing its checksums: with
      `repair`, a clean entry becomes uncached, the content goes to `quarantine/`, and the NAS's copy
      is fetched again if the NAS is awake;
    - a dirty or local-only entry (the Pi holds the only copy) whose content is missing is data loss:
      reported loudly, never changed; if it fails its checksums, with `repair` it is taken aside
      like the server does (never uploaded; listed with the conflicts for a person);
    - content under `data/` that no entry and no pending change refers to (only once older than
      `ORPHAN_GRACE_S`, or any age when the database is new): with `repair`, taken back into the
      index by its sidecar (`balupi.cache.recovery`; a pending upload is never deleted), and what
      has no readable sidecar is moved to `quarantine/`.

    `content_budget_bytes`: read and check the content of at most this much (every file is still
    checked for existence and size); the next run goes on where this one stopped, so a nightly run
    with a budget checks the whole cache over several nights.
    """
    from balupi.cache.damage import handle_damaged

    db, store = parts.db, parts.store
    report = VerifyReport()
    now = time.time() if now is None else now
    refetch: list[tuple[str, str]] = []
    total = index.counts(db)["cached"][0]
    with progress(total, "verify entries", unit="file") as bar:
        budget = content_budget_bytes
        stopped_after: int | None = None
        last_checked_id = 0
        for row in _rolling(db) if budget is not None else _cached_entries(db):
            report.checked += 1
            bar.update(1)
            key = row["cache_key"]
            size = _content_size(store, key)
            # Within the budget while some is left (so one file larger than the budget is still checked).
            within = budget is None or (stopped_after is None and (budget > 0 or not report.checked_files))
            if budget is not None and within:
                budget -= size or 0
            elif budget is not None and stopped_after is None:
                stopped_after = last_checked_id
            if within:
                last_checked_id = row["id"]
                report.checked_files += 1
            problem, meta = (None, None) if size is None or not within else _check_content(store, key)
            if size is not None and (meta is not None or problem is not None):
                report.checked_bytes += size  # read and checked (found intact or not)
            if size == row["size"] and problem is None:
                if repair and (meta is None or meta.path != row["path"] or meta.view != row["view"]):
                    _true_sidecar(store, key, row, meta, report)
                continue
            fresh = index.content_of(db, row["id"])
            if fresh is None or fresh["cache_key"] != key:
                continue  # changed under us (rewritten, evicted, deleted): nothing to judge
            label = f"{row['view']}:{fresh['path']}" if row["view"] else fresh["path"]
            only_copy = fresh["dirty"] or fresh["local_only"]
            if size is None or (size != fresh["size"] and only_copy):
                what = "missing" if size is None else f"{size} bytes, the index says {fresh['size']}"
                if only_copy:
                    report.data_loss.append(f"{label} (content {key}: {what})")
                    log.error("DATA LOSS: %s exists only on the Pi and its content %s is %s; left as it is",
                              label, key, what)
                    continue
                report.missing.append(label)
                if repair and _uncache(db, row["id"], key):
                    report.repaired += 1
                    refetch.append((row["view"], fresh["path"]))
                continue
            if only_copy:
                report.damaged_pending.append(f"{label} (content {key}: {problem})")
                if repair:
                    damage = handle_damaged(db, store, key, problem or "damaged")
                    if damage.quarantined:
                        report.quarantined.append(damage.quarantined)
                continue
            if size != fresh["size"]:
                report.wrong_size.append(label)
            else:
                report.damaged.append(f"{label} ({problem})")
            if repair:
                damage = handle_damaged(db, store, key, problem or f"{size} bytes, the index says {fresh['size']}")
                if damage.quarantined:
                    report.quarantined.append(damage.quarantined)
                report.repaired += 1
                refetch.append((row["view"], fresh["path"]))
    if content_budget_bytes is not None:
        _set_cursor(db, stopped_after or 0)  # 0: everything was checked; start from the beginning
        report.content_complete = stopped_after is None
    _find_orphans(parts, report, repair, now)
    if repair and refetch:
        _refetch(parts, refetch, report)
    return report


def _true_sidecar(store: "ContentStore", key: str, row, meta, report: VerifyReport) -> None:
    """Give content from before sidecars one (its bytes taken as good), or make a sidecar name the
    entry's path and view again (a move of clean content does not rewrite it)."""
    from balupi.cache.integrity import State

    if meta is None:
        try:
            meta = store.meta_of_file(key)
        except FileNotFoundError:
            return
        report.sidecars_added += 1
    meta.view, meta.path = row["view"], row["path"]
    meta.state = State.LOCAL if row["local_only"] else (State.PENDING if row["dirty"] else State.CLEAN)
    store.write_meta(key, meta)


def _refetch(parts: Parts, targets: list[tuple[str, str]], report: VerifyReport) -> None:
    """Fetch damaged clean files again from the NAS, if it is awake (never waking it)."""
    if not parts.nas_awake():
        return
    provider = parts.provider()
    for view, path in targets:
        entry = parts.index.get(view, path)
        if entry is None or entry.cached or entry.dirty:
            continue
        download = provider.start_download(entry, wake=False)
        if download is not None and download.wait_done(timeout_s=max(60.0, entry.size / 1e6)):
            report.refetched += 1
def _uncache(db: Database, entry_id: int, key: str) -> bool:
    return index.drop_content(db, entry_id, key)


def _referenced(db: Database, key: str) -> bool:
    return index.key_in_use(db, key)


def _quarantine_file(parts: Parts, path: str) -> str:
    """Move a file that is not BaluPi's content (or has no readable sidecar) to quarantine/."""
    qdir = parts.store.root / QUARANTINE
    qdir.mkdir(mode=0o700, exist_ok=True)
    target = qdir / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.path.basename(path)}"
    os.rename(path, target)
    return str(target)


def _find_orphans(parts: Parts, report: VerifyReport, repair: bool, now: float) -> None:
    from balupi.cache.integrity import ContentDamaged, State
    from balupi.cache.recovery import Outcome, take_back

    data_dir = parts.store.data_dir
    grace_s = 0.0 if parts.db.fresh else ORPHAN_GRACE_S
    with progress(None, "verify content", unit="file") as bar:
        for sub in sorted(os.scandir(data_dir), key=lambda e: e.name):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for item in os.scandir(sub.path):
                name = item.name
                is_key = CONTENT_NAME.fullmatch(name) is not None and name[:2] == sub.name
                if name.endswith(META_SUFFIX) and CONTENT_NAME.fullmatch(name[:-len(META_SUFFIX)]):
                    if os.path.lexists(os.path.join(sub.path, name[:-len(META_SUFFIX)])):
                        continue  # a sidecar beside its content
                    try:
                        st = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if now - st.st_mtime >= grace_s and not os.path.lexists(os.path.join(sub.path, name[:-len(META_SUFFIX)])):
                        report.orphans.append(item.path)  # a sidecar whose content is gone: no data
                        if repair:
                            try:
                                os.unlink(item.path)
                            except FileNotFoundError:
                                pass
                            report.repaired += 1
                    continue
                report.files_seen += 1
                bar.update(1)
                if is_key and _referenced(parts.db, name):
                    continue
                st = item.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    continue
                if now - st.st_mtime < grace_s:
                    report.recent_orphans += 1  # maybe published a moment ago, its entry not yet committed
                    continue
                if is_key and _referenced(parts.db, name):
                    continue  # referenced meanwhile
                meta = None
                if is_key:
                    try:
                        meta = parts.store.read_meta(name)
                    except ContentDamaged:
                        meta = None
                pending = meta is not None and meta.state in (State.PENDING, State.LOCAL)
                label = (f"{meta.view}:{meta.path}" if meta.view else meta.path) if meta is not None else item.path
                if not repair:
                    (report.unindexed if pending else report.orphans).append(label if pending else item.path)
                    continue
                if not is_key:
                    report.orphans.append(item.path)
                    report.quarantined.append(_quarantine_file(parts, item.path))
                    report.repaired += 1
                    continue
                outcome, label = take_back(parts.db, parts.store, name)
                report.repaired += 1
                if outcome == Outcome.RECOVERED:
                    report.unindexed.append(label)
                    report.recovered.append(label)
                elif outcome == Outcome.ADOPTED:
                    report.adopted += 1
                    report.orphans.append(item.path)
                elif outcome == Outcome.REDUNDANT:
                    report.orphans.append(item.path)
                else:
                    report.orphans.append(item.path)
                    report.quarantined.append(label)
