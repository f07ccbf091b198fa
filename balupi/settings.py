"""Every setting BaluPi has, defined once: name, type, default, help.

Sources, lowest precedence first: the defaults in `SETTINGS`, a TOML file (`BALUPI_CONFIG`, else
`etc/balupi.toml` in the working directory, else `/etc/balupi/balupi.toml`), then `BALUPI_<NAME>`
environment variables. TOML keys are the setting names; a table flattens into its prefix, so
`[nas] mac_address = "..."` is `nas_mac_address`.

Every error in every source is collected and reported together in one line that names each setting
(`ConfigError`); start-up prints it and exits without a traceback. The example files
`etc/balupi.toml.example` and `.env.example` are generated from this table (`balupi config example`)
and a test keeps them in step.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from balupi.errors import ConfigError

ENV_PREFIX = "BALUPI_"
LOCAL_CONFIG_FILE = Path("etc") / "balupi.toml"  # relative to the working directory
SYSTEM_CONFIG_FILE = Path("/etc/balupi/balupi.toml")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def default_data_dir() -> Path:
    """The per-user data directory: $XDG_DATA_HOME/balupi, else ~/.local/share/balupi."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "balupi"


# -- value parsers: each takes the raw value (str from the environment, or a TOML value) --------------


def _parse_str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {raw!r}")
    return raw


def _parse_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError(f"expected an integer, got {raw!r}")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {raw!r}")


def _parse_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"expected a number, got {raw!r}")
    if isinstance(raw, (int, float)):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {raw!r}")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise ValueError(f"expected true or false, got {raw!r}")


def _parse_list(raw: Any) -> tuple[str, ...]:
    """A list of strings: a TOML array, or a comma-separated environment value."""
    if isinstance(raw, str):
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return tuple(raw)
    raise ValueError(f"expected a list of strings, got {raw!r}")


def _parse_path(raw: Any) -> Path | None:
    text = _parse_str(raw).strip()
    return Path(os.path.expanduser(text)) if text else None


# -- checks: each takes the parsed value and raises ValueError with the reason -----------------------


def _at_least(minimum: float) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value < minimum:
            raise ValueError(f"must be at least {minimum:g}, got {value:g}")

    return check


def _port(value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a port number from 0 to 65535, got {value}")


def _mac(value: str) -> None:
    if value:
        from balupi.macaddr import parse_mac

        parse_mac(value)


def _http_url(value: str) -> None:
    if value:
        parts = urlsplit(value)
        if "@" in parts.netloc:  # never echo it: the part before '@' is a secret
            raise ValueError("must not carry a user name or password (user:password@host); "
                             "set nas_username and nas_password instead")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")


def _ip_address(value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"expected an IP address, got {value!r}") from None


def _timezone(value: str) -> None:
    if value:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"expected an IANA time zone such as Europe/Berlin, got {value!r}") from None


def _time_window(value: str) -> None:
    if value:
        import re

        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d", value.strip()):
            raise ValueError(f"expected a window like 01:00-05:00, got {value!r}")


def _one_of(*choices: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")

    return check


def _readable_file(value: Path | None) -> None:
    if value is not None and not os.access(value, os.R_OK):
        raise ValueError(f"cannot read file {str(value)!r}")


def _sha256_fingerprint(value: str) -> None:
    if value and len(value.replace(":", "").strip()) != 64:
        raise ValueError(f"expected a SHA-256 fingerprint (64 hex digits, colons allowed), got {value!r}")
    if value:
        try:
            bytes.fromhex(value.replace(":", "").strip())
        except ValueError:
            raise ValueError(f"expected a SHA-256 fingerprint (64 hex digits, colons allowed), got {value!r}") from None


def _log_level(value: str) -> None:
    if value.upper() not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any] = _parse_str
    check: Callable[[Any], None] | None = None
    secret: bool = False

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.name.upper()


# fmt: off
SETTINGS: tuple[Setting, ...] = (
    # The server
    Setting("host", "0.0.0.0", "Address to listen on (0.0.0.0: every interface of the Pi).", check=_ip_address),
    Setting("port", 8000, "TCP port for WebDAV (/dav/) and the API (/api/).", _parse_int, _port),
    Setting("server_threads", 32, "Worker threads of the HTTP server. A request that waits for a waking NAS holds one, so keep it well above the number of clients.", _parse_int, _at_least(4)),
    Setting("dav_block_size_kib", 1024, "Block size for streaming file bodies, in KiB (WsgiDAV's 8 KiB default is far too small).", _parse_int, _at_least(8)),
    Setting("dnssd_enabled", True, "Announce the share (_webdav._tcp, path /dav/) and the dashboard (_http._tcp) by DNS-SD/mDNS, so file managers find BaluPi without an address.", _parse_bool),
    Setting("dnssd_name", "BaluPi", "The name BaluPi announces itself with by DNS-SD (a number is added if it is taken)."),
    Setting("log_level", "INFO", "Logging level: DEBUG, INFO, WARNING or ERROR.", check=_log_level),
    Setting("data_dir", None, "Where the database and generated keys live. Default: $XDG_DATA_HOME/balupi or ~/.local/share/balupi.", _parse_path),
    Setting("cache_dir", None, "Where cached file content lives (the SSD). Default: <data_dir>/cache.", _parse_path),
    Setting("cache_max_size_gb", 200.0, "Largest size of the file cache, in GB.", _parse_float, _at_least(0)),
    Setting("dav_local_only_names", (
        "._*", ".DS_Store", ".localized", ".metadata_never_index", ".metadata_never_index_unless_rootfs",
        ".ql_disablethumbnails", ".ql_disablecache", ".Spotlight-V100", ".Trashes", ".fseventsd", ".TemporaryItems",
        ".hidden", ".directory", "desktop.ini", "Thumbs.db", "AutoRun.inf", "~$*", ".~lock.*#",
    ), "Names (glob patterns, any case) of client noise: answered from the index only, never asked of the NAS; files created under them stay on the Pi.", _parse_list),
    # The NAS
    Setting("nas_url", "http://192.168.178.53", "Base URL of the NAS's REST API (BaluHost).", check=_http_url),
    Setting("nas_webdav_url", "", "The NAS's WebDAV root, e.g. https://192.168.178.53:8080/. Empty: no NAS is configured, and BaluPi serves only what it holds.", check=_http_url),
    Setting("nas_username", "", "User BaluPi uses for its own requests to the NAS (namespace refresh, sync)."),
    Setting("nas_password", "", "Password of nas_username.", secret=True),
    Setting("nas_reserved_name_chars", "", "Characters the NAS cannot store in a file name (none on a Linux NAS; e.g. \\:*?\"<>| when an SMB or Windows volume lies behind it). Creating such a name, or one longer than 255 bytes, is refused with 400."),
    Setting("nas_mac_address", "", "MAC address of the NAS, for Wake-on-LAN (aa:bb:cc:dd:ee:ff). Empty: BaluPi cannot wake the NAS.", check=_mac),
    Setting("wol_address", "255.255.255.255", "Where magic packets are sent (a broadcast address on the NAS's LAN).", check=_ip_address),
    Setting("wol_port", 9, "UDP port for magic packets.", _parse_int, _port),
    Setting("nas_wake_timeout_s", 25.0, "Longest a client request waits for the NAS to wake before it gets 503 with Retry-After (Windows gives up after 30-60 s, davfs2 after 30 s).", _parse_float, _at_least(1)),
    Setting("nas_boot_time_s", 45.0, "How long the NAS usually takes to wake; reported by /api/nas/wol and used for Retry-After.", _parse_float, _at_least(1)),
    Setting("nas_wol_resend_s", 10.0, "While waiting for the NAS to wake, re-send the magic packet at most this often.", _parse_float, _at_least(0.5)),
    Setting("nas_ready_poll_s", 1.0, "While the NAS wakes, check its WebDAV port this often.", _parse_float, _at_least(0.05)),
    Setting("nas_probe_enabled", True, "Check the NAS with a cheap TCP connect to its WebDAV port when no plug reading is available (never an HTTP request, which would keep it awake).", _parse_bool),
    Setting("nas_probe_interval_s", 60.0, "Seconds between TCP connect probes of the NAS.", _parse_float, _at_least(1)),
    Setting("nas_connect_timeout_s", 2.0, "Connect timeout for requests and probes to the NAS.", _parse_float, _at_least(0.1)),
    Setting("nas_idle_suspend_minutes", 0.0, "Ask the NAS to suspend after it has served nothing for BaluPi this long and nothing waits to be synced. 0: never.", _parse_float, _at_least(0)),
    # Write-back and the hot cache
    Setting("sync_interval_s", 15.0, "How often the write-back looks for pending changes.", _parse_float, _at_least(1)),
    Setting("sync_max_delay_minutes", 720.0, "Wake the NAS to write back once the oldest pending change is this old (changes are already safe on the Pi; meanwhile any wake syncs them). 0: never for age alone.", _parse_float, _at_least(0)),
    Setting("sync_max_pending_mb", 2048.0, "Wake the NAS to write back once this much data waits. 0: never for size alone.", _parse_float, _at_least(0)),
    Setting("sync_window", "", "Daily local time window in which pending changes wake the NAS, e.g. 01:00-05:00. Empty: none.", check=_time_window),
    Setting("sync_done_retention_days", 7.0, "Days the journal keeps the rows of changes already written to the NAS (a record of recent write-back, for diagnosis), then purges them (checked hourly).", _parse_float, _at_least(0)),
    Setting("cache_min_free_gb", 2.0, "Keep at least this much space free on the cache volume.", _parse_float, _at_least(0)),
    Setting("cache_pinned", (), "Paths (glob patterns, e.g. /Photos/2024/*) that always stay cached and are fetched whenever the NAS is awake.", _parse_list),
    Setting("cache_heat_half_life_hours", 72.0, "How fast past use stops counting for what stays cached (half-life of the access count).", _parse_float, _at_least(0.1)),
    Setting("prefetch_budget_mb", 2048.0, "Most data fetched ahead per NAS wake (pinned and hot files first).", _parse_float, _at_least(0)),
    Setting("prefetch_interval_minutes", 60.0, "While the NAS is awake, fetch ahead again this often (besides right after each wake). Each run asks the NAS for files and so restarts its idle timer: a shorter interval can keep it from falling asleep. 0: only after a wake.", _parse_float, _at_least(0)),
    Setting("refresh_walk_budget_s", 300.0, "After each wake, spend up to this long listing the folders the index has never seen (then the prefetch sees their files). 0: learn folders only as clients open them.", _parse_float, _at_least(0)),
    Setting("refresh_min_age_minutes", 60.0, "A folder is re-listed from the NAS at most this often (every request keeps the NAS awake a while longer).", _parse_float, _at_least(1)),
    Setting("refresh_collections_per_minute", 120, "Collections re-listed per minute while the NAS is awake (keeps the index current without crowding clients out).", _parse_int, _at_least(1)),
    # Energy
    Setting("tapo_username", "", "TP-Link (Tapo) account e-mail used to talk to the plugs."),
    Setting("tapo_password", "", "TP-Link (Tapo) account password.", secret=True),
    Setting("energy_sample_interval_seconds", 30, "Seconds between plug polls.", _parse_int, _at_least(5)),
    Setting("energy_default_price_cents", 32.0, "Electricity price per kWh, in cents, when no tariff covers a time.", _parse_float, _at_least(0)),
    Setting("energy_raw_retention_days", 7, "Days raw plug samples are kept (hourly rollups: energy_hourly_retention_days; daily and monthly: forever).", _parse_int, _at_least(1)),
    Setting("energy_hourly_retention_days", 730, "Days hourly energy rollups (and gaps and NAS power states) are kept; tariff changes reprice only what is still hourly. Daily and monthly rollups are kept forever.", _parse_int, _at_least(1)),
    Setting("energy_enabled", True, "Poll the Tapo plugs and keep the energy ledger.", _parse_bool),
    Setting("energy_poll_timeout_s", 10.0, "Overall deadline of one plug poll; a plug that does not answer in time counts as timed out (python-kasa alone can take over a minute).", _parse_float, _at_least(1)),
    Setting("energy_timezone", "", "IANA time zone for days, hours and tariffs (e.g. Europe/Berlin). Empty: the system's local zone.", check=_timezone),
    Setting("energy_currency", "EUR", "Currency of energy_default_price_cents and of tariffs that name none."),
    Setting("energy_pi_power_w", 3.0, "The Pi's own draw in watts, used for net savings when no plug has the role 'pi'.", _parse_float, _at_least(0)),
    Setting("tapo_discovery_target", "255.255.255.255", "Where plug discovery sends its probe (a broadcast address of the plugs' LAN).", check=_ip_address),
    Setting("nas_power_off_below_w", 2.0, "The `nas` plug reads 'off' below this many watts.", _parse_float, _at_least(0)),
    Setting("nas_power_standby_below_w", 8.0, "The `nas` plug reads 'standby' (suspended) below this many watts (and at or above nas_power_off_below_w).", _parse_float, _at_least(0)),
    Setting("nas_power_idle_below_w", 25.0, "The `nas` plug reads 'idle' below this many watts, 'active' at or above. `balupi energy calibrate` proposes all three thresholds.", _parse_float, _at_least(0)),
    Setting("nas_power_hysteresis_w", 1.0, "Width of the band around each NAS power threshold that does not change the state (against flapping).", _parse_float, _at_least(0)),
    Setting("nas_power_min_dwell_s", 60.0, "A new NAS power state counts only after the readings stayed in it this long.", _parse_float, _at_least(0)),
    # Security
    Setting("secret_key", "", "Key that signs API tokens. Empty: generated once into <data_dir>/secret.key (mode 0600).", secret=True),
    Setting("local_admin_password", "", "With no NAS configured: the password of the local user 'admin', who may use the share and the API from other machines (balupi setup sets it). Empty: only the Pi itself (127.0.0.1) may, unless anonymous_lan_access.", secret=True),
    Setting("anonymous_lan_access", False, "With no NAS configured: let anyone who can reach the Pi use the share without a password (never the admin endpoints). Off: only the Pi itself, or the local admin password.", _parse_bool),
    Setting("auth_offline_days", 30.0, "A login the NAS accepted keeps working this many days while the NAS sleeps (checked against a salted scrypt verifier, never a stored password). 0: no offline logins.", _parse_float, _at_least(0)),
    Setting("auth_admins", (), "User names that are BaluPi admins (API endpoints that change things or control hardware) besides the users the NAS itself reports as admins.", _parse_list),
    Setting("auth_nas_method", "auto", "How a password is checked with the NAS: webdav (a request to the user's WebDAV root), rest (BaluHost's POST /api/auth/login, which also tells the user's role), or auto (rest when BALUPI_NAS_URL names the WebDAV host, else webdav).", check=_one_of("auto", "webdav", "rest")),
    Setting("auth_wake_nas_for_unknown", True, "A login the Pi cannot check offline (a user it has no verifier for, or one older than auth_offline_days) wakes the NAS to ask it (a person is waiting; failed logins are throttled; a wrong password of a user the Pi knows never wakes it); a wake that outlasts the request answers 503 with Retry-After. Off: refused while the NAS sleeps.", _parse_bool),
    Setting("auth_recheck_s", 300.0, "How long a checked login is trusted in memory before it is checked again (with the NAS when awake).", _parse_float, _at_least(1)),
    Setting("auth_token_lifetime_minutes", 720.0, "Lifetime of API tokens from POST /api/auth/login.", _parse_float, _at_least(1)),
    Setting("auth_throttle_free_attempts", 3, "Failed logins per client address and per user name before delays start.", _parse_int, _at_least(1)),
    Setting("auth_throttle_base_delay_s", 1.0, "First delay after the free attempts; each further failure doubles it.", _parse_float, _at_least(0.01)),
    Setting("auth_throttle_max_delay_s", 300.0, "Longest delay between failed logins.", _parse_float, _at_least(0.01)),
    Setting("tls_cert", None, "TLS certificate (PEM, with its chain) for HTTPS. Empty: plain HTTP.", _parse_path, _readable_file),
    Setting("tls_key", None, "Private key (PEM) of tls_cert.", _parse_path, _readable_file),
    Setting("nas_ca_file", None, "CA certificate (PEM) that signed the NAS's HTTPS certificate (e.g. its self-signed certificate itself). Empty: the system's CAs.", _parse_path, _readable_file),
    Setting("nas_cert_sha256", "", "Pin the NAS's HTTPS certificate by its SHA-256 fingerprint instead of a CA (hex, colons allowed). Certificate checks are never turned off.", check=_sha256_fingerprint),
    Setting("http_max_requests_per_client", 24, "Requests one client address may have in progress at once (more get 503 at once), so one client cannot take every server thread; keep it below server_threads. 0: no cap.", _parse_int, _at_least(0)),
    Setting("http_header_timeout_s", 20.0, "A client must send its whole request line and headers within this time (against slow clients holding threads).", _parse_float, _at_least(1)),
    Setting("http_timeout_s", 60.0, "A connection that sends or accepts nothing for this long is closed.", _parse_float, _at_least(1)),
    Setting("http_allowed_hosts", (), "Host names (besides IP addresses, localhost and the Pi's own host name) that clients may use to reach BaluPi, e.g. balupi.fritz.box; other names get 421 (against DNS rebinding). \"*\": any name.", _parse_list),
    Setting("http_max_header_kib", 64, "Largest request line plus headers, in KiB (larger: 413/414).", _parse_int, _at_least(8)),
    Setting("dav_max_xml_body_kib", 1024, "Largest XML request body (PROPFIND, PROPPATCH, LOCK), in KiB (larger: 413).", _parse_int, _at_least(16)),
    Setting("metrics_token", "", "Bearer token a Prometheus server sends to read /metrics from another machine (loopback and admin tokens need none). Empty: no scrape token.", secret=True),
    Setting("plugins_dir", None, "Directory of plugin modules (*.py, see docs/plugins.md). Empty: plugins/ in the working directory. Each plugin's own settings go under [plugins.<name>] (BALUPI_PLUGINS_<NAME>_<KEY>).", _parse_path),
)
# fmt: on

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def _settings_class() -> type:
    fields = [(s.name, Any, dataclasses.field(default=s.default)) for s in SETTINGS]
    fields.append(("sources", dict, dataclasses.field(default_factory=dict, repr=False, compare=False)))
    # Plugins' own settings, unchecked here (balupi.plugins checks them against each plugin's SETTINGS):
    # {"toml": {name: {key: value}}, "env": {BALUPI_PLUGINS_...: value}}
    fields.append(("plugins", dict, dataclasses.field(default_factory=dict, repr=False, compare=False)))

    def __repr__(self) -> str:  # secrets never appear in a repr, and so never in a log line
        shown = []
        for s in SETTINGS:
            value = getattr(self, s.name)
            shown.append(f"{s.name}={'***' if s.secret and value else repr(value)}")
        return f"Settings({', '.join(shown)})"

    def public_dict(self) -> dict[str, Any]:
        """The settings with secrets replaced by a marker, for status pages."""
        out = {}
        for s in SETTINGS:
            value = getattr(self, s.name)
            if s.secret:
                value = "***" if value else ""
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[s.name] = value
        return out

    cls = dataclasses.make_dataclass(
        "Settings",
        fields,
        frozen=True,
        namespace={"__repr__": __repr__, "public_dict": public_dict, "__module__": __name__},
    )
    cls.__doc__ = "The settings BaluPi runs with: one attribute per entry of SETTINGS, plus where each came from."
    return cls


Settings = _settings_class()


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}".lower()
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "_"))
        else:
            flat[name] = value
    return flat


def suggest(name: str, env: bool = False) -> str:
    """", did you mean 'nas_mac_address'?" for an unknown setting name close to a known one, else ""."""
    import difflib

    name = name.lower().removeprefix(ENV_PREFIX.lower())
    names = list(SETTINGS_BY_NAME)
    close = [n for n in names if n.startswith(name + "_")] or difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if not close:
        return ""
    return f", did you mean {ENV_PREFIX + close[0].upper()}?" if env else f", did you mean {close[0]!r}?"


def find_config_file(env: Mapping[str, str], cwd: Path) -> Path | None:
    explicit = env.get(ENV_PREFIX + "CONFIG")
    if explicit:
        return Path(explicit)
    for candidate in (cwd / LOCAL_CONFIG_FILE, SYSTEM_CONFIG_FILE):
        if candidate.is_file():
            return candidate
    return None


def load_settings(
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    prepare_dirs: bool = True,
) -> Settings:
    """Read and check every setting. Raises ConfigError naming each bad setting.

    `overrides` (setting name -> raw value) win over everything; tests and `balupi demo` use them.
    With `prepare_dirs`, the data and cache directories are created and checked for writing.
    """
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    errors: list[str] = []
    raw: dict[str, tuple[Any, str]] = {}  # name -> (raw value, where it came from)
    plugins: dict[str, dict] = {"toml": {}, "env": {}}

    path = find_config_file(env, cwd)
    if path is not None:
        try:
            with open(path, "rb") as f:
                table = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"BALUPI_CONFIG: file not found: {path}") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None
        plugin_tables = table.get("plugins") if isinstance(table.get("plugins"), dict) else {}
        plugins["toml"] = {k: v for k, v in plugin_tables.items() if isinstance(v, dict)}
        table = {**table, "plugins": {k: v for k, v in plugin_tables.items() if not isinstance(v, dict)}}
        for name, value in _flatten(table).items():
            if name not in SETTINGS_BY_NAME:
                errors.append(f"{path}: unknown setting {name!r}{suggest(name)}")
            else:
                raw[name] = (value, str(path))
        _warn_if_secret_file_readable(path, table)

    known_env = {s.env_name for s in SETTINGS} | {ENV_PREFIX + "CONFIG"}
    for key, value in env.items():
        if key.startswith(ENV_PREFIX):
            if key not in known_env and key.startswith(ENV_PREFIX + "PLUGINS_"):
                plugins["env"][key] = value
            elif key not in known_env:
                errors.append(f"{key}: unknown setting{suggest(key, env=True)}")
            elif key != ENV_PREFIX + "CONFIG":
                raw[key[len(ENV_PREFIX) :].lower()] = (value, "environment")
    for name, value in (overrides or {}).items():
        if name == "plugins":  # tests: {name: {key: value}}
            plugins["toml"] = {**plugins["toml"], **value}
        elif name not in SETTINGS_BY_NAME:
            errors.append(f"{name}: unknown setting{suggest(name)}")
        else:
            raw[name] = (value, "override")

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        if setting.name not in raw:
            values[setting.name] = setting.default
            sources[setting.name] = "default"
            continue
        value, source = raw[setting.name]
        label = setting.env_name if source == "environment" else f"{source}: {setting.name}"
        try:
            parsed = setting.parse(value)
            if setting.check is not None:
                setting.check(parsed)
        except ValueError as exc:
            errors.append(f"{label}: {exc}")
            continue
        values[setting.name] = parsed
        sources[setting.name] = source

    if not errors:
        values["data_dir"] = values["data_dir"] or default_data_dir()
        values["cache_dir"] = values["cache_dir"] or values["data_dir"] / "cache"
        values["plugins_dir"] = values["plugins_dir"] or cwd / "plugins"
        if prepare_dirs:
            for name in ("data_dir", "cache_dir"):
                problem = _prepare_dir(values[name])
                if problem:
                    errors.append(f"{SETTINGS_BY_NAME[name].env_name}: {problem}")
    if not errors and bool(values["tls_cert"]) != bool(values["tls_key"]):
        errors.append("BALUPI_TLS_CERT/BALUPI_TLS_KEY: set both or neither")
    if not errors and values["http_max_requests_per_client"] >= values["server_threads"]:
        if sources["http_max_requests_per_client"] == "default":  # fewer threads than usual: scale the cap
            values["http_max_requests_per_client"] = max(1, values["server_threads"] * 3 // 4)
        else:
            errors.append("BALUPI_HTTP_MAX_REQUESTS_PER_CLIENT: must be below BALUPI_SERVER_THREADS (or 0 for no "
                          "cap), or one client can still take every thread")
    if not errors and values["tls_key"] is not None:
        warn_if_readable_by_others(values["tls_key"], "TLS private key")
    if errors:
        raise ConfigError("; ".join(errors))
    return Settings(**values, sources=sources, plugins=plugins)


PRIVATE_DIR_MODE = 0o700


def _prepare_dir(path: Path) -> str | None:
    """Create the directory (0700: it holds the database, keys and users' files, whatever the
    umask; an existing one of ours is tightened to that) and prove it is writable. Returns the
    problem, or None."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
        info = path.stat()
        if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) != PRIVATE_DIR_MODE:
            path.chmod(PRIVATE_DIR_MODE)
        probe = path / f".balupi-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"directory {str(path)!r} is not usable: {exc.strerror or exc}"
    return None


def warn_if_readable_by_others(path: Path, what: str) -> bool:
    """Log a warning when `path` (a file holding a secret) is readable by group or others."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        logging.getLogger("balupi.settings").warning(
            "%s %s is readable by other users; run: chmod 600 %s", what, path, path
        )
        return True
    return False


def _warn_if_secret_file_readable(path: Path, table: Mapping[str, Any]) -> None:
    flat = _flatten(table)
    holds_secret = any(
        SETTINGS_BY_NAME[n].secret and v for n, v in flat.items() if n in SETTINGS_BY_NAME
    )
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if holds_secret and mode & (stat.S_IRGRP | stat.S_IROTH):
        logging.getLogger("balupi.settings").warning(
            "config file %s holds secrets and is readable by other users; run: chmod 600 %s", path, path
        )


def example_toml() -> str:
    """The text of etc/balupi.toml.example, generated from SETTINGS."""
    lines = [
        "# BaluPi configuration. Every setting, with its default. Environment variables",
        "# (BALUPI_<NAME>) win over this file. Copy to etc/balupi.toml or point BALUPI_CONFIG at it.",
        "",
    ]
    for s in SETTINGS:
        lines.append(f"# {s.help}")
        lines.append(f"# {s.name} = {_toml_value(s.default)}")
        lines.append("")
    return "\n".join(lines)


def example_env() -> str:
    """The text of .env.example, generated from SETTINGS."""
    lines = ["# BaluPi settings as environment variables, with their defaults.", ""]
    for s in SETTINGS:
        lines.append(f"# {s.help}")
        lines.append(f"# {s.env_name}={_env_value(s.default)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _env_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)
