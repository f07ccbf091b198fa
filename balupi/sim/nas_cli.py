"""Command line of the simulated NAS: ``python -m balupi.sim.nas`` (or ``python -m balupi.sim.nas_cli``).

    python -m balupi.sim.nas --root DIR [--port N] [--wol-port N] [--control-port N]
        [--mac aa:bb:cc:dd:ee:ff] [--user name:password[:role]]... [--boot-delay-s X]
        [--spinup-delay-s X] [--sleep-mode suspend|soft] [--idle-suspend-s X]
        [--initial-state awake|suspended|...] [--seed-sample-tree]

When ready it prints one JSON line on stdout: {"event": "ready", "pid", "host", "port",
"wol_port", "control_port", "mac", "root", "base_url", "dav_url", "state", "users",
"control_url"}; then it runs until SIGTERM/SIGINT or ``POST /shutdown`` on the control port.
Logs go to stderr. Ports given as 0 (the default) are chosen free.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal

from balupi.sim.nas import DEFAULT_MAC, SimNas
from balupi.sim.nas_seed import seed_sample_tree
from balupi.sim.nas_state import PowerState, SleepMode


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
