"""A simulated TP-Link Tapo P110/P115 smart plug that speaks KLAP v2 over real HTTP.

The simulator is a real HTTP server on 127.0.0.1 that the *real* python-kasa client
(0.12.0) can talk to, plus an energy meter whose power draw is scripted by tests.

How the wire protocol works (as implemented here)
-------------------------------------------------

A Tapo plug on newer firmware accepts plain HTTP POSTs on three paths below ``/app``.
Everything is keyed on an *auth hash* derived from the cloud account the plug was
set up with; for "login version 2" it is ``sha256(sha1(username) + sha1(password))``
(32 bytes).  The password itself never travels.

1. ``POST /app/handshake1``: the body is a random 16-byte *client seed*.  The plug
   answers ``200`` with 48 bytes: its own random 16-byte *server seed*, followed by
   ``sha256(client_seed + server_seed + auth_hash)``.  That second part proves to the
   client that the plug knows the same account; the client compares it with its own
   computation and gives up with an authentication error when it does not match
   (there is no "wrong password" status code: the plug always says 200 here).  The
   plug also sets a session cookie ``TP_SESSIONID`` and a ``TIMEOUT`` cookie (the
   session lifetime in seconds), both in a single ``Set-Cookie`` header.
2. ``POST /app/handshake2`` with the session cookie: the body is
   ``sha256(server_seed + client_seed + auth_hash)``, proving to the plug that the
   client knows the account too.  ``200`` and an empty body when it matches.
3. ``POST /app/request?seq=N`` with the session cookie: the body is a 32-byte
   signature followed by an AES-128-CBC ciphertext of a JSON request.  Both sides
   derive the key material from ``client_seed + server_seed + auth_hash``: the AES key
   is the first 16 bytes of ``sha256("lsk" + material)``, the IV is the first 12
   bytes of ``sha256("iv" + material)`` followed by the 4-byte big-endian signed
   sequence number ``N`` (the client starts from the last 4 bytes of that same hash
   and increments for every request), and the signature is
   ``sha256(sha256("ldk" + material)[:28] + N + ciphertext)``.  The answer is
   encrypted the same way with the same ``N``.  An unknown or expired session gets
   ``403``, which makes python-kasa redo the handshake.

The JSON inside is the "SMART" protocol: ``{"method": "get_device_info", "params":
{...}, ...}`` answered by ``{"error_code": 0, "result": {...}}``.  Several calls can
be batched as ``{"method": "multipleRequest", "params": {"requests": [...]}}``,
answered by ``{"error_code": 0, "result": {"responses": [{"method": ..,
"error_code": .., "result": ..}, ...]}}``.  Unknown methods get error -1002, bad
parameters -1008.

Discovery (optional) is a UDP exchange on the fixed port 20002 (python-kasa also
probes 20004): the client sends a 16-byte binary header plus a JSON body with an RSA
key; the plug answers with a 16-byte header and a JSON ``result`` describing the
device type, model, MAC and the "management encryption scheme" (KLAP, login version
2, HTTP port).  python-kasa only accepts such answers when they come *from* port
20002 or 20004, so the discovery port cannot be chosen freely; the HTTP port can,
and is announced in ``mgt_encrypt_schm.http_port``.

The energy meter
----------------

Power follows a *profile*: a constant in watts, or a callable ``f(now_s) -> watts``
(``now_s`` is the simulator's clock in epoch seconds).  Power is 0 W while the relay
is off.  Energy is integrated lazily (on every request, on :meth:`SimulatedPlug.tick`
and on every state change), in steps of at most ``sample_interval_s`` for callable
profiles, into *integer* watt-hour counters like a real meter: fractional energy is
carried until it makes a whole Wh, which is then credited to the current local hour.
Daily, monthly and lifetime counters are sums of those hourly buckets, so
``get_energy_usage``, ``get_device_usage`` and ``get_energy_data`` always agree.
Buckets are keyed on the plug's *own* local time (``timezone``), so "today" resets at
the plug's local midnight and "this month" on the 1st.  When the plug loses its clock
(:meth:`SimulatedPlug.lose_clock`) it believes it is 2000-01-01 00:00 local time and
books energy there until its clock is synced again, exactly the kind of gap a poller
has to cope with.

The network faults (``hang``, ``down``, ``refuse_password``) only affect the network
side: the meter keeps counting, as a real plug does when Wi-Fi drops.

Run ``python -m balupi.sim.plug --port 8110 --user u@example.com --password pw
--power-w 25`` for a stand-alone plug (see ``--help``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import calendar
import hashlib
import http.cookies
import http.server
import json
import logging
import secrets
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import Enum, IntEnum
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from kasa import Credentials, DeviceConfig, DeviceConnectionParameters
from kasa.deviceconfig import DeviceEncryptionType, DeviceFamily
from kasa.transports.klaptransport import KlapTransportV2

__all__ = [
    "DISCOVERY_PORTS",
    "EnergyInterval",
    "ManualClock",
    "PlugModel",
    "PowerProfile",
    "SimulatedPlug",
    "SmartError",
    "main",
]

_LOGGER = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"
#: UDP ports python-kasa sends its KLAP/AES discovery probe to (it accepts answers only
#: from these source ports).
DISCOVERY_PORTS = (20002, 20004)
#: Default TIMEOUT cookie: the session lifetime a real plug announces.
DEFAULT_SESSION_TIMEOUT_S = 86_400
#: Nominal mains voltage of the simulated grid.
DEFAULT_VOLTAGE_V = 230.0
#: ``get_energy_data`` with hourly interval accepts at most this span.
MAX_HOURLY_SPAN_S = 8 * 86_400
#: Maximum relay load of a P110 (16 A at 230 V), reported by ``get_max_power``.
MAX_POWER_W = 3680

_MJ_PER_WH = 3_600_000  # millijoules (milliwatt-seconds) per watt-hour
_Y2000 = (2000, 1, 1)

PowerProfile = float | int | Callable[[float], float]
"""Watts as a constant, or a callable taking the simulator clock (epoch s)."""


class PlugModel(str, Enum):
    """Models the simulator can pretend to be (same protocol, same answers)."""

    P110 = "P110"
    P115 = "P115"


class EnergyInterval(IntEnum):
    """``interval`` values ``get_energy_data`` accepts, in minutes."""

    HOURLY = 60
    DAILY = 1440
    MONTHLY = 43200


class SmartError(IntEnum):
    """Error codes the simulated plug answers with (same numbers as the firmware)."""

    SUCCESS = 0
    UNKNOWN_METHOD = -1002
    JSON_DECODE_FAIL = -1003
    PARAMS = -1008


class _SmartCallError(Exception):
    def __init__(self, code: SmartError) -> None:
        super().__init__(code.name)
        self.code = code


# --------------------------------------------------------------------------- clock


class ManualClock:
    """A clock that only moves when told to: pass it as ``clock=`` for fast tests.

    >>> clock = ManualClock(datetime(2024, 3, 31, 23, 0, tzinfo=ZoneInfo("UTC")))
    >>> clock.advance(3600)
    """

    def __init__(self, start: float | datetime = 1_718_000_000.0) -> None:
        self._now_s = start.timestamp() if isinstance(start, datetime) else float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now_s

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds``; returns the new time (epoch s)."""
        if seconds < 0:
            raise ValueError("a ManualClock only moves forward")
        with self._lock:
            self._now_s += seconds
            return self._now_s

    def set(self, when: float | datetime) -> None:
        """Jump to an absolute time (epoch s or aware datetime), forward only."""
        target_s = when.timestamp() if isinstance(when, datetime) else float(when)
        with self._lock:
            if target_s < self._now_s:
                raise ValueError("a ManualClock only moves forward")
            self._now_s = target_s


# --------------------------------------------------------------------------- meter


@dataclass
class _Meter:
    """Integer-Wh energy counters bucketed by the plug's local hour.

    Keys are *device time* (what the plug believes), so a plug without a clock books
    into the year 2000.
    """

    tz: ZoneInfo
    hourly_wh: dict[int, int] = field(default_factory=dict)  # local hour start (epoch s)
    daily_wh: dict[date, int] = field(default_factory=dict)
    monthly_wh: dict[tuple[int, int], int] = field(default_factory=dict)
    daily_on_s: dict[date, float] = field(default_factory=dict)
    monthly_on_s: dict[tuple[int, int], float] = field(default_factory=dict)
    total_wh: int = 0
    residual_mj: int = 0

    def hour_start_s(self, device_s: float) -> int:
        local = datetime.fromtimestamp(device_s, self.tz)
        return int(local.replace(minute=0, second=0, microsecond=0).timestamp())

    def add(self, device_s: float, duration_s: float, power_w: float, relay_on: bool) -> None:
        local = datetime.fromtimestamp(device_s, self.tz)
        day = local.date()
        month = (local.year, local.month)
        if relay_on:
            self.daily_on_s[day] = self.daily_on_s.get(day, 0.0) + duration_s
            self.monthly_on_s[month] = self.monthly_on_s.get(month, 0.0) + duration_s
        self.residual_mj += round(power_w * duration_s * 1000)
        whole_wh, self.residual_mj = divmod(self.residual_mj, _MJ_PER_WH)
        if whole_wh:
            hour = self.hour_start_s(device_s)
            self.hourly_wh[hour] = self.hourly_wh.get(hour, 0) + whole_wh
            self.daily_wh[day] = self.daily_wh.get(day, 0) + whole_wh
            self.monthly_wh[month] = self.monthly_wh.get(month, 0) + whole_wh
            self.total_wh += whole_wh


# --------------------------------------------------------------------------- KLAP


class _KlapCipher:
    """Server half of a KLAP session: AES-128-CBC keyed from both seeds + auth hash."""

    def __init__(self, client_seed: bytes, server_seed: bytes, auth_hash: bytes) -> None:
        material = client_seed + server_seed + auth_hash
        self._key = hashlib.sha256(b"lsk" + material).digest()[:16]
        self._iv_prefix = hashlib.sha256(b"iv" + material).digest()[:12]
        self._sig_key = hashlib.sha256(b"ldk" + material).digest()[:28]

    def _cipher(self, seq: int) -> Cipher:
        iv = self._iv_prefix + struct.pack(">l", seq)
        return Cipher(algorithms.AES(self._key), modes.CBC(iv))

    def _signature(self, seq: int, ciphertext: bytes) -> bytes:
        return hashlib.sha256(self._sig_key + struct.pack(">l", seq) + ciphertext).digest()

    def decrypt(self, seq: int, body: bytes) -> bytes:
        signature, ciphertext = body[:32], body[32:]
        if not ciphertext or not secrets.compare_digest(signature, self._signature(seq, ciphertext)):
            raise ValueError("bad KLAP signature")
        decryptor = self._cipher(seq).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()

    def encrypt(self, seq: int, plaintext: bytes) -> bytes:
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        encryptor = self._cipher(seq).encryptor()
        ciphertext = encryptor.update(padded) + encryptor.finalize()
        return self._signature(seq, ciphertext) + ciphertext


@dataclass
class _Session:
    client_seed: bytes
    server_seed: bytes
    auth_hash: bytes
    expires_monotonic_s: float
    cipher: _KlapCipher | None = None  # set once handshake2 succeeded


# --------------------------------------------------------------------------- HTTP


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: SimulatedPlug) -> None:
        self.sim = sim
        self.closing = threading.Event()  # set when this listener is being torn down
        self.active_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def drop_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.active_connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"
    server_version = "SimTapo/1.0"
    sys_version = ""
    timeout = 30

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.active_connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.active_connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        _LOGGER.debug("%s: " + format, self.client_address[0], *args)

    def do_POST(self) -> None:  # noqa: N802
        self.close_connection = True
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        sim = self.server.sim
        if sim._wait_while_hung(self.server):
            return  # hung plug: the client never gets an answer, the socket just closes
        url = urlsplit(self.path)
        cookie = http.cookies.SimpleCookie(self.headers.get("Cookie") or "")
        session_id = cookie["TP_SESSIONID"].value if "TP_SESSIONID" in cookie else None
        status, headers, payload = sim._handle_http(url.path, parse_qs(url.query), session_id, body)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802
        self.close_connection = True
        self.send_error(404)


# --------------------------------------------------------------------------- the plug


class SimulatedPlug:
    """A Tapo P110/P115 on 127.0.0.1: KLAP v2 HTTP server, energy meter, fault switches.

    Typical test use::

        clock = ManualClock(datetime(2024, 5, 1, 12, tzinfo=ZoneInfo("Europe/Berlin")))
        with SimulatedPlug(power_w=100, clock=clock) as plug:
            dev = await Device.connect(config=plug.device_config())
            plug.advance(3600)          # +100 Wh
            await dev.update()

    Thread-safe: HTTP requests are served on worker threads, the test thread calls
    the control methods; all state is guarded by one lock.
    """

    def __init__(
        self,
        *,
        username: str = "user@example.com",
        password: str = "secret",
        port: int = 0,
        power_w: PowerProfile = 0.0,
        voltage_v: float = DEFAULT_VOLTAGE_V,
        clock: Callable[[], float] = time.time,
        timezone: str = "Europe/Berlin",
        model: PlugModel = PlugModel.P110,
        nickname: str = "NAS",
        device_on: bool = True,
        mac: str | None = None,
        sample_interval_s: float = 60.0,
        session_timeout_s: int = DEFAULT_SESSION_TIMEOUT_S,
        discovery_port: int | None = None,
        auto_tick_s: float | None = None,
        hang: bool = False,
        refuse_password: bool = False,
        down: bool = False,
    ) -> None:
        """Create a stopped plug; call :meth:`start` or use it as a context manager.

        :param username: cloud account e-mail the plug was set up with
        :param password: cloud account password
        :param port: TCP port on 127.0.0.1, 0 picks a free one (see :attr:`port`)
        :param power_w: power profile: watts, or ``f(now_s) -> watts``
        :param voltage_v: mains voltage reported by ``get_emeter_data``
        :param clock: true time in epoch seconds; a :class:`ManualClock` for tests
        :param timezone: IANA zone of the plug; midnight/month resets follow it
        :param model: model name to report
        :param nickname: the name shown in the Tapo app (``dev.alias``)
        :param device_on: initial relay state
        :param mac: MAC address ``AA-BB-CC-DD-EE-FF``; random when omitted
        :param sample_interval_s: integration step for callable profiles
        :param session_timeout_s: KLAP session lifetime (TIMEOUT cookie), real seconds
        :param discovery_port: answer python-kasa discovery on this UDP port
            (20002 or 20004, see :data:`DISCOVERY_PORTS`); None disables discovery
        :param auto_tick_s: integrate energy in the background every so many real
            seconds (useful with a real clock and a callable profile)
        :param hang: start with the :attr:`hang` fault switched on
        :param refuse_password: start with the :attr:`refuse_password` fault on
        :param down: start with the :attr:`down` fault on (port refuses connections)
        """
        if discovery_port is not None and discovery_port not in DISCOVERY_PORTS:
            raise ValueError(f"python-kasa only listens for discovery answers from ports {DISCOVERY_PORTS}")
        if sample_interval_s <= 0:
            raise ValueError("sample_interval_s must be positive")
        self.host = LOOPBACK_HOST
        self._requested_port = port
        self._username = username
        self._password = password
        self._auth_hash = KlapTransportV2.generate_auth_hash(Credentials(username, password))
        self._clock = clock
        self._tz = ZoneInfo(timezone)
        self._timezone_name = timezone
        self.model = PlugModel(model)
        self.nickname = nickname
        self.voltage_v = float(voltage_v)
        self.sample_interval_s = float(sample_interval_s)
        self.session_timeout_s = int(session_timeout_s)
        self.discovery_port = discovery_port
        self._auto_tick_s = auto_tick_s
        self.mac = (mac or "-".join(f"{b:02X}" for b in (b"\x5c\x62" + secrets.token_bytes(4)))).upper()
        ident = hashlib.sha256(self.mac.encode()).hexdigest().upper()
        self.device_id = ident[:40]
        self._hw_id = ident[24:56]
        self._fw_id = ident[8:40]
        self._oem_id = ident[32:64]

        self._lock = threading.RLock()
        self._profile: PowerProfile = power_w
        self._relay_on = bool(device_on)
        now_s = clock()
        self._on_since_s: float | None = now_s if device_on else None
        self._last_integrated_s = now_s
        self._meter = _Meter(self._tz)
        self._clock_offset_s = 0.0
        self._resync_at_s: float | None = None

        self._sessions: dict[str, _Session] = {}
        self._hang = bool(hang)
        self._refuse_password = bool(refuse_password)
        self._down = bool(down)
        self._hang_cond = threading.Condition()

        self._server: _HttpServer | None = None
        self._server_thread: threading.Thread | None = None
        self._placeholder: socket.socket | None = None
        self._udp: socket.socket | None = None
        self._udp_thread: threading.Thread | None = None
        self._ticker_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._running = False

        #: How often each SMART method was called (also "handshake1"/"handshake2").
        self.calls: Counter[str] = Counter()

    # ------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The TCP port (the real one once started with port=0)."""
        return self._requested_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/app"

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> SimulatedPlug:
        """Start serving (HTTP, and UDP discovery if enabled). Returns self."""
        if self._running:
            return self
        self._stopping.clear()
        self._running = True
        try:
            if self._down:
                self._open_placeholder()
            else:
                self._open_http()
            if self.discovery_port is not None:
                self._open_discovery()
            if self._auto_tick_s:
                self._start_ticker(self._auto_tick_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop serving and close every socket. Counters survive; start() again reuses the port."""
        self._stopping.set()
        with self._hang_cond:
            self._hang_cond.notify_all()
        self._close_http()
        self._close_placeholder()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for thread in (self._udp_thread, self._ticker_thread):
            if thread is not None:
                thread.join(timeout=5)
        self._udp_thread = self._ticker_thread = None
        self._running = False

    def __enter__(self) -> SimulatedPlug:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _open_http(self) -> None:
        server = _HttpServer((self.host, self._requested_port), self)
        self._requested_port = server.server_address[1]
        self._server = server
        self._server_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"sim-plug-{self.port}", daemon=True
        )
        self._server_thread.start()
        _LOGGER.info("simulated %s listening on %s", self.model.value, self.url)

    def _close_http(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.closing.set()
        with self._hang_cond:
            self._hang_cond.notify_all()
        server.shutdown()
        server.drop_connections()
        server.server_close()  # joins the worker threads
        if self._server_thread is not None:
            self._server_thread.join(timeout=5)
            self._server_thread = None

    def _open_placeholder(self) -> None:
        # A bound socket that never listens keeps the port ours while the kernel
        # answers every connection attempt with a reset ("connection refused").
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self._requested_port = sock.getsockname()[1]
        self._placeholder = sock

    def _close_placeholder(self) -> None:
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    # ------------------------------------------------------------ fault switches

    @property
    def hang(self) -> bool:
        """While True, HTTP requests are accepted and read but never answered."""
        return self._hang

    @hang.setter
    def hang(self, value: bool) -> None:
        with self._hang_cond:
            self._hang = bool(value)
            self._hang_cond.notify_all()

    @property
    def refuse_password(self) -> bool:
        """While True, handshake1 proves a different account: clients fail authentication."""
        return self._refuse_password

    @refuse_password.setter
    def refuse_password(self, value: bool) -> None:
        with self._lock:
            self._refuse_password = bool(value)
            self._sessions.clear()

    @property
    def down(self) -> bool:
        """While True the port refuses connections and discovery is not answered."""
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        value = bool(value)
        if value == self._down:
            return
        self._down = value
        if not self._running:
            return
        if value:
            self._close_http()
            self._open_placeholder()
            with self._lock:
                self._sessions.clear()
        else:
            self._close_placeholder()
            self._open_http()

    def _wait_while_hung(self, server: _HttpServer) -> bool:
        """Block a request while hung; True means: drop it without an answer."""
        with self._hang_cond:
            if not self._hang:
                return False
            while self._hang and not self._stopping.is_set() and not server.closing.is_set():
                self._hang_cond.wait(0.5)
            return True

    # ------------------------------------------------------------ clock

    def now_s(self) -> float:
        """True time from the injected clock (epoch s)."""
        return self._clock()

    def device_time_s(self) -> float:
        """What the plug believes the time is (differs after lose_clock())."""
        with self._lock:
            now_s = self._clock()
            self._integrate_to(now_s)
            return now_s + self._clock_offset_s

    def device_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.device_time_s(), self._tz)

    @property
    def clock_synced(self) -> bool:
        with self._lock:
            self._integrate_to(self._clock())
            return self._clock_offset_s == 0.0

    def lose_clock(self, *, resync_after_s: float | None = None) -> None:
        """Power-cycle without network time: the plug's clock restarts at 2000-01-01 00:00 local.

        It keeps running from there (energy is booked in the year 2000) until
        :meth:`sync_clock`, a ``set_device_time`` call, or ``resync_after_s``
        (simulator-clock seconds) later when it gets NTP again.
        """
        with self._lock:
            now_s = self._clock()
            self._integrate_to(now_s)
            y2000_s = datetime(*_Y2000, tzinfo=self._tz).timestamp()
            self._clock_offset_s = y2000_s - now_s
            self._resync_at_s = None if resync_after_s is None else now_s + resync_after_s

    def sync_clock(self) -> None:
        """Network time is back: the plug's clock equals the simulator clock again."""
        with self._lock:
            self._integrate_to(self._clock())
            self._clock_offset_s = 0.0
            self._resync_at_s = None

    # ------------------------------------------------------------ power profile / relay

    def set_power_w(self, power_w: float) -> None:
        """Draw a constant ``power_w`` from now on (while the relay is on)."""
        self.set_profile(float(power_w))

    def set_profile(self, profile: PowerProfile) -> None:
        """Replace the power profile from now on: watts or ``f(now_s) -> watts``."""
        with self._lock:
            self._integrate_to(self._clock())
            self._profile = profile

    def follow(self, source: Callable[[], float], *, tick_s: float | None = 1.0) -> None:
        """Draw whatever ``source()`` says right now (e.g. a simulated NAS's state power).

        Integration samples ``source()`` lazily (on requests, :meth:`tick` and
        :meth:`advance`), so with a real clock a background ticker every ``tick_s``
        real seconds keeps the energy close to the truth.  With a :class:`ManualClock`
        pass ``tick_s=None`` and change the source between ``advance()`` calls:
        ``advance()`` integrates the elapsed span with the source's current value.
        """
        self.set_profile(lambda _now_s: source())
        if tick_s and self._running and self._ticker_thread is None:
            self._start_ticker(tick_s)
        elif tick_s:
            self._auto_tick_s = tick_s

    @property
    def is_on(self) -> bool:
        return self._relay_on

    def set_on(self, on: bool) -> None:
        """Switch the relay (as the button or the app would)."""
        with self._lock:
            now_s = self._clock()
            self._integrate_to(now_s)
            if on and not self._relay_on:
                self._on_since_s = now_s
            elif not on:
                self._on_since_s = None
            self._relay_on = bool(on)

    def turn_on(self) -> None:
        self.set_on(True)

    def turn_off(self) -> None:
        self.set_on(False)

    @property
    def power_w(self) -> float:
        """Instantaneous power (0 while off)."""
        with self._lock:
            now_s = self._clock()
            self._integrate_to(now_s)
            return self._power_at(now_s)

    @property
    def current_a(self) -> float:
        return self.power_w / self.voltage_v

    def _power_at(self, t_s: float) -> float:
        if not self._relay_on:
            return 0.0
        profile = self._profile
        watts = profile(t_s) if callable(profile) else profile
        return max(0.0, float(watts))

    # ------------------------------------------------------------ energy

    def tick(self) -> None:
        """Integrate energy up to the clock's now (requests do this implicitly)."""
        with self._lock:
            self._integrate_to(self._clock())

    def advance(self, seconds: float) -> None:
        """Move a :class:`ManualClock` forward and integrate (tests only)."""
        if not isinstance(self._clock, ManualClock):
            raise TypeError("advance() needs the plug to run on a ManualClock")
        with self._lock:
            self._clock.advance(seconds)
            self._integrate_to(self._clock())

    def _offset_at(self, t_s: float) -> float:
        if self._resync_at_s is not None and t_s >= self._resync_at_s:
            return 0.0
        return self._clock_offset_s

    def _integrate_to(self, now_s: float) -> None:
        t_s = self._last_integrated_s
        if now_s <= t_s:
            return
        constant = not callable(self._profile)
        while t_s < now_s:
            device_s = t_s + self._offset_at(t_s)
            next_hour_s = self._meter.hour_start_s(device_s) + 3600 - self._offset_at(t_s)
            end_s = min(now_s, next_hour_s)
            if not constant:
                end_s = min(end_s, t_s + self.sample_interval_s)
            if self._resync_at_s is not None and t_s < self._resync_at_s:
                end_s = min(end_s, self._resync_at_s)
            self._meter.add(device_s, end_s - t_s, self._power_at(t_s), self._relay_on)
            t_s = end_s
        self._last_integrated_s = now_s
        if self._resync_at_s is not None and now_s >= self._resync_at_s:
            self._clock_offset_s = 0.0
            self._resync_at_s = None

    def _local(self, device_s: float) -> datetime:
        return datetime.fromtimestamp(device_s, self._tz)

    @property
    def today_energy_wh(self) -> int:
        """Today's counter (plug-local day), as get_energy_usage reports it."""
        with self._lock:
            return self._meter.daily_wh.get(self._local(self.device_time_s()).date(), 0)

    @property
    def month_energy_wh(self) -> int:
        with self._lock:
            local = self._local(self.device_time_s())
            return self._meter.monthly_wh.get((local.year, local.month), 0)

    @property
    def total_energy_wh(self) -> int:
        """Lifetime counter (all buckets)."""
        with self._lock:
            self.tick()
            return self._meter.total_wh

    def hourly_energy_wh(self, start_s: float, end_s: float) -> list[int]:
        """Hourly buckets (device time) whose start lies in [start_s, end_s)."""
        with self._lock:
            self.tick()
            hour_s = self._meter.hour_start_s(start_s)
            out = []
            while hour_s < end_s:
                out.append(self._meter.hourly_wh.get(hour_s, 0))
                hour_s += 3600
            return out

    def energy_data(self, start_s: int, end_s: int, interval: EnergyInterval | int) -> dict[str, Any]:
        """What ``get_energy_data`` answers (raises ValueError for invalid parameters)."""
        try:
            with self._lock:
                self._integrate_to(self._clock())
                return self._get_energy_data(
                    {"start_timestamp": start_s, "end_timestamp": end_s, "interval": int(interval)}
                )
        except _SmartCallError as err:
            raise ValueError(f"get_energy_data rejects these parameters ({err.code.name})") from err

    # ------------------------------------------------------------ python-kasa convenience

    @property
    def credentials(self) -> Credentials:
        return Credentials(self._username, self._password)

    def device_config(self, *, timeout_s: int = 5, credentials: Credentials | None = None) -> DeviceConfig:
        """The exact DeviceConfig python-kasa needs to reach this plug directly."""
        return DeviceConfig(
            host=self.host,
            port_override=self.port,
            timeout=timeout_s,
            credentials=credentials or self.credentials,
            connection_type=DeviceConnectionParameters(
                DeviceFamily.SmartTapoPlug, DeviceEncryptionType.Klap, login_version=2
            ),
        )

    # ------------------------------------------------------------ HTTP side (worker threads)

    def _handle_http(
        self, path: str, query: dict[str, list[str]], session_id: str | None, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if path == "/app/handshake1":
            return self._handshake1(body)
        if path == "/app/handshake2":
            return self._handshake2(session_id, body)
        if path == "/app/request":
            return self._request(query, session_id, body)
        return 404, [], b""

    def _handshake1(self, client_seed: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        if len(client_seed) != 16:
            return 400, [], b""
        server_seed = secrets.token_bytes(16)
        with self._lock:
            self.calls["handshake1"] += 1
            # A plug set up with another account proves a hash the client cannot match.
            auth_hash = secrets.token_bytes(32) if self._refuse_password else self._auth_hash
            now_mono = time.monotonic()
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires_monotonic_s > now_mono}
            session_id = secrets.token_hex(16).upper()
            self._sessions[session_id] = _Session(
                client_seed, server_seed, auth_hash, now_mono + self.session_timeout_s
            )
        proof = KlapTransportV2.handshake1_seed_auth_hash(client_seed, server_seed, auth_hash)
        cookie = f"TP_SESSIONID={session_id};TIMEOUT={self.session_timeout_s}"
        return 200, [("Set-Cookie", cookie)], server_seed + proof

    def _handshake2(self, session_id: str | None, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        with self._lock:
            self.calls["handshake2"] += 1
            session = self._sessions.get(session_id or "")
            if session is None or session.expires_monotonic_s <= time.monotonic():
                return 403, [], b""
            expected = KlapTransportV2.handshake2_seed_auth_hash(
                session.client_seed, session.server_seed, session.auth_hash
            )
            if not secrets.compare_digest(body, expected):
                del self._sessions[session_id or ""]
                return 403, [], b""
            session.cipher = _KlapCipher(session.client_seed, session.server_seed, session.auth_hash)
        return 200, [], b""

    def _request(
        self, query: dict[str, list[str]], session_id: str | None, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        with self._lock:
            session = self._sessions.get(session_id or "")
            if session is None or session.cipher is None or session.expires_monotonic_s <= time.monotonic():
                return 403, [], b""
            cipher = session.cipher
        try:
            seq = int(query["seq"][0])
            plaintext = cipher.decrypt(seq, body)
        except (KeyError, ValueError, struct.error):
            return 400, [], b""
        try:
            request = json.loads(plaintext)
            response = self._dispatch(request)
        except (ValueError, TypeError, AttributeError, KeyError):
            response = {"error_code": int(SmartError.JSON_DECODE_FAIL)}
        return 200, [], cipher.encrypt(seq, json.dumps(response, separators=(",", ":")).encode())

    # ------------------------------------------------------------ SMART methods

    def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        method = request["method"]
        params = request.get("params")
        if method == "multipleRequest":
            responses = []
            for sub in params["requests"]:
                sub_method = sub["method"]
                entry: dict[str, Any] = {"method": sub_method}
                try:
                    result = self._call(sub_method, sub.get("params"))
                except _SmartCallError as err:
                    entry["error_code"] = int(err.code)
                else:
                    entry["error_code"] = 0
                    if result is not None:
                        entry["result"] = result
                responses.append(entry)
            return {"error_code": 0, "result": {"responses": responses}}
        try:
            result = self._call(method, params)
        except _SmartCallError as err:
            return {"error_code": int(err.code)}
        return {"error_code": 0} if result is None else {"error_code": 0, "result": result}

    def _call(self, method: str, params: Any) -> dict[str, Any] | None:
        with self._lock:
            self.calls[method] += 1
            handler = self._METHODS.get(method)
            if handler is None:
                _LOGGER.debug("simulated plug: unknown method %s", method)
                raise _SmartCallError(SmartError.UNKNOWN_METHOD)
            self._integrate_to(self._clock())
            return handler(self, params if isinstance(params, dict) else {})

    def _local_time_str(self) -> str:
        return self._local(self._clock() + self._clock_offset_s).strftime("%Y-%m-%d %H:%M:%S")

    def _time_diff_min(self) -> int:
        # Tapo firmware reports the zone's standard offset, DST comes from the region.
        january = datetime(2021, 1, 1, tzinfo=self._tz)
        return int(january.utcoffset().total_seconds() // 60)  # type: ignore[union-attr]

    def _component_nego(self, _params: dict) -> dict:
        components = [
            ("device", 2), ("firmware", 2), ("quick_setup", 3), ("inherit", 1), ("time", 1),
            ("wireless", 1), ("schedule", 2), ("countdown", 2), ("antitheft", 1), ("account", 1),
            ("synchronize", 1), ("sunrise_sunset", 1), ("led", 1), ("cloud_connect", 1),
            ("iot_cloud", 1), ("device_local_time", 1), ("default_states", 1), ("auto_off", 2),
            ("localSmart", 1), ("energy_monitoring", 2), ("power_protection", 1),
            ("current_protection", 1),
        ]  # fmt: skip
        return {"component_list": [{"id": cid, "ver_code": ver} for cid, ver in components]}

    def _get_device_info(self, _params: dict) -> dict:
        now_s = self._clock()
        on_time_s = int(now_s - self._on_since_s) if self._relay_on and self._on_since_s is not None else 0
        b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
        return {
            "device_id": self.device_id,
            "fw_ver": "1.3.1 Build 240621 Rel.162048",
            "hw_ver": "1.0",
            "type": "SMART.TAPOPLUG",
            "model": self.model.value,
            "mac": self.mac,
            "hw_id": self._hw_id,
            "fw_id": self._fw_id,
            "oem_id": self._oem_id,
            "ip": self.host,
            "time_diff": self._time_diff_min(),
            "ssid": b64("BaluNet"),
            "rssi": -48,
            "signal_level": 3,
            "auto_off_status": "off",
            "auto_off_remain_time": 0,
            "latitude": 0,
            "longitude": 0,
            "lang": "en_US",
            "avatar": "plug",
            "region": self._timezone_name,
            "specs": "",
            "nickname": b64(self.nickname),
            "has_set_location_info": False,
            "device_on": self._relay_on,
            "on_time": on_time_s,
            "default_states": {"type": "last_states", "state": {}},
            "overheat_status": "normal",
            "power_protection_status": "normal",
            "overcurrent_status": "normal",
            "charging_status": "normal",
        }

    def _set_device_info(self, params: dict) -> None:
        if "device_on" in params:
            if not isinstance(params["device_on"], bool):
                raise _SmartCallError(SmartError.PARAMS)
            self.set_on(params["device_on"])
        if "nickname" in params:
            try:
                self.nickname = base64.b64decode(params["nickname"]).decode()
            except (ValueError, TypeError) as err:
                raise _SmartCallError(SmartError.PARAMS) from err
        return None

    def _get_device_time(self, _params: dict) -> dict:
        return {
            "time_diff": self._time_diff_min(),
            "timestamp": int(self._clock() + self._clock_offset_s),
            "region": self._timezone_name,
        }

    def _set_device_time(self, params: dict) -> None:
        try:
            timestamp_s = float(params["timestamp"])
        except (KeyError, TypeError, ValueError) as err:
            raise _SmartCallError(SmartError.PARAMS) from err
        self._clock_offset_s = timestamp_s - self._clock()
        self._resync_at_s = None
        return None

    def _day_sums(self, today: date, days: int) -> tuple[int, int]:
        energy_wh = sum(self._meter.daily_wh.get(today - timedelta(days=i), 0) for i in range(days))
        on_s = sum(self._meter.daily_on_s.get(today - timedelta(days=i), 0.0) for i in range(days))
        return energy_wh, int(on_s // 60)

    def _get_device_usage(self, _params: dict) -> dict:
        today = self._local(self._clock() + self._clock_offset_s).date()
        energy = {n: self._day_sums(today, d) for n, d in (("today", 1), ("past7", 7), ("past30", 30))}
        return {
            "time_usage": {name: minutes for name, (_wh, minutes) in energy.items()},
            "power_usage": {name: wh for name, (wh, _min) in energy.items()},
            "saved_power": {name: 0 for name in energy},
        }

    def _get_energy_usage(self, _params: dict) -> dict:
        local = self._local(self._clock() + self._clock_offset_s)
        month = (local.year, local.month)
        return {
            "today_runtime": int(self._meter.daily_on_s.get(local.date(), 0.0) // 60),
            "month_runtime": int(self._meter.monthly_on_s.get(month, 0.0) // 60),
            "today_energy": self._meter.daily_wh.get(local.date(), 0),
            "month_energy": self._meter.monthly_wh.get(month, 0),
            "local_time": local.strftime("%Y-%m-%d %H:%M:%S"),
            "electricity_charge": [0, 0, 0],
            "current_power": round(self._power_at(self._clock()) * 1000),
        }

    def _get_current_power(self, _params: dict) -> dict:
        return {"current_power": round(self._power_at(self._clock()))}

    def _get_emeter_data(self, _params: dict) -> dict:
        power_w = self._power_at(self._clock())
        return {
            "current_ma": round(power_w / self.voltage_v * 1000),
            "voltage_mv": round(self.voltage_v * 1000),
            "power_mw": round(power_w * 1000),
            "energy_wh": self._meter.total_wh,
        }

    def _get_emeter_vgain_igain(self, _params: dict) -> dict:
        return {"vgain": 118934, "igain": 11594}

    def _get_energy_data(self, params: dict) -> dict:
        try:
            start_s = int(params["start_timestamp"])
            end_s = int(params["end_timestamp"])
            interval = EnergyInterval(int(params["interval"]))
        except (KeyError, TypeError, ValueError) as err:
            raise _SmartCallError(SmartError.PARAMS) from err
        meter = self._meter
        data: list[int] = []
        if interval is EnergyInterval.HOURLY:
            if end_s < start_s or end_s - start_s > MAX_HOURLY_SPAN_S:
                raise _SmartCallError(SmartError.PARAMS)
            hour_s = meter.hour_start_s(start_s)
            while hour_s < end_s:
                data.append(meter.hourly_wh.get(hour_s, 0))
                hour_s += 3600
        else:
            first = self._local(start_s)
            if first.time() != datetime.min.time() or first.day != 1:
                raise _SmartCallError(SmartError.PARAMS)
            if interval is EnergyInterval.DAILY:
                if first.month not in (1, 4, 7, 10):
                    raise _SmartCallError(SmartError.PARAMS)
                quarter_days = sum(calendar.monthrange(first.year, first.month + i)[1] for i in range(3))
                for i in range(quarter_days):
                    day = first.date() + timedelta(days=i)
                    if end_s > start_s and datetime(day.year, day.month, day.day, tzinfo=self._tz).timestamp() >= end_s:
                        break
                    data.append(meter.daily_wh.get(day, 0))
            else:
                if first.month != 1:
                    raise _SmartCallError(SmartError.PARAMS)
                for month in range(1, 13):
                    if end_s > start_s and datetime(first.year, month, 1, tzinfo=self._tz).timestamp() >= end_s:
                        break
                    data.append(meter.monthly_wh.get((first.year, month), 0))
        return {
            "local_time": self._local_time_str(),
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
            "fw_ver": "1.3.1 Build 240621 Rel.162048",
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

    _METHODS: dict[str, Callable[[SimulatedPlug, dict], dict | None]] = {
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
        "get_energy_data": _get_energy_data,
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

    # ------------------------------------------------------------ discovery (UDP)

    def _open_discovery(self) -> None:
        assert self.discovery_port is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.discovery_port))
        except OSError:
            sock.close()
            raise
        sock.settimeout(0.2)
        self._udp = sock
        self._udp_thread = threading.Thread(target=self._serve_discovery, args=(sock,), name="sim-plug-disco", daemon=True)
        self._udp_thread.start()

    def discovery_result(self) -> dict[str, Any]:
        """The JSON ``result`` the plug answers a discovery probe with."""
        return {
            "device_id": self.device_id,
            "owner": self._oem_id,
            "device_type": "SMART.TAPOPLUG",
            "device_model": f"{self.model.value}(EU)",
            "ip": self.host,
            "mac": self.mac,
            "is_support_iot_cloud": True,
            "obd_src": "tplink",
            "factory_default": False,
            "mgt_encrypt_schm": {
                "is_support_https": False,
                "encrypt_type": "KLAP",
                "http_port": self.port,
                "lv": 2,
            },
        }

    def _discovery_answer(self) -> bytes:
        payload = json.dumps({"error_code": 0, "result": self.discovery_result()}).encode()
        # version 2, type 0, op 1, size, flags 17, pad, serial, crc placeholder
        header = struct.pack(">BBHHBBII", 2, 0, 1, len(payload), 17, 0, secrets.randbits(32), 0x5A6B7C8D)
        datagram = bytearray(header + payload)
        datagram[12:16] = binascii.crc32(datagram).to_bytes(4, "big")
        return bytes(datagram)

    def _serve_discovery(self, sock: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                data, addr = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 16 or data[0] != 2 or self._down:
                continue
            with self._lock:
                self.calls["discovery"] += 1
            try:
                sock.sendto(self._discovery_answer(), addr)
            except OSError:
                _LOGGER.debug("simulated plug: could not answer discovery from %s", addr)

    # ------------------------------------------------------------ background ticker

    def _start_ticker(self, interval_s: float) -> None:
        def run() -> None:
            while not self._stopping.wait(interval_s):
                self.tick()

        self._ticker_thread = threading.Thread(target=run, name="sim-plug-tick", daemon=True)
        self._ticker_thread.start()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<SimulatedPlug {self.model.value} {self.host}:{self.port} {state} on={self._relay_on}>"


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Run one simulated plug on 127.0.0.1 until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m balupi.sim.plug", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: pick a free one)")
    parser.add_argument("--user", default="user@example.com", help="Tapo cloud account e-mail")
    parser.add_argument("--password", default="secret", help="Tapo cloud account password")
    parser.add_argument("--power-w", type=float, default=25.0, help="constant power draw in watts")
    parser.add_argument("--voltage-v", type=float, default=DEFAULT_VOLTAGE_V)
    parser.add_argument("--timezone", default="Europe/Berlin", help="IANA zone of the plug")
    parser.add_argument("--model", choices=[m.value for m in PlugModel], default=PlugModel.P110.value)
    parser.add_argument("--nickname", default="NAS")
    parser.add_argument("--off", action="store_true", help="start with the relay off")
    parser.add_argument(
        "--discovery-port", type=int, choices=DISCOVERY_PORTS, default=None, help="also answer UDP discovery"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")

    plug = SimulatedPlug(
        username=args.user,
        password=args.password,
        port=args.port,
        power_w=args.power_w,
        voltage_v=args.voltage_v,
        timezone=args.timezone,
        model=PlugModel(args.model),
        nickname=args.nickname,
        device_on=not args.off,
        discovery_port=args.discovery_port,
        auto_tick_s=1.0,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with plug:
        print(f"simulated {plug.model.value} on {plug.host}:{plug.port} (KLAP v2, user {args.user})", flush=True)
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
