"""The simulated NAS ("BaluHost"): real servers on loopback, for tests, benchmarks and `balupi demo`.

One `SimNas` runs three things on 127.0.0.1:

- the **main port** (cheroot): WebDAV under ``/dav/`` (WsgiDAV FilesystemProvider, property
  manager, lock storage, HTTP Basic auth; admins see the storage root, other users their
  ``<root>/home/<user>``) and a BaluHost REST subset under ``/api/`` (see `nas_http`);
- the **WoL port** (UDP): magic packets for its MAC boot it when suspended/off;
- the **control port** (cheroot, JSON, always on): drive it from another process (`nas_control`).

Power states (`PowerState`): awake, booting, soft_sleep, suspended, off. Suspended and off close
the main listening socket, so connections are refused (a bound, non-listening placeholder socket
keeps the port number reserved; it refuses connections just the same). A magic packet boots it:
booting lasts `boot_delay_s`, then the port listens again, same number. Soft sleep keeps the port
open; the next HTTP request wakes it (and waits `spinup_delay_s`). It goes to sleep on
`suspend()`, on ``POST /api/system/sleep/suspend``, or after `idle_suspend_s` without requests.

Every request on the main port is recorded (`RequestRecord`: method, path, time, power state at
arrival, user, status, bytes sent), as is every magic packet (`MagicPacketRecord`) and boot.
Misbehaviour switches live in `sim.faults` (`balupi.sim.nas_faults.Faults`).

Run it as a process: ``python -m balupi.sim.nas --root DIR [--port N] [--wol-port N]
[--control-port N] [--mac aa:bb:..] [--user name:password[:role]]... [--boot-delay-s X]
[--seed-sample-tree]``; it prints one JSON line with its ports when ready and runs until
SIGTERM/SIGINT or ``POST /shutdown`` on the control port (see `balupi.sim.nas_cli`).

Module map: nas (this: SimNas, the power state machine), nas_state (enums, records, counters),
nas_http (cheroot server class, WebDAV dispatch, REST), nas_listener (re-openable main port,
WoL port), nas_faults (fault switches), nas_control (control port), nas_cli, nas_seed.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wsgidav.wsgidav_app import WsgiDAVApp

from balupi.nas.wol import format_mac, parse_mac, parse_magic_packet
from balupi.sim.nas_control import ControlApp
from balupi.sim.nas_faults import Faults
from balupi.sim.nas_http import NasApp, SimHTTPServer, build_dav_app, check_users
from balupi.sim.nas_listener import ReopenableServer, WolListener
from balupi.sim.nas_seed import seed_sample_tree
from balupi.sim.nas_state import (
    MagicPacketRecord,
    NasCounters,
    PowerState,
    RequestRecord,
    SleepMode,
)

__all__ = ["DAV_PREFIX", "DEFAULT_MAC", "MagicPacketRecord", "NasCounters", "PowerState",
           "RequestRecord", "SimNas", "SleepMode", "seed_sample_tree"]

log = logging.getLogger("balupi.sim.nas")

DAV_PREFIX = "/dav"
DEFAULT_MAC = "02:ba:1b:05:00:01"  # locally administered
DEFAULT_USERS = {"admin": ("admin", "admin")}
_IDLE_POLL_S = 0.02


@dataclass
class _Arrival:
    record: RequestRecord
    halt: threading.Event  # set when the listener closes: in-flight work must stop
    accepted: bool  # False: arrived while (entering) suspend/off; the connection is dropped
    spinup_wait_s: float
    woke: bool  # found the NAS in soft sleep


class SimNas:
    """A simulated BaluHost NAS on 127.0.0.1. Use as a context manager or start()/stop().

    `users` maps name -> (password, role); role "admin" sees the whole storage root, any other
    role only ``<root>/home/<name>``. Default: one admin, ``admin``/``admin``.
    Ports given as 0 are chosen free at start(); the main port keeps its number across suspends.
    """

    def __init__(self, root: str | Path, *, users: dict[str, tuple[str, str]] | None = None,
                 host: str = "127.0.0.1", port: int = 0, wol_port: int = 0,
                 control_port: int | None = 0, mac: str | bytes = DEFAULT_MAC,
                 boot_delay_s: float = 0.2, spinup_delay_s: float = 0.0,
                 sleep_mode: SleepMode | str = SleepMode.SUSPEND,
                 idle_suspend_s: float | None = None,
                 initial_state: PowerState | str = PowerState.AWAKE, threads: int = 16,
                 tls: tuple[str, str] | None = None):
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the simulated NAS listens on loopback only, not {host!r}")
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.wol_port = int(wol_port)
        self.control_port = None if control_port is None else int(control_port)
        self.mac = mac if isinstance(mac, bytes) else parse_mac(mac)
        self.boot_delay_s = float(boot_delay_s)
        self.spinup_delay_s = float(spinup_delay_s)
        self.sleep_mode = SleepMode(sleep_mode)
        self.idle_suspend_s = idle_suspend_s
        self.users = check_users(DEFAULT_USERS if users is None else users)
        self.faults = Faults()
        self.jwt_secret = secrets.token_hex(32)
        self.shutdown_requested = threading.Event()

        self._lock = threading.RLock()  # state and counters; held briefly, never while blocking
        self._cond = threading.Condition(self._lock)
        self._power_lock = threading.Lock()  # opening/closing the listener
        self._state = PowerState(initial_state)
        self._state_since_s = time.time()
        self._boot_generation = 0
        self._spinup_done_at: float | None = None
        self.counters = NasCounters()
        self._in_flight = 0
        self._last_activity = time.monotonic()
        self.tls = tls  # (certificate, key) PEM paths: the main port speaks HTTPS
        self._listener = ReopenableServer(host, port, NasApp(self), threads=threads,
                                          tls=None if tls is None else (str(tls[0]), str(tls[1])))
        self._listener_open = False  # mirrors _listener.is_open, readable under _lock
        self._control: SimHTTPServer | None = None
        self._wol: WolListener | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._started = False
        self._dav_apps = {name: build_dav_app(self.home_of(name), DAV_PREFIX, name, *entry)
                          for name, entry in self.users.items()}

    # --- setup -------------------------------------------------------------------------------

    def home_of(self, user: str) -> Path:
        """The directory `user` sees as the WebDAV root."""
        return self.root if self.users[user][1] == "admin" else self.root / "home" / user

    def dav_app_for(self, user: str | None) -> WsgiDAVApp:
        return self._dav_apps.get(user) or next(iter(self._dav_apps.values()))

    def user_id(self, name: str) -> int:
        return list(self.users).index(name) + 1

    def set_password(self, user: str, password: str) -> None:
        """Change `user`'s password, as the NAS's admin would: WebDAV and REST accept only the new one."""
        role = self.users[user][1]
        self._dav_apps[user] = build_dav_app(self.home_of(user), DAV_PREFIX, user, password, role)
        self.users[user] = (password, role)

    def set_role(self, user: str, role: str) -> None:
        """Make `user` an admin or a plain user, as the NAS's admin would (the root changes with it)."""
        password = self.users[user][0]
        self.users[user] = (password, role)
        self._dav_apps[user] = build_dav_app(self.home_of(user), DAV_PREFIX, user, password, role)

    def delete_user(self, user: str) -> None:
        """Remove `user`: neither WebDAV nor REST accepts their password any more."""
        del self.users[user]
        del self._dav_apps[user]

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "SimNas":
        """Open the WoL and control ports, and the main port if the initial state listens."""
        if self._started:
            return self
        self._stopping.clear()
        self._started = True
        try:
            self._wol = WolListener(self.host, self.wol_port, self._on_datagram)
            self.wol_port = self._wol.port
            if self.control_port is not None:
                self._control = SimHTTPServer((self.host, self.control_port), ControlApp(self),
                                              threads=4, name="BaluHost-sim-control")
                self._control.prepare()
                self.control_port = self._control.bind_addr[1]
                self._spawn(self._control.serve, "control")
            with self._power_lock:
                if self._state.listening:
                    self._open_listener()
                else:
                    self._listener.reserve()
        except BaseException:
            self.stop()  # e.g. a port in use: close what was opened
            raise
        if self._state is PowerState.BOOTING:
            with self._lock:
                self._spawn(self._boot_after_delay, "boot", self._boot_generation)
        self._spawn(self._idle_loop, "idle")
        return self

    def stop(self) -> None:
        """Close every port and stop every thread. Counters stay readable."""
        if not self._started:
            return
        self._stopping.set()
        with self._power_lock:
            self._close_listener()
        if self._control is not None:
            self._control.stop()
            self._control = None
        if self._wol is not None:
            self._wol.close()
            self._wol = None
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(2.0)
        self._threads = []
        self._started = False

    def __enter__(self) -> "SimNas":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, target, name: str, *args) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"sim-nas {name}")
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        return thread

    # --- listener ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The main port (WebDAV + REST); its number stays the same across suspends."""
        return self._listener.port

    def _open_listener(self) -> None:  # with _power_lock held
        self._listener.open()
        self._set_listener_open(True)

    def _close_listener(self) -> None:  # with _power_lock held
        self._listener.close(keep_reserved=not self._stopping.is_set())
        self._set_listener_open(False)

    def _set_listener_open(self, is_open: bool) -> None:
        with self._lock:
            self._listener_open = is_open
            self._cond.notify_all()

    def _sync_listener(self) -> None:
        """Open or close the main listener to match the power state."""
        with self._power_lock:
            if self._stopping.is_set() or not self._started:
                return
            with self._lock:
                want = self._state.listening
            if want and not self._listener.is_open:
                self._open_listener()
            elif not want and self._listener.is_open:
                self._close_listener()

    def _sync_listener_soon(self) -> None:
        """For state changes made inside a request: sync from another thread, after it."""
        threading.Thread(target=self._sync_listener, daemon=True, name="sim-nas sync").start()

    # --- power state -------------------------------------------------------------------------

    @property
    def state(self) -> PowerState:
        return self._state

    def _set_state(self, new: PowerState) -> None:  # with _lock held
        if new is not self._state:
            log.debug("sim NAS :%s %s -> %s", self.port, self._state.value, new.value)
        self._state = new
        self._state_since_s = time.time()
        if new is PowerState.SOFT_SLEEP:
            self._spinup_done_at = None
        if new is PowerState.AWAKE:
            self._last_activity = time.monotonic()
        self._cond.notify_all()

    def _enter_state(self, target: PowerState) -> PowerState:
        """Switch to a sleep state (state only; the caller syncs the listener)."""
        with self._lock:
            previous = self._state
            if target is PowerState.SOFT_SLEEP and previous is not PowerState.AWAKE:
                if previous is PowerState.SOFT_SLEEP:
                    return previous
                raise ValueError(f"cannot enter soft sleep from {previous.value}")
            if target not in (PowerState.SOFT_SLEEP, PowerState.SUSPENDED, PowerState.OFF):
                raise ValueError(f"not a sleep state: {target.value}")
            self._boot_generation += 1  # cancels a boot in progress
            self._set_state(target)
            return previous

    def suspend_after_response(self, mode: SleepMode) -> Callable[[], None]:
        """For a suspend asked for inside a request: the state changes now, and the returned
        callable closes the listener from another thread once the response is sent."""
        self._enter_state(mode.target_state)
        return self._sync_listener_soon

    def suspend(self, mode: SleepMode | str | None = None) -> None:
        """Go to sleep now: S3 suspend (port refuses) or soft sleep, by `mode` or `sleep_mode`."""
        mode = SleepMode(mode) if mode else self.sleep_mode
        self._enter_state(mode.target_state)
        self._sync_listener()

    def soft_sleep(self) -> None:
        self.suspend(SleepMode.SOFT)

    def power_off(self) -> None:
        """Power off (S5): like suspended, reported as off; a magic packet still boots it."""
        self._enter_state(PowerState.OFF)
        self._sync_listener()

    def wake_now(self) -> None:
        """Be awake at once: no magic packet, no boot delay (counts as a boot if it was down)."""
        with self._power_lock:
            with self._lock:
                if self._state is PowerState.AWAKE:
                    return
                if self._state is PowerState.SOFT_SLEEP:
                    self.counters.count_wake()
                    self._set_state(PowerState.AWAKE)
                    return
                self._boot_generation += 1
            if self._started:
                self._open_listener()
            with self._lock:
                self.counters.count_boot()
                self._set_state(PowerState.AWAKE)

    def wait_for_state(self, state: PowerState | str, timeout_s: float = 5.0) -> bool:
        """Wait until the NAS is in `state` and its port matches it (closed when suspended or
        off, listening when awake or soft-sleeping). False on timeout."""
        state = PowerState(state)

        def settled() -> bool:
            if self._state is not state:
                return False
            if not self._started or state is PowerState.BOOTING:
                return True
            return self._listener_open == state.listening

        with self._cond:
            return self._cond.wait_for(settled, timeout_s)

    def _boot_after_delay(self, generation: int) -> None:
        if self._stopping.wait(self.boot_delay_s):
            return
        with self._power_lock:
            with self._lock:
                if generation != self._boot_generation or self._state is not PowerState.BOOTING:
                    return
            if self._stopping.is_set():
                return
            self._open_listener()
            with self._lock:
                if generation == self._boot_generation and self._state is PowerState.BOOTING:
                    self.counters.count_boot()
                    self._set_state(PowerState.AWAKE)

    def _idle_loop(self) -> None:
        while not self._stopping.wait(_IDLE_POLL_S):
            idle_s = self.idle_suspend_s
            if not idle_s:
                continue
            with self._lock:
                due = (self._state is PowerState.AWAKE and self._in_flight == 0
                       and time.monotonic() - self._last_activity >= idle_s)
            if due:
                try:
                    self.suspend()
                except Exception:  # pragma: no cover - keep the watchdog alive
                    log.exception("idle suspend failed")

    def configure(self, *, boot_delay_s=None, spinup_delay_s=None, idle_suspend_s=...,
                  sleep_mode=None) -> None:
        """Change timing settings at runtime (idle_suspend_s None or 0: never)."""
        if boot_delay_s is not None:
            self.boot_delay_s = float(boot_delay_s)
        if spinup_delay_s is not None:
            self.spinup_delay_s = float(spinup_delay_s)
        if idle_suspend_s is not ...:
            self.idle_suspend_s = float(idle_suspend_s) if idle_suspend_s else None
            with self._lock:
                self._last_activity = time.monotonic()
        if sleep_mode is not None:
            self.sleep_mode = SleepMode(sleep_mode)

    # --- Wake-on-LAN -------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, sender) -> None:
        mac = parse_magic_packet(data)
        if mac is None:
            return
        matched = mac == self.mac
        with self._lock:
            state, acted = self._state, False
            if matched and not self.faults.never_wake:
                if state in (PowerState.SUSPENDED, PowerState.OFF):
                    self._boot_generation += 1
                    self._set_state(PowerState.BOOTING)
                    self._spawn(self._boot_after_delay, "boot", self._boot_generation)
                    acted = True
                elif state is PowerState.SOFT_SLEEP:
                    self.counters.count_wake()
                    self._set_state(PowerState.AWAKE)
                    acted = True
            self.counters.add_packet(MagicPacketRecord(time.time(), format_mac(mac), matched,
                                                       state, acted, tuple(sender[:2])))

    # --- request bookkeeping: the public interface the HTTP side (nas_http) uses -------------

    def arrive(self, method: str, path: str, user: str | None) -> _Arrival:
        with self._lock:
            state = self._state
            record = RequestRecord(method, path, time.time(), state, user)
            self.counters.add_request(record)
            self._in_flight += 1
            self._last_activity = time.monotonic()
            wait_s = 0.0
            if state is PowerState.SOFT_SLEEP:
                if self._spinup_done_at is None:
                    self._spinup_done_at = time.monotonic() + self.spinup_delay_s
                wait_s = max(0.0, self._spinup_done_at - time.monotonic())
            accepted = state not in (PowerState.SUSPENDED, PowerState.OFF)
            return _Arrival(record, self._listener.halt, accepted, wait_s, state is PowerState.SOFT_SLEEP)

    def spun_up(self, arrival: _Arrival) -> None:
        if arrival.woke:
            with self._lock:
                if self._state is PowerState.SOFT_SLEEP:
                    self.counters.count_wake()
                    self._set_state(PowerState.AWAKE)

    def finish_request(self, record: RequestRecord, body) -> None:
        with self._lock:
            if record.duration_s is not None:
                return
            record.duration_s = time.time() - record.time_s
            record.bytes_sent = body.bytes_sent if body is not None else 0
            self._in_flight -= 1
            self._last_activity = time.monotonic()

    # --- counters (see NasCounters) --------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request that reached the main port, oldest first."""
        return self.counters.requests

    def request_count(self, method: str | None = None, path: str | None = None, *,
                      path_prefix: str | None = None, state: PowerState | str | None = None,
                      user: str | None = None, since_s: float | None = None) -> int:
        """How many recorded requests match every given filter."""
        return self.counters.request_count(method, path, path_prefix=path_prefix, state=state,
                                           user=user, since_s=since_s)

    @property
    def magic_packets(self) -> list[MagicPacketRecord]:
        """Every magic packet received, for this NAS's MAC or not (see `.matched`)."""
        return self.counters.magic_packets

    @property
    def magic_packet_count(self) -> int:
        """Magic packets received for this NAS's MAC."""
        return self.counters.magic_packet_count

    @property
    def boot_count(self) -> int:
        return self.counters.boot_count

    @property
    def wake_count(self) -> int:
        """Wake-ups from soft sleep (by a request or a magic packet)."""
        return self.counters.wake_count

    def reset_counters(self) -> None:
        self.counters.clear()

    # --- views -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def dav_url(self) -> str:
        return f"{self.base_url}{DAV_PREFIX}/"

    @property
    def control_url(self) -> str | None:
        return None if self.control_port is None else f"http://{self.host}:{self.control_port}"

    def status_dict(self) -> dict:
        with self._lock:
            return {
                "state": self._state.value, "state_since_s": self._state_since_s,
                "sleep_mode": self.sleep_mode.value, "host": self.host, "port": self.port,
                "wol_port": self.wol_port, "control_port": self.control_port,
                "mac": format_mac(self.mac), "root": str(self.root),
                "base_url": self.base_url, "dav_url": self.dav_url,
                "boot_count": self.counters.boot_count, "wake_count": self.counters.wake_count,
                "boot_delay_s": self.boot_delay_s, "spinup_delay_s": self.spinup_delay_s,
                "idle_suspend_s": self.idle_suspend_s, "users": list(self.users),
            }

    def counters_dict(self) -> dict:
        return self.counters.to_dict()

    def sleep_status(self) -> dict:
        """Body of GET /api/system/sleep/status (a subset of BaluHost's SleepStatusResponse)."""
        with self._lock:
            idle_s = max(0.0, time.monotonic() - self._last_activity)
            return {
                "current_state": self._state.baluhost_sleep_state,
                "state_since": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                             time.gmtime(self._state_since_s)),
                "idle_seconds": round(idle_s, 3),
                "idle_threshold_seconds": float(self.idle_suspend_s or 0.0),
                "auto_idle_enabled": bool(self.idle_suspend_s),
                "sleep_mode": self.sleep_mode.value,
                "power_state": self._state.value,
            }


if __name__ == "__main__":
    from balupi.sim.nas_cli import main

    raise SystemExit(main())
