"""`balupi doctor`: checks everything a running install depends on, one verdict line each, with the fix.

Each check is a function returning `Check`s; a check that needs what an earlier one found broken
is skipped with the reason (no NAS login check when its port refuses). Checks talk to the NAS
only as far as asked: a TCP connect, a TLS handshake, one unauthenticated and one authenticated
PROPFIND of the WebDAV root (this keeps an awake NAS awake a little longer; a sleeping NAS is
never woken: its HTTP checks are skipped).
"""

from __future__ import annotations

import enum
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from balupi.db import DB_FILENAME
from balupi.energy.queries import newest_sample_at, plug_addresses
from balupi.nas.monitor import newest_transition_at
from balupi.errors import ConfigError
from balupi.settings import Settings, find_config_file, load_settings

CLOCK_SLACK_S = 300.0  # the clock may be this far behind the newest stored time before it counts as wrong
EARLIEST_SANE_YEAR = 2025


class Verdict(enum.Enum):
    OK = "ok"
    WARN = "warn"  # works, but worth knowing (exit 0)
    FAIL = "fail"  # broken (exit 1)
    SKIP = "skip"  # could not be checked because of another finding, or does not apply


@dataclass
class Check:
    name: str
    verdict: Verdict
    message: str
    fix: str = ""

    def as_dict(self) -> dict:
        return {"check": self.name, "verdict": self.verdict.value, "message": self.message, "fix": self.fix}


# -- filesystems ------------------------------------------------------------------------------------


def mount_of(path: Path) -> tuple[str, str, str]:
    """(mount point, device, filesystem type) of the filesystem holding `path` (its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    real = os.path.realpath(path)
    best = ("/", "?", "?")
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                device, point, fstype = fields[0], fields[1].replace("\\040", " "), fields[2]
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best[0]):
                    best = (point, device, fstype)
    except OSError:
        pass
    return best


def on_sd_card(device: str) -> bool:
    return "mmcblk" in device


def _writable(path: Path) -> str | None:
    """Why `path` is not a writable directory (it is created if missing), or None."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".balupi-doctor-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def check_dir(name: str, path: Path, setting: str) -> Check:
    problem = _writable(path)
    point, device, fstype = mount_of(path)
    where = f"on {device} ({fstype}, mounted at {point})"
    if problem:
        return Check(name, Verdict.FAIL, f"{path} is not writable: {problem}",
                     f"create it and give it to the user BaluPi runs as, or set {setting} elsewhere")
    if name == "cache_dir" and on_sd_card(device):
        return Check(name, Verdict.WARN, f"{path} is writable, {where}: the SD card",
                     f"mount the USB SSD and set {setting} to a folder on it (an SD card wears out under a cache)")
    return Check(name, Verdict.OK, f"{path} is writable, {where}")


def check_disk_space(settings: Settings) -> Check:
    try:
        free_gb = shutil.disk_usage(settings.cache_dir).free / 1e9
    except OSError as exc:
        return Check("disk_space", Verdict.SKIP, f"cannot read the cache volume's free space: {exc.strerror or exc}")
    need_gb = settings.cache_min_free_gb
    if free_gb < need_gb:
        return Check("disk_space", Verdict.FAIL, f"{free_gb:.1f} GB free on the cache volume, below cache_min_free_gb ({need_gb:g} GB)",
                     "free space on that volume, move the cache (cache_dir) to a larger one, or lower cache_min_free_gb")
    return Check("disk_space", Verdict.OK, f"{free_gb:.1f} GB free on the cache volume (keeps at least {need_gb:g} GB)")


# -- the NAS ----------------------------------------------------------------------------------------


def check_nas(settings: Settings) -> list[Check]:
    from balupi.nas.monitor import Reach, _tcp_probe, webdav_endpoint
    from balupi.nas.tls import certificate_problem, format_fingerprint, peer_fingerprint

    names = ("nas_tcp", "nas_tls", "nas_http", "nas_login")
    if not settings.nas_webdav_url:
        return [Check(n, Verdict.SKIP, "no NAS configured (nas_webdav_url is empty)") for n in names[:1]] + [
            Check(n, Verdict.SKIP, "no NAS configured") for n in names[1:]]
    host, port = webdav_endpoint(settings.nas_webdav_url)
    out: list[Check] = []
    reach = _tcp_probe(host, port, max(settings.nas_connect_timeout_s, 2.0))
    if reach is Reach.REFUSED:
        out.append(Check("nas_tcp", Verdict.FAIL, f"{host}:{port} refuses connections",
                         "check the host and port in nas_webdav_url, and that the NAS's WebDAV service runs"))
    elif reach is Reach.SILENT:
        out.append(Check("nas_tcp", Verdict.WARN, f"{host}:{port} answers nothing: the NAS is asleep or off",
                         "run `balupi wake`, then `balupi doctor` again to check it awake"))
    else:
        out.append(Check("nas_tcp", Verdict.OK, f"{host}:{port} accepts connections"))
    if not reach:
        return out + [Check(n, Verdict.SKIP, "the NAS's port does not answer") for n in names[1:]]

    https = settings.nas_webdav_url.lower().startswith("https:")
    if https:
        problem = certificate_problem(host, port, settings, max(settings.nas_connect_timeout_s, 5.0))
        if problem:
            found = peer_fingerprint(host, port, 5.0)
            pin = f'nas_cert_sha256 = "{format_fingerprint(found)}"' if found else "nas_cert_sha256"
            out.append(Check("nas_tls", Verdict.FAIL, problem,
                             f"if that is your NAS's certificate, pin it: {pin} (or name its CA in nas_ca_file)"))
            return out + [Check(n, Verdict.SKIP, "the NAS's certificate is not trusted") for n in names[2:]]
        found = peer_fingerprint(host, port, 5.0)
        how = "pinned" if settings.nas_cert_sha256 else ("by nas_ca_file" if settings.nas_ca_file else "by the system's CAs")
        out.append(Check("nas_tls", Verdict.OK, f"certificate trusted {how} (fingerprint {format_fingerprint(found or '')})"))
    else:
        out.append(Check("nas_tls", Verdict.SKIP, "plain http (no certificate to check)"))
    out += _check_nas_http(settings)
    return out


def _session(settings: Settings):
    import requests

    from balupi.nas.tls import configure_session

    session = requests.Session()
    session.trust_env = False
    configure_session(session, settings)
    return session


def _check_nas_http(settings: Settings) -> list[Check]:
    import requests

    url = settings.nas_webdav_url.rstrip("/") + "/"
    timeout = (max(settings.nas_connect_timeout_s, 2.0), 15.0)
    headers = {"Depth": "0", "User-Agent": "BaluPi doctor"}
    with _session(settings) as session:
        try:
            anonymous = session.request("PROPFIND", url, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            return [Check("nas_http", Verdict.FAIL, f"the port answers but not as an HTTP server: {type(exc).__name__}",
                          "check the port and scheme (http/https) in nas_webdav_url"),
                    Check("nas_login", Verdict.SKIP, "the NAS does not speak HTTP")]
        http = Check("nas_http", Verdict.OK, f"PROPFIND {url} answered {anonymous.status_code}")
        if anonymous.status_code == 404:
            http = Check("nas_http", Verdict.FAIL, f"PROPFIND {url} answered 404: no WebDAV there",
                         "check the path in nas_webdav_url (BaluHost: /webdav/)")
        if not settings.nas_username:
            return [http, Check("nas_login", Verdict.WARN, "no service account (nas_username is empty)",
                                "set nas_username and nas_password, so write-back and refresh need nobody's login")]
        try:
            login = session.request("PROPFIND", url, headers=headers, timeout=timeout,
                                    auth=(settings.nas_username, settings.nas_password))
        except requests.RequestException as exc:
            return [http, Check("nas_login", Verdict.FAIL, f"the login request failed: {type(exc).__name__}")]
    if login.status_code in (401, 403):
        return [http, Check("nas_login", Verdict.FAIL, f"the NAS refused {settings.nas_username!r} ({login.status_code})",
                            "set nas_username and nas_password to an account the NAS accepts")]
    if login.status_code not in (200, 207):
        return [http, Check("nas_login", Verdict.FAIL, f"the NAS answered {login.status_code} to {settings.nas_username!r}'s login")]
    return [http, Check("nas_login", Verdict.OK, f"the NAS accepts {settings.nas_username!r}")]


def check_wake_on_lan(settings: Settings) -> Check:
    if not settings.nas_webdav_url:
        return Check("wake_on_lan", Verdict.SKIP, "no NAS configured")
    if not settings.nas_mac_address:
        return Check("wake_on_lan", Verdict.FAIL, "no MAC address configured: BaluPi cannot wake the NAS",
                     "set nas_mac_address (balupi setup reads it from the network), and enable Wake-on-LAN on the NAS")
    return Check("wake_on_lan", Verdict.OK, f"magic packets for {settings.nas_mac_address} go to "
                                            f"{settings.wol_address}:{settings.wol_port}")


# -- plugs, clock, service ---------------------------------------------------------------------------


def _open_db_readonly(settings: Settings) -> sqlite3.Connection | None:
    path = Path(settings.data_dir) / DB_FILENAME
    if not path.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        con.row_factory = sqlite3.Row
        return con
    except sqlite3.Error:
        return None


def check_plugs(settings: Settings, con: sqlite3.Connection | None) -> list[Check]:
    import asyncio
    from zoneinfo import ZoneInfo

    try:
        rows = plug_addresses(con) if con else []
    except sqlite3.Error:
        rows = []
    if not rows:
        return [Check("plugs", Verdict.SKIP, "no plugs added", "balupi plugs discover, then balupi plugs add")]
    if not settings.tapo_username:
        return [Check("plugs", Verdict.FAIL, f"{len(rows)} plug(s) added but no Tapo account configured",
                      "set tapo_username and tapo_password (the TP-Link account the plugs are registered to)")]
    from kasa import Credentials

    from balupi.energy.model import PlugUnavailable, PollErrorKind
    from balupi.energy.plugs import hard_deadline, probe

    credentials = Credentials(settings.tapo_username, settings.tapo_password)
    timeout_s = settings.energy_poll_timeout_s
    out = []
    for row in rows:
        label = f"plug {row['id']} ({row['name']}, {row['role']}) at {row['host']}" + (f":{row['port']}" if row["port"] else "")
        try:
            asyncio.run(hard_deadline(probe(row["host"], row["port"], credentials, timeout_s, ZoneInfo("UTC")), 3 * timeout_s))
        except PlugUnavailable as exc:
            fix = ("check tapo_username and tapo_password" if exc.kind is PollErrorKind.AUTHENTICATION
                   else "check that the plug has power and its address (balupi plugs discover)")
            out.append(Check("plugs", Verdict.FAIL, f"{label}: {exc.kind.value}: {exc}", fix))
            continue
        except Exception as exc:  # a timeout or anything python-kasa raises
            out.append(Check("plugs", Verdict.FAIL, f"{label}: {type(exc).__name__}: {exc}",
                             "check that the plug has power and its address (balupi plugs discover)"))
            continue
        out.append(Check("plugs", Verdict.OK, f"{label}: reachable, logged in"))
    return out


def check_clock(con: sqlite3.Connection | None, now: float | None = None) -> Check:
    now = time.time() if now is None else now
    year = time.localtime(now).tm_year
    if year < EARLIEST_SANE_YEAR:
        return Check("clock", Verdict.FAIL, f"the clock says {time.strftime('%Y-%m-%d %H:%M', time.localtime(now))}",
                     "let the Pi set its clock from the network (systemd-timesyncd; it has no battery-backed clock)")
    newest = None
    if con is not None:
        for newest_at in (newest_transition_at, newest_sample_at):
            try:
                value = newest_at(con)
            except sqlite3.Error:
                continue
            if value is not None:
                newest = value if newest is None else max(newest, value)
    if newest is not None and now < newest - CLOCK_SLACK_S:
        return Check("clock", Verdict.FAIL,
                     f"the clock is {(newest - now) / 60:.0f} min behind the newest time BaluPi stored",
                     "let the Pi set its clock from the network (timedatectl set-ntp true), then restart BaluPi")
    from balupi.commands import iso_local

    return Check("clock", Verdict.OK, f"{iso_local(now)}, not behind what BaluPi stored")


def check_service(settings: Settings) -> Check:
    import socket

    import requests

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else ("::1" if settings.host == "::" else settings.host)
    if settings.tls_cert:
        try:
            with socket.create_connection((host, settings.port), timeout=3):
                return Check("service", Verdict.OK, f"BaluPi listens on {host}:{settings.port} (https)")
        except OSError as exc:
            return Check("service", Verdict.FAIL, f"nothing listens on {host}:{settings.port}: {exc.strerror or exc}",
                         "sudo systemctl start balupi (journalctl -u balupi says why it stopped)")
    url = f"http://{'[' + host + ']' if ':' in host else host}:{settings.port}/api/health"
    try:
        with requests.Session() as s:
            s.trust_env = False
            answer = s.get(url, timeout=5)
            body = answer.json()
    except (requests.RequestException, ValueError) as exc:
        return Check("service", Verdict.FAIL, f"BaluPi does not answer at {url}: {type(exc).__name__}",
                     "sudo systemctl start balupi (journalctl -u balupi says why it stopped), or balupi serve")
    if body.get("service") != "balupi":
        return Check("service", Verdict.FAIL, f"something else answers at {url}", "check port (BALUPI_PORT)")
    return Check("service", Verdict.OK, f"BaluPi {body.get('version')} answers at {url}; NAS "
                                        f"{body.get('nas', {}).get('state_words') or body.get('nas', {}).get('state')}")


# -- all of it --------------------------------------------------------------------------------------


def run_checks(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> list[Check]:
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    config_file = find_config_file(env, cwd)
    try:
        settings = load_settings(env=env, cwd=cwd, prepare_dirs=False)
    except ConfigError as exc:
        return [Check("config", Verdict.FAIL, str(exc), "fix the settings named (balupi config shows each one's source)")]
    checks = [Check("config", Verdict.OK, f"valid ({config_file or 'no file'}, and BALUPI_* variables)")]
    checks.append(check_dir("data_dir", Path(settings.data_dir), "BALUPI_DATA_DIR"))
    checks.append(check_dir("cache_dir", Path(settings.cache_dir), "BALUPI_CACHE_DIR"))
    checks.append(check_disk_space(settings))
    checks += check_nas(settings)
    checks.append(check_wake_on_lan(settings))
    con = _open_db_readonly(settings)
    try:
        checks += check_plugs(settings, con)
        checks.append(check_clock(con))
    finally:
        if con is not None:
            con.close()
    checks.append(check_service(settings))
    return checks


def failed(checks: list[Check]) -> bool:
    return any(c.verdict is Verdict.FAIL for c in checks)


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        line = f"{c.verdict.value.upper():<4}  {c.name:<{width}}  {c.message}"
        if c.fix and c.verdict in (Verdict.FAIL, Verdict.WARN):
            line += f". Fix: {c.fix}"
        lines.append(line)
    bad = sum(c.verdict is Verdict.FAIL for c in checks)
    lines.append(f"{bad} problem(s) found." if bad else "Nothing wrong found.")
    return "\n".join(lines)
