"""The `balupi` command: `serve`, `demo`, `config`, and the cron-style maintenance commands."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from balupi import __version__
from balupi.errors import BaluPiError, ConfigError


def _load(args: argparse.Namespace):
    from balupi.log import register_secret, setup_logging
    from balupi.settings import SETTINGS, load_settings

    settings = load_settings()
    setup_logging(settings.log_level)
    for s in SETTINGS:
        if s.secret:
            register_secret(getattr(settings, s.name))
    return settings


def _apply_serve_options(args: argparse.Namespace) -> None:
    """`balupi serve --port 8080` and friends: the same as the BALUPI_* variables (which they override)."""
    import os

    for option, variable in (("config", "BALUPI_CONFIG"), ("host", "BALUPI_HOST"), ("port", "BALUPI_PORT"),
                             ("data_dir", "BALUPI_DATA_DIR"), ("cache_dir", "BALUPI_CACHE_DIR"),
                             ("log_level", "BALUPI_LOG_LEVEL")):
        value = getattr(args, option, None)
        if value is not None:
            os.environ[variable] = str(value)


def cmd_serve(args: argparse.Namespace) -> int:
    from balupi.app import BaluPi
    from balupi.server import serve_forever, tune_malloc

    from balupi.server import listen_problem

    tune_malloc()  # before any thread starts
    _apply_serve_options(args)
    settings = _load(args)
    problem = listen_problem(settings.host, settings.port) if settings.port else None
    if problem:  # before the database is opened or migrated
        raise ConfigError(f"BALUPI_HOST/BALUPI_PORT: {problem}")
    serve_forever(BaluPi(settings))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from balupi.demo import DemoOptions, run

    chosen = {name: getattr(args, name) for name in ("port", "duration_s", "boot_delay_s", "idle_suspend_s")}
    options = DemoOptions(keep=args.keep, log_level=args.log_level,
                          **{name: value for name, value in chosen.items() if value is not None})
    return run(options)


def cmd_config(args: argparse.Namespace) -> int:
    from balupi.settings import example_env, example_toml, load_settings

    if args.action == "example-toml":
        sys.stdout.write(example_toml())
    elif args.action == "example-env":
        sys.stdout.write(example_env())
    else:
        import json

        settings = load_settings(prepare_dirs=False)
        shown = settings.public_dict()
        if args.json:
            print(json.dumps({name: {"value": value, "source": settings.sources.get(name)}
                              for name, value in shown.items()}, indent=2))
            return 0
        width = max(len(name) for name in shown)
        for name, value in shown.items():
            print(f"{name:<{width}} = {value!r}  ({settings.sources.get(name)})")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from balupi.plugins import print_listing

    return print_listing(_load(args), as_json=args.json)


def cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from balupi.doctor import failed, render, run_checks

    checks = run_checks()
    if args.json:
        print(json.dumps({"ok": not failed(checks), "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        print(render(checks))
    return 1 if failed(checks) else 0


def _port_arg(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {port}")
    return port


def cmd_energy(args: argparse.Namespace) -> int:
    from balupi.energy.cli import calibrate
    from balupi.settings import load_settings

    return calibrate(load_settings(), args.days, args.json)


def _maintenance(args: argparse.Namespace):
    """Settings, logging and the parts a maintenance command needs (beside a running server).
    Refuses a data directory without a database (a wrong BALUPI_DATA_DIR would otherwise get a new,
    empty one and report zeros), unless --init."""
    from balupi.log import register_secret, setup_logging
    from balupi.db import DB_FILENAME
    from balupi.maintenance import Parts
    from balupi.settings import SETTINGS, load_settings

    init = getattr(args, "init", False)
    settings = load_settings(prepare_dirs=False)
    database = settings.data_dir / DB_FILENAME
    if not init and not database.is_file():
        raise BaluPiError(f"no database at {database}: is BALUPI_DATA_DIR right? (the service's is /var/lib/balupi: "
                          "run commands with scripts/balupi-admin.sh); --init creates a new one")
    settings = load_settings(prepare_dirs=True)
    setup_logging(settings.log_level)
    for s in SETTINGS:
        if s.secret:
            register_secret(getattr(settings, s.name))
    return Parts(settings)


def cmd_sync(args: argparse.Namespace) -> int:
    from balupi.maintenance import sync

    parts = _maintenance(args)
    try:
        outcome = sync(parts, wake=args.wake, budget_s=args.budget_s)
    finally:
        parts.close()
    _report(args, {"applied": outcome.applied, "conflicts": outcome.conflicts, "waiting": outcome.remaining,
                   "note": outcome.note or None, "failed": bool(outcome.failed)},
            f"sync: {outcome.applied} applied, {outcome.conflicts} conflict(s), {outcome.remaining} waiting"
            + (f"; {outcome.note}" if outcome.note else ""))
    if outcome.failed:
        print(f"balupi: sync failed: {outcome.last_error or outcome.note}", file=sys.stderr)
        return 1
    return 0


def cmd_evict(args: argparse.Namespace) -> int:
    from balupi.maintenance import evict

    parts = _maintenance(args)
    try:
        files, freed = evict(parts, args.to_gb)
        used = parts.cache.used_bytes()
    finally:
        parts.close()
    _report(args, {"files": files, "freed_bytes": freed, "cached_bytes": used},
            f"evict: {files} file(s), {freed / 1e6:.1f} MB freed; {used / 1e6:.1f} MB cached")
    return 0


def cmd_prefetch(args: argparse.Namespace) -> int:
    from balupi.maintenance import prefetch

    parts = _maintenance(args)
    try:
        result = prefetch(parts, args.budget_mb)
    finally:
        parts.close()
    _report(args, {"files": result.files, "bytes": result.bytes, "stopped": result.stopped or None},
            f"prefetch: {result.files} file(s), {result.bytes / 1e6:.1f} MB" + (f"; {result.stopped}" if result.stopped else ""))
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    from balupi.maintenance import refresh

    parts = _maintenance(args)
    try:
        outcome = refresh(parts, budget_s=args.budget_s)
    finally:
        parts.close()
    _report(args, {"listed": outcome.listed, "removed": outcome.removed, "complete": outcome.complete,
                   "note": outcome.note or None},
            f"refresh: {outcome.listed} folder(s) listed, {outcome.removed} gone from the NAS"
            + ("" if outcome.complete else f"; not complete: {outcome.note or 'time budget spent'}"))
    return 0


def cmd_vacuum(args: argparse.Namespace) -> int:
    from balupi.maintenance import vacuum

    parts = _maintenance(args)
    try:
        result = vacuum(parts.db)
    finally:
        parts.close()
    _report(args, result, f"vacuum: {result['before_bytes'] / 1e6:.2f} MB -> {result['after_bytes'] / 1e6:.2f} MB"
            + ("; the WAL could not be emptied yet (the server was reading)" if result["checkpoint_busy"] else ""))
    return 0


def cmd_backup_db(args: argparse.Namespace) -> int:
    from balupi.maintenance import backup_db

    target = Path(args.path)
    if args.path.endswith(("/", os.sep)) or target.is_dir():  # a folder: created if need be, a dated name inside
        target.mkdir(parents=True, exist_ok=True)
    elif not target.parent.is_dir():
        raise BaluPiError(f"backup-db: the folder {target.parent} does not exist (end the path with / to create a folder)")
    parts = _maintenance(args)
    try:
        result = backup_db(parts.db, target)
    finally:
        parts.close()
    _report(args, result, f"backup-db: {result['path']} ({result['bytes'] / 1e6:.2f} MB, {sum(result['rows'].values())} rows)")
    return 0


def cmd_restore_db(args: argparse.Namespace) -> int:
    from balupi.maintenance import restore_db

    result = restore_db(_load(args), args.path)
    lines = [f"taken back from the cache: {path}" for path in result["recovered_paths"]]
    lines.append(f"restore-db: {result['restored']} put back"
                 + (f" (the database it replaced was moved to {result['moved_aside']})" if result["moved_aside"] else "")
                 + f"; {result['settled']} change(s) synced since the backup, {result['recovered']} pending change(s)"
                 f" and {result['adopted']} cached file(s) taken back from the cache, {result['uncached']} entr(y/ies)"
                 f" uncached, {result['quarantined']} unknown file(s) quarantined")
    _report(args, result, "\n".join(lines))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    import json

    from balupi.cache import stats
    from balupi.maintenance import verify_cache

    parts = _maintenance(args)
    try:
        if args.action == "stats":
            figures = stats.figures(parts.db, parts.settings.cache_max_size_gb)
            _report(args, figures, _stats_sentences(figures))
            return 0
        budget = None if args.content_gb is None else int(args.content_gb * 1e9)
        report = verify_cache(parts, repair=args.repair, content_budget_bytes=budget)
    finally:
        parts.close()
    if args.json:
        print(json.dumps({"checked": report.checked, "files_seen": report.files_seen, "missing": report.missing,
                          "wrong_size": report.wrong_size, "orphans": report.orphans, "data_loss": report.data_loss,
                          "repaired": report.repaired, "recent_orphans": report.recent_orphans,
                          "checked_files": report.checked_files, "checked_bytes": report.checked_bytes,
                          "content_complete": report.content_complete, "damaged": report.damaged,
                          "damaged_pending": report.damaged_pending, "unindexed": report.unindexed,
                          "recovered": report.recovered, "adopted": report.adopted, "quarantined": report.quarantined,
                          "refetched": report.refetched, "sidecars_added": report.sidecars_added,
                          "clean": report.clean}, indent=2, default=str))
        return 0 if report.clean else 1
    for path in report.data_loss:
        print(f"balupi: DATA LOSS: {path}: the Pi held the only copy", file=sys.stderr)
    for path in report.damaged_pending:
        print(f"balupi: DAMAGED: {path}: a change only the Pi holds no longer matches its checksum; never uploaded"
              + ("; kept in quarantine for a person (GET /api/cache/conflicts)" if args.repair else ""), file=sys.stderr)
    fix = "fixed" if args.repair else "to fix (--repair)"
    for kind, items in (("content missing", report.missing), ("wrong size", report.wrong_size),
                        ("damaged content", report.damaged), ("orphan content", report.orphans),
                        ("pending change not in the index", report.unindexed)):
        for item in items:
            print(f"{kind} ({fix}): {item}")
    for item in report.quarantined:
        print(f"quarantined: {item}")
    print(f"cache verify: {report.checked} cached file(s) checked, the content of {report.checked_files}"
          f" ({report.checked_bytes / 1e6:.1f} MB){'' if report.content_complete else ', the rest next time'},"
          f" {report.files_seen} content file(s) seen;"
          f" {len(report.missing)} missing, {len(report.wrong_size)} wrong size, {len(report.damaged)} damaged,"
          f" {len(report.damaged_pending)} damaged pending, {len(report.orphans)} orphan(s),"
          f" {len(report.unindexed)} pending not in the index, {len(report.data_loss)} lost; {report.repaired} repaired"
          + (f"; {len(report.recovered)} pending change(s) taken back" if report.recovered else "")
          + (f"; {report.adopted} cached file(s) taken back" if report.adopted else "")
          + (f"; {report.refetched} fetched again from the NAS" if report.refetched else "")
          + (f"; {report.sidecars_added} sidecar(s) added" if report.sidecars_added else "")
          + (f"; {report.recent_orphans} unreferenced file(s) too new to judge" if report.recent_orphans else ""))
    return 0 if report.clean else 1


def cmd_status(args: argparse.Namespace) -> int:
    from balupi.db import DB_FILENAME
    from balupi.status import main

    settings = _load(args)
    database = settings.data_dir / DB_FILENAME
    if not args.init and not database.is_file():  # as the maintenance commands: no new, empty database
        raise BaluPiError(f"no database at {database}: is BALUPI_DATA_DIR right? (the service's is /var/lib/balupi: "
                          "run commands with scripts/balupi-admin.sh); --init creates a new one")
    return main(settings, args.json)


def _report(args: argparse.Namespace, data: dict, human: str) -> None:
    from balupi.commands import emit

    emit(args, data, human)


def _stats_sentences(f: dict) -> str:
    from balupi.commands import iso_local

    conflicts = f["conflicts"]
    oldest = f["oldest_pending_change"]
    return "\n".join([
        f"Cached: {f['total_files']} file(s), {f['total_size_mb']:.1f} MB of {f['max_size_gb']:g} GB ({f['usage_percent']:g} %).",
        f"Not yet on the NAS: {f['dirty_files']} file(s), {f['dirty_bytes'] / 1e6:.1f} MB; {f['pending_changes']} pending change(s)"
        + (f", the oldest from {iso_local(oldest)}." if oldest else "."),
        f"Conflicts: {conflicts['count']} ({conflicts['unresolved']} unresolved).",
    ])


def _gb_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of GB, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more GB, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="balupi", description="BaluPi: a hot-cache WebDAV front for a sleeping NAS.")
    parser.add_argument("--version", action="version", version=f"balupi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)  # what every command that reports takes
    common.add_argument("--json", action="store_true", help="print JSON instead of sentences")
    common.add_argument("--init", action="store_true",
                        help="create the database if the data directory has none (otherwise refused: a wrong "
                             "BALUPI_DATA_DIR would get a new, empty one)")
    p = sub.add_parser("serve", help="run the WebDAV server, API and background jobs",
                       description="Run BaluPi. Every setting comes from the TOML file and BALUPI_* variables "
                                   "(balupi config shows them); these options override the most common ones.")
    p.add_argument("--config", metavar="FILE", help="the TOML settings file (as BALUPI_CONFIG)")
    p.add_argument("--host", help="address to listen on (as BALUPI_HOST; default 0.0.0.0, every interface)")
    p.add_argument("--port", type=_port_arg, help="port for WebDAV and the API (as BALUPI_PORT; default 8000)")
    p.add_argument("--data-dir", metavar="DIR", help="database and keys (as BALUPI_DATA_DIR)")
    p.add_argument("--cache-dir", metavar="DIR", help="cached file content, on the SSD (as BALUPI_CACHE_DIR)")
    p.add_argument("--log-level", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="as BALUPI_LOG_LEVEL (default INFO)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("demo", help="run BaluPi with a simulated NAS and smart plug on 127.0.0.1 (no hardware needed)")
    p.add_argument("--port", type=_port_arg, default=None, help="BaluPi's port (default 8000, or a free one if taken)")
    p.add_argument("--duration-s", type=float, default=None, help="stop by itself this many seconds after it is ready (for scripts and tests)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    p.add_argument("--boot-delay-s", type=float, help="how long the simulated NAS takes to boot (default 3)")
    p.add_argument("--idle-suspend-s", type=float, help="the simulated NAS suspends after this long without requests (default 60)")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                   help="BaluPi's log level on stderr (default WARNING)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("energy", help="energy monitor tools (calibrate: propose NAS power thresholds)")
    p.add_argument("action", choices=["calibrate"])
    p.add_argument("--days", type=float, default=7.0, help="use the `nas` plug's samples of the last DAYS days (default 7)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_energy)
    p = sub.add_parser("sync", parents=[common], help="apply pending changes to the NAS now, if it is awake")
    p.add_argument("--wake", action="store_true", help="wake the NAS for it (Wake-on-LAN) if it sleeps")
    p.add_argument("--budget-s", type=float, default=3600.0, help="stop after this many seconds (default 3600)")
    p.set_defaults(func=cmd_sync)
    p = sub.add_parser("evict", parents=[common], help="evict the coldest clean files from the cache")
    p.add_argument("--to-gb", type=_gb_arg, default=None, help="down to this many GB cached (default: to the configured limits)")
    p.set_defaults(func=cmd_evict)
    p = sub.add_parser("prefetch", parents=[common], help="fetch pinned, hot and recent files while the NAS is awake (never wakes it)")
    p.add_argument("--budget-mb", type=float, default=None, help="fetch at most this many MB (default: BALUPI_PREFETCH_BUDGET_MB)")
    p.set_defaults(func=cmd_prefetch)
    p = sub.add_parser("refresh", parents=[common], help="list every folder from the NAS into the index, if it is awake (never wakes it)")
    p.add_argument("--budget-s", type=float, default=3600.0, help="stop after this many seconds (default 3600)")
    p.set_defaults(func=cmd_refresh)
    p = sub.add_parser("vacuum", parents=[common], help="compact the database and empty its write-ahead log")
    p.set_defaults(func=cmd_vacuum)
    p = sub.add_parser("backup-db", parents=[common], help="copy the database while the server runs (online backup)")
    p.add_argument("path", help="the copy's file name, or a folder (an existing one, or any path ending in /: "
                                "created; a dated name is chosen inside)")
    p.set_defaults(func=cmd_backup_db)
    p = sub.add_parser("restore-db", parents=[common], help="put a backup of the database back (with the server stopped)"
                                                           " and take back from the cache what was written since")
    p.add_argument("path", type=Path, help="the backup (a file written by backup-db)")
    p.set_defaults(func=cmd_restore_db)
    p = sub.add_parser("cache", parents=[common], help="the file cache: stats, or verify (check every cached file against the index)",
                       description="stats: cached and not-yet-synced files, pending changes, conflicts. verify: check "
                                   "every cached file against the index and its checksums (--repair: quarantine what"
                                   " is damaged, take back what the index lost; never deletes the only copy).")
    p.add_argument("action", choices=["stats", "verify"], help="stats or verify (see above)")
    p.add_argument("--repair", action="store_true", help="verify: drop what is wrong, remove orphan content")
    p.add_argument("--content-gb", type=_gb_arg, default=None,
                   help="verify: read and check the content of at most this many GB (the next run goes on from there);"
                        " default: all")
    p.set_defaults(func=cmd_cache)
    from balupi.commands import add_parsers

    add_parsers(sub, common)
    from balupi.firstrun import add_parser as add_setup_parser

    add_setup_parser(sub)
    p = sub.add_parser("status", parents=[common],
                       help="the NAS, its last wakes and why, power, today's cost, cache, pending sync, problems")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("doctor", help="check everything BaluPi depends on: one verdict line each, with the fix (exit 1 if something is wrong)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("config", help="show the settings in force, or print the example files",
                       description="show (the default): every setting in force and where it came from (default, the "
                                   "TOML file, or the environment), passwords as ***. example-toml / example-env: "
                                   "every setting with its default and help, as etc/balupi.toml.example and "
                                   ".env.example are made.")
    p.add_argument("action", nargs="?", choices=["show", "example-toml", "example-env"], default="show",
                   help="show, example-toml or example-env (see above)")
    p.add_argument("--json", action="store_true", help="show: print JSON")
    p.set_defaults(func=cmd_config)
    p = sub.add_parser("plugins", help="list the plugins: version, hooks, enabled, errors, dropped events")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"balupi: configuration error: {exc}", file=sys.stderr)
        return 2
    except BaluPiError as exc:
        print(f"balupi: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
