"""The `balupi` command: `serve`, `demo`, `config`, and the cron-style maintenance commands."""

from __future__ import annotations

import argparse
import sys

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


def cmd_serve(args: argparse.Namespace) -> int:
    from balupi.app import BaluPi
    from balupi.server import serve_forever, tune_malloc

    tune_malloc()  # before any thread starts
    settings = _load(args)
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
        settings = load_settings(prepare_dirs=False)
        for name, value in settings.public_dict().items():
            print(f"{name} = {value!r}  ({settings.sources.get(name)})")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="balupi", description="BaluPi: a hot-cache WebDAV front for a sleeping NAS.")
    parser.add_argument("--version", action="version", version=f"balupi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the WebDAV server, API and background jobs")
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
    p = sub.add_parser("config", help="show the settings in force, or print the example files")
    p.add_argument("action", nargs="?", choices=["show", "example-toml", "example-env"], default="show")
    p.set_defaults(func=cmd_config)
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
