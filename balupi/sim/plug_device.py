"""The simulated plug's SMART requests: what a Tapo P110/P115 answers to each JSON method.

A request is ``{"method": "get_device_info", "params": {...}}``, answered by ``{"error_code": 0,
"result": {...}}``; several calls can be batched as ``multipleRequest``. Unknown methods get
-1002, bad parameters -1008. The answers read and change the plug only through its public
interface (`balupi.sim.plug.SimulatedPlug`).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from datetime import datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from balupi.sim.plug_meter import EnergyInterval

if TYPE_CHECKING:
    from balupi.sim.plug import SimulatedPlug

__all__ = ["DeviceRequests", "SmartCallError", "SmartError", "MAX_POWER_W", "FIRMWARE_VERSION"]

_LOGGER = logging.getLogger("balupi.sim.plug")

#: Maximum relay load of a P110 (16 A at 230 V), reported by ``get_max_power``.
MAX_POWER_W = 3680
FIRMWARE_VERSION = "1.3.1 Build 240621 Rel.162048"

_COMPONENTS = [
    ("device", 2), ("firmware", 2), ("quick_setup", 3), ("inherit", 1), ("time", 1),
    ("wireless", 1), ("schedule", 2), ("countdown", 2), ("antitheft", 1), ("account", 1),
    ("synchronize", 1), ("sunrise_sunset", 1), ("led", 1), ("cloud_connect", 1),
    ("iot_cloud", 1), ("device_local_time", 1), ("default_states", 1), ("auto_off", 2),
    ("localSmart", 1), ("energy_monitoring", 2), ("power_protection", 1),
    ("current_protection", 1),
]  # fmt: skip


class SmartError(IntEnum):
    """Error codes the simulated plug answers with (same numbers as the firmware)."""

    SUCCESS = 0
    UNKNOWN_METHOD = -1002
    JSON_DECODE_FAIL = -1003
    PARAMS = -1008


class SmartCallError(Exception):
    def __init__(self, code: SmartError) -> None:
        super().__init__(code.name)
        self.code = code


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class DeviceRequests:
    """Answers SMART requests for one plug (called on the HTTP worker threads)."""

    def __init__(self, plug: SimulatedPlug) -> None:
        self.plug = plug

    def answer_json(self, request: bytes) -> bytes:
        """One decrypted request in, its JSON answer out (a malformed request gets -1003)."""
        try:
            response = self.dispatch(json.loads(request))
        except (ValueError, TypeError, AttributeError, KeyError):
            response = {"error_code": int(SmartError.JSON_DECODE_FAIL)}
        return json.dumps(response, separators=(",", ":")).encode()

    def dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        method = request["method"]
        params = request.get("params")
        if method == "multipleRequest":
            responses = []
            for sub in params["requests"]:
                sub_method = sub["method"]
                entry: dict[str, Any] = {"method": sub_method}
                try:
                    result = self.call(sub_method, sub.get("params"))
                except SmartCallError as err:
                    entry["error_code"] = int(err.code)
                else:
                    entry["error_code"] = 0
                    if result is not None:
                        entry["result"] = result
                responses.append(entry)
            return {"error_code": 0, "result": {"responses": responses}}
        try:
            result = self.call(method, params)
        except SmartCallError as err:
            return {"error_code": int(err.code)}
        return {"error_code": 0} if result is None else {"error_code": 0, "result": result}

    def call(self, method: str, params: Any) -> dict[str, Any] | None:
        plug = self.plug
        with plug.lock:
            plug.calls[method] += 1
            handler = self._METHODS.get(method)
            if handler is None:
                _LOGGER.debug("simulated plug: unknown method %s", method)
                raise SmartCallError(SmartError.UNKNOWN_METHOD)
            plug.tick()
            return handler(self, params if isinstance(params, dict) else {})

    # ---------------------------------------------------------------- helpers

    def _local_now(self) -> datetime:
        return self.plug.meter.local(self.plug.device_time_s())

    def _time_diff_min(self) -> int:
        # Tapo firmware reports the zone's standard offset, DST comes from the region.
        january = datetime(2021, 1, 1, tzinfo=self.plug.tz)
        return int(january.utcoffset().total_seconds() // 60)  # type: ignore[union-attr]

    # ---------------------------------------------------------------- the methods

    def _component_nego(self, _params: dict) -> dict:
        return {"component_list": [{"id": cid, "ver_code": ver} for cid, ver in _COMPONENTS]}

    def _get_device_info(self, _params: dict) -> dict:
        plug = self.plug
        return {
            "device_id": plug.device_id,
            "fw_ver": FIRMWARE_VERSION,
            "hw_ver": "1.0",
            "type": "SMART.TAPOPLUG",
            "model": plug.model.value,
            "mac": plug.mac,
            "hw_id": plug.hw_id,
            "fw_id": plug.fw_id,
            "oem_id": plug.oem_id,
            "ip": plug.host,
            "time_diff": self._time_diff_min(),
            "ssid": _b64("BaluNet"),
            "rssi": -48,
            "signal_level": 3,
            "auto_off_status": "off",
            "auto_off_remain_time": 0,
            "latitude": 0,
            "longitude": 0,
            "lang": "en_US",
            "avatar": "plug",
            "region": plug.timezone_name,
            "specs": "",
            "nickname": _b64(plug.nickname),
            "has_set_location_info": False,
            "device_on": plug.is_on,
            "on_time": plug.on_time_s(),
            "default_states": {"type": "last_states", "state": {}},
            "overheat_status": "normal",
            "power_protection_status": "normal",
            "overcurrent_status": "normal",
            "charging_status": "normal",
        }

    def _set_device_info(self, params: dict) -> None:
        if "device_on" in params:
            if not isinstance(params["device_on"], bool):
                raise SmartCallError(SmartError.PARAMS)
            self.plug.set_on(params["device_on"])
        if "nickname" in params:
            try:
                self.plug.nickname = base64.b64decode(params["nickname"]).decode()
            except (ValueError, TypeError) as err:
                raise SmartCallError(SmartError.PARAMS) from err
        return None

    def _get_device_time(self, _params: dict) -> dict:
        return {
            "time_diff": self._time_diff_min(),
            "timestamp": int(self.plug.device_time_s()),
            "region": self.plug.timezone_name,
        }

    def _set_device_time(self, params: dict) -> None:
        try:
            timestamp_s = float(params["timestamp"])
        except (KeyError, TypeError, ValueError) as err:
            raise SmartCallError(SmartError.PARAMS) from err
        self.plug.set_device_time(timestamp_s)
        return None

    def _get_device_usage(self, _params: dict) -> dict:
        today = self._local_now().date()
        meter = self.plug.meter
        energy = {n: meter.day_sums(today, d) for n, d in (("today", 1), ("past7", 7), ("past30", 30))}
        return {
            "time_usage": {name: minutes for name, (_wh, minutes) in energy.items()},
            "power_usage": {name: wh for name, (wh, _min) in energy.items()},
            "saved_power": {name: 0 for name in energy},
        }

    def _get_energy_usage(self, _params: dict) -> dict:
        local = self._local_now()
        month = (local.year, local.month)
        meter = self.plug.meter
        return {
            "today_runtime": int(meter.daily_on_s.get(local.date(), 0.0) // 60),
            "month_runtime": int(meter.monthly_on_s.get(month, 0.0) // 60),
            "today_energy": meter.daily_wh.get(local.date(), 0),
            "month_energy": meter.monthly_wh.get(month, 0),
            "local_time": local.strftime("%Y-%m-%d %H:%M:%S"),
            "electricity_charge": [0, 0, 0],
            "current_power": round(self.plug.power_w * 1000),
        }

    def _get_current_power(self, _params: dict) -> dict:
        return {"current_power": round(self.plug.power_w)}

    def _get_emeter_data(self, _params: dict) -> dict:
        power_w = self.plug.power_w
        return {
            "current_ma": round(power_w / self.plug.voltage_v * 1000),
            "voltage_mv": round(self.plug.voltage_v * 1000),
            "power_mw": round(power_w * 1000),
            "energy_wh": self.plug.meter.total_wh,
        }

    def _get_emeter_vgain_igain(self, _params: dict) -> dict:
        return {"vgain": 118934, "igain": 11594}

    def energy_data(self, params: dict) -> dict:
        """``get_energy_data`` (also called directly by the plug's test surface, uncounted)."""
        try:
            start_s = int(params["start_timestamp"])
            end_s = int(params["end_timestamp"])
            interval = EnergyInterval(int(params["interval"]))
            data = self.plug.meter.energy_data(start_s, end_s, interval)
        except (KeyError, TypeError, ValueError) as err:
            raise SmartCallError(SmartError.PARAMS) from err
        return {
            "local_time": self._local_now().strftime("%Y-%m-%d %H:%M:%S"),
            "data": data,
            "start_timestamp": start_s,
            "end_timestamp": end_s,
            "interval": int(interval),
        }

    def _get_connect_cloud_state(self, _params: dict) -> dict:
        return {"status": 0}

    def _get_auto_update_info(self, _params: dict) -> dict:
        return {"enable": False, "random_range": 120, "time": 180}

    def _get_latest_fw(self, _params: dict) -> dict:
        return {
            "type": 0,
            "need_to_upgrade": False,
            "fw_ver": FIRMWARE_VERSION,
            "fw_size": 0,
            "release_date": "",
            "release_note": "",
            "hw_id": "",
            "oem_id": "",
        }

    def _get_led_info(self, _params: dict) -> dict:
        return {
            "led_rule": "always",
            "led_status": True,
            "night_mode": {
                "night_mode_type": "sunrise_sunset",
                "start_time": 1140,
                "end_time": 420,
                "sunrise_offset": 0,
                "sunset_offset": 0,
            },
        }

    def _get_auto_off_config(self, _params: dict) -> dict:
        return {"enable": False, "delay_min": 120}

    def _get_protection_power(self, _params: dict) -> dict:
        return {"enabled": False, "protection_power": 0}

    def _get_max_power(self, _params: dict) -> dict:
        return {"max_power": MAX_POWER_W}

    def _accept(self, _params: dict) -> None:
        return None

    _METHODS: dict[str, Callable[[DeviceRequests, dict], dict | None]] = {
        "component_nego": _component_nego,
        "get_device_info": _get_device_info,
        "set_device_info": _set_device_info,
        "get_device_time": _get_device_time,
        "set_device_time": _set_device_time,
        "get_device_usage": _get_device_usage,
        "get_energy_usage": _get_energy_usage,
        "get_current_power": _get_current_power,
        "get_emeter_data": _get_emeter_data,
        "get_emeter_vgain_igain": _get_emeter_vgain_igain,
        "get_energy_data": energy_data,
        "get_connect_cloud_state": _get_connect_cloud_state,
        "get_auto_update_info": _get_auto_update_info,
        "get_latest_fw": _get_latest_fw,
        "get_led_info": _get_led_info,
        "get_auto_off_config": _get_auto_off_config,
        "get_protection_power": _get_protection_power,
        "get_max_power": _get_max_power,
        "set_led_info": _accept,
        "set_auto_off_config": _accept,
        "set_protection_power": _accept,
    }
