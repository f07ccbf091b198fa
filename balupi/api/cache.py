"""The hot cache and the write-back: GET /api/cache/stats and /api/cache/conflicts, and the
admin-only triggers POST /api/cache/sync, /evict, /prefetch and /refresh.

Sync, prefetch and refresh talk to the NAS, so they run as background jobs (202 Accepted, see
`/api/system/jobs`); they share their job with the scheduled run of the same name, so a trigger
never starts a second run beside one that is going. Eviction is local and answers when done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from balupi.api import ApiError, admin_only
from balupi.cache import pins as cache_pins
from balupi.cache import stats as cache_stats
from balupi.errors import NasUnavailable
from balupi.nas.wakes import WakeCause, WakeKind
from balupi.sync.worker import SYNC_WAKE_TIMEOUT_S

if TYPE_CHECKING:
    from balupi.api import JsonApi, Request
    from balupi.app import BaluPi

CONFLICTS_LIMIT = 500


def register(api: "JsonApi", app: "BaluPi") -> None:
    def job_running(name: str) -> bool:
        return any(job["name"] == name and job["running"] for job in app.scheduler.status())

    def start_job(name: str, fn) -> dict:
        """Run `fn` as job `name` now, unless a run of that job is going already."""
        was_running = job_running(name)
        app.scheduler.run_soon(name, fn)
        return {"job": name, "started": not was_running, "nas_state": app.nas.state.value}

    def need_nas() -> None:
        if not app.nas.configured:
            raise ApiError(409, "no NAS is configured (BALUPI_NAS_WEBDAV_URL is empty)")

    @api.route("GET", "/cache/stats")
    def stats(request: "Request") -> dict:
        provider = app.provider
        counts = provider.stats
        body = cache_stats.figures(app.db, app.settings.cache_max_size_gb)
        body.update({
            "hit_rate_percent": cache_stats.percent(counts.hits, counts.hits + counts.misses),
            "byte_hit_rate_percent": cache_stats.percent(counts.hit_bytes, counts.hit_bytes + counts.miss_bytes),
            "requests": {"hits": counts.hits, "misses": counts.misses, "hit_bytes": counts.hit_bytes,
                         "miss_bytes": counts.miss_bytes},
            "nas_wakes_caused": app.nas.wakes,
            "evictions": provider.cache.evictions,
            "evicted_bytes": provider.cache.evicted_bytes,
            "integrity": {
                "verified_files": provider.verified.checked_files,
                "verified_bytes": provider.verified.checked_bytes,
                "damaged_found": provider.verified.damaged_found,
                "damaged_unresolved": app.db.query_one(
                    "SELECT count(*) FROM conflicts WHERE kind = 'damaged' AND resolved = 0 AND (? OR view = ?)",
                    (int(request.user.is_admin), request.user.view))[0],
            },
            # Admins see every view's set-aside changes; any other user those of their own view.
            "quarantined": app.sync.quarantined(None if request.user.is_admin else request.user.view),
        })
        return body

    @api.route("GET", "/cache/conflicts")
    def conflicts(request: "Request") -> dict:
        """Admins see every view's conflicts; any other user those of their own view only."""
        limit = request.query_int("limit", CONFLICTS_LIMIT)
        if limit is None or limit < 1:
            raise ApiError(400, "query parameter 'limit' must be at least 1")
        user = request.user
        where, params = ["1"], []
        if user is not None and not user.is_admin:
            where.append("view = ?")
            params.append(user.view)
        counted = " AND ".join(where)
        if request.query.get("unresolved") in ("1", "true"):
            where.append("resolved = 0")
        rows = app.db.query(
            "SELECT id, at, view, path, conflict_path, nas_etag, base_etag, resolved, kind FROM conflicts"
            f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        total = app.db.query_one(f"SELECT count(*), coalesce(sum(resolved = 0), 0) FROM conflicts WHERE {counted}",
                                 tuple(params))
        return {
            "count": total[0],
            "unresolved": int(total[1]),
            "conflicts": [{**dict(row), "resolved": bool(row["resolved"])} for row in rows],
        }

    @api.route("POST", "/cache/sync")
    @admin_only
    def sync(request: "Request"):
        need_nas()
        body = request.json_object()
        wake = body.get("wake", False)
        if not isinstance(wake, bool):
            raise ApiError(422, "'wake' must be true or false")

        def run() -> None:
            if wake and not app.nas.is_awake():
                try:
                    app.nas.ensure_awake(timeout_s=SYNC_WAKE_TIMEOUT_S, reason=cause)
                except NasUnavailable:
                    return
                app.sync.run_once()
            else:
                app.sync.tick()

        pending = app.sync.pending()
        cause = WakeCause(WakeKind.MANUAL, detail="sync now (POST /api/cache/sync)", pending_changes=pending["count"],
                          user=getattr(request.user, "username", None))
        return 202, {**start_job("sync", run), "pending_changes": pending["count"], "wake": wake}

    @api.route("POST", "/cache/evict")
    @admin_only
    def evict(request: "Request") -> dict:
        body = request.json_object()
        cache = app.provider.cache
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
                "max_size_gb": app.settings.cache_max_size_gb}

    @api.route("POST", "/cache/prefetch")
    @admin_only
    def prefetch(request: "Request"):
        need_nas()
        body = request.json_object()
        budget_mb = body.get("budget_mb")
        if budget_mb is not None and (isinstance(budget_mb, bool) or not isinstance(budget_mb, (int, float)) or budget_mb < 0):
            raise ApiError(422, "'budget_mb' must be a number of MB, 0 or more")
        budget = None if budget_mb is None else int(budget_mb * cache_stats.BYTES_PER_MB)
        return 202, start_job("prefetch", lambda: app.prefetcher.run(budget_bytes=budget))

    @api.route("POST", "/cache/refresh")
    @admin_only
    def refresh(request: "Request"):
        from balupi.sync.refresh import refresh_all

        need_nas()
        return 202, start_job("refresh", lambda: refresh_all(app.refresher, app.provider.index))

    def pin_figures(pattern: str) -> dict:
        row = app.db.query_one(
            "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(cache_key IS NOT NULL), 0),"
            " coalesce(sum(CASE WHEN cache_key IS NOT NULL THEN size ELSE 0 END), 0)"
            " FROM entries WHERE is_dir = 0 AND path GLOB ?", (pattern,))
        return {"files": row[0], "bytes": row[1], "cached_files": row[2], "cached_bytes": row[3]}

    @api.route("GET", "/cache/pins")
    def pins_list(request: "Request") -> dict:
        added = {r["pattern"]: r for r in cache_pins.rows(app.db)}
        out = []
        for pattern in app.provider.cache.pinned:
            row = added.get(pattern)
            out.append({"pattern": pattern, "source": "api" if row else "settings",
                        "added_at": row["added_at"] if row else None, "added_by": row["added_by"] if row else None,
                        **pin_figures(pattern)})
        return {"pins": out}

    @api.route("POST", "/cache/pins")
    @admin_only
    def pins_add(request: "Request"):
        body = request.json_object()
        try:
            pattern = cache_pins.check_pattern(body.get("path"))
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        if not any(c in pattern for c in "*?["):
            row = app.db.query_one("SELECT is_dir FROM entries WHERE path = ? LIMIT 1", (pattern,))
            if row is not None and row[0]:
                pattern += "/*"  # a folder: everything below it
        added = cache_pins.add(app.db, pattern, getattr(request.user, "username", None))
        app.provider.cache.reload_pins()
        return (201 if added else 200), {"pattern": pattern, "added": added, **pin_figures(pattern)}

    @api.route("DELETE", "/cache/pins")
    @admin_only
    def pins_remove(request: "Request") -> dict:
        pattern = request.query.get("pattern") or ""
        if pattern in app.settings.cache_pinned:
            raise ApiError(409, f"{pattern} is pinned by the cache_pinned setting; change the setting to unpin it")
        if not cache_pins.remove(app.db, pattern):
            raise ApiError(404, f"not pinned: {pattern!r}")
        app.provider.cache.reload_pins()
        return {"pattern": pattern, "removed": True}
