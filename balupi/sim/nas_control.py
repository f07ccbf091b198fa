"""The control port of the simulated NAS: JSON endpoints to drive a sim from another process.

Always on (it is the simulator's own port, not the NAS's), 127.0.0.1 only, no auth. Endpoints:

    GET  /state            power state, ports, MAC, boot/wake counts, delays
    GET  /counters         recorded requests and magic packets (+ counts)
    POST /reset-counters   forget recorded requests, packets, boots, wakes
    POST /suspend          {"mode": "suspend" | "soft" | "off"}  (default: the sim's sleep mode)
    POST /wake             boot/wake at once, without a magic packet or boot delay
    GET  /faults           current fault switches
    POST /faults           partial update, see `Faults.update` ({"clear": true} resets first)
    DELETE /faults         all faults off
    POST /config           {"boot_delay_s", "spinup_delay_s", "idle_suspend_s", "sleep_mode"}
    POST /wait             {"state": "awake", "timeout_s": 5} -> {"ok": bool, "state": ...}
    POST /shutdown         ask the process (``python -m balupi.sim.nas``) to exit
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from balupi.sim.nas_http import json_response, parse_json_or_form, wsgi_path
from balupi.sim.nas_state import PowerState, SleepMode

if TYPE_CHECKING:
    from balupi.sim.nas import SimNas


class ControlApp:
    """WSGI app of the control port."""

    def __init__(self, sim: "SimNas"):
        self.sim = sim

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"].upper()
        path = wsgi_path(environ).rstrip("/") or "/"
        routes = {
            ("GET", "/state"): self._state,
            ("GET", "/counters"): self._counters,
            ("POST", "/reset-counters"): self._reset_counters,
            ("POST", "/suspend"): self._suspend,
            ("POST", "/wake"): self._wake,
            ("GET", "/faults"): self._get_faults,
            ("POST", "/faults"): self._set_faults,
            ("DELETE", "/faults"): self._clear_faults,
            ("POST", "/config"): self._config,
            ("POST", "/wait"): self._wait,
            ("POST", "/shutdown"): self._shutdown,
        }
        handler = routes.get((method, path))
        if handler is None:
            status = 405 if any(p == path for (_m, p) in routes) else 404
            return json_response(start_response, status, {"detail": "no such endpoint"})
        try:
            data = parse_json_or_form(environ) if method == "POST" else {}
            return json_response(start_response, 200, handler(data))
        except (ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
            return json_response(start_response, 400, {"detail": f"{type(exc).__name__}: {exc}"})

    def _state(self, data):
        return self.sim.status_dict()

    def _counters(self, data):
        return self.sim.counters_dict()

    def _reset_counters(self, data):
        self.sim.reset_counters()
        return self.sim.counters_dict()

    def _suspend(self, data):
        mode = data.get("mode")
        if mode == "off":
            self.sim.power_off()
        else:
            self.sim.suspend(SleepMode(mode) if mode else None)
        return self.sim.status_dict()

    def _wake(self, data):
        self.sim.wake_now()
        return self.sim.status_dict()

    def _get_faults(self, data):
        return self.sim.faults.to_dict()

    def _set_faults(self, data):
        self.sim.faults.update(data)
        return self.sim.faults.to_dict()

    def _clear_faults(self, data):
        self.sim.faults.clear()
        return self.sim.faults.to_dict()

    def _config(self, data):
        self.sim.configure(**data)
        return self.sim.status_dict()

    def _wait(self, data):
        state = PowerState(data["state"])
        ok = self.sim.wait_for_state(state, float(data.get("timeout_s", 5.0)))
        return {"ok": ok, "state": self.sim.state.value}

    def _shutdown(self, data):
        self.sim.shutdown_requested.set()
        return {"status": "shutting down"}
