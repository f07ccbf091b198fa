"""A stack with a simulated NAS *and* a simulated Tapo plug registered as its `nas` plug, for the
tests of what a household sees (metrics, the dashboard, `balupi status`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from balupi.energy.model import PlugRole
from balupi.sim.plug import SimulatedPlug
from tests.davkit import stack_with
from tests.stack import Stack

TAPO_USER, TAPO_PASSWORD = "owner@example.com", "tapo-pw"


@dataclass
class PlugStack:
    stack: Stack
    plug: SimulatedPlug
    plug_id: int


def stack_with_plug(stack_factory, tmp_path: Path, files: dict[str, bytes], power_w: float | None = 3600.0,
                    **overrides) -> PlugStack:
    """`power_w`: what the plug reads, constant; None: what the simulated NAS draws in its state
    (asleep, booting, idle, busy: `balupi.demo.nas_power_w`), as a plug in front of it would read."""
    from balupi.demo import nas_power_w

    plug = SimulatedPlug(username=TAPO_USER, password=TAPO_PASSWORD, nickname="NAS", power_w=power_w or 0.0).start()
    stack = stack_with(stack_factory, tmp_path, files, tapo_username=TAPO_USER, tapo_password=TAPO_PASSWORD,
                       energy_sample_interval_seconds=5, energy_poll_timeout_s=3, **overrides)
    if power_w is None:
        plug.follow(lambda: nas_power_w(stack.nas), tick_s=1.0)
    added = stack.app.energy.add_plug("127.0.0.1", plug.port, "NAS", PlugRole.NAS)
    stack.app.energy.poll_all(wait=True)
    return PlugStack(stack, plug, added.id)
