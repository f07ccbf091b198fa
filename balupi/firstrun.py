"""`balupi setup`: from nothing to a working config, in the terminal (every question is also a flag).

Steps, each skippable by a flag: find the NAS (an address, or DNS-SD browsing with python-zeroconf),
check BaluHost's `/api/health`, show and pin its certificate's fingerprint, check the login, read
its MAC address from the kernel's neighbour table (after talking to it, so the entry is fresh), a
Wake-on-LAN round trip (suspend through BaluHost's API, send the packet, time the boot) that sets
`nas_boot_time_s` and `nas_wake_timeout_s`, the cache location (mounted filesystems with free
space; a warning for the SD card), the plug that powers the NAS, a local admin password when there
is no NAS; then it writes the TOML file (mode 0600: it holds passwords) and prints the share's
address with the Pi's real address.

The neighbour table is `/proc/net/arp` (`--neighbour-table FILE` reads another file in the same
format instead: tests write one, as loopback has no neighbour entries), else `ip neigh`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from balupi.errors import BaluPiError

DEFAULT_CONFIG = Path("/etc/balupi/balupi.toml")
SERVICE_USER = "balupi"  # scripts/install.sh's; the files setup writes as root are handed to it
SERVICE_DATA_DIR = Path("/var/lib/balupi")
SERVICE_CACHE_DIR = Path("/srv/balupi/cache")
NEIGHBOUR_TABLE = Path("/proc/net/arp")
SUSPEND_WAIT_S = 90.0
BOOT_WAIT_S = 300.0
RESEND_S = 10.0
BROWSE_S = 3.0


class SetupError(BaluPiError):
    """A step cannot go on (a missing answer in a non-interactive run, a NAS that refuses)."""


@dataclass
class Asker:
    """Asks in the terminal, or answers from flags (non-interactive: a missing required answer is an error)."""

    interactive: bool
    out: Any = sys.stdout
    read: Callable[[str], str] = input
    secret: Callable[[str], str] = getpass.getpass

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def text(self, question: str, given: str | None, default: str | None = None, flag: str = "",
             hidden: bool = False, required: bool = False) -> str:
        if given is not None:
            return given
        if not self.interactive:
            if default is not None or not required:
                return default or ""
            raise SetupError(f"{question}: not asked in a non-interactive run; give {flag}")
        shown = f" [{default}]" if default else ""
        answer = (self.secret if hidden else self.read)(f"{question}{shown}: ").strip()
        return answer or (default or "")

    def yes(self, question: str, given: bool | None, default: bool) -> bool:
        if given is not None:
            return given
        if not self.interactive:
            return default
        answer = self.read(f"{question} [{'Y/n' if default else 'y/N'}]: ").strip().lower()
        return default if not answer else answer.startswith("y")


@dataclass
class Result:
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    boot_s: float | None = None
    plug: dict | None = None


def bare_settings(prepare_dirs: bool = False, **overrides: Any):
    """Settings from defaults and `overrides` only (no file, no environment)."""
    from balupi.settings import load_settings

    return load_settings(env={"BALUPI_CONFIG": os.devnull}, cwd=Path(os.devnull), overrides=overrides,
                         prepare_dirs=prepare_dirs)


# -- the NAS ----------------------------------------------------------------------------------------


def browse(timeout_s: float = BROWSE_S, interfaces: Any = None) -> list[dict]:
    """WebDAV services announced by DNS-SD (`_webdav._tcp`, `_webdavs._tcp`): name, address, port, path."""
    from zeroconf import ServiceBrowser, Zeroconf

    found: dict[str, dict] = {}
    zc = Zeroconf(interfaces=interfaces) if interfaces is not None else Zeroconf()
    types = ["_webdav._tcp.local.", "_webdavs._tcp.local."]

    class Listener:
        def add_service(self, zc, type_, name):
            info = zc.get_service_info(type_, name, timeout=int(timeout_s * 1000))
            if info is None or not info.parsed_addresses():
                return
            props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
            scheme = "https" if type_.startswith("_webdavs") else "http"
            address = info.parsed_addresses()[0]
            host = f"[{address}]" if ":" in address else address
            found[name] = {"name": name.split(".")[0], "address": address, "port": info.port,
                           "url": f"{scheme}://{host}:{info.port}{props.get('path', '/') or '/'}"}

        def update_service(self, *args):
            pass

        def remove_service(self, *args):
            pass

    try:
        ServiceBrowser(zc, types, Listener())
        time.sleep(timeout_s)
    finally:
        zc.close()
    return sorted(found.values(), key=lambda f: f["name"])


def normalize_url(text: str) -> str:
    text = text.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    return text if parts.path else text + "/"


def neighbour_mac(ip: str, table: Path | None = None) -> str | None:
    """The MAC address the kernel's neighbour table holds for `ip` (complete entries only)."""
    source = table or NEIGHBOUR_TABLE
    try:
        lines = source.read_text().splitlines()[1:]
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[0] == ip and fields[2] != "0x0" and fields[3] != "00:00:00:00:00:00":
            return fields[3].lower()
    if table is None and shutil.which("ip"):
        try:
            out = subprocess.run(["ip", "neigh", "show", ip], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        words = out.split()
        if "lladdr" in words:
            return words[words.index("lladdr") + 1].lower()
    return None


def local_address_towards(host: str) -> str:
    """The Pi's own address on the way to `host` (a UDP socket's source address: nothing is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def lan_address() -> str:
    """The Pi's first non-loopback IPv4 address (for the URLs it prints when there is no NAS)."""
    import psutil

    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return "127.0.0.1"


def _session(pin: str = "", ca_file: str = ""):
    import requests

    from balupi.nas.tls import PinnedCertAdapter

    session = requests.Session()
    session.trust_env = False
    if pin:
        session.mount("https://", PinnedCertAdapter(pin))
    elif ca_file:
        session.verify = ca_file
    return session


def suspend_and_time_a_wake(settings: dict, ask: Asker) -> float:
    """Suspend the NAS through BaluHost's API, wait until its port goes quiet, send magic packets and
    time until it answers again. Returns the boot time in seconds."""
    from balupi.nas.monitor import _tcp_probe, webdav_endpoint
    from balupi.nas.wol import parse_mac, send_magic_packet

    host, port = webdav_endpoint(settings["nas_webdav_url"])
    with _session(settings.get("nas_cert_sha256", ""), settings.get("nas_ca_file", "")) as http:
        base = settings["nas_url"].rstrip("/")
        login = http.post(base + "/api/auth/login", json={"username": settings["nas_username"],
                                                           "password": settings["nas_password"]}, timeout=15)
        if login.status_code != 200:
            raise SetupError(f"BaluHost refused the login for the suspend ({login.status_code})")
        token = login.json()["access_token"]
        ask.say("Suspending the NAS through BaluHost's API ...")
        http.post(base + "/api/system/sleep/suspend", headers={"Authorization": f"Bearer {token}"}, timeout=15)
    deadline = time.monotonic() + SUSPEND_WAIT_S
    while _tcp_probe(host, port, 1.0):
        if time.monotonic() > deadline:
            raise SetupError(f"the NAS still answers {SUSPEND_WAIT_S:g} s after the suspend request")
        time.sleep(0.2)
    time.sleep(0.5)
    mac = parse_mac(settings["nas_mac_address"])
    wol = (settings.get("wol_address", "255.255.255.255"), int(settings.get("wol_port", 9)))
    ask.say(f"The NAS sleeps. Sending magic packets to {wol[0]}:{wol[1]} and timing the boot ...")
    started = time.monotonic()
    next_packet = started
    while True:
        now = time.monotonic()
        if now - started > BOOT_WAIT_S:
            raise SetupError(f"the NAS did not wake within {BOOT_WAIT_S:g} s: check Wake-on-LAN (see the README's "
                             "checklist) and the MAC address")
        if now >= next_packet:
            send_magic_packet(mac, *wol)
            next_packet = now + RESEND_S
        if _tcp_probe(host, port, 1.0):
            return time.monotonic() - started
        time.sleep(0.1)


def setup_nas(args: argparse.Namespace, ask: Asker, result: Result) -> bool:
    """The NAS steps. False when the household has none (yet)."""
    from balupi.nas.monitor import Reach, _tcp_probe, webdav_endpoint
    from balupi.nas.tls import certificate_problem, format_fingerprint, normalize_fingerprint, peer_fingerprint

    url = args.nas_url
    if url is None and ask.yes("Look for the NAS on the network (DNS-SD)?", args.browse, default=False):
        found = browse()
        for i, f in enumerate(found, 1):
            ask.say(f"  {i}. {f['name']}  {f['url']}")
        if found:
            pick = ask.text("Which one is the NAS (number, or empty for none of them)", None, "1")
            if pick.isdigit() and 1 <= int(pick) <= len(found):
                url = found[int(pick) - 1]["url"]
        else:
            ask.say("No WebDAV service announced itself.")
    url = ask.text("The NAS's WebDAV address (e.g. https://192.168.178.53:8080/webdav/; empty: no NAS yet)", url)
    if not url:
        return False
    url = normalize_url(url)
    s = result.settings
    s["nas_webdav_url"] = url
    parts = urlsplit(url)
    s["nas_url"] = normalize_url(args.nas_api_url or f"{parts.scheme}://{parts.netloc}").rstrip("/")
    host, port = webdav_endpoint(url)
    reach = _tcp_probe(host, port, 3.0)
    if reach is Reach.REFUSED:
        raise SetupError(f"{host}:{port} refuses connections: check the address and port")
    if reach is Reach.SILENT:
        raise SetupError(f"{host}:{port} answers nothing: the NAS is asleep or off; switch it on and run setup again")

    if parts.scheme == "https":
        if args.ca_file:
            s["nas_ca_file"] = args.ca_file
        probe_settings = bare_settings(nas_ca_file=args.ca_file or "", nas_cert_sha256=args.nas_cert_sha256 or "")
        problem = certificate_problem(host, port, probe_settings, 5.0)
        found = peer_fingerprint(host, port, 5.0)
        if problem:
            shown = format_fingerprint(found) if found else "unknown"
            ask.say(f"The NAS's certificate is not trusted by this Pi: {problem}")
            ask.say(f"Its SHA-256 fingerprint: {shown}")
            ask.say("Compare it with the one your NAS shows (BaluHost: Settings, Certificate; or on the NAS: "
                    "openssl x509 -in cert.pem -noout -fingerprint -sha256).")
            if not found or not ask.yes("Pin this certificate (trust exactly this one)?", args.pin_certificate, default=False):
                raise SetupError("the NAS's certificate is not trusted; pin it (--pin-certificate) or name its CA (--ca-file)")
            s["nas_cert_sha256"] = shown
        elif args.nas_cert_sha256:
            s["nas_cert_sha256"] = format_fingerprint(normalize_fingerprint(args.nas_cert_sha256))
        ask.say(f"Certificate {format_fingerprint(found or '')}: trusted.")

    with _session(s.get("nas_cert_sha256", ""), s.get("nas_ca_file", "")) as http:
        try:
            health = http.get(s["nas_url"] + "/api/health", timeout=10)
            version = health.json().get("version") if health.ok else None
        except Exception:
            version = None
        ask.say(f"BaluHost {version} answers at {s['nas_url']}." if version else
                f"No BaluHost API at {s['nas_url']} (/api/health): BaluPi will only use WebDAV.")
        for _attempt in range(3 if ask.interactive else 1):
            user = ask.text("NAS user for BaluPi's own requests (an admin sees every folder)", args.nas_user,
                            flag="--nas-user", required=True)
            password = ask.text(f"Password of {user}", args.nas_password, flag="--nas-password", hidden=True,
                                required=True)
            answer = http.request("PROPFIND", url, headers={"Depth": "0"}, auth=(user, password), timeout=15)
            if answer.status_code in (200, 207):
                s["nas_username"], s["nas_password"] = user, password
                ask.say(f"The NAS accepts {user}.")
                break
            ask.say(f"The NAS refused {user} ({answer.status_code}).")
            args.nas_user = args.nas_password = None
        else:
            raise SetupError("the NAS refused the login")

    ip = socket.gethostbyname(host)
    mac = args.mac or neighbour_mac(ip, Path(args.neighbour_table) if args.neighbour_table else None)
    if mac:
        ask.say(f"The NAS's MAC address (from the neighbour table): {mac}")
    mac = ask.text("The NAS's MAC address, for Wake-on-LAN (empty: BaluPi cannot wake it)", args.mac, mac or "")
    if mac:
        from balupi.nas.wol import format_mac, parse_mac

        s["nas_mac_address"] = format_mac(parse_mac(mac))
    if args.wol_address:
        s["wol_address"] = args.wol_address
    if args.wol_port:
        s["wol_port"] = args.wol_port
    if mac and ask.yes("Try Wake-on-LAN now (suspends the NAS, wakes it, and times the boot)?", args.wol_test, default=False):
        boot_s = suspend_and_time_a_wake(s, ask)
        result.boot_s = boot_s
        s["nas_boot_time_s"] = float(math.ceil(boot_s + 1))
        s["nas_wake_timeout_s"] = float(min(55, max(10, math.ceil(boot_s * 1.5 + 2))))
        ask.say(f"The NAS woke and answered after {boot_s:.1f} s: nas_boot_time_s = {s['nas_boot_time_s']:g}, "
                f"nas_wake_timeout_s = {s['nas_wake_timeout_s']:g}.")
        if boot_s > 55:
            result.notes.append(f"The NAS takes {boot_s:.0f} s to wake: longer than clients wait; the first open of an "
                                "uncached file answers 503 and the client retries.")
    return True


# -- the Pi -----------------------------------------------------------------------------------------


def filesystems() -> list[tuple[str, str, float]]:
    """(mount point, device, free GB) of the mounted block-device filesystems."""
    out = []
    seen = set()
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        device, point = line.split()[:2]
        if not device.startswith("/dev/") or device in seen:
            continue
        seen.add(device)
        try:
            out.append((point, device, shutil.disk_usage(point).free / 1e9))
        except OSError:
            continue
    return out


def setup_cache(args: argparse.Namespace, ask: Asker, result: Result) -> None:
    from balupi.doctor import mount_of, on_sd_card

    if ask.interactive and args.cache_dir is None:
        ask.say("Mounted filesystems:")
        for point, device, free_gb in filesystems():
            ask.say(f"  {point:<24} {device:<18} {free_gb:8.1f} GB free" + ("  (the SD card)" if on_sd_card(device) else ""))
    cache = ask.text("Folder for the file cache (on the SSD)", args.cache_dir, args.default_cache_dir)
    if cache:
        result.settings["cache_dir"] = cache
        _point, device, _fstype = mount_of(Path(cache))
        if on_sd_card(device):
            ask.say(f"Warning: {cache} is on the SD card ({device}), which a cache wears out; mount the SSD and choose a folder on it.")
            result.notes.append(f"The cache is on the SD card ({device}).")


def setup_plug(args: argparse.Namespace, ask: Asker, result: Result) -> None:
    from balupi.db import open_database
    from balupi.energy.model import PlugRole
    from balupi.energy.service import EnergyService
    from balupi.events import Events

    target = args.plug
    wants = target is not None or ask.yes("Is the NAS on a Tapo smart plug (P110/P115) that BaluPi should read?",
                                          args.discover_plugs, default=False)
    if not wants:
        return
    user = ask.text("Tapo account e-mail", args.tapo_user, flag="--tapo-user", required=True)
    password = ask.text("Tapo account password", args.tapo_password, flag="--tapo-password", hidden=True, required=True)
    result.settings.update(tapo_username=user, tapo_password=password)
    if args.tapo_discovery_target:
        result.settings["tapo_discovery_target"] = args.tapo_discovery_target
    overrides = {k: v for k, v in result.settings.items() if k in ("tapo_username", "tapo_password", "tapo_discovery_target",
                                                                   "cache_dir")}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    settings = bare_settings(prepare_dirs=True, **overrides)
    db = open_database(Path(settings.data_dir) / "balupi.db")
    service = EnergyService(settings, db, Events())
    service.start()
    try:
        if target is None:
            ask.say("Looking for plugs ...")
            found = [f for f in service.discover() if not f.get("error_kind")]
            for i, f in enumerate(found, 1):
                ask.say(f"  {i}. {f.get('name') or '-'}  {f['host']}  {f.get('model') or ''}")
            if not found:
                ask.say("No plug answered (add one later: balupi plugs add ADDRESS).")
                return
            pick = ask.text("Which plug powers the NAS (number)", None, "1")
            chosen = found[int(pick) - 1] if pick.isdigit() and 1 <= int(pick) <= len(found) else found[0]
            target = chosen["host"] + (f":{chosen['port']}" if chosen.get("port") not in (None, 80) else "")
        host, _, port = target.partition(":")
        existing = next((p for p in service.plugs() if p.role is PlugRole.NAS), None)
        if existing is not None:
            service.remove_plug(existing.id)
        plug = service.add_plug(host, int(port) if port else None, args.plug_name or "NAS", PlugRole.NAS)
        result.plug = {"id": plug.id, "name": plug.name, "host": target, "model": plug.model}
        ask.say(f"Plug {plug.name} ({plug.model}) at {target} now measures the NAS.")
    finally:
        service.stop()
        db.close()


# -- writing --------------------------------------------------------------------------------------


def toml_text(settings: dict[str, Any]) -> str:
    lines = ["# Written by `balupi setup`; every other setting keeps its default (balupi config example-toml).", ""]
    for name, value in settings.items():
        lines.append(f"{name} = {json.dumps(value)}")  # JSON strings, numbers and booleans are TOML too
    return "\n".join(lines) + "\n"


def hand_over(paths: list[Path]) -> str | None:
    """Run as root with the service's user present: give it `paths` (it must read the config and
    write the database). Returns the user's name, or None when nothing was done."""
    import pwd

    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    for path in paths:
        if path.exists():
            os.chown(path, user.pw_uid, user.pw_gid)
    return SERVICE_USER


def write_config(path: Path, settings: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(toml_text(settings))
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def run(args: argparse.Namespace, ask: Asker | None = None) -> Result:
    service_install = Path(args.config) == DEFAULT_CONFIG and SERVICE_DATA_DIR.is_dir()
    if args.data_dir is None and service_install:  # the unit's folders (etc/balupi.service)
        args.data_dir = str(SERVICE_DATA_DIR)
        if args.cache_dir is None and not sys.stdin.isatty() and SERVICE_CACHE_DIR.is_dir():
            args.cache_dir = str(SERVICE_CACHE_DIR)
    interactive = not args.non_interactive and sys.stdin.isatty()
    ask = ask or Asker(interactive)
    result = Result()
    args.default_cache_dir = str(bare_settings(**({"data_dir": args.data_dir} if args.data_dir else {})).cache_dir)
    ask.say("BaluPi setup. Every question is also a flag (balupi setup --help).")
    has_nas = setup_nas(args, ask, result)
    if not has_nas:
        admin = ask.text("No NAS: a password for the local user 'admin', so other machines may use BaluPi "
                         "(empty: only the Pi itself may)", args.local_admin_password, hidden=True)
        if admin:
            result.settings["local_admin_password"] = admin
    setup_cache(args, ask, result)
    chosen = result.settings.get("cache_dir")
    if service_install and chosen and Path(chosen) != SERVICE_CACHE_DIR:
        result.notes.append(f"The service sets BALUPI_CACHE_DIR={SERVICE_CACHE_DIR} (etc/balupi.service), which wins over "
                            f"the file: mount the SSD there, or run `systemctl edit balupi` and add "
                            f"Environment=BALUPI_CACHE_DIR={chosen} and ReadWritePaths={chosen}.")
    if args.data_dir:
        result.settings["data_dir"] = args.data_dir
    if args.port:
        result.settings["port"] = args.port
    if args.host:
        result.settings["host"] = args.host
    setup_plug(args, ask, result)
    config = Path(args.config)
    write_config(config, result.settings)
    data = Path(args.data_dir) if args.data_dir else None
    owner = hand_over([config] + ([data, *data.glob("balupi.db*"), data / "secret.key"] if data and result.plug else []))
    ask.say(f"\nWrote {config} (mode 0600: it holds passwords" + (f"; owned by {owner}, who runs the service)." if owner else ")."))
    port = result.settings.get("port", 8000)
    host = result.settings.get("host", "0.0.0.0")
    if host not in ("0.0.0.0", "::"):
        me = host
    elif has_nas:
        me = local_address_towards(urlsplit(result.settings["nas_webdav_url"]).hostname or "127.0.0.1")
    else:
        me = lan_address()
    base = f"http://{me}:{port}"
    ask.say(f"""
Start it: sudo systemctl restart balupi (or: BALUPI_CONFIG={config} balupi serve)
Check it: balupi doctor

  Share       {base}/dav/
  Dashboard   {base}/
  Health      {base}/api/health

Mount the share:
  Linux (GNOME Files, Dolphin): dav://{me}:{port}/dav/   (or davfs2: sudo mount -t davfs {base}/dav/ /mnt/nas)
  macOS Finder: Go, Connect to Server, {base}/dav/
  Windows Explorer: Map network drive, {base}/dav/ (see the README on Basic authentication over http)
  Android: a WebDAV file manager, server {me}, port {port}, path /dav/""")
    for note in result.notes:
        ask.say(f"Note: {note}")
    return result


def add_parser(sub) -> None:
    p = sub.add_parser("setup", help="first run: find and check the NAS, Wake-on-LAN, cache, plug; write the config",
                       description="Interactive first run (in a terminal). Every question is also a flag; with "
                                   "--non-interactive (or without a terminal) a question without its flag takes its "
                                   "default, and a required one is an error.")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help=f"the TOML file to write (default {DEFAULT_CONFIG})")
    p.add_argument("--non-interactive", action="store_true", help="ask nothing: flags and defaults only")
    p.add_argument("--nas-url", help="the NAS's WebDAV URL (empty string: no NAS)")
    p.add_argument("--nas-api-url", help="BaluHost's base URL (default: the WebDAV URL's scheme, host and port)")
    p.add_argument("--browse", action=argparse.BooleanOptionalAction, default=None,
                   help="look for the NAS by DNS-SD (_webdav._tcp)")
    p.add_argument("--nas-user", help="the NAS account BaluPi uses")
    p.add_argument("--nas-password", help="its password (better typed at the prompt)")
    p.add_argument("--pin-certificate", action=argparse.BooleanOptionalAction, default=None,
                   help="pin the certificate the NAS shows (its fingerprint is printed)")
    p.add_argument("--nas-cert-sha256", help="pin this fingerprint (setup checks that the NAS shows it)")
    p.add_argument("--ca-file", help="the CA (PEM) that signed the NAS's certificate")
    p.add_argument("--mac", help="the NAS's MAC address (default: read from the neighbour table)")
    p.add_argument("--neighbour-table", help=f"read MAC addresses from this file in {NEIGHBOUR_TABLE}'s format")
    p.add_argument("--wol-test", action=argparse.BooleanOptionalAction, default=None,
                   help="suspend the NAS, wake it and time the boot (sets nas_boot_time_s and nas_wake_timeout_s)")
    p.add_argument("--wol-address", help="where magic packets go (default 255.255.255.255)")
    p.add_argument("--wol-port", type=int, help="their UDP port (default 9)")
    p.add_argument("--cache-dir", help="the cache folder (on the SSD)")
    p.add_argument("--data-dir", help="the database folder (default: BaluPi's default)")
    p.add_argument("--port", type=int, help="BaluPi's port (default 8000)")
    p.add_argument("--host", help="address BaluPi listens on (default 0.0.0.0)")
    p.add_argument("--discover-plugs", action=argparse.BooleanOptionalAction, default=None,
                   help="look for Tapo plugs and choose the NAS's")
    p.add_argument("--plug", help="the NAS's plug, ADDRESS[:PORT] (no discovery)")
    p.add_argument("--plug-name", help="its name (default NAS)")
    p.add_argument("--tapo-user", help="the Tapo account e-mail")
    p.add_argument("--tapo-password", help="its password")
    p.add_argument("--tapo-discovery-target", help="where plug discovery probes (default 255.255.255.255)")
    p.add_argument("--local-admin-password", help="no NAS: the password of the local user admin")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    run(args)  # a step that cannot go on raises SetupError: one line on stderr, exit 1
    return 0
