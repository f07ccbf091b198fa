"""Run every reliability scenario and print its figures.

    python -m bench.reliability            # the short forms (as the tests run them)
    python -m bench.reliability --long     # the long forms: a 10-minute load run, a 5-minute idle day, ...
    python -m bench.reliability --only load_mix,frozen_nas
    python -m bench.reliability --list

Scenarios are found, not listed: every module of this package that defines `SCENARIOS` (a list of
callables taking `long: bool` and returning a dict of figures). Run it alone on the machine: the
load and the timings are part of what it measures. Exit status 1 if a scenario raised.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

PACKAGE = "bench.reliability"


def discover() -> list[tuple[str, Callable[[bool], dict]]]:
    found = []
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        for scenario in getattr(module, "SCENARIOS", []):
            found.append((f"{info.name}.{scenario.__name__}", scenario))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="the long forms of the scenarios")
    parser.add_argument("--only", default="", help="comma-separated scenario names (with or without module)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    scenarios = discover()
    if args.only:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        scenarios = [(n, f) for n, f in scenarios if n in wanted or n.split(".", 1)[1] in wanted]
    if args.list:
        for name, _ in scenarios:
            print(name)
        return 0
    failed = 0
    for name, scenario in scenarios:
        print(f"== {name} ({'long' if args.long else 'short'})", flush=True)
        started = time.monotonic()
        try:
            figures = scenario(args.long)
        except Exception:  # noqa: BLE001 - report and go on with the next scenario
            failed += 1
            traceback.print_exc()
            continue
        print(json.dumps(figures, indent=1, default=str))
        print(f"   ({time.monotonic() - started:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
