"""The daily commands beside `serve`: `balupi wake` and `balupi plugs ...`, and the output helpers
every command shares (aligned tables, ISO local times, `--json`)."""

from __future__ import annotations

import argparse
import datetime
import json
import time
from typing import Any, Iterable, Sequence

from balupi.errors import BaluPiError

RESTART_NOTE = "A running BaluPi picks this up at its next start (sudo systemctl restart balupi)."


# -- output -----------------------------------------------------------------------------------------


def iso_local(ts: float | None) -> str:
    """A Unix time as ISO 8601 in local time with its offset (2026-12-04T18:02:11+01:00); '-' for None."""
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Rows under headers, each column as wide as its widest cell."""
    text_rows = [[str(c) for c in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in text_rows) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in text_rows)


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    """Print `data` as JSON with --json, else the human sentence(s)."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        print(human)


# -- balupi wake ------------------------------------------------------------------------------------


def wake(parts, args: argparse.Namespace) -> int:
    """Wake the NAS and wait until it answers; say how long it took."""
    from balupi.errors import NasUnavailable

    monitor = parts.monitor
    if not monitor.configured:
        raise BaluPiError("no NAS is configured (nas_webdav_url is empty): nothing to wake")
    if parts.nas_awake():
        emit(args, {"awake": True, "already_awake": True, "seconds": 0.0, "magic_packets": 0},
             "The NAS is awake already.")
        return 0
    if monitor.mac is None:
        raise BaluPiError("no MAC address is configured (nas_mac_address): BaluPi cannot wake the NAS")
    timeout_s = args.timeout_s if args.timeout_s is not None else max(
        parts.settings.nas_wake_timeout_s, 3 * parts.settings.nas_boot_time_s)
    started = time.monotonic()
    if not args.json:
        print(f"Waking the NAS (magic packets to {parts.settings.wol_address}:{parts.settings.wol_port}, "
              f"waiting up to {timeout_s:g} s) ...", flush=True)
    try:
        monitor.ensure_awake(timeout_s=timeout_s, reason="balupi wake")
    except NasUnavailable as exc:
        elapsed = time.monotonic() - started
        emit(args, {"awake": False, "seconds": round(elapsed, 1), "magic_packets": monitor.wakes_sent, "error": str(exc)},
             f"The NAS did not wake within {elapsed:.1f} s ({monitor.wakes_sent} magic packet(s) sent): {exc}. "
             "`balupi doctor` checks the settings; see the README's Wake-on-LAN checklist.")
        return 1
    elapsed = time.monotonic() - started
    emit(args, {"awake": True, "already_awake": False, "seconds": round(elapsed, 1), "magic_packets": monitor.wakes_sent},
         f"The NAS is awake after {elapsed:.1f} s ({monitor.wakes_sent} magic packet(s) sent).")
    return 0


# -- balupi plugs -----------------------------------------------------------------------------------


def _energy(parts):
    from balupi.energy.service import EnergyService

    service = EnergyService(parts.settings, parts.db, parts.events)
    service.start()
    return service


def _plug_dict(plug) -> dict:
    return {"id": plug.id, "name": plug.name, "role": plug.role.value, "host": plug.host, "port": plug.port,
            "model": plug.model, "mac": plug.mac}


def plugs(parts, args: argparse.Namespace) -> int:
    from balupi.energy.model import PlugRole

    service = _energy(parts)
    try:
        if args.action == "list":
            found = [_plug_dict(p) for p in service.plugs()]
            human = (table(["ID", "NAME", "ROLE", "ADDRESS", "MODEL", "MAC"],
                           [[p["id"], p["name"], p["role"], p["host"] + (f":{p['port']}" if p["port"] else ""),
                             p["model"], p["mac"]] for p in found])
                     if found else "No plugs yet: `balupi plugs discover` finds them, `balupi plugs add ADDRESS` adds one.")
            emit(args, {"plugs": found}, human)
        elif args.action == "discover":
            if not args.json:
                print(f"Looking for Tapo plugs (probe to {parts.settings.tapo_discovery_target}) ...", flush=True)
            found = service.discover()
            rows = [[f.get("host"), f.get("name") or "-", f.get("model") or "-", f.get("mac") or "-",
                     f"plug {f['added_as']}" if f.get("added_as") else (f.get("error_kind") or "new")] for f in found]
            emit(args, {"found": found}, table(["ADDRESS", "NAME", "MODEL", "MAC", "STATE"], rows) if found
                 else "No plugs answered. Check that they are on the Pi's network and tapo_discovery_target.")
        elif args.action == "add":
            if not args.target:
                raise BaluPiError("plugs add: name the plug's address (balupi plugs add 192.168.178.40 --role nas)")
            host, _, port_text = args.target.partition(":")
            plug = service.add_plug(host, int(port_text) if port_text else None, args.name, PlugRole(args.role))
            emit(args, {"plug": _plug_dict(plug)},
                 f"Added plug {plug.id}: {plug.name} ({plug.model}) at {args.target}, role {plug.role.value}. {RESTART_NOTE}")
        elif args.action == "remove":
            plug = service.plug(_plug_id(args.target))
            service.remove_plug(plug.id)
            emit(args, {"removed": _plug_dict(plug)}, f"Removed plug {plug.id} ({plug.name}); its readings stay. {RESTART_NOTE}")
        elif args.action == "rename":
            if not args.name:
                raise BaluPiError("plugs rename: give the new name with --name")
            plug = service.update_plug(_plug_id(args.target), name=args.name)
            emit(args, {"plug": _plug_dict(plug)}, f"Plug {plug.id} is now called {plug.name}. {RESTART_NOTE}")
    finally:
        service.stop()
    return 0


def _plug_id(text: str | None) -> int:
    if not text or not text.isdigit():
        raise BaluPiError(f"expected a plug id (see `balupi plugs list`), got {text!r}")
    return int(text)


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    """`wake` and `plugs` on the `balupi` command's subparsers (`common`: --json, --init)."""
    from balupi.energy.model import PlugRole

    p = sub.add_parser("wake", parents=[common], help="wake the NAS and wait until it answers; prints how long it took")
    p.add_argument("--timeout-s", type=float, default=None,
                   help="give up after this many seconds (default: the larger of nas_wake_timeout_s and 3 x nas_boot_time_s)")
    p.set_defaults(func=_with_parts(wake))
    p = sub.add_parser("plugs", parents=[common], help="the Tapo smart plugs: list, discover, add, remove, rename",
                       description="list: the plugs BaluPi polls. discover: find plugs on the network. "
                                   "add ADDRESS[:PORT] [--role ROLE] [--name N]: poll one (it must accept the "
                                   "Tapo account). remove ID. rename ID --name N.")
    p.add_argument("action", choices=["list", "discover", "add", "remove", "rename"])
    p.add_argument("target", nargs="?", help="add: the plug's address; remove, rename: its id")
    p.add_argument("--name", help="add, rename: the plug's name")
    p.add_argument("--role", default=PlugRole.NAS.value, choices=[r.value for r in PlugRole],
                   help="add: what the plug powers (default nas; one plug each for nas and pi)")
    p.set_defaults(func=_with_parts(plugs))


def _with_parts(fn):
    def run(args: argparse.Namespace) -> int:
        from balupi.cli import _maintenance

        parts = _maintenance(args)
        try:
            return fn(parts, args)
        finally:
            parts.close()

    return run
