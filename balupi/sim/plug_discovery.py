"""The simulated plug's answer to python-kasa's UDP discovery probe.

The client sends a 16-byte binary header plus a JSON body; the plug answers with a 16-byte header
and a JSON ``result`` describing the device (model, MAC, and the "management encryption scheme":
KLAP, login version 2, HTTP port). python-kasa only accepts answers *from* port 20002 or 20004,
so the discovery port cannot be chosen freely; the HTTP port can, and is announced.
"""

from __future__ import annotations

import binascii
import json
import logging
import secrets
import socket
import struct
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from balupi.sim.plug import SimulatedPlug

__all__ = ["DISCOVERY_PORTS", "DiscoveryResponder"]

_LOGGER = logging.getLogger("balupi.sim.plug")

#: UDP ports python-kasa sends its KLAP/AES discovery probe to (it accepts answers only
#: from these source ports).
DISCOVERY_PORTS = (20002, 20004)


class DiscoveryResponder:
    """Answers discovery probes on one UDP port of 127.0.0.1 on a thread of its own."""

    def __init__(self, plug: SimulatedPlug, port: int) -> None:
        self.plug = plug
        self.port = port
        self._stopping = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.bind((plug.host, port))
        except OSError:
            self._sock.close()
            raise
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, name="sim-plug-disco", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        self._sock.close()
        self._thread.join(timeout=5)

    def result(self) -> dict[str, Any]:
        """The JSON ``result`` the plug answers a discovery probe with."""
        plug = self.plug
        return {
            "device_id": plug.device_id,
            "owner": plug.oem_id,
            "device_type": "SMART.TAPOPLUG",
            "device_model": f"{plug.model.value}(EU)",
            "ip": plug.host,
            "mac": plug.mac,
            "is_support_iot_cloud": True,
            "obd_src": "tplink",
            "factory_default": False,
            "mgt_encrypt_schm": {
                "is_support_https": False,
                "encrypt_type": "KLAP",
                "http_port": plug.port,
                "lv": 2,
            },
        }

    def answer(self) -> bytes:
        payload = json.dumps({"error_code": 0, "result": self.result()}).encode()
        # version 2, type 0, op 1, size, flags 17, pad, serial, crc placeholder
        header = struct.pack(">BBHHBBII", 2, 0, 1, len(payload), 17, 0, secrets.randbits(32), 0x5A6B7C8D)
        datagram = bytearray(header + payload)
        datagram[12:16] = binascii.crc32(datagram).to_bytes(4, "big")
        return bytes(datagram)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                data, addr = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 16 or data[0] != 2 or self.plug.down:
                continue
            self.plug.count_call("discovery")
            try:
                self._sock.sendto(self.answer(), addr)
            except OSError:
                _LOGGER.debug("simulated plug: could not answer discovery from %s", addr)
