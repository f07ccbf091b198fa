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
SIGTERM/SIGINT or ``POST /shutdown`` on the control port.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from wsgidav.wsgidav_app import WsgiDAVApp

from balupi.nas.wol import format_mac, parse_mac, parse_magic_packet
from balupi.sim.nas_control import ControlApp
from balupi.sim.nas_faults import Faults
from balupi.sim.nas_http import NasApp, SimHTTPServer
from balupi.sim.nas_seed import seed_sample_tree
from balupi.sim.nas_state import MagicPacketRecord, PowerState, RequestRecord, SleepMode

__all__ = ["DAV_PREFIX", "DEFAULT_MAC", "MagicPacketRecord", "PowerState", "RequestRecord",
           "SimNas", "SleepMode", "main", "parse_user_spec", "seed_sample_tree"]

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
                 initial_state: PowerState | str = PowerState.AWAKE, threads: int = 16):
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the simulated NAS listens on loopback only, not {host!r}")
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = int(port)
        self.wol_port = int(wol_port)
        self.control_port = None if control_port is None else int(control_port)
        self.mac = mac if isinstance(mac, bytes) else parse_mac(mac)
        self.boot_delay_s = float(boot_delay_s)
        self.spinup_delay_s = float(spinup_delay_s)
        self.sleep_mode = SleepMode(sleep_mode)
        self.idle_suspend_s = idle_suspend_s
        self.threads = threads
        self.users = self._check_users(DEFAULT_USERS if users is None else users)
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
        self._requests: list[RequestRecord] = []
        self._packets: list[MagicPacketRecord] = []
        self._boot_count = 0
        self._wake_count = 0
        self._in_flight = 0
        self._last_activity = time.monotonic()
        self._halt = threading.Event()
        self._server: SimHTTPServer | None = None
        self._listener_open = False  # mirrors _server, readable under _lock
        self._server_thread: threading.Thread | None = None
        self._placeholder: socket.socket | None = None
        self._control: SimHTTPServer | None = None
        self._wol_sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._started = False
        self._dav_apps = {name: self._build_dav_app(name) for name in self.users}
        self._app = NasApp(self)

    # --- setup -------------------------------------------------------------------------------

    @staticmethod
    def _check_users(users) -> dict[str, tuple[str, str]]:
        if not users:
            raise ValueError("at least one user is needed")
        checked = {}
        for name, entry in users.items():
            password, role = (entry, "user") if isinstance(entry, str) else entry
            if not name or any(c in name for c in "/\\:") or name in (".", ".."):
                raise ValueError(f"invalid user name {name!r}")
            checked[name] = (str(password), str(role))
        return checked

    def home_of(self, user: str) -> Path:
        """The directory `user` sees as the WebDAV root."""
        return self.root if self.users[user][1] == "admin" else self.root / "home" / user

    def _build_dav_app(self, user: str) -> WsgiDAVApp:
        share_root = self.home_of(user)
        share_root.mkdir(parents=True, exist_ok=True)
        password, role = self.users[user]
        return WsgiDAVApp({
            "provider_mapping": {DAV_PREFIX: str(share_root)},
            "property_manager": True,
            "lock_storage": True,
            "http_authenticator": {"domain_controller": None, "accept_basic": True,
                                   "accept_digest": False, "default_to_digest": False},
            "simple_dc": {"user_mapping": {"*": {user: {"password": password, "roles": [role]}}}},
            "verbose": 1,
            "logging": {"enable": False},
            # directory_slash off: WsgiDAV's redirect drops the share prefix (/dav/x -> /x/)
            "dir_browser": {"enable": True, "directory_slash": False,
                            "response_trailer": "BaluHost (simulated)"},
        })

    def _dav_app_for(self, user: str | None) -> WsgiDAVApp:
        return self._dav_apps.get(user) or next(iter(self._dav_apps.values()))

    def user_id(self, name: str) -> int:
        return list(self.users).index(name) + 1

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "SimNas":
        """Open the WoL and control ports, and the main port if the initial state listens."""
        if self._started:
            return self
        self._stopping.clear()
        self._start_wol_listener()
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
                self._hold_placeholder()
        if self._state is PowerState.BOOTING:
            with self._lock:
                self._spawn(self._boot_after_delay, "boot", self._boot_generation)
        self._spawn(self._idle_loop, "idle")
        self._started = True
        return self

    def stop(self) -> None:
        """Close every port and stop every thread. Counters stay readable."""
        if not self._started:
            return
        self._stopping.set()
        with self._power_lock:
            if self._server is not None:
                self._close_listener()
            self._release_placeholder()
        if self._control is not None:
            self._control.stop()
            self._control = None
        if self._wol_sock is not None:
            self._wol_sock.close()
            self._wol_sock = None
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

    def _hold_placeholder(self) -> None:
        """Keep the port number reserved with a bound, non-listening socket (refuses connects)."""
        if self._placeholder is not None:
            return
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._placeholder = sock

    def _release_placeholder(self) -> None:
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    def _open_listener(self) -> None:  # with _power_lock held
        if self.port == 0:
            # Pick the number ourselves: cheroot sets SO_REUSEADDR only for a fixed port, and
            # without it (inherited by accepted sockets) the port could not be re-bound at boot.
            self._hold_placeholder()
        self._release_placeholder()
        self._halt = threading.Event()
        last_error: OSError | None = None
        for _attempt in range(100):
            server = SimHTTPServer((self.host, self.port), self._app, threads=self.threads,
                                   name="BaluHost-sim")
            try:
                server.prepare()  # binds with SO_REUSEADDR (cheroot sets it for fixed ports)
                break
            except OSError as exc:
                last_error = exc
                time.sleep(0.02)
        else:
            raise last_error  # type: ignore[misc]
        self.port = server.bind_addr[1]
        self._server = server
        self._server_thread = threading.Thread(target=server.serve, daemon=True,
                                               name=f"sim-nas http :{self.port}")
        self._server_thread.start()
        self._set_listener_open(True)

    def _close_listener(self) -> None:  # with _power_lock held
        server, thread = self._server, self._server_thread
        self._server = self._server_thread = None
        self._halt.set()
        if server is not None:
            server.stop()
        if thread is not None:
            thread.join(2.0)
        if not self._stopping.is_set():
            self._hold_placeholder()
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
            if want and self._server is None:
                self._open_listener()
            elif not want and self._server is not None:
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
                    self._wake_count += 1
                    self._set_state(PowerState.AWAKE)
                    return
                self._boot_generation += 1
            if self._server is None and self._started:
                self._open_listener()
            with self._lock:
                self._boot_count += 1
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
            if self._server is None:
                self._open_listener()
            with self._lock:
                if generation == self._boot_generation and self._state is PowerState.BOOTING:
                    self._boot_count += 1
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

    def _start_wol_listener(self) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET,
                             socket.SOCK_DGRAM)
        sock.bind((self.host, self.wol_port))
        sock.settimeout(0.05)
        self.wol_port = sock.getsockname()[1]
        self._wol_sock = sock
        self._spawn(self._wol_loop, "wol", sock)

    def _wol_loop(self, sock: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                data, sender = sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            self._on_datagram(data, sender)

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
                    self._wake_count += 1
                    self._set_state(PowerState.AWAKE)
                    acted = True
            self._packets.append(MagicPacketRecord(time.time(), format_mac(mac), matched, state,
                                                   acted, tuple(sender[:2])))

    # --- request bookkeeping (called by NasApp) ----------------------------------------------

    def _arrive(self, method: str, path: str, user: str | None) -> _Arrival:
        with self._lock:
            state = self._state
            record = RequestRecord(method, path, time.time(), state, user)
            self._requests.append(record)
            self._in_flight += 1
            self._last_activity = time.monotonic()
            wait_s = 0.0
            if state is PowerState.SOFT_SLEEP:
                if self._spinup_done_at is None:
                    self._spinup_done_at = time.monotonic() + self.spinup_delay_s
                wait_s = max(0.0, self._spinup_done_at - time.monotonic())
            accepted = state not in (PowerState.SUSPENDED, PowerState.OFF)
            return _Arrival(record, self._halt, accepted, wait_s, state is PowerState.SOFT_SLEEP)

    def _spun_up(self, arrival: _Arrival) -> None:
        if arrival.woke:
            with self._lock:
                if self._state is PowerState.SOFT_SLEEP:
                    self._wake_count += 1
                    self._set_state(PowerState.AWAKE)

    def _finish(self, record: RequestRecord, body) -> None:
        with self._lock:
            if record.duration_s is not None:
                return
            record.duration_s = time.time() - record.time_s
            record.bytes_sent = body.bytes_sent if body is not None else 0
            self._in_flight -= 1
            self._last_activity = time.monotonic()

    # --- counters ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def request_count(self, method: str | None = None, path: str | None = None, *,
                      path_prefix: str | None = None, state: PowerState | str | None = None,
                      user: str | None = None, since_s: float | None = None) -> int:
        """How many recorded requests match every given filter."""
        state = PowerState(state) if state is not None else None
        return sum(
            1 for r in self.requests
            if (method is None or r.method == method.upper())
            and (path is None or r.path == path)
            and (path_prefix is None or r.path.startswith(path_prefix))
            and (state is None or r.state is state)
            and (user is None or r.user == user)
            and (since_s is None or r.time_s >= since_s))

    @property
    def magic_packets(self) -> list[MagicPacketRecord]:
        """Every magic packet received, for this NAS's MAC or not (see `.matched`)."""
        with self._lock:
            return list(self._packets)

    @property
    def magic_packet_count(self) -> int:
        """Magic packets received for this NAS's MAC."""
        with self._lock:
            return sum(1 for p in self._packets if p.matched)

    @property
    def boot_count(self) -> int:
        return self._boot_count

    @property
    def wake_count(self) -> int:
        """Wake-ups from soft sleep (by a request or a magic packet)."""
        return self._wake_count

    def reset_counters(self) -> None:
        with self._lock:
            self._requests.clear()
            self._packets.clear()
            self._boot_count = 0
            self._wake_count = 0

    # --- views -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

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
                "boot_count": self._boot_count, "wake_count": self._wake_count,
                "boot_delay_s": self.boot_delay_s, "spinup_delay_s": self.spinup_delay_s,
                "idle_suspend_s": self.idle_suspend_s, "users": list(self.users),
            }

    def counters_dict(self) -> dict:
        with self._lock:
            return {
                "request_count": len(self._requests),
                "requests": [r.to_dict() for r in self._requests],
                "magic_packet_count": sum(1 for p in self._packets if p.matched),
                "magic_packets": [p.to_dict() for p in self._packets],
                "boot_count": self._boot_count, "wake_count": self._wake_count,
            }

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


# --- command line --------------------------------------------------------------------------------


def parse_user_spec(spec: str) -> tuple[str, str, str]:
    """``name:password[:role]`` -> (name, password, role). Role defaults to "admin" for a user
    named admin, else "user"."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise ValueError(f"user must be name:password[:role], got {spec!r}")
    name, password = parts[0], parts[1]
    role = parts[2] if len(parts) == 3 and parts[2] else ("admin" if name == "admin" else "user")
    return name, password, role


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m balupi.sim.nas",
                                     description="Run a simulated BaluHost NAS on 127.0.0.1.")
    parser.add_argument("--root", required=True, help="storage root directory")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="main port (WebDAV + REST); 0: free")
    parser.add_argument("--wol-port", type=int, default=0, help="UDP port for magic packets")
    parser.add_argument("--control-port", type=int, default=0, help="JSON control port")
    parser.add_argument("--mac", default=DEFAULT_MAC)
    parser.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD[:ROLE]")
    parser.add_argument("--boot-delay-s", type=float, default=0.2)
    parser.add_argument("--spinup-delay-s", type=float, default=0.0)
    parser.add_argument("--sleep-mode", choices=[m.value for m in SleepMode],
                        default=SleepMode.SUSPEND.value)
    parser.add_argument("--idle-suspend-s", type=float, default=None)
    parser.add_argument("--initial-state", choices=[s.value for s in PowerState],
                        default=PowerState.AWAKE.value)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seed-sample-tree", action="store_true",
                        help="write a small sample tree into the root first")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("wsgidav").setLevel(logging.ERROR)
    try:
        users = {name: (password, role)
                 for name, password, role in map(parse_user_spec, args.user)} or None
        sim = SimNas(args.root, users=users, host=args.host, port=args.port,
                     wol_port=args.wol_port, control_port=args.control_port, mac=args.mac,
                     boot_delay_s=args.boot_delay_s, spinup_delay_s=args.spinup_delay_s,
                     sleep_mode=args.sleep_mode, idle_suspend_s=args.idle_suspend_s,
                     initial_state=args.initial_state, threads=args.threads)
    except ValueError as exc:
        parser.error(str(exc))
    if args.seed_sample_tree:
        seed_sample_tree(sim.root, home_users=[n for n, (_p, r) in sim.users.items()
                                               if r != "admin"])

    def on_signal(signum, _frame):
        sim.shutdown_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sim.start()
    status = sim.status_dict()
    print(json.dumps({"event": "ready", "pid": os.getpid(), **{k: status[k] for k in (
        "host", "port", "wol_port", "control_port", "mac", "root", "base_url", "dav_url",
        "state", "users")}, "control_url": sim.control_url}), flush=True)
    try:
        while not sim.shutdown_requested.wait(0.2):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
