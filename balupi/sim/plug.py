"""A simulated TP-Link Tapo P110/P115 smart plug that speaks KLAP v2 over real HTTP.

The simulator is a real HTTP server on 127.0.0.1 that the *real* python-kasa client (0.12.0) can
talk to, plus an energy meter whose power draw is scripted by tests. `SimulatedPlug` is a facade: the
plug's identity and control surface (faults, clock, power), each call handed to the part that
owns it:

- `balupi.sim.plug_klap`: the KLAP v2 handshakes, sessions, request cipher and the routing of a
  POST below ``/app`` (the wire protocol, described there);
- `balupi.sim.plug_device`: the SMART JSON methods (``get_device_info``, ``get_energy_usage``,
  ``get_energy_data``, ...) and their error codes;
- `balupi.sim.plug_meter`: the clock (`ManualClock` for tests), the relay and its power profile
  (`PlugPower`), and the integer-Wh meter bucketed by the plug's local hour (midnight and month
  resets, a plug without a clock books into 2000);
- `balupi.sim.plug_http`: the TCP port (`PlugPort`: HTTP while up, refusing while down, hang);
- `balupi.sim.plug_discovery`: the UDP discovery answer (ports 20002/20004 only);
- `balupi.sim.plug_cli`: ``python -m balupi.sim.plug --port 8110 --user u@example.com
  --password pw --power-w 25`` for a stand-alone plug (see ``--help``).

Power follows a *profile*: a constant in watts, or a callable ``f(now_s) -> watts``; it is 0 W
while the relay is off. Energy is integrated lazily (on every request, on `SimulatedPlug.tick`
and on every state change), in steps of at most ``sample_interval_s`` for callable profiles.

The network faults (``hang``, ``down``, ``refuse_password``) only affect the network side: the
meter keeps counting, as a real plug does when Wi-Fi drops.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo

from kasa import Credentials, DeviceConfig, DeviceConnectionParameters
from kasa.deviceconfig import DeviceEncryptionType, DeviceFamily
from kasa.transports.klaptransport import KlapTransportV2

from balupi.sim.plug_device import DeviceRequests, SmartCallError, SmartError
from balupi.sim.plug_discovery import DISCOVERY_PORTS, DiscoveryResponder
from balupi.sim.plug_http import PlugPort
from balupi.sim.plug_klap import HttpAnswer, KlapSessions
from balupi.sim.plug_meter import EnergyInterval, ManualClock, Meter, PlugPower, PowerProfile

__all__ = [
    "DISCOVERY_PORTS",
    "EnergyInterval",
    "ManualClock",
    "PlugModel",
    "PowerProfile",
    "SimulatedPlug",
    "SmartError",
]

_LOGGER = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"
#: Default TIMEOUT cookie: the session lifetime a real plug announces.
DEFAULT_SESSION_TIMEOUT_S = 86_400
#: Nominal mains voltage of the simulated grid.
DEFAULT_VOLTAGE_V = 230.0


class PlugModel(str, Enum):
    """Models the simulator can pretend to be (same protocol, same answers)."""

    P110 = "P110"
    P115 = "P115"


class SimulatedPlug:
    """A Tapo P110/P115 on 127.0.0.1: KLAP v2 HTTP server, energy meter, fault switches.

    Typical test use::

        clock = ManualClock(datetime(2024, 5, 1, 12, tzinfo=ZoneInfo("Europe/Berlin")))
        with SimulatedPlug(power_w=100, clock=clock) as plug:
            dev = await Device.connect(config=plug.device_config())
            plug.advance(3600)          # +100 Wh
            await dev.update()

    Thread-safe: HTTP requests are served on worker threads, the test thread calls the control
    methods; the relay, the meter and the clock are guarded by one lock (:attr:`lock`).
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
        self.host = LOOPBACK_HOST
        self._username = username
        self._password = password
        self.tz = ZoneInfo(timezone)
        self.timezone_name = timezone
        self.model = PlugModel(model)
        self.nickname = nickname
        self.voltage_v = float(voltage_v)
        self.session_timeout_s = int(session_timeout_s)
        self.discovery_port = discovery_port
        self._auto_tick_s = auto_tick_s
        self.mac = (mac or "-".join(f"{b:02X}" for b in (b"\x5c\x62" + secrets.token_bytes(4)))).upper()
        ident = hashlib.sha256(self.mac.encode()).hexdigest().upper()
        self.device_id = ident[:40]
        self.hw_id = ident[24:56]
        self.fw_id = ident[8:40]
        self.oem_id = ident[32:64]

        self._power = PlugPower(
            clock=clock, tz=self.tz, profile=power_w, relay_on=device_on, sample_interval_s=sample_interval_s
        )
        #: Guards the relay, the meter and the clock offset (re-entrant: the SMART methods
        #: call the public control methods with it held).
        self.lock = self._power.lock
        #: The integer-Wh counters (read by the SMART energy methods and by tests).
        self.meter: Meter = self._power.meter
        self._klap = KlapSessions(
            KlapTransportV2.generate_auth_hash(Credentials(username, password)), self.session_timeout_s
        )
        self._klap.refuse_password = bool(refuse_password)
        self._device = DeviceRequests(self)
        self._port = PlugPort(self.host, port, self._answer, down=down, hang=hang)
        self._discovery: DiscoveryResponder | None = None
        self._ticker_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._running = False

        #: How often each SMART method was called (also "handshake1"/"handshake2"/"discovery").
        self.calls: Counter[str] = Counter()

    # ------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The TCP port (the real one once started with port=0)."""
        return self._port.port

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
            self._port.open()
            _LOGGER.info("simulated %s listening on %s", self.model.value, self.url)
            if self.discovery_port is not None:
                self._discovery = DiscoveryResponder(self, self.discovery_port)
            if self._auto_tick_s:
                self._start_ticker(self._auto_tick_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop serving and close every socket. Counters survive; start() again reuses the port."""
        self._stopping.set()
        self._port.close()
        if self._discovery is not None:
            self._discovery.close()
            self._discovery = None
        if self._ticker_thread is not None:
            self._ticker_thread.join(timeout=5)
            self._ticker_thread = None
        self._running = False

    def __enter__(self) -> SimulatedPlug:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ fault switches

    @property
    def hang(self) -> bool:
        """While True, HTTP requests are accepted and read but never answered."""
        return self._port.hang

    @hang.setter
    def hang(self, value: bool) -> None:
        self._port.hang = value

    @property
    def refuse_password(self) -> bool:
        """While True, handshake1 proves a different account: clients fail authentication."""
        return self._klap.refuse_password

    @refuse_password.setter
    def refuse_password(self, value: bool) -> None:
        self._klap.refuse_password = bool(value)
        self._klap.clear()

    @property
    def down(self) -> bool:
        """While True the port refuses connections and discovery is not answered."""
        return self._port.down

    @down.setter
    def down(self, value: bool) -> None:
        self._port.down = value
        if self._port.down:
            self._klap.clear()

    # ------------------------------------------------------------ clock (see PlugPower)

    def now_s(self) -> float:
        """True time from the injected clock (epoch s)."""
        return self._power.clock()

    def device_time_s(self) -> float:
        """What the plug believes the time is (differs after lose_clock())."""
        return self._power.device_time_s()

    def device_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.device_time_s(), self.tz)

    @property
    def clock_synced(self) -> bool:
        return self._power.clock_synced

    def lose_clock(self, *, resync_after_s: float | None = None) -> None:
        """Power-cycle without network time: the plug's clock restarts at 2000-01-01 00:00 local.

        It keeps running from there (energy is booked in the year 2000) until
        :meth:`sync_clock`, a ``set_device_time`` call, or ``resync_after_s``
        (simulator-clock seconds) later when it gets NTP again.
        """
        self._power.lose_clock(resync_after_s)

    def set_device_time(self, timestamp_s: float) -> None:
        """The plug is told the time (``set_device_time``): its clock reads ``timestamp_s`` now."""
        self._power.set_device_time(timestamp_s)

    def sync_clock(self) -> None:
        """Network time is back: the plug's clock equals the simulator clock again."""
        self._power.sync_clock()

    # ------------------------------------------------------------ power profile / relay

    def set_power_w(self, power_w: float) -> None:
        """Draw a constant ``power_w`` from now on (while the relay is on)."""
        self._power.set_profile(float(power_w))

    def set_profile(self, profile: PowerProfile) -> None:
        """Replace the power profile from now on: watts or ``f(now_s) -> watts``."""
        self._power.set_profile(profile)

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
        return self._power.is_on

    def set_on(self, on: bool) -> None:
        """Switch the relay (as the button or the app would)."""
        self._power.set_on(on)

    def turn_on(self) -> None:
        self.set_on(True)

    def turn_off(self) -> None:
        self.set_on(False)

    @property
    def power_w(self) -> float:
        """Instantaneous power (0 while off)."""
        return self._power.power_w

    def on_time_s(self) -> int:
        """Seconds since the relay was switched on (0 while off)."""
        return self._power.on_time_s()

    @property
    def current_a(self) -> float:
        return self.power_w / self.voltage_v

    # ------------------------------------------------------------ energy

    def tick(self) -> None:
        """Integrate energy up to the clock's now (requests do this implicitly)."""
        self._power.tick()

    def advance(self, seconds: float) -> None:
        """Move a :class:`ManualClock` forward and integrate (tests only)."""
        self._power.advance(seconds)

    @property
    def today_energy_wh(self) -> int:
        """Today's counter (plug-local day), as get_energy_usage reports it."""
        return self._power.today_energy_wh

    @property
    def month_energy_wh(self) -> int:
        return self._power.month_energy_wh

    @property
    def total_energy_wh(self) -> int:
        """Lifetime counter (all buckets)."""
        return self._power.total_energy_wh

    def hourly_energy_wh(self, start_s: float, end_s: float) -> list[int]:
        """Hourly buckets (device time) whose start lies in [start_s, end_s)."""
        return self._power.hourly_energy_wh(start_s, end_s)

    def energy_data(self, start_s: int, end_s: int, interval: EnergyInterval | int) -> dict[str, Any]:
        """What ``get_energy_data`` answers (raises ValueError for invalid parameters)."""
        try:
            with self.lock:
                self.tick()
                return self._device.energy_data(
                    {"start_timestamp": start_s, "end_timestamp": end_s, "interval": int(interval)}
                )
        except SmartCallError as err:
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

    # ------------------------------------------------------------ the network side (its threads)

    def count_call(self, name: str) -> None:
        """Count one call of a SMART method, handshake or discovery (see :attr:`calls`)."""
        with self.lock:
            self.calls[name] += 1

    def _answer(self, path: str, query: dict[str, list[str]], session_id: str | None, body: bytes) -> HttpAnswer:
        return self._klap.answer(
            path, query, session_id, body, dispatch=self._device.answer_json, count=self.count_call
        )

    def _start_ticker(self, interval_s: float) -> None:
        def run() -> None:
            while not self._stopping.wait(interval_s):
                self.tick()

        self._ticker_thread = threading.Thread(target=run, name="sim-plug-tick", daemon=True)
        self._ticker_thread.start()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<SimulatedPlug {self.model.value} {self.host}:{self.port} {state} on={self.is_on}>"


if __name__ == "__main__":
    from balupi.sim.plug_cli import main

    sys.exit(main())
