"""Write-back: the journal of pending changes applied to the NAS, in order, safely.

Each pending change (`journal` row) is applied only while the NAS is awake; when it sleeps, the
`WakePolicy` decides whether the backlog is worth waking it for. Rules:

- Order: rows are applied by id, per path: a row that fails holds back the later rows that touch
  the same paths (its path, a move's destination, anything above or below them), not the others,
  and is retried with a doubling delay (capped at 5 minutes). A change the NAS refuses for good (a
  4xx that retrying cannot change, or a name it cannot store) is quarantined (state
  'quarantined', shown in /api/cache/stats): the Pi's file stays, dirty, and nothing waits for it.
- Uploads never leave a torn file on the NAS: the content goes to a temporary name in the target's
  folder, then one MOVE puts it in place; the result is verified by size. `phase` records how far an
  upload got, so a restart after the MOVE does not mistake our own upload for someone else's change.
- Conflicts: when the NAS's copy is no longer the version the Pi's change was based on (ETag), both
  are kept: the NAS's version keeps the name, the Pi's goes next to it as
  `name (conflict <host> <date>).ext`, recorded in `conflicts` and announced (Event.SYNC_CONFLICT).
- Damaged content is never uploaded: every block is checked against its checksum as it is read for
  the PUT; a damaged pending file is taken aside (balupi.cache.damage) and the run goes on.
- A synced file stays cached and becomes clean; the NAS's ETag of it is recorded (`nas_etag`), the
  ETag clients see does not change (the content did not: see `balupi.cache.versions`).
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote

from balupi.cache.damage import handle_damaged
from balupi.cache.integrity import ContentDamaged, State, VerifyingReader
from balupi.cache.index import Index, name_of, parent_of
from balupi.cache.journal import Journal, Op
from balupi.nas.names import nas_name_problem
from balupi.cache.store import ContentStore
from balupi.db import Database
from balupi.errors import NasUnavailable, NoViewCredentials, SyncError
from balupi.events import Event, Events
from balupi.nas.client import NasClient, RemoteEntry
from balupi.nas.monitor import NasMonitor
from balupi.nas.wakes import WakeCause, WakeKind
from balupi.settings import Settings
from balupi.sync.policy import WakePolicy

log = logging.getLogger("balupi.sync")

RETRY_MAX_S = 300.0
SYNC_WAKE_TIMEOUT_S = 120.0  # at least this long for the NAS to wake for write-back (its disks spin up)
RUN_BUDGET_S = 60.0
RUN_LOCK_FILENAME = "sync.lock"  # in data_dir: one run at a time across processes (server, `balupi sync`)


# The dead properties of a resource, each the XML of its element: (view, ref URL as WebDAV keys it).
DeadProps = Callable[[str, str], list]


class Phase(enum.StrEnum):
    UPLOADING = "uploading"  # a PUT to the temporary name started (a partial temp file may be there)
    UPLOADED = "uploaded"  # content is at the temporary name on the NAS; the MOVE may follow any moment
    MOVED = "moved"  # content is at its final name on the NAS


def _overlaps(a: str, b: str) -> bool:
    """Whether two paths are the same or one lies below the other."""
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


@dataclass
class RunResult:
    applied: int = 0
    conflicts: int = 0
    failed: int = 0
    damaged: int = 0  # pending uploads whose content failed its checksums: never uploaded
    quarantined: int = 0
    remaining: int = 0


def conflict_name(path: str, host: str, when: float) -> str:
    """`/dir/name.ext` -> `/dir/name (conflict <host> <date>).ext`, `when` being the time of the
    Pi's change, to the millisecond: two versions of a file written within one second must not
    get the same name (the second upload would replace the first copy)."""
    name = name_of(path)
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    stamp = time.strftime("%Y-%m-%d %H%M%S", time.localtime(when)) + f".{int(when * 1000) % 1000:03d}"
    new = f"{stem} (conflict {host} {stamp})" + (f".{ext}" if ext else "")
    parent = parent_of(path) or "/"
    return (parent.rstrip("/") + "/" + new) if parent != "/" else "/" + new


class SyncWorker:
    def __init__(self, settings: Settings, db: Database, index: Index, store: ContentStore, client: NasClient,
                 monitor: NasMonitor, events: Events, dead_props: DeadProps | None = None):
        self.settings = settings
        self.db, self.index, self.store, self.client, self.monitor, self.events = db, index, store, client, monitor, events
        self.journal = Journal(db)
        self.dead_props = dead_props or (lambda view, ref: [])  # given by the WebDAV side (balupi.dav.props)
        self.policy = WakePolicy(settings)
        self.wake_reason = self.policy.wake_reason  # the app sets the plugins' balupi_sync_wake_reason
        self.host = socket.gethostname().split(".")[0] or "balupi"
        self.last_error: str | None = None
        self.errors = 0  # failed attempts to apply a change, since start (balupi_sync_errors_total)
        self._run_lock = threading.Lock()
        self._told_waiting: set[str] = set()

    # -- what waits ------------------------------------------------------------------------------

    def pending(self) -> dict:
        return self.journal.pending()

    def has_pending(self) -> bool:
        return self.journal.has_pending()

    # -- scheduling ------------------------------------------------------------------------------

    def tick(self) -> RunResult | None:
        """Scheduled: apply what waits if the NAS is awake, or wake it when the policy says so."""
        if not self.monitor.configured or not self.has_pending():
            return None
        if not self.monitor.is_awake():
            reason = self.wake_reason(self.pending(), time.time())
            if reason is None:
                return None
            try:
                cause = WakeCause(WakeKind.SYNC, detail=reason, pending_changes=self.pending()["count"])
                self.monitor.ensure_awake(timeout_s=max(self.settings.nas_wake_timeout_s, SYNC_WAKE_TIMEOUT_S), reason=cause)
            except NasUnavailable as exc:
                log.info("sync: the NAS did not wake (%s); will try again", exc)
                return None
        return self.run_once()

    def run_once(self, budget_s: float = RUN_BUDGET_S) -> RunResult:
        """Apply pending changes in order while the NAS is awake, for at most `budget_s`.

        One run at a time, in this process and across processes (the server and `balupi sync`): a
        second caller waits for the first, so each change is applied once.
        """
        with self._run_lock, _file_lock(Path(self.settings.data_dir) / RUN_LOCK_FILENAME):
            return self._run(budget_s)

    def _run(self, budget_s: float) -> RunResult:
        result = RunResult()
        deadline = time.monotonic() + budget_s
        held: dict[str, list[str]] = {}  # view -> paths whose earlier changes wait: later ones on them wait too
        waiting_views: set[str] = set()  # views whose user's credentials are not in memory
        last_id = 0
        while time.monotonic() < deadline and self.monitor.is_awake():
            row = self.journal.next_pending(last_id)
            if row is None:
                break
            last_id = row["id"]
            view, paths = row["view"], [row["path"]] + ([row["dest"]] if row["dest"] else [])
            if view in waiting_views or row["next_at"] > time.time() or \
                    any(_overlaps(p, h) for p in paths for h in held.get(view, ())):
                held.setdefault(view, []).extend(paths)  # waits for its retry time, or behind an earlier one
                continue
            try:
                with self.client.for_view(view):  # the NAS as that view's user sees it
                    conflict = self._apply(row)
            except ContentDamaged as exc:
                # Never uploaded: kept aside, listed with the conflicts for a person; the changes
                # after it go on.
                handle_damaged(self.db, self.store, exc.key, exc.detail)
                result.damaged += 1
                continue
            except NoViewCredentials as exc:
                # Not the NAS's doing: this view's changes wait (in order) for its user's next
                # login; the other views' changes need not wait behind them.
                if view not in self._told_waiting:
                    log.info("sync: %s", exc)
                    self._told_waiting.add(view)
                waiting_views.add(view)
                continue
            except SyncError as exc:
                if exc.permanent:
                    self._quarantine(row, exc)
                    result.quarantined += 1
                    continue
                self._failed(row, exc)
                result.failed += 1
                held.setdefault(view, []).extend(paths)
                continue
            except (NasUnavailable, OSError) as exc:
                self._failed(row, exc)
                result.failed += 1
                if isinstance(exc, NasUnavailable):
                    break  # the NAS went away: the rest waits for the next run
                held.setdefault(view, []).extend(paths)
                continue
            self._done(row["id"])
            if row["op"] == Op.PUT:
                self._drop_unneeded(row["cache_key"])
            result.applied += 1
            result.conflicts += int(conflict)
        result.remaining = self.pending()["count"]
        if result.applied:
            log.info("sync: applied %d change(s), %d conflict(s), %d waiting", result.applied, result.conflicts, result.remaining)
        return result

    def _quarantine(self, row, exc: SyncError) -> None:
        """The NAS will never take this change: set it aside (the Pi's copy stays, dirty)."""
        self.last_error = f"{row['op']} {row['path']}: {exc}"
        self.journal.quarantine(row["id"], str(exc))
        log.warning("sync: %s %s quarantined: the NAS refuses it for good (%s); the Pi keeps its copy",
                    row["op"], row["path"], exc)

    def quarantined(self, view: str | None = None, limit: int = 100) -> list[dict]:
        """Changes set aside (newest first); only `view`'s when given."""
        return self.journal.quarantined(view, limit)

    def _done(self, row_id: int) -> None:
        self.journal.done(row_id)

    def _failed(self, row, exc: Exception) -> None:
        attempts = row["attempts"] + 1
        delay_s = min(RETRY_MAX_S, 2.0 ** attempts)
        self.last_error = f"{row['op']} {row['path']}: {exc}"
        self.errors += 1
        self.journal.failed(row["id"], attempts, time.time() + delay_s, str(exc))
        level = logging.WARNING if attempts in (1, 5) or attempts % 20 == 0 else logging.DEBUG
        log.log(level, "sync: %s %s failed (attempt %d, next in %.0f s): %s", row["op"], row["path"], attempts, delay_s, exc)

    def _drop_unneeded(self, key: str | None) -> None:
        """An upload is done: its content stays only while an entry or another pending change names
        it (a version replaced or deleted before it was synced is kept for the sync until now)."""
        if not key:
            return
        if not self.index.key_in_use(key):
            self.store.remove(key)

    def _set_phase(self, row_id: int, phase: Phase) -> None:
        self.journal.set_phase(row_id, phase)

    def purge_done(self) -> int:
        return self.journal.purge_done(self.settings.sync_done_retention_days * 86400)

    # -- the operations ----------------------------------------------------------------------------

    def _apply(self, row) -> bool:
        """Apply one change. Returns True if it ended in a conflict."""
        op = row["op"]
        for path in (row["path"], row["dest"]):
            problem = nas_name_problem(path, self.settings.nas_reserved_name_chars) if path else None
            if problem is not None:  # journaled before BaluPi knew to refuse such names
                raise SyncError(f"{path}: {problem}", permanent=True)
        if op == Op.PUT:
            return self._put(row)
        if op == Op.MKCOL:
            self._mkcol(row["path"])
            return False
        if op == Op.DELETE:
            return self._delete(row)
        if op in (Op.MOVE, Op.COPY):
            self._move_or_copy(row)
            return False
        if op == Op.PROPPATCH:
            self._proppatch(row)
            return False
        raise SyncError(f"unknown journal operation {op!r}")

    def _stat(self, path: str) -> RemoteEntry | None:
        found = self.client.propfind(path, "0", wake=False)
        return found[0] if found else None

    def _check(self, response, ok: tuple[int, ...], what: str) -> None:
        if response.status_code not in ok:
            raise SyncError(f"{what}: the NAS answered {response.status_code}", response.status_code)

    def _mkcol(self, path: str) -> None:
        response = self.client.request("MKCOL", path, wake=False)
        if response.status_code == 409:  # a parent is missing: make it first
            self._mkcol(parent_of(path) or "/")
            response = self.client.request("MKCOL", path, wake=False)
        self._check(response, (201, 405), f"MKCOL {path}")

    def _ensure_parent(self, path: str) -> None:
        parent = parent_of(path) or "/"
        if parent != "/" and self._stat(parent) is None:
            self._mkcol(parent)

    def _put(self, row) -> bool:
        view, path, key, size = row["view"], row["path"], row["cache_key"], row["size"]
        # Both names depend only on the change, so a retry after a restart finds what an earlier
        # attempt left: the temp file beside the target, and the conflict copy named for the change.
        temp = (parent_of(path) or "/").rstrip("/") + f"/.balupi-upload-{key[:16]}.part"
        copy_path = conflict_name(path, self.host, row["at"])
        later = self.journal.later_put(view, path, row["id"])
        if row["phase"]:  # an earlier attempt got somewhere (and then failed, or BaluPi was killed)
            resumed = self._resume(row, temp, copy_path, superseded=later)
            if resumed is not None:
                return resumed
        if later:
            return False  # a newer version of the same file follows: upload that one only
        if not self.store.exists(key):
            raise SyncError(f"content {key} of {path} is missing from the cache")
        remote = self._stat(path)
        conflict = remote is not None and not remote.is_collection and (row["base_etag"] is None or remote.etag != row["base_etag"])
        target = copy_path if conflict else path
        self._ensure_parent(target)
        meta = self.store.read_meta(key)  # ContentDamaged if its sidecar is unreadable
        if meta is not None and meta.size != size:
            raise ContentDamaged(key, f"its sidecar says {meta.size} bytes, the journal {size}")
        self._set_phase(row["id"], Phase.UPLOADING)
        with self.store.open_read(key) as f:
            # Every block is checked against its checksum before it is sent (see VerifyingReader).
            body = VerifyingReader(f, key, meta) if meta is not None else f
            try:
                if meta is not None and not size:
                    body.read()  # an empty file: check it is still empty
                # An empty file goes as b"": for an empty file object requests adds "Transfer-Encoding:
                # chunked" beside our Content-Length, and the NAS waits for a body that never comes.
                response = self.client.request("PUT", temp, wake=False, data=body if size else b"",
                                               headers={"Content-Length": str(size)}, timeout_s=max(60.0, size / 1e6))
            except Exception:
                damage = getattr(body, "damage", None)
                if damage is not None:
                    self._drop_partial(temp)
                    raise damage from None
                raise
        self._check(response, (200, 201, 204), f"PUT {temp}")
        self._set_phase(row["id"], Phase.UPLOADED)
        response = self.client.request(
            "MOVE", temp, wake=False, headers={"Destination": self.client.url_for(target), "Overwrite": "T"}
        )
        self._check(response, (201, 204), f"MOVE {temp} -> {target}")
        self._set_phase(row["id"], Phase.MOVED)
        result = self._stat(target)
        if result is None or result.size_bytes != size:
            raise SyncError(f"{target} on the NAS has {result.size_bytes if result else 'no'} bytes, expected {size}")
        if conflict:
            self._record_conflict(view, path, target, key, result, remote, row["base_etag"])
        else:
            self._settle(view, path, key, result)
        return conflict

    def _drop_partial(self, temp: str) -> None:
        """A PUT cut on purpose (damaged content): remove what reached the NAS's temporary name."""
        try:
            self.client.request("DELETE", temp, wake=False)
        except (NasUnavailable, OSError) as exc:
            log.info("sync: could not remove the partial upload %s: %s", temp, exc)

    def _resume(self, row, temp: str, copy_path: str, superseded: bool) -> bool | None:
        """Finish an upload an earlier attempt started. Returns whether it ended in a conflict, or
        None when it has to be done (again) from the start.

        Our temp name is ours alone: if it is gone after the PUT completed, our MOVE went through,
        perhaps just before BaluPi was killed and before `phase` could say so. Taking that upload for
        someone else's change would store a false conflict copy.
        """
        view, path, key, size = row["view"], row["path"], row["cache_key"], row["size"]
        if self._stat(temp) is not None:
            if not superseded:
                return None  # the MOVE did not happen: upload again (over the temp file)
            response = self.client.request("DELETE", temp, wake=False)  # not wanted any more
            self._check(response, (200, 204, 404), f"DELETE {temp}")
            return False
        if row["phase"] == Phase.UPLOADING:
            return None  # the PUT never completed: nothing of it is left
        copy = self._stat(copy_path)
        if copy is not None and copy.size_bytes == size:  # it went to the conflict name
            if not self.journal.conflict_recorded(view, path, copy_path):
                self._record_conflict(view, path, copy_path, key, copy, self._stat(path), row["base_etag"])
            return True
        remote = self._stat(path)
        if remote is None or remote.size_bytes != size:
            return None  # changed on the NAS since: start over (the conflict check decides)
        if superseded:
            self._rebase(view, path, remote)  # the newer version is based on this upload
        else:
            self._settle(view, path, key, remote)
        return False

    def _settle(self, view: str, path: str, key: str, remote: RemoteEntry) -> None:
        """The NAS holds `key`'s content at `path` now (see `Index.settle_upload`)."""
        self.index.settle_upload(view, path, key, remote.etag)
        # The sidecar says so too: after a lost database this content is not uploaded again.
        self.store.update_meta(key, state=State.CLEAN, etag=remote.etag or None, base_etag=None)
        self.events.emit(Event.SYNC_DONE, path=path, action="put")

    def _record_conflict(self, view: str, path: str, conflict_path: str, key: str, uploaded: RemoteEntry,
                         nas_version: RemoteEntry | None, base_etag: str | None) -> None:
        now = time.time()
        self.index.record_conflict(view, path, conflict_path, key, uploaded, nas_version, base_etag, now)
        self.store.update_meta(key, path=conflict_path, state=State.CLEAN, etag=uploaded.etag or None, base_etag=None)
        log.warning("sync: conflict on %s: the NAS's version keeps the name, the Pi's is saved as %s", path, conflict_path)
        self.events.emit(Event.SYNC_CONFLICT, path=path, conflict_path=conflict_path, at=now)

    def _delete(self, row) -> bool:
        view, path = row["view"], row["path"]
        remote = self._stat(path)
        if remote is None:
            return False
        if row["base_etag"] and not remote.is_collection and remote.etag != row["base_etag"]:
            # Changed on the NAS since the Pi saw it: keep the NAS's version, let the index learn it again.
            self.index.refuse_delete(view, path, remote.etag, row["base_etag"])
            self.events.emit(Event.SYNC_CONFLICT, path=path, conflict_path=path, at=time.time())
            return True
        response = self.client.request("DELETE", path, wake=False)
        self._check(response, (200, 204, 404), f"DELETE {path}")
        self.events.emit(Event.SYNC_DONE, path=path, action="delete")
        return False

    def _move_or_copy(self, row) -> None:
        op, view, src, dest = row["op"], row["view"], row["path"], row["dest"]
        self._ensure_parent(dest)
        response = self.client.request(
            op.upper(), src, wake=False, headers={"Destination": self.client.url_for(dest), "Overwrite": "T"}
        )
        if response.status_code == 404:
            remote = self._stat(dest)
            entry = self.index.get(view, dest) if remote is None else None
            if entry is not None and not entry.is_dir and entry.dirty and entry.cache_key:
                # The source never reached the NAS (its upload was quarantined, e.g. a name the NAS
                # refused, and the user renamed it since): upload what the Pi holds under the new name.
                self._put({**dict(row), "op": "put", "path": dest, "dest": None, "cache_key": entry.cache_key,
                           "size": entry.size, "base_etag": None, "phase": None})
                return
            if remote is None:
                log.warning("sync: %s %s -> %s: the source is not on the NAS; nothing to do", op, src, dest)
            else:
                self._rebase(view, dest, remote)  # done before a restart
                self._settle_moved(view, dest, remote, row["id"])
            return
        self._check(response, (201, 204), f"{op.upper()} {src} -> {dest}")
        remote = self._stat(dest)
        if remote is not None and op == Op.MOVE:
            self.index.learn_moved(view, dest, remote.etag)
        if remote is not None:
            self._rebase(view, dest, remote)
            self._settle_moved(view, dest, remote, row["id"])
        self.events.emit(Event.SYNC_DONE, path=dest, action=op)

    def _settle_moved(self, view: str, dest: str, remote: RemoteEntry, row_id: int) -> None:
        self.index.settle_moved(view, dest, remote, row_id)

    def _rebase(self, view: str, path: str, remote: RemoteEntry) -> None:
        """The NAS's file at `path` is our own doing now (a synced move or copy): local changes of
        `path` made after it are based on it, not on what their entry knew before (nothing, for a
        file created by the move), or the next upload would take our own move for someone else's
        change and keep both as a conflict."""
        if remote.is_collection:
            return
        self.index.rebase(view, path, remote.etag)

    def _proppatch(self, row) -> None:
        view, path = row["view"], row["path"]
        entry = self.index.get(view, path)
        if entry is None:
            return  # gone since; nothing to copy
        ref = quote(path) + ("/" if entry.is_dir and path != "/" else "")
        props = self.dead_props(view, ref)
        if not props:
            return
        values = b"".join(props)
        body = (b'<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
                + values + b"</D:prop></D:set></D:propertyupdate>")
        response = self.client.request("PROPPATCH", path, wake=False, data=body,
                                       headers={"Content-Type": "application/xml; charset=utf-8"})
        if response.status_code == 404 and self.journal.later_put(view, path, row["id"]):
            # The file reaches the NAS only with a later version (an earlier one was superseded
            # before its upload): copy the properties after that upload.
            self.journal.proppatch_again(view, path)
            return
        self._check(response, (200, 207), f"PROPPATCH {path}")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (flock), released when the block ends or the process dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
