"""`balupi demo`: BaluPi with a simulated NAS and a simulated smart plug, all on 127.0.0.1.

What it runs, in a temporary directory (removed at the end unless ``--keep``):

- a simulated BaluHost NAS (`balupi.sim.nas.SimNas`) seeded with the sample tree, one admin user
  (`DEMO_USER`/`DEMO_PASSWORD`), a boot delay of a few seconds so a wake-up can be watched, and
  its own idle suspend;
- a simulated Tapo P110 (`balupi.sim.plug.SimulatedPlug`) whose power follows the NAS's power
  state (`nas_power_w`), registered with BaluPi as the `nas` plug;
- BaluPi itself (`BaluPi` behind `Server`), configured against both from a settings file written
  into the temporary directory (so nothing from ``/etc/balupi`` or the environment leaks in).

Then it warms BaluPi's index as a client would (one PROPFIND walk of the tree and a few GETs,
with the demo user's credentials, while the NAS is awake), puts the NAS to sleep, waits until
BaluPi has noticed, prints the URLs and copy-pasteable curl commands, and prints every NAS state
change as it happens (BaluPi's belief from Event.NAS_STATE_CHANGED, and the simulator's actual
power state). SIGINT/SIGTERM, or ``--duration-s`` after it is ready, stop everything.

Traffic stays on loopback: the NAS URLs, the magic packets (to the sim's own UDP port, never a
broadcast address), the plug and plug discovery all point at 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO
from urllib.parse import quote, unquote, urlsplit

import requests
from defusedxml import ElementTree

from balupi.errors import BaluPiError, ConfigError
from balupi.events import Event
from balupi.nas.monitor import NasState

HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEMO_USER, DEMO_PASSWORD = "demo", "demo"
TAPO_USER, TAPO_PASSWORD = "demo@balupi.invalid", "demo-plug"
DEFAULT_BOOT_DELAY_S = 3.0
DEFAULT_IDLE_SUSPEND_S = 60.0
ENERGY_SAMPLE_INTERVAL_S = 5  # the shortest BaluPi allows

# What the plug reads in each power state of the simulated NAS, in watts.
ASLEEP_POWER_W = 1.5  # S3 suspend
OFF_POWER_W = 0.5
SOFT_SLEEP_POWER_W = 6.0  # services paused, disks spun down
BOOTING_POWER_W = 40.0
IDLE_POWER_W = 25.0
BUSY_POWER_W = 45.0
BUSY_WINDOW_S = 5.0  # the NAS counts as busy for this long after a request ended

# Warm-up: these are fetched once (cached); UNCACHED_EXAMPLE is left for the wake-up.
WARM_FILES = (
    "Documents/household notes.md",
    "Documents/Grüße.txt",
    "Photos/2024/Summer Holiday/beach sunset.png",
    "Music/Playlists/Chill.m3u",
)
CACHED_EXAMPLE = "Documents/household notes.md"
UNCACHED_EXAMPLE = "Documents/Einkaufsliste.txt"

BELIEF_TIMEOUT_S = 20.0
WARM_UP_CACHE_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 60.0


def nas_power_w(nas, now_s: float | None = None) -> float:
    """What a plug in front of the simulated NAS reads now: by power state, and busy (recent or
    running requests) or idle while awake."""
    from balupi.sim.nas import PowerState

    state = nas.state
    if state is not PowerState.AWAKE:
        return {
            PowerState.BOOTING: BOOTING_POWER_W,
            PowerState.SOFT_SLEEP: SOFT_SLEEP_POWER_W,
            PowerState.SUSPENDED: ASLEEP_POWER_W,
            PowerState.OFF: OFF_POWER_W,
        }[state]
    now_s = time.time() if now_s is None else now_s
    for record in reversed(nas.requests[-50:]):
        if record.duration_s is None or record.time_s + record.duration_s >= now_s - BUSY_WINDOW_S:
            return BUSY_POWER_W
    return IDLE_POWER_W


def demo_settings(tmp: Path, port: int, nas, boot_delay_s: float, log_level: str) -> dict:
    """BaluPi's settings for the demo: everything on loopback, data in `tmp`."""
    return {
        "host": HOST,
        "port": port,
        "log_level": log_level.upper(),
        "data_dir": str(tmp / "data"),
        "cache_dir": str(tmp / "cache"),
        "nas_webdav_url": nas.dav_url,
        "nas_url": nas.base_url,
        "nas_username": DEMO_USER,
        "nas_password": DEMO_PASSWORD,
        "nas_mac_address": nas.status_dict()["mac"],
        "wol_address": HOST,
        "wol_port": nas.wol_port,
        "nas_boot_time_s": max(1.0, boot_delay_s + 1.0),
        "nas_wol_resend_s": 2.0,
        "nas_ready_poll_s": 0.25,
        "nas_probe_interval_s": 15.0,
        # No prefetch: BaluPi would use the first wake to fetch the whole (small) sample tree, and
        # no file would be left to show a wake with.
        "prefetch_budget_mb": 0.0,
        "tapo_discovery_target": HOST,
        "dnssd_enabled": False,  # nothing to announce: the demo is for this machine only
        "tapo_username": TAPO_USER,
        "tapo_password": TAPO_PASSWORD,
        "energy_sample_interval_seconds": ENERGY_SAMPLE_INTERVAL_S,
        # Thresholds that fit the simulated plug's readings (asleep 1.5 W, idle 25 W, busy 45 W),
        # and no dwell time, so the demo reacts at the next poll.
        "nas_power_off_below_w": 1.0,
        "nas_power_standby_below_w": 8.0,
        "nas_power_idle_below_w": 35.0,
        "nas_power_hysteresis_w": 2.0,
        "nas_power_min_dwell_s": 0.0,
    }


def write_settings_file(path: Path, settings: dict) -> None:
    """The settings as a TOML file (mode 0600: it holds the demo's passwords)."""
    lines = ["# Settings of a `balupi demo` run (written by balupi/demo.py).", ""]
    for name, value in settings.items():
        lines.append(f"{name} = {json.dumps(value)}")  # JSON scalars are valid TOML
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def port_is_free(port: int) -> bool:
    """True when BaluPi could listen on 127.0.0.1:`port` now (cheroot uses SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


@dataclass
class DemoOptions:
    port: int | None = None  # None: DEFAULT_PORT, or a free one if that is taken
    duration_s: float | None = None  # stop by itself this long after it is ready
    keep: bool = False  # keep the temporary directory
    boot_delay_s: float = DEFAULT_BOOT_DELAY_S
    idle_suspend_s: float = DEFAULT_IDLE_SUSPEND_S
    log_level: str = "WARNING"


class Demo:
    """The running demo. `start()` builds and warms everything; `stop()` tears it all down."""

    def __init__(self, options: DemoOptions, out: TextIO | None = None):
        self.options = options
        self.out = out or sys.stdout
        self._print_lock = threading.Lock()
        self.stopping = threading.Event()
        self.tmp: Path | None = None
        self.nas = None
        self.plug = None
        self.server = None
        self.plug_registered = False
        self._watcher: threading.Thread | None = None
        self._cached: set[str] = set()
        self._cached_cond = threading.Condition()

    # -- output ----------------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        with self._print_lock:
            print(text, file=self.out, flush=True)

    def _event_line(self, text: str) -> None:
        self.say(f"{time.strftime('%H:%M:%S')}  {text}")

    def _on_nas_state(self, from_state: NasState, to_state: NasState, cause: str, **_: object) -> None:
        self._event_line(f"BaluPi: NAS {from_state.value} -> {to_state.value} ({cause})")

    def _on_nas_power_state(self, from_state, to_state, power_w: float, **_: object) -> None:
        before = from_state.value if from_state is not None else "none"
        self._event_line(f"plug: the NAS draws {power_w:g} W ({before} -> {to_state.value})")

    def _on_cache_file_added(self, path: str, **_: object) -> None:
        with self._cached_cond:
            self._cached.add(path.strip("/"))
            self._cached_cond.notify_all()

    def _watch_sim(self) -> None:
        """Print the simulated NAS's own power state changes (what the hardware really does)."""
        last = self.nas.state
        while not self.stopping.wait(0.1):
            state = self.nas.state
            if state is not last:
                self._event_line(f"simulated NAS: {last.value} -> {state.value} "
                                 f"(plug reads about {nas_power_w(self.nas):g} W)")
                last = state

    # -- start-up --------------------------------------------------------------------------------

    def start(self) -> None:
        from balupi.app import BaluPi
        from balupi.log import setup_logging
        from balupi.server import Server
        from balupi.settings import load_settings
        from balupi.sim.nas import DEFAULT_MAC, SimNas, seed_sample_tree
        from balupi.sim.plug import SimulatedPlug

        o = self.options
        port = DEFAULT_PORT if o.port is None else o.port
        if not port_is_free(port):
            if o.port is not None:
                raise ConfigError(f"--port {port}: 127.0.0.1:{port} is in use; choose another port "
                                  "or leave --port out to get a free one")
            self.say(f"Port {port} is in use; using a free port instead (pass --port to choose one).")
            port = 0
        self.tmp = Path(tempfile.mkdtemp(prefix="balupi-demo-"))
        nas_root = self.tmp / "nas"
        seed_sample_tree(nas_root)
        self.nas = SimNas(nas_root, users={DEMO_USER: (DEMO_PASSWORD, "admin")}, mac=DEFAULT_MAC,
                          control_port=None, boot_delay_s=o.boot_delay_s, idle_suspend_s=None).start()
        self.plug = SimulatedPlug(username=TAPO_USER, password=TAPO_PASSWORD, nickname="NAS").start()
        self.plug.follow(lambda: nas_power_w(self.nas), tick_s=1.0)

        settings_path = self.tmp / "balupi.toml"
        write_settings_file(settings_path, demo_settings(self.tmp, port, self.nas, o.boot_delay_s, o.log_level))
        loaded = load_settings(env={"BALUPI_CONFIG": str(settings_path)}, cwd=self.tmp)
        setup_logging(loaded.log_level)
        app = BaluPi(loaded)
        app.events.subscribe(Event.NAS_STATE_CHANGED, self._on_nas_state)
        app.events.subscribe(Event.CACHE_FILE_ADDED, self._on_cache_file_added)
        app.events.subscribe(Event.NAS_POWER_STATE_CHANGED, self._on_nas_power_state)
        self.server = Server(app)
        self.say(f"Starting: simulated NAS on {self.nas.base_url}, simulated plug on {HOST}:{self.plug.port}, "
                 "BaluPi ...")
        self.server.start()
        self._register_plug(app)
        self._await_belief(app, NasState.AWAKE, "awake")
        folders, files, cached = self._warm_up()
        self.say(f"Index warmed: {folders} folders and {files} files listed, {cached} files cached. "
                 "Putting the NAS to sleep ...")
        if self.stopping.is_set():
            return
        self._put_nas_to_sleep(app)
        if self.stopping.is_set():
            return
        self.nas.configure(idle_suspend_s=o.idle_suspend_s)
        self._watcher = threading.Thread(target=self._watch_sim, name="demo-sim-watch", daemon=True)
        self._watcher.start()
        self._print_banner()

    def _register_plug(self, app) -> None:
        """Add the simulated plug as the `nas` plug through the energy monitor's Python API."""
        from balupi.energy.model import PlugRole

        energy = app.energy
        try:
            energy.add_plug(HOST, self.plug.port, "NAS (simulated)", PlugRole.NAS)
        except Exception as exc:  # the demo still shows the NAS flow without energy readings
            self.say(f"(Could not register the simulated plug with BaluPi: {exc}; continuing without it.)")
            return
        self.plug_registered = True
        energy.poll_all(wait=True)

    def _session(self) -> requests.Session:
        http = requests.Session()
        http.trust_env = False  # never through a proxy: everything is on loopback
        http.auth = (DEMO_USER, DEMO_PASSWORD)
        return http

    def _warm_up(self) -> tuple[int, int, int]:
        """List every folder (PROPFIND Depth 1) and GET `WARM_FILES`, through BaluPi, as a client.
        Returns the numbers of folders and files listed, and of files cached."""
        dav = self.server.url + "/dav"
        http = self._session()
        todo, folders, files = ["/"], 0, 0
        while todo and not self.stopping.is_set():
            path = todo.pop()
            response = http.request("PROPFIND", dav + quote(path), headers={"Depth": "1"}, timeout=HTTP_TIMEOUT_S)
            if response.status_code != 207:
                raise BaluPiError(f"demo warm-up: PROPFIND {path} answered {response.status_code}")
            folders += 1
            for href, is_dir in _members(response.content):
                member = unquote(urlsplit(href).path).removeprefix("/dav")
                if member.rstrip("/") == path.rstrip("/"):
                    continue
                if is_dir:
                    todo.append(member.rstrip("/") + "/")
                else:
                    files += 1
        for name in WARM_FILES:
            response = http.get(dav + "/" + quote(name), timeout=HTTP_TIMEOUT_S)
            if response.status_code != 200:
                raise BaluPiError(f"demo warm-up: GET /{name} answered {response.status_code}")
        # A download is published to the cache just after its last byte went out (BaluPi checks
        # the ETag first): wait for that, or the NAS would go to sleep under it.
        with self._cached_cond:
            if not self._cached_cond.wait_for(lambda: self._cached >= set(WARM_FILES), WARM_UP_CACHE_TIMEOUT_S):
                missing = ", ".join(sorted(set(WARM_FILES) - self._cached))
                self.say(f"(Not cached after {WARM_UP_CACHE_TIMEOUT_S:g} s: {missing}; opening them will wake the NAS.)")
            return folders, files, len(self._cached & set(WARM_FILES))

    def _put_nas_to_sleep(self, app) -> None:
        """Suspend the simulated NAS and wait until BaluPi believes it asleep."""
        from balupi.sim.nas import PowerState

        self.nas.suspend()
        self.nas.wait_for_state(PowerState.SUSPENDED, 10.0)
        self._await_belief(app, NasState.ASLEEP, "going to sleep")
        self.nas.reset_counters()

    def _await_belief(self, app, state: NasState, what: str) -> None:
        """Wait until BaluPi's NAS state is `state`, asking for evidence now instead of at the next
        scheduled poll: a plug reading, or (without a fresh one) a TCP probe."""
        deadline = time.monotonic() + BELIEF_TIMEOUT_S
        while app.nas.state is not state and not self.stopping.is_set():
            if time.monotonic() > deadline:
                raise BaluPiError(f"demo: BaluPi did not notice the NAS {what} (it says {app.nas.state.value})")
            if self.plug_registered:
                app.energy.poll_all(wait=True)
            if app.nas.state is not state:
                app.nas.probe()  # does nothing while a plug reading is fresh
            if app.nas.state is not state:
                time.sleep(0.2)

    def _print_banner(self) -> None:
        base = self.server.url
        dav = base + "/dav/"
        auth = f"-u {DEMO_USER}:{DEMO_PASSWORD}"
        nas = self.nas.status_dict()
        keep = "kept after the demo (--keep)" if self.options.keep else "removed when the demo stops; --keep keeps it"
        plug = (f"{HOST}:{self.plug.port} (Tapo P110, account {TAPO_USER} / {TAPO_PASSWORD}), "
                + ("registered as the 'nas' plug" if self.plug_registered else "not registered"))
        self.say(f"""
BaluPi demo: BaluPi, a simulated NAS and a simulated smart plug, all on {HOST}.
Data (temporary): {self.tmp} ({keep})

  WebDAV share    {dav}   user {DEMO_USER}, password {DEMO_PASSWORD}
  Start page      {base}/   (no dashboard yet: a JSON pointer to the share and the API)
  Health          {base}/api/health
  NAS status      {base}/api/nas/status
  Energy now      {base}/api/energy/current
  Simulated NAS   {nas['dav_url']} (BaluHost, user {DEMO_USER}); Wake-on-LAN on UDP {HOST}:{nas['wol_port']}, MAC {nas['mac']}
                  boots {self.options.boot_delay_s:g} s after a magic packet, suspends after {self.options.idle_suspend_s:g} s without requests
  Simulated plug  {plug}

Try it (copy and paste into another terminal):

  # 1. Browse while the NAS sleeps: BaluPi answers from its index, the NAS stays asleep
  curl {auth} -X PROPFIND -H 'Depth: 1' {dav}Documents/
  curl {auth} {base}/api/nas/status

  # 2. Open a file BaluPi has cached: served from the Pi, the NAS stays asleep
  curl {auth} '{dav}{quote(CACHED_EXAMPLE)}'

  # 3. Open a file BaluPi has not cached: BaluPi wakes the NAS (watch the lines below), then serves it
  curl {auth} '{dav}{quote(UNCACHED_EXAMPLE)}'

  # 4. What the plug measures, and the NAS state BaluPi believes
  curl {auth} {base}/api/energy/current
  curl {base}/api/health

  In a file manager: dav://{dav.removeprefix('http://')} (GNOME, KDE) or {dav} (macOS Finder, Windows).

Ready: the NAS is asleep. NAS state changes appear below as they happen. Ctrl-C stops the demo.
""")

    # -- running and stopping --------------------------------------------------------------------

    def wait(self) -> None:
        """Block until stop is asked for (signal) or `duration_s` has passed."""
        self.stopping.wait(self.options.duration_s)

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.stop()
        if self._watcher is not None:
            self._watcher.join(2.0)
        if self.plug is not None:
            self.plug.stop()
        if self.nas is not None:
            self.nas.stop()
        if self.tmp is not None:
            if self.options.keep:
                self.say(f"Demo stopped; its data is kept in {self.tmp}")
            else:
                _remove_tree(self.tmp)
                self.say("Demo stopped; temporary data removed." if not self.tmp.exists()
                         else f"Demo stopped; could not remove {self.tmp}")


def _members(body: bytes) -> list[tuple[str, bool]]:
    """(href, is_collection) of every response in a PROPFIND multistatus."""
    ns = "{DAV:}"
    out = []
    for response in ElementTree.fromstring(body).iter(ns + "response"):
        href = response.findtext(ns + "href") or ""
        is_dir = response.find(f".//{ns}resourcetype/{ns}collection") is not None
        out.append((href, is_dir))
    return out


def _remove_tree(path: Path) -> None:
    for _attempt in range(5):  # a thread abandoned at shutdown may still be closing a file
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.2)


def run(options: DemoOptions, install_signals: bool = True,
        on_ready: Callable[[Demo], None] | None = None) -> int:
    """Run the demo until SIGINT/SIGTERM or `options.duration_s`; always clean up. Exit status."""
    demo = Demo(options)
    if install_signals:
        def on_signal(signum, _frame):
            demo.say(f"\nReceived {signal.Signals(signum).name}: stopping ...")
            demo.stopping.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    try:
        demo.start()
        if on_ready is not None:
            on_ready(demo)
        demo.wait()
    finally:
        demo.stop()
    return 0
