"""Energy monitoring: Tapo plugs polled with python-kasa, the energy ledger, tariffs and savings."""

# The energy tables belong to this package as a whole: the recorder writes samples, the ledger and
# gaps, the rollups aggregate and prune them, the queries read them, the service keeps the plugs.
# Nothing outside balupi.energy runs SQL on them (tests/test_layers.py).
OWNS = ("energy_plugs", "energy_samples", "energy_plug_days", "energy_ledger", "energy_gaps", "energy_hourly",
        "energy_daily", "energy_monthly", "energy_tariffs", "energy_state", "nas_power_transitions")
