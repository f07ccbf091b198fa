"""/api/energy/...: current power, history, costs, summary, savings, prices and CSV export.

    GET  /api/energy/current        devices: [{device_id, device_name, power_w, voltage_v, current_a, is_online, timestamp}], total_power_w
    GET  /api/energy/history        ?device_id&period=day|week|month|year&resolution=raw|hour|day|month[&from&to]
    GET  /api/energy/costs          ?period&device_id: energy and its cost, standing charges, per bucket and device
    GET  /api/energy/summary        now, today, this month, the price in force, nas_state
    GET  /api/energy/savings        ?period: what sleeping saved against an always-on NAS, net of the Pi, per day and month
    GET  /api/energy/prices         the tariffs;  POST (admin): store a new tariff version, reprice what it covers
    GET  /api/energy/export.csv     ?from&to&resolution[&device_id]

Times in answers are ISO 8601 in the energy time zone; energy in Wh, money in cents of `currency`.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import TYPE_CHECKING, Iterator

from balupi.api import ApiError, Request, Response, Route
from balupi.energy.model import (
    ConfirmationRequired,
    PlugConflict,
    PlugNotFound,
    PlugRole,
    PlugUnavailable,
)
from balupi.energy.queries import (
    DEFAULT_RESOLUTION,
    Period,
    Resolution,
    Window,
    energy_by_plug,
    export_csv,
    gaps_in,
    idle_power_w,
    open_gap_count,
    period_window,
    raw_points,
    rollup_points,
    savings_by_day,
    standing_charges,
    sum_savings,
)
from balupi.energy.tariffs import parse_time

if TYPE_CHECKING:
    from balupi.api.context import ApiContext
    from balupi.energy.service import EnergyService

COST_RESOLUTION = {Period.DAY: Resolution.HOUR, Period.WEEK: Resolution.DAY, Period.MONTH: Resolution.DAY,
                   Period.YEAR: Resolution.MONTH}


def energy_service(ctx: "ApiContext") -> "EnergyService":
    if not ctx.settings.energy_enabled:
        raise ApiError(503, "energy monitoring is disabled (BALUPI_ENERGY_ENABLED=false)")
    return ctx.energy


@contextlib.contextmanager
def plug_errors() -> Iterator[None]:
    """Map the energy monitor's errors to HTTP answers."""
    try:
        yield
    except PlugNotFound as exc:
        raise ApiError(404, str(exc)) from None
    except (PlugConflict, ConfirmationRequired) as exc:
        raise ApiError(409, str(exc)) from None
    except PlugUnavailable as exc:
        raise ApiError(502, str(exc), error_kind=exc.kind.value) from None
    except TimeoutError as exc:
        raise ApiError(504, f"the plug did not answer in time: {exc}", error_kind="timeout") from None
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None


def _enum(cls, raw: str | None, name: str, default=None):
    if raw is None or raw == "":
        return default
    try:
        return cls(raw)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise ApiError(400, f"query parameter {name!r} must be one of {allowed}, got {raw!r}") from None


def _plug_id(request: Request, svc: "EnergyService") -> int | None:
    plug_id = request.query_int("device_id")
    if plug_id is not None:
        with plug_errors():
            svc.plug(plug_id)
    return plug_id


def _window(request: Request, svc: "EnergyService", period: Period) -> Window:
    now = svc.clock()
    window = period_window(period, now, svc.zone)
    start, end = window.start_s, window.end_s
    try:
        if request.query.get("from"):
            start = parse_time(request.query["from"], svc.zone, "from")
        if request.query.get("to"):
            end = parse_time(request.query["to"], svc.zone, "to")
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if end <= start:
        raise ApiError(400, "'to' must be after 'from'")
    return Window(start, end, svc.zone)


def _iso(svc: "EnergyService", t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, svc.zone).isoformat()


def current(request: Request) -> dict:
    svc = energy_service(request.ctx)
    devices = []
    total = 0.0
    for plug in svc.plugs():
        r = plug.last
        online = svc.is_online(plug)
        if online and r is not None:
            total += r.power_w
        devices.append({
            "device_id": plug.id,
            "device_name": plug.name,
            "role": plug.role.value,
            "power_w": r.power_w if r else None,
            "voltage_v": r.voltage_v if r else None,
            "current_a": r.current_a if r else None,
            "is_on": r.is_on if r else None,
            "is_online": online,
            "timestamp": _iso(svc, r.at if r else None),
            "error_kind": plug.health.error_kind.value if plug.health.error_kind else None,
        })
    return {"devices": devices, "total_power_w": round(total, 3), "timestamp": _iso(svc, svc.clock())}


def history(request: Request) -> dict:
    svc = energy_service(request.ctx)
    period = _enum(Period, request.query.get("period"), "period", Period.DAY)
    resolution = _enum(Resolution, request.query.get("resolution"), "resolution", DEFAULT_RESOLUTION[period])
    plug_id = _plug_id(request, svc)
    window = _window(request, svc, period)
    if resolution is Resolution.RAW:
        if plug_id is None:
            raise ApiError(400, "resolution=raw needs a device_id (raw samples of different plugs do not add up)")
        points = raw_points(svc.db, plug_id, window)
    else:
        points = rollup_points(svc.db, plug_id, window, resolution)
    energy = sum(p.get("energy_wh") or 0 for p in points)
    cost = sum(p.get("cost_cents") or 0 for p in points)
    return {
        "device_id": plug_id,
        "period": period.value,
        "resolution": resolution.value,
        "from": _iso(svc, window.start_s),
        "to": _iso(svc, window.end_s),
        "timezone": svc.zone.key,
        "currency": svc.book.currency,
        "points": points,
        "total_energy_wh": round(energy, 3),
        "total_cost_cents": round(cost, 3),
        "gaps": gaps_in(svc.db, plug_id, window),
    }


def costs(request: Request) -> dict:
    svc = energy_service(request.ctx)
    period = _enum(Period, request.query.get("period"), "period", Period.MONTH)
    plug_id = _plug_id(request, svc)
    window = _window(request, svc, period)
    resolution = COST_RESOLUTION[period]
    points = rollup_points(svc.db, plug_id, window, resolution)
    by_plug = energy_by_plug(svc.db, window)
    names = {p.id: p.name for p in svc.plugs()}
    devices = [
        {"device_id": pid, "device_name": names.get(pid, ""), "energy_kwh": round(e / 1000, 4), "cost_cents": round(c, 3)}
        for pid, (e, c) in sorted(by_plug.items())
        if plug_id is None or pid == plug_id
    ]
    energy = sum(d["energy_kwh"] for d in devices)
    energy_cost = sum(d["cost_cents"] for d in devices)
    standing = standing_charges(svc.book, window) if plug_id is None else 0.0
    return {
        "period": period.value,
        "from": _iso(svc, window.start_s),
        "to": _iso(svc, window.end_s),
        "currency": svc.book.currency,
        "resolution": resolution.value,
        "energy_kwh": round(energy, 4),
        "energy_cost_cents": round(energy_cost, 3),
        "standing_charge_cents": round(standing, 3),
        "total_cost_cents": round(energy_cost + standing, 3),
        "price_now": svc.book.current(svc.clock()),
        "devices": devices,
        "points": [{k: p[k] for k in ("timestamp", "energy_wh", "cost_cents", "coverage")} for p in points],
    }


def summary(request: Request) -> dict:
    svc = energy_service(request.ctx)
    now = svc.clock()
    local = datetime.fromtimestamp(now, svc.zone)
    today = Window(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp(), now + 1, svc.zone)
    month = Window(local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp(), now + 1, svc.zone)
    plugs = svc.plugs()
    online = [p for p in plugs if svc.is_online(p)]

    def totals(window: Window) -> dict:
        by_plug = energy_by_plug(svc.db, window)
        return {"energy_wh": round(sum(e for e, _ in by_plug.values()), 3),
                "cost_cents": round(sum(c for _, c in by_plug.values()), 3)}

    tracker = svc.recorder.nas_tracker
    nas_plug = next((p for p in plugs if p.role is PlugRole.NAS), None)
    nas_state = None
    if nas_plug is not None:
        nas_state = {
            "device_id": nas_plug.id,
            "state": tracker.state.value if tracker and tracker.state else None,
            "since": _iso(svc, tracker.since if tracker else None),
            "power_w": nas_plug.last.power_w if nas_plug.last and svc.is_online(nas_plug) else None,
            "is_online": svc.is_online(nas_plug),
        }
    open_gaps = open_gap_count(svc.db)
    return {
        "devices": len(plugs),
        "devices_online": len(online),
        "total_power_w": round(sum(p.last.power_w for p in online if p.last), 3),
        "today": totals(today),
        "month": totals(month),
        "currency": svc.book.currency,
        "price_now": svc.book.current(now),
        "nas_state": nas_state,
        "open_gaps": open_gaps,
        "timestamp": _iso(svc, now),
    }


def savings(request: Request) -> dict:
    svc = energy_service(request.ctx)
    period = _enum(Period, request.query.get("period"), "period", Period.MONTH)
    window = _window(request, svc, period)
    plugs = svc.plugs()
    nas = next((p for p in plugs if p.role is PlugRole.NAS), None)
    pi = next((p for p in plugs if p.role is PlugRole.PI), None)
    base = {"period": period.value, "from": _iso(svc, window.start_s), "to": _iso(svc, window.end_s),
            "currency": svc.book.currency}
    if nas is None:
        return {**base, "available": False, "detail": "no plug has the role 'nas'"}
    idle_w = idle_power_w(svc.db, nas.id, svc.clock())
    if idle_w is None:
        return {**base, "available": False,
                "detail": "the NAS's idle power is not measured yet (it needs at least 10 minutes in 'idle')"}
    days = savings_by_day(svc.db, window, nas.id, idle_w, pi.id if pi else None, svc.settings.energy_pi_power_w)
    total = sum_savings(days, 0)
    return {
        **base,
        "available": True,
        "idle_power_w": round(idle_w, 2),
        "pi": {"source": "plug", "device_id": pi.id} if pi else
              {"source": "setting", "power_w": svc.settings.energy_pi_power_w},
        "days": days,
        "months": sum_savings(days, 7),
        "total": total[0] if total else None,
    }


def prices(request: Request) -> dict:
    svc = energy_service(request.ctx)
    return {
        "currency": svc.book.currency,
        "default_price_cents_per_kwh": svc.settings.energy_default_price_cents,
        "current": svc.book.current(svc.clock()),
        "tariffs": [t.as_dict(svc.zone) for t in sorted(svc.book.tariffs, key=lambda t: t.id or 0)],
    }


def add_price(request: Request) -> tuple[int, dict]:
    svc = energy_service(request.ctx)
    with plug_errors():
        tariff, repriced = svc.add_tariff(request.json_object())
    return 201, {"tariff": tariff.as_dict(svc.zone), "repriced_hours": repriced}


def export(request: Request) -> Response:
    svc = energy_service(request.ctx)
    resolution = _enum(Resolution, request.query.get("resolution"), "resolution", Resolution.HOUR)
    plug_id = _plug_id(request, svc)
    window = _window(request, svc, Period.WEEK)
    names = {p.id: p.name for p in svc.plugs()}
    body = export_csv(svc.db, window, resolution, plug_id, names).encode()
    filename = f"balupi-energy-{window.first_day}-{resolution.value}.csv"
    return Response(body, 200, "text/csv; charset=utf-8", {"Content-Disposition": f'attachment; filename="{filename}"'})


ROUTES = (
    Route("GET", "/energy/current", current),
    Route("GET", "/energy/history", history),
    Route("GET", "/energy/costs", costs),
    Route("GET", "/energy/summary", summary),
    Route("GET", "/energy/savings", savings),
    Route("GET", "/energy/prices", prices),
    Route("POST", "/energy/prices", add_price, admin_only=True),
    Route("GET", "/energy/export.csv", export),
)
