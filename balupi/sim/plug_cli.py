"""``python -m balupi.sim.plug``: one simulated plug on 127.0.0.1 until interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from balupi.sim.plug import DEFAULT_VOLTAGE_V, DISCOVERY_PORTS, PlugModel, SimulatedPlug

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run one simulated plug on 127.0.0.1 until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m balupi.sim.plug", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: pick a free one)")
    parser.add_argument("--user", default="user@example.com", help="Tapo cloud account e-mail")
    parser.add_argument("--password", default="secret", help="Tapo cloud account password")
    parser.add_argument("--power-w", type=float, default=25.0, help="constant power draw in watts")
    parser.add_argument("--voltage-v", type=float, default=DEFAULT_VOLTAGE_V)
    parser.add_argument("--timezone", default="Europe/Berlin", help="IANA zone of the plug")
    parser.add_argument("--model", choices=[m.value for m in PlugModel], default=PlugModel.P110.value)
    parser.add_argument("--nickname", default="NAS")
    parser.add_argument("--off", action="store_true", help="start with the relay off")
    parser.add_argument(
        "--discovery-port", type=int, choices=DISCOVERY_PORTS, default=None, help="also answer UDP discovery"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")

    plug = SimulatedPlug(
        username=args.user,
        password=args.password,
        port=args.port,
        power_w=args.power_w,
        voltage_v=args.voltage_v,
        timezone=args.timezone,
        model=PlugModel(args.model),
        nickname=args.nickname,
        device_on=not args.off,
        discovery_port=args.discovery_port,
        auto_tick_s=1.0,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with plug:
        print(f"simulated {plug.model.value} on {plug.host}:{plug.port} (KLAP v2, user {args.user})", flush=True)
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
    return 0
