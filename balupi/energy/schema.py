"""The energy monitor's tables (migration set "energy").

    energy_plugs          the plugs: name, role, address, python-kasa config (credentials hash, never the password)
    energy_samples        raw polls (power, voltage, current, the plug's day/month Wh counters, its clock); 7 days
    energy_plug_days      per plug and plug-local date: the last day counter seen (the ledger's watermark) and,
                          once known, the day's final total; two years
    energy_ledger         energy pieces, none crossing an hour: counter deltas, shaped by sampled power; 7 days
    energy_gaps           stretches with no samples: explicit, never integrated across; two years
    energy_hourly         rollup of the ledger per plug and local hour, with price and cost; two years
    energy_daily          ... per local day; forever
    energy_monthly        ... per local month; forever
    energy_tariffs        versioned prices
    nas_power_transitions the `nas` plug's power state changes, with the time and energy of the state left
    energy_state          small facts (e.g. how far the ledger has been rolled up)

Times are epoch seconds (REAL); `hour_s` is the epoch of a local hour's start; `day` is 'YYYY-MM-DD'
and `month` 'YYYY-MM' in the energy time zone. Steps are never edited once released.
"""

from sqlite_utils.migrations import Migrations

migrations = Migrations("energy")

_STATE_COLUMNS = {
    f"{state}_{unit}": float for state in ("off", "standby", "idle", "active") for unit in ("s", "wh")
}
_ROLLUP_COLUMNS = {
    "energy_wh": float,  # measured + filled + estimated
    "filled_wh": float,  # of which came across gaps
    "covered_s": float,  # seconds the ledger accounts for (the rest were gaps)
    "cost_cents": float,
    "max_power_w": float,
    "samples": int,
    **_STATE_COLUMNS,
}


@migrations(name="0001_initial")
def initial(db):
    db["energy_plugs"].create(
        {
            "id": int,
            "name": str,
            "role": str,
            "host": str,
            "port": int,
            "config_json": str,
            "model": str,
            "mac": str,
            "hardware_id": str,
            "timezone": str,
            "added_at": float,
            "updated_at": float,
        },
        pk="id",
        not_null={"name", "role", "host"},
    )
    db["energy_samples"].create(
        {
            "id": int,
            "plug_id": int,
            "at": float,
            "power_w": float,
            "voltage_v": float,
            "current_a": float,
            "today_wh": int,
            "month_wh": int,
            "plug_time": str,  # the plug's local time, ISO with offset
            "plug_date": str,
            "plug_secs": float,  # seconds into the plug's local day
            "plug_offset_s": float,  # BaluPi's clock minus the plug's
            "is_on": int,
        },
        pk="id",
    )
    db["energy_samples"].create_index(["plug_id", "at"])
    db["energy_samples"].create_index(["at"])
    db["energy_plug_days"].create(
        {"plug_id": int, "plug_date": str, "today_wh": int, "final_wh": int, "first_at": float, "last_at": float},
        pk=("plug_id", "plug_date"),
    )
    db["energy_ledger"].create(
        {
            "id": int,
            "plug_id": int,
            "start_s": float,
            "end_s": float,
            "hour_s": int,
            "energy_wh": float,
            "kind": str,
            "nas_state": str,
            "power_w": float,  # the reading that closed the piece (NULL on all but the last piece of a reading)
            "samples": int,
        },
        pk="id",
    )
    db["energy_ledger"].create_index(["plug_id", "start_s"])
    db["energy_ledger"].create_index(["start_s"])
    db["energy_gaps"].create(
        {
            "id": int,
            "plug_id": int,
            "start_s": float,
            "end_s": float,
            "status": str,
            "reason": str,
            "filled_wh": float,
            "unfilled_s": float,
            "source": str,
        },
        pk="id",
    )
    db["energy_gaps"].create_index(["plug_id", "start_s"])
    db["energy_hourly"].create(
        {"plug_id": int, "hour_s": int, "day": str, "price_cents_per_kwh": float, **_ROLLUP_COLUMNS},
        pk=("plug_id", "hour_s"),
        defaults={name: 0 for name in _ROLLUP_COLUMNS},
    )
    db["energy_hourly"].create_index(["hour_s"])
    db["energy_hourly"].create_index(["plug_id", "day"])
    db["energy_daily"].create(
        {"plug_id": int, "day": str, "month": str, **_ROLLUP_COLUMNS},
        pk=("plug_id", "day"),
        defaults={name: 0 for name in _ROLLUP_COLUMNS},
    )
    db["energy_daily"].create_index(["day"])
    db["energy_daily"].create_index(["plug_id", "month"])
    db["energy_monthly"].create(
        {"plug_id": int, "month": str, **_ROLLUP_COLUMNS},
        pk=("plug_id", "month"),
        defaults={name: 0 for name in _ROLLUP_COLUMNS},
    )
    db["energy_tariffs"].create(
        {
            "id": int,
            "name": str,
            "valid_from_s": float,
            "valid_to_s": float,
            "currency": str,
            "price_cents_per_kwh": float,
            "standing_charge_cents_per_day": float,
            "windows_json": str,
            "created_at": float,
        },
        pk="id",
    )
    db["nas_power_transitions"].create(
        {
            "id": int,
            "plug_id": int,
            "at": float,
            "from_state": str,
            "to_state": str,
            "power_w": float,
            "left_state_s": float,  # how long the state that ended lasted
            "left_state_wh": float,  # and the energy drawn in it
        },
        pk="id",
    )
    db["nas_power_transitions"].create_index(["at"])
    db["energy_state"].create({"key": str, "value": str}, pk="key")
