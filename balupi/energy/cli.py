"""`balupi energy ...`: commands that read the energy database without starting the server.

    balupi energy calibrate [--days 7] [--json]
        Propose NAS power thresholds from the histogram of the `nas` plug's recent samples.
        Prints them; applying them is up to you (etc/balupi.toml or BALUPI_NAS_POWER_*).
"""

from __future__ import annotations

import json
import time

from balupi.db import DB_FILENAME, open_database
from balupi.energy.model import PlugRole
from balupi.energy.nasstate import Thresholds, propose_thresholds
from balupi.errors import BaluPiError
from balupi.settings import Settings

NAMES = ("nas_power_off_below_w", "nas_power_standby_below_w", "nas_power_idle_below_w")


def calibrate(settings: Settings, days: float, as_json: bool = False) -> int:
    db = open_database(settings.data_dir / DB_FILENAME)
    try:
        plug = db.query_one("SELECT id, name FROM energy_plugs WHERE role = ?", (PlugRole.NAS.value,))
        if plug is None:
            raise BaluPiError("no plug has the role 'nas': add one (POST /api/tapo/devices) and let it collect samples")
        since = time.time() - days * 86400
        powers = [r[0] for r in db.query(
            "SELECT power_w FROM energy_samples WHERE plug_id = ? AND at >= ?", (plug["id"], since))]
    finally:
        db.close()
    current = Thresholds.from_settings(settings)
    result = propose_thresholds(powers, current)
    proposed = result.proposed
    if as_json:
        print(json.dumps({
            "plug": {"id": plug["id"], "name": plug["name"]},
            "samples": result.samples,
            "days": days,
            "clusters": result.clusters,
            "current": dict(zip(NAMES, current.limits)),
            "proposed": dict(zip(NAMES, proposed.limits)) if proposed else None,
            "notes": result.notes,
        }, indent=2))
        return 0 if proposed else 1
    print(f"NAS plug {plug['name']!r} (plug {plug['id']}): {result.samples} samples over the last {days:g} days")
    if result.clusters:
        print("clusters: " + ", ".join(f"{c['power_w']:g} W ({c['state']}, {c['share']:.0%})" for c in result.clusters))
    for note in result.notes:
        print(f"note: {note}")
    if proposed is None:
        print("no proposal: let the plug collect more samples")
        return 1
    print(f"\n{'setting':<28}{'current':>9}{'proposed':>10}")
    for name, now, new in zip(NAMES, current.limits, proposed.limits):
        print(f"{name:<28}{now:>9g}{new:>10g}")
    print("\nTo use them, add to etc/balupi.toml (or set BALUPI_<NAME>) and restart:")
    for name, new in zip(NAMES, proposed.limits):
        print(f"{name} = {new:g}")
    return 0
