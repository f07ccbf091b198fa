"""/api/tapo/devices...: the plugs, their poll health, and switching them.

    GET    /api/tapo/devices               every plug with its health (last success, error kind, latency)
    POST   /api/tapo/devices               (admin) add by address: {"host": ..., "port": optional, "name": ..., "role": ...}
    POST   /api/tapo/devices/discover      (admin) plugs answering a discovery probe (not added)
    PUT    /api/tapo/devices/{id}          (admin) {"name", "role", "host", "port"}: any of them
    DELETE /api/tapo/devices/{id}          (admin) forget the plug and what was recorded about it
    POST   /api/tapo/devices/{id}/toggle   (admin) {"on": optional bool, "confirm_nas_off": bool}

Credentials come from BALUPI_TAPO_USERNAME / BALUPI_TAPO_PASSWORD, never from a request. Switching
off the `nas` plug cuts the NAS's power, so it needs "confirm_nas_off": true.
"""

from __future__ import annotations

from typing import Any

from balupi.api import ApiError, Request, Route
from balupi.api.energy import energy_service, plug_errors
from balupi.energy.model import PlugRole

_UNSET: Any = False  # "port" not given (None means: no port override)


def _role(raw: Any, default: PlugRole | None) -> PlugRole | None:
    if raw is None:
        return default
    try:
        return PlugRole(raw)
    except ValueError:
        allowed = ", ".join(r.value for r in PlugRole)
        raise ApiError(422, f"role: must be one of {allowed}, got {raw!r}") from None


def _port(body: dict) -> int | None:
    port = body.get("port")
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ApiError(422, f"port: expected a port number from 1 to 65535, got {port!r}")
    return port


def _text(body: dict, key: str, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ApiError(422, f"{key}: expected a non-empty string")
    return value.strip()


def _device(svc, plug) -> dict:
    return plug.as_dict(svc.is_online(plug))


def _id(request: Request) -> int:
    try:
        return int(request.params["id"])
    except ValueError:
        raise ApiError(404, f"no plug with id {request.params['id']!r}") from None


def list_devices(request: Request) -> dict:
    svc = energy_service(request.ctx)
    return {"devices": [_device(svc, p) for p in svc.plugs()], "sample_interval_s": svc.interval_s}


def add_device(request: Request) -> tuple[int, dict]:
    svc = energy_service(request.ctx)
    body = request.json_object()
    host = _text(body, "host", required=True)
    assert host is not None
    with plug_errors():
        plug = svc.add_plug(host, _port(body), _text(body, "name"), _role(body.get("role"), PlugRole.GENERIC))
    return 201, _device(svc, plug)


def discover(request: Request) -> dict:
    svc = energy_service(request.ctx)
    with plug_errors():
        return {"devices": svc.discover(), "target": svc.settings.tapo_discovery_target}


def get_device(request: Request) -> dict:
    svc = energy_service(request.ctx)
    with plug_errors():
        return _device(svc, svc.plug(_id(request)))


def update_device(request: Request) -> dict:
    svc = energy_service(request.ctx)
    body = request.json_object()
    port = _port(body) if "port" in body else _UNSET
    with plug_errors():
        plug = svc.update_plug(_id(request), name=_text(body, "name"), role=_role(body.get("role"), None),
                               host=_text(body, "host"), port=port)
    return _device(svc, plug)


def delete_device(request: Request) -> dict:
    svc = energy_service(request.ctx)
    plug_id = _id(request)
    with plug_errors():
        svc.remove_plug(plug_id)
    return {"deleted": True, "id": plug_id}


def toggle(request: Request) -> dict:
    svc = energy_service(request.ctx)
    body = request.json_object()
    on = body.get("on")
    if on is not None and not isinstance(on, bool):
        raise ApiError(422, "on: expected true, false or nothing (toggle)")
    confirm = body.get("confirm_nas_off", False) is True
    with plug_errors():
        is_on = svc.set_on(_id(request), on, confirm)
    return {"id": _id(request), "is_on": is_on}


ROUTES = (
    Route("GET", "/tapo/devices", list_devices),
    Route("POST", "/tapo/devices", add_device, admin_only=True),
    Route("POST", "/tapo/devices/discover", discover, admin_only=True),
    Route("GET", "/tapo/devices/{id}", get_device),
    Route("PUT", "/tapo/devices/{id}", update_device, admin_only=True),
    Route("DELETE", "/tapo/devices/{id}", delete_device, admin_only=True),
    Route("POST", "/tapo/devices/{id}/toggle", toggle, admin_only=True),
)
