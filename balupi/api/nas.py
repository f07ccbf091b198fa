"""GET /api/nas/status, POST /api/nas/wol, and what woke the NAS: GET /api/nas/wakes and /api/nas/timeline."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta

from balupi.api import ApiError, Request, Route
from balupi.energy.queries import power_buckets
from balupi.errors import WakeNotPossible
from balupi.nas.monitor import transitions_between
from balupi.nas.wakes import WakeCause, WakeKind

RETRY_SUFFIX = " (retry)"
PATH_HIDDEN = " (a path, shown to admins)"
DEFAULT_WAKES_DAYS = 7
WAKES_LIMIT = 1000
POWER_BUCKET_S = 300  # the timeline's power: 5-minute averages of the `nas` plug's samples
PRIVATE_CAUSE_FIELDS = ("detail", "user", "client", "address", "path")


def _time(raw: str, zone, name: str) -> float:
    """A `from`/`to` query parameter: Unix seconds, a date or a date-time (400 when none)."""
    from balupi.energy.tariffs import parse_time

    try:
        return parse_time(raw, zone, name)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def for_viewer(wake: dict, is_admin: bool) -> dict:
    """Admins see who and what (user, client, address, path); others see the kind of cause only."""
    if is_admin:
        return wake
    cause = dict(wake["cause"])
    for name in PRIVATE_CAUSE_FIELDS:
        cause[name] = None
    cause["summary"] = WakeCause(WakeKind(cause["kind"]), pending_changes=cause["pending_changes"]).describe()
    return {**wake, "cause": cause}


def is_admin(request: Request) -> bool:
    return request.user is not None and request.user.is_admin


def without_path(cause: str) -> str:
    """A transition's cause without the path it names ("wake: GET /bob/x.txt" -> "wake: GET (a path...)")."""
    at = cause.find(" /")
    if at < 0:
        return cause
    return cause[:at] + PATH_HIDDEN + (RETRY_SUFFIX if cause.endswith(RETRY_SUFFIX) else "")


def nas_status(request: Request) -> dict:
    ctx = request.ctx
    if ctx.nas.version is None and ctx.nas.is_awake():
        ctx.nas_client.fetch_version()  # once, and only while it is awake anyway
    status = ctx.nas.status()
    if not request.user.is_admin:  # the NAS's address and other users' file names are admin business
        status.pop("url", None)
        status["transitions"] = [{**t, "cause": without_path(t["cause"])} for t in status["transitions"]]
    return status


def nas_wol(request: Request) -> dict:
    ctx = request.ctx
    cause = WakeCause(WakeKind.MANUAL, detail="POST /api/nas/wol", user=getattr(request.user, "username", None),
                      client=request.header("User-Agent"), address=request.environ.get("REMOTE_ADDR"))
    try:
        return ctx.nas.wake(reason=cause)
    except WakeNotPossible as exc:
        raise ApiError(409, str(exc)) from None


def nas_wakes(request: Request) -> dict:
    ctx = request.ctx
    zone = ctx.energy.zone
    now = time.time()
    end = _time(request.query["to"], zone, "to") if request.query.get("to") else now + 1
    start = (_time(request.query["from"], zone, "from") if request.query.get("from")
             else end - DEFAULT_WAKES_DAYS * 86400)
    if end <= start:
        raise ApiError(400, "'to' must be after 'from'")
    admin = is_admin(request)
    wakes = [for_viewer(w, admin) for w in ctx.nas.wake_log.between(start, end, WAKES_LIMIT)]
    by_kind: dict[str, int] = {}
    for wake in wakes:
        by_kind[wake["cause"]["kind"]] = by_kind.get(wake["cause"]["kind"], 0) + 1
    by_path: dict[str, int] = {}
    if admin:
        for wake in wakes:
            if wake["cause"]["kind"] == WakeKind.REQUEST.value and wake["cause"]["path"]:
                by_path[wake["cause"]["path"]] = by_path.get(wake["cause"]["path"], 0) + 1
    return {
        "configured": ctx.nas.configured,
        "from": start,
        "to": end,
        "count": len(wakes),
        "by_kind": by_kind,
        "paths": [{"path": p, "wakes": n} for p, n in sorted(by_path.items(), key=lambda i: (-i[1], i[0]))],
        "wakes": wakes,
    }


def nas_timeline(request: Request) -> dict:
    ctx = request.ctx
    zone = ctx.energy.zone
    raw = request.query.get("day")
    try:
        day = date.fromisoformat(raw) if raw else datetime.now(zone).date()
    except ValueError:
        raise ApiError(400, f"query parameter 'day' must be a date (YYYY-MM-DD), got {raw!r}") from None
    start = datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).timestamp()
    now = time.time()
    intervals = _intervals(ctx.db, start, min(end, now))
    admin = is_admin(request)
    if not admin:  # a wake's transition names who and what: admins only, as in /nas/wakes
        for interval in intervals:
            if (interval["cause"] or "").startswith("wake:"):
                interval["cause"] = "wake"
    plug = next((p for p in ctx.energy.plugs() if p.role.value == "nas"), None)
    power = _power(ctx.db, plug.id, start, min(end, now)) if plug is not None else []
    return {
        "configured": ctx.nas.configured,
        "day": day.isoformat(),
        "timezone": str(zone),
        "from": start,
        "to": end,
        "intervals": intervals,
        "wakes": [for_viewer(w, admin) for w in ctx.nas.wake_log.between(start, end, WAKES_LIMIT)],
        "power_plug_id": plug.id if plug is not None else None,
        "power_bucket_s": POWER_BUCKET_S,
        "power": power,
    }


def _intervals(db, start: float, end: float) -> list[dict]:
    """The NAS's states over [start, end) from its recorded transitions, as back-to-back intervals."""
    if end <= start:
        return []
    before, rows = transitions_between(db, start, end)
    out: list[dict] = []
    state, cause, since = (before[0], before[1], start) if before else (None, None, start)
    for at, to_state, why in rows:
        if state is not None and at > since:
            out.append({"start": since, "end": at, "state": state, "cause": cause})
        state, cause, since = to_state, why, at
    if state is not None and end > since:
        out.append({"start": since, "end": end, "state": state, "cause": cause, "ongoing": True})
    return out


def _power(db, plug_id: int, start: float, end: float) -> list[dict]:
    rows = power_buckets(db, plug_id, start, end, POWER_BUCKET_S)
    return [{"at": float(r[0]), "avg_power_w": round(r[1], 2), "max_power_w": round(r[2], 2)} for r in rows]


ROUTES = (
    Route("GET", "/nas/status", nas_status),
    Route("POST", "/nas/wol", nas_wol, admin_only=True),
    Route("GET", "/nas/wakes", nas_wakes),
    Route("GET", "/nas/timeline", nas_timeline),
)
