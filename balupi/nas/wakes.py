"""What woke the NAS: one row per wake-up (and per time BaluPi found it awake), with its cause, how
long the NAS then stayed awake, and what BaluPi did with the awake time.

This module owns the `nas_wakes` table and is its only writer. It learns everything from events:
- Event.NAS_WAKE_REQUESTED (with a `WakeCause`): BaluPi starts a wake-up: a row opens;
- Event.NAS_STATE_CHANGED to awake: the open row gets `awake_at`; with no open row the NAS came up
  without BaluPi sending a packet ("woken by something else", or "found awake" at start-up);
- Event.NAS_STATE_CHANGED away from awake: the row ends (`ended_at`); a wake that ends in
  unreachable ends its row too, with `woke` false;
- Event.SYNC_DONE while a row is open: changes synced; the prefetcher reports each run's files and
  bytes (`on_prefetch_done`).

Who asked: a client's request runs on a cheroot worker thread, and the top-level dispatcher puts the
request's WSGI environ into `current_request` (a context variable, so per thread) before anything
runs. `cause_for_request` turns it into a cause: user, User-Agent, address and path. Background
jobs name their cause themselves (sync with its pending count, manual wake, ...).

Lock order: called while `NasMonitor._cond` is held (events are emitted inside transitions), so
this takes only `Database._write_lock` and its own `_lock`, in that order never reversed.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote

from sqlite_utils.migrations import Migrations

from balupi.db import Database
from balupi.events import Event, Events

log = logging.getLogger("balupi.nas.wakes")

OWNS = ("nas_wakes",)

migrations = Migrations("nas_wakes")

current_request: contextvars.ContextVar[dict | None] = contextvars.ContextVar("balupi_current_request", default=None)
MAX_TEXT = 300  # longest User-Agent or path kept


@migrations(name="0001_nas_wakes")
def _create(db) -> None:
    db["nas_wakes"].create(
        {
            "id": int,
            "requested_at": float,  # when BaluPi asked for the wake (or first saw the NAS awake)
            "awake_at": float,  # when it answered (null: it did not, or not yet)
            "ended_at": float,  # when it stopped being awake (null: still awake, or still waking)
            "kind": str,  # WakeKind
            "detail": str,
            "user": str,
            "client": str,  # the User-Agent
            "address": str,
            "path": str,
            "pending_changes": int,
            "packet_sent": int,
            "files_prefetched": int,
            "bytes_prefetched": int,
            "changes_synced": int,
        },
        pk="id",
        defaults={"files_prefetched": 0, "bytes_prefetched": 0, "changes_synced": 0, "packet_sent": 0},
    )
    db["nas_wakes"].create_index(["requested_at"])


class WakeKind(enum.Enum):
    REQUEST = "request"  # a client's request needed a file or folder only the NAS had
    SYNC = "sync"  # changes waiting for the NAS (the write-back policy, or "sync now")
    PREFETCH = "prefetch"
    REFRESH = "refresh"
    MANUAL = "manual"  # someone asked for a wake (POST /api/nas/wol, `balupi wake`)
    PLUGIN = "plugin"
    EXTERNAL = "external"  # it came up without BaluPi sending a packet: woken by something else
    FOUND_AWAKE = "found_awake"  # BaluPi did not know its state yet (start-up) and found it awake


@dataclass(frozen=True)
class WakeCause:
    kind: WakeKind
    detail: str = ""
    user: str | None = None
    client: str | None = None
    address: str | None = None
    path: str | None = None
    pending_changes: int | None = None

    def describe(self) -> str:
        """One short line: 'request by alice (Microsoft-WebDAV-MiniRedir) GET /Photos/a.jpg'."""
        if self.kind is WakeKind.REQUEST:
            who = self.user or "anonymous"
            via = f" ({self.client})" if self.client else ""
            return f"request by {who}{via}: {self.path or self.detail}"
        if self.kind is WakeKind.SYNC and self.pending_changes is not None:
            return f"sync of {self.pending_changes} pending change(s)" + (f" ({self.detail})" if self.detail else "")
        if self.kind is WakeKind.EXTERNAL:
            return "woken by something else" + (f" ({self.detail})" if self.detail else "")
        if self.kind is WakeKind.FOUND_AWAKE:
            return "found awake" + (f" ({self.detail})" if self.detail else "")
        return f"{self.kind.value}" + (f": {self.detail}" if self.detail else "")

    def for_transition(self) -> str:
        """The text in the NAS's transition to waking (and the log line): for a request its method
        and path first, so `/api/nas/status` can cut at the path for non-admins and keep "GET"."""
        if self.kind is WakeKind.REQUEST:
            who = self.user or "anonymous"
            return f"{self.detail} for {who}" + (f" ({self.client})" if self.client else "")
        return self.describe()


def cause_for_request(detail: str, path: str | None = None, user: str | None = None) -> WakeCause:
    """The cause for a wake a request needs: `path` is what it needs from the NAS (a share path);
    user, User-Agent and address come from the request this thread is answering (if any; `user`
    when it names nobody)."""
    environ = current_request.get()
    if environ is None:
        return WakeCause(WakeKind.REQUEST, detail=detail[:MAX_TEXT], path=path, user=user)
    asked = unquote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    return WakeCause(
        WakeKind.REQUEST,
        detail=f"{environ.get('REQUEST_METHOD', '')} {asked}"[:MAX_TEXT],
        user=environ.get("wsgidav.auth.user_name") or environ.get("balupi.user") or user,
        client=(environ.get("HTTP_USER_AGENT") or "")[:MAX_TEXT] or None,
        address=environ.get("REMOTE_ADDR") or None,
        path=(path or asked)[:MAX_TEXT],
    )


def as_cause(reason: "str | WakeCause") -> WakeCause:
    """A plain reason string (older callers) becomes the cause of the request being answered, or a
    manual wake outside any request."""
    if isinstance(reason, WakeCause):
        return reason
    if current_request.get() is not None:
        return cause_for_request(reason)
    return WakeCause(WakeKind.MANUAL, detail=reason)


COLUMNS = ("id, requested_at, awake_at, ended_at, kind, detail, user, client, address, path, pending_changes,"
           " packet_sent, files_prefetched, bytes_prefetched, changes_synced")


class WakeLog:
    """Records wakes from events; answers what woke the NAS when."""

    def __init__(self, db: Database, events: Events, clock=time.time):
        self.db = db
        self.clock = clock
        self._lock = threading.Lock()
        self._open_id: int | None = None  # the row of the wake under way or the awake period now
        self._awake = False
        events.subscribe(Event.NAS_WAKE_REQUESTED, self.on_wake_requested)
        events.subscribe(Event.NAS_STATE_CHANGED, self.on_state_changed)
        events.subscribe(Event.SYNC_DONE, self.on_sync_done)

    def close_stale(self) -> None:
        """At the server's start: rows a stop or a crash left open ended when BaluPi last ran (as far
        as anyone knows). Not from other processes (`balupi sync --wake`): the server's rows are live."""
        with self.db.write() as d:
            d.execute("UPDATE nas_wakes SET ended_at = coalesce(awake_at, requested_at) WHERE ended_at IS NULL")

    # -- events ----------------------------------------------------------------------------------

    def on_wake_requested(self, reason: str = "", cause: WakeCause | None = None, at: float | None = None,
                          **_: object) -> None:
        cause = cause or as_cause(reason)
        with self._lock:
            self._end_open(at or self.clock())
            self._open_id = self._insert(cause, at or self.clock(), awake_at=None, packet_sent=True)
            self._awake = False

    def on_state_changed(self, from_state, to_state, cause: str = "", at: float | None = None, **_: object) -> None:
        at = at or self.clock()
        to_name = getattr(to_state, "value", to_state)
        from_name = getattr(from_state, "value", from_state)
        with self._lock:
            if to_name == "awake":
                if self._open_id is not None and not self._awake:
                    with self.db.write() as d:
                        d.execute("UPDATE nas_wakes SET awake_at = ? WHERE id = ?", (at, self._open_id))
                else:
                    self._end_open(at)
                    kind = WakeKind.FOUND_AWAKE if from_name == "unknown" else WakeKind.EXTERNAL
                    self._open_id = self._insert(WakeCause(kind, detail=cause), at, awake_at=at, packet_sent=False)
                self._awake = True
            elif to_name == "waking":
                pass  # the wake request that follows opens the row
            elif self._open_id is not None and (self._awake or to_name in ("unreachable", "asleep")):
                self._end_open(at)

    def on_prefetch_done(self, files: int = 0, bytes: int = 0, **_: object) -> None:  # noqa: A002 (event field)
        self._add("files_prefetched = files_prefetched + ?, bytes_prefetched = bytes_prefetched + ?", (files, bytes))

    def on_sync_done(self, **_: object) -> None:
        self._add("changes_synced = changes_synced + ?", (1,))

    def _add(self, assignments: str, params: tuple) -> None:
        with self._lock:
            if self._open_id is None:
                return
            try:
                with self.db.write() as d:
                    d.execute(f"UPDATE nas_wakes SET {assignments} WHERE id = ?", (*params, self._open_id))
            except Exception:
                log.debug("could not count awake work", exc_info=True)

    def _insert(self, cause: WakeCause, at: float, awake_at: float | None, packet_sent: bool) -> int | None:
        """Caller holds self._lock."""
        try:
            with self.db.write() as d:
                cursor = d.execute(
                    "INSERT INTO nas_wakes (requested_at, awake_at, kind, detail, user, client, address, path,"
                    " pending_changes, packet_sent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (at, awake_at, cause.kind.value, cause.detail[:MAX_TEXT], cause.user, cause.client, cause.address,
                     cause.path, cause.pending_changes, int(packet_sent)),
                )
                return cursor.lastrowid
        except Exception:  # the database may be closing at shutdown
            log.debug("could not record a NAS wake", exc_info=True)
            return None

    def _end_open(self, at: float) -> None:
        """Caller holds self._lock."""
        if self._open_id is None:
            return
        try:
            with self.db.write() as d:
                d.execute("UPDATE nas_wakes SET ended_at = ? WHERE id = ? AND ended_at IS NULL", (at, self._open_id))
        except Exception:
            log.debug("could not end a NAS wake", exc_info=True)
        self._open_id, self._awake = None, False

    # -- reading ---------------------------------------------------------------------------------

    def between(self, start_s: float, end_s: float, limit: int = 1000) -> list[dict]:
        """Wakes requested in [start_s, end_s), newest first."""
        rows = self.db.query(f"SELECT {COLUMNS} FROM nas_wakes WHERE requested_at >= ? AND requested_at < ?"
                             " ORDER BY requested_at DESC, id DESC LIMIT ?", (start_s, end_s, limit))
        return [self._as_dict(r) for r in rows]

    def latest(self, n: int = 5) -> list[dict]:
        rows = self.db.query(f"SELECT {COLUMNS} FROM nas_wakes ORDER BY requested_at DESC, id DESC LIMIT ?", (n,))
        return [self._as_dict(r) for r in rows]

    def counts_by_kind(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.query("SELECT kind, count(*) FROM nas_wakes GROUP BY kind")}

    def awake_seconds_total(self) -> float:
        now = self.clock()
        row = self.db.query_one("SELECT coalesce(sum(coalesce(ended_at, ?) - awake_at), 0) FROM nas_wakes"
                                " WHERE awake_at IS NOT NULL", (now,))
        return max(0.0, float(row[0]))

    def _as_dict(self, r) -> dict:
        now = self.clock()
        cause = WakeCause(WakeKind(r["kind"]), r["detail"] or "", r["user"], r["client"], r["address"], r["path"],
                          r["pending_changes"])
        awake_at, ended_at = r["awake_at"], r["ended_at"]
        return {
            "id": r["id"],
            "requested_at": r["requested_at"],
            "awake_at": awake_at,
            "ended_at": ended_at,
            "woke": awake_at is not None,
            "ongoing": ended_at is None,
            "awake_s": None if awake_at is None else round((ended_at or now) - awake_at, 3),
            "wake_s": None if awake_at is None else round(awake_at - r["requested_at"], 3),
            "cause": {
                "kind": cause.kind.value,
                "summary": cause.describe(),
                "detail": cause.detail,
                "user": cause.user,
                "client": cause.client,
                "address": cause.address,
                "path": cause.path,
                "pending_changes": cause.pending_changes,
            },
            "packet_sent": bool(r["packet_sent"]),
            "used_for": {
                "files_prefetched": r["files_prefetched"],
                "bytes_prefetched": r["bytes_prefetched"],
                "changes_synced": r["changes_synced"],
            },
        }
