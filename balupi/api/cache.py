"""The hot cache and the write-back: GET /api/cache/stats and /api/cache/conflicts, and the
admin-only triggers POST /api/cache/sync, /evict, /prefetch and /refresh.

Sync, prefetch and refresh talk to the NAS, so they run as background jobs (202 Accepted, see
`/api/system/jobs`); they share their job with the scheduled run of the same name, so a trigger
never starts a second run beside one that is going. Eviction is local and answers when done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from balupi.api import ApiError, Request, Route
from balupi.cache import index as cache_index
from balupi.cache import journal as cache_journal
from balupi.cache import pins as cache_pins
from balupi.cache import stats as cache_stats
from balupi.errors import NasUnavailable
from balupi.nas.wakes import WakeCause, WakeKind
from balupi.sync.worker import SYNC_WAKE_TIMEOUT_S

if TYPE_CHECKING:
    from balupi.api.context import ApiContext

CONFLICTS_LIMIT = 500


def _job_running(ctx: "ApiContext", name: str) -> bool:
    return any(job["name"] == name and job["running"] for job in ctx.scheduler.status())


def _start_job(ctx: "ApiContext", name: str, fn) -> dict:
    """Run `fn` as job `name` now, unless a run of that job is going already."""
    was_running = _job_running(ctx, name)
    ctx.scheduler.run_soon(name, fn)
    return {"job": name, "started": not was_running, "nas_state": ctx.nas.state.value}


def _need_nas(ctx: "ApiContext") -> None:
    if not ctx.nas.configured:
        raise ApiError(409, "no NAS is configured (BALUPI_NAS_WEBDAV_URL is empty)")


def _pin_figures(ctx: "ApiContext", pattern: str) -> dict:
    return cache_index.glob_figures(ctx.db, pattern)


def stats(request: Request) -> dict:
    ctx = request.ctx
    counts = ctx.cache_stats
    body = cache_stats.figures(ctx.db, ctx.settings.cache_max_size_gb)
    body.update({
        "hit_rate_percent": cache_stats.percent(counts.hits, counts.hits + counts.misses),
        "byte_hit_rate_percent": cache_stats.percent(counts.hit_bytes, counts.hit_bytes + counts.miss_bytes),
        "requests": {"hits": counts.hits, "misses": counts.misses, "hit_bytes": counts.hit_bytes,
                     "miss_bytes": counts.miss_bytes},
        "nas_wakes_caused": ctx.nas.wakes,
        "evictions": ctx.cache.evictions,
        "evicted_bytes": ctx.cache.evicted_bytes,
        "integrity": {
            "verified_files": ctx.verified.checked_files,
            "verified_bytes": ctx.verified.checked_bytes,
            "damaged_found": ctx.verified.damaged_found,
            "damaged_unresolved": cache_journal.damaged_unresolved(
                ctx.db, None if request.user.is_admin else request.user.view),
        },
        # Admins see every view's set-aside changes; any other user those of their own view.
        "quarantined": ctx.sync.quarantined(None if request.user.is_admin else request.user.view),
    })
    return body


def conflicts(request: Request) -> dict:
    """Admins see every view's conflicts; any other user those of their own view only."""
    ctx = request.ctx
    limit = request.query_int("limit", CONFLICTS_LIMIT)
    if limit is None or limit < 1:
        raise ApiError(400, "query parameter 'limit' must be at least 1")
    user = request.user
    view = user.view if user is not None and not user.is_admin else None
    return cache_journal.conflicts(ctx.db, view, request.query.get("unresolved") in ("1", "true"), limit)


def sync(request: Request):
    ctx = request.ctx
    _need_nas(ctx)
    body = request.json_object()
    wake = body.get("wake", False)
    if not isinstance(wake, bool):
        raise ApiError(422, "'wake' must be true or false")

    def run() -> None:
        if wake and not ctx.nas.is_awake():
            try:
                ctx.nas.ensure_awake(timeout_s=SYNC_WAKE_TIMEOUT_S, reason=cause)
            except NasUnavailable:
                return
            ctx.sync.run_once()
        else:
            ctx.sync.tick()

    pending = ctx.sync.pending()
    cause = WakeCause(WakeKind.MANUAL, detail="sync now (POST /api/cache/sync)", pending_changes=pending["count"],
                      user=getattr(request.user, "username", None))
    return 202, {**_start_job(ctx, "sync", run), "pending_changes": pending["count"], "wake": wake}


def evict(request: Request) -> dict:
    ctx = request.ctx
    body = request.json_object()
    cache = ctx.cache
    to_gb = body.get("to_gb")
    if to_gb is None:
        before = cache.evictions
        freed = cache.sweep()
        files = cache.evictions - before
    else:
        if isinstance(to_gb, bool) or not isinstance(to_gb, (int, float)) or to_gb < 0:
            raise ApiError(422, "'to_gb' must be a number of GB, 0 or more")
        files, freed = cache.evict_to(int(to_gb * cache_stats.BYTES_PER_GB))
    return {"evicted_files": files, "freed_bytes": freed, "used_bytes": cache.used_bytes(),
            "max_size_gb": ctx.settings.cache_max_size_gb}


def prefetch(request: Request):
    ctx = request.ctx
    _need_nas(ctx)
    body = request.json_object()
    budget_mb = body.get("budget_mb")
    if budget_mb is not None and (isinstance(budget_mb, bool) or not isinstance(budget_mb, (int, float)) or budget_mb < 0):
        raise ApiError(422, "'budget_mb' must be a number of MB, 0 or more")
    budget = None if budget_mb is None else int(budget_mb * cache_stats.BYTES_PER_MB)
    return 202, _start_job(ctx, "prefetch", lambda: ctx.prefetcher.run(budget_bytes=budget))


def refresh(request: Request):
    ctx = request.ctx
    _need_nas(ctx)
    return 202, _start_job(ctx, "refresh", ctx.refresh_all)


def pins_list(request: Request) -> dict:
    ctx = request.ctx
    added = {r["pattern"]: r for r in cache_pins.rows(ctx.db)}
    out = []
    for pattern in ctx.cache.pinned:
        row = added.get(pattern)
        out.append({"pattern": pattern, "source": "api" if row else "settings",
                    "added_at": row["added_at"] if row else None, "added_by": row["added_by"] if row else None,
                    **_pin_figures(ctx, pattern)})
    return {"pins": out}


def pins_add(request: Request):
    ctx = request.ctx
    body = request.json_object()
    try:
        pattern = cache_pins.check_pattern(body.get("path"))
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    if not any(c in pattern for c in "*?["):
        if cache_index.is_dir_anywhere(ctx.db, pattern):
            pattern += "/*"  # a folder: everything below it
    added = cache_pins.add(ctx.db, pattern, getattr(request.user, "username", None))
    ctx.cache.reload_pins()
    return (201 if added else 200), {"pattern": pattern, "added": added, **_pin_figures(ctx, pattern)}


def pins_remove(request: Request) -> dict:
    ctx = request.ctx
    pattern = request.query.get("pattern") or ""
    if pattern in ctx.settings.cache_pinned:
        raise ApiError(409, f"{pattern} is pinned by the cache_pinned setting; change the setting to unpin it")
    if not cache_pins.remove(ctx.db, pattern):
        raise ApiError(404, f"not pinned: {pattern!r}")
    ctx.cache.reload_pins()
    return {"pattern": pattern, "removed": True}


ROUTES = (
    Route("GET", "/cache/stats", stats),
    Route("GET", "/cache/conflicts", conflicts),
    Route("POST", "/cache/sync", sync, admin_only=True),
    Route("POST", "/cache/evict", evict, admin_only=True),
    Route("POST", "/cache/prefetch", prefetch, admin_only=True),
    Route("POST", "/cache/refresh", refresh, admin_only=True),
    Route("GET", "/cache/pins", pins_list),
    Route("POST", "/cache/pins", pins_add, admin_only=True),
    Route("DELETE", "/cache/pins", pins_remove, admin_only=True),
)
