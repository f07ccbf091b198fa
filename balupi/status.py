"""`balupi status`: a short summary for an SSH session, or `--json` for scripts.

Read from the database (WAL: it never waits for the server) plus the running server's public
`GET /api/health` on this machine when it answers (the NAS state right now). What it shows: the
NAS's state and its last wakes with their causes, the plugs' power, today's energy and cost, the
cache, what waits to sync, and the problems worth a look.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime
from pathlib import Path

import requests

from balupi.cache import stats as cache_stats
from balupi.cache.journal import Journal
from balupi.db import DB_FILENAME, open_database
from balupi.events import Events
from balupi.nas.monitor import last_transition
from balupi.nas.wakes import WakeLog
from balupi.settings import Settings

LAST_WAKES = 5
HEALTH_TIMEOUT_S = 3.0
PLUG_STALE_FACTOR = 3  # a plug whose last sample is older than 3 intervals is offline
OLD_PENDING_S = 24 * 3600
DISK_FULL_PERCENT = 90.0


def _server_url(settings: Settings) -> str:
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    scheme = "https" if settings.tls_cert and settings.tls_key else "http"
    return f"{scheme}://{host}:{settings.port}"


def _health(settings: Settings) -> dict | None:
    try:
        with requests.Session() as s:
            s.trust_env = False
            response = s.get(_server_url(settings) + "/api/health", timeout=HEALTH_TIMEOUT_S, verify=False)
        return response.json() if response.ok else None
    except (requests.RequestException, ValueError):
        return None


def collect(settings: Settings, now: float | None = None) -> dict:
    from balupi.energy.queries import Window, energy_by_plug, plugs_and_latest_samples
    from balupi.energy.service import energy_zone

    now = time.time() if now is None else now
    db = open_database(Path(settings.data_dir) / DB_FILENAME)
    try:
        health = _health(settings)
        last = last_transition(db)
        nas = {
            "configured": bool(settings.nas_webdav_url),
            "state": (health["nas"]["state"] if health else (last["to_state"] if last else "unknown"))
            if settings.nas_webdav_url else "unconfigured",
            "since": last["at"] if last else None,
            "cause": last["cause"] if last else None,
            "from_server": health is not None,
        }
        wakes = WakeLog(db, Events()).latest(LAST_WAKES)
        zone = energy_zone(settings)
        local = datetime.fromtimestamp(now, zone)
        today = Window(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp(), now + 1, zone)
        by_plug = energy_by_plug(db, today)
        stale_s = PLUG_STALE_FACTOR * settings.energy_sample_interval_seconds
        plugs = []
        for p, sample in plugs_and_latest_samples(db):
            online = sample is not None and now - sample["at"] <= stale_s
            plugs.append({"id": p["id"], "name": p["name"], "role": p["role"], "online": online,
                          "power_w": sample["power_w"] if sample else None, "sample_at": sample["at"] if sample else None,
                          "today_wh": round(by_plug.get(p["id"], (0.0, 0.0))[0], 3)})
        energy = {
            "enabled": settings.energy_enabled,
            "currency": settings.energy_currency,
            "today_wh": round(sum(e for e, _ in by_plug.values()), 3),
            "today_cost_cents": round(sum(c for _, c in by_plug.values()), 3),
            "plugs": plugs,
        }
        cache = cache_stats.figures(db, settings.cache_max_size_gb)
        pending = Journal(db).pending_detail()
        sync = {"pending_changes": pending["count"], "pending_bytes": pending["bytes"], "oldest_at": pending["oldest_at"],
                "failing": pending["failing"]}
        disk = shutil.disk_usage(settings.cache_dir) if Path(settings.cache_dir).exists() else None
        disk_percent = round(100.0 * disk.used / disk.total, 1) if disk else None
    finally:
        db.close()
    report = {"at": now, "server": {"running": health is not None, "url": _server_url(settings),
                                    "version": health.get("version") if health else None},
              "nas": nas, "wakes": wakes, "energy": energy, "cache": cache, "sync": sync,
              "disk_percent": disk_percent}
    report["problems"] = problems(report, now)
    return report


def problems(report: dict, now: float) -> list[str]:
    out = []
    if not report["server"]["running"]:
        out.append(f"the server does not answer at {report['server']['url']} (systemctl status balupi)")
    nas = report["nas"]
    if not nas["configured"]:
        out.append("no NAS is configured (BALUPI_NAS_WEBDAV_URL): only what the cache holds is served")
    elif nas["state"] == "unreachable":
        out.append("the NAS is unreachable: it did not answer after magic packets (docs/operations.md, 'The NAS does not wake')")
    failed = [w for w in report["wakes"] if not w["woke"] and not w["ongoing"]]
    if failed:
        out.append(f"{len(failed)} of the last wakes did not wake the NAS")
    for plug in report["energy"]["plugs"]:
        if not plug["online"]:
            out.append(f"plug {plug['name']} is offline (last reading {_ago(plug['sample_at'], now)})")
    sync = report["sync"]
    if sync["failing"]:
        out.append(f"{sync['failing']} pending change(s) failed to reach the NAS and are retried")
    if sync["oldest_at"] and now - sync["oldest_at"] > OLD_PENDING_S:
        out.append(f"changes have waited for the NAS since {_ago(sync['oldest_at'], now)}")
    unresolved = report["cache"]["conflicts"]["unresolved"]
    if unresolved:
        out.append(f"{unresolved} unresolved conflict(s) (GET /api/cache/conflicts)")
    if report["disk_percent"] is not None and report["disk_percent"] >= DISK_FULL_PERCENT:
        out.append(f"the cache's disk is {report['disk_percent']:.0f}% full")
    return out


def _ago(at: float | None, now: float) -> str:
    if not at:
        return "never"
    s = max(0.0, now - at)
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 5400:
        return f"{s / 60:.0f} min ago"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.0f} days ago"


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.0f} s" if s < 90 else (f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h")


def render(report: dict) -> str:
    now = report["at"]
    nas, energy, cache, sync = report["nas"], report["energy"], report["cache"], report["sync"]
    lines = []
    server = report["server"]
    lines.append(f"BaluPi {server['version'] or ''}".rstrip() + (f", serving at {server['url']}" if server["running"]
                                                                 else ", server not answering"))
    since = f" for {_duration(now - nas['since'])}" if nas["since"] and nas["configured"] else ""
    lines.append(f"NAS:      {nas['state']}{since}" + (f" ({nas['cause']})" if nas["cause"] and nas["configured"] else ""))
    for w in report["wakes"]:
        stay = (f"awake {_duration(w['awake_s'])}" + (" so far" if w["ongoing"] else "")) if w["woke"] else \
            ("waking" if w["ongoing"] else "did not wake")
        lines.append(f"  wake {datetime.fromtimestamp(w['requested_at']).strftime('%a %H:%M')}: "
                     f"{w['cause']['summary']} ({stay})")
    if not report["wakes"] and nas["configured"]:
        lines.append("  no wakes recorded yet")
    if not energy["enabled"]:
        lines.append("Power:    energy monitoring is off")
    elif not energy["plugs"]:
        lines.append("Power:    no plug added yet")
    else:
        for p in energy["plugs"]:
            reading = f"{p['power_w']:.1f} W" if p["online"] and p["power_w"] is not None else "offline"
            lines.append(f"Power:    {p['name']} ({p['role']}) {reading}")
        lines.append(f"Today:    {energy['today_wh'] / 1000:.3f} kWh, "
                     f"{energy['today_cost_cents'] / 100:.2f} {energy['currency']}")
    lines.append(f"Cache:    {cache['total_files']} files, {cache['total_size_mb'] / 1000:.2f} of "
                 f"{cache['max_size_gb']:g} GB ({cache['usage_percent']:.1f} %)")
    lines.append(f"Sync:     {sync['pending_changes']} change(s) waiting ({sync['pending_bytes'] / 1e6:.1f} MB)"
                 + (f", oldest {_ago(sync['oldest_at'], now)}" if sync["oldest_at"] else ""))
    if report["problems"]:
        lines.append("Problems:")
        lines += [f"  - {p}" for p in report["problems"]]
    else:
        lines.append("Problems: none")
    return "\n".join(lines)


def main(settings: Settings, as_json: bool) -> int:
    report = collect(settings)
    print(json.dumps(report, indent=2, default=str) if as_json else render(report))
    return 0
