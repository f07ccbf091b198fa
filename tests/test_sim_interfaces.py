"""The simulators' modules talk to each other through public names only.

`SimNas` and `SimulatedPlug` are facades over their parts (`nas_*`, `plug_*`); a part reaching into
another object's underscore attributes would tie the parts together again.
"""

from __future__ import annotations

import ast
from pathlib import Path

import balupi.sim

SIM_DIR = Path(balupi.sim.__file__).parent


def _foreign_private_attributes(source: str) -> list[str]:
    """``obj._name`` where ``obj`` is not ``self``/``cls``/``super()`` (dunders allowed)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in {"self", "cls"}:
            continue
        if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
            continue
        found.append(f"{ast.unparse(node)} (line {node.lineno})")
    return found


def test_the_check_sees_a_reach_into_another_object():
    assert _foreign_private_attributes("def f(nas):\n    nas._arrive()\n") == ["nas._arrive (line 2)"]
    assert _foreign_private_attributes("class A:\n    def f(self):\n        self.nas._finish()\n") == [
        "self.nas._finish (line 3)"
    ]
    assert _foreign_private_attributes("class A:\n    def f(self):\n        self._own()\n") == []


def test_sim_modules_use_only_public_names_of_other_objects():
    modules = sorted(SIM_DIR.glob("*.py"))
    assert any(p.name.startswith("nas_") for p in modules) and any(p.name.startswith("plug_") for p in modules)
    offenders = {p.name: hits for p in modules if (hits := _foreign_private_attributes(p.read_text()))}
    assert offenders == {}


def test_plug_is_a_facade_over_its_parts():
    plug_source = (SIM_DIR / "plug.py").read_text()
    for part in ("plug_klap", "plug_device", "plug_meter", "plug_http", "plug_discovery"):
        assert f"from balupi.sim.{part} import" in plug_source
    # the wire protocol, the meter's arithmetic and the sockets live in the parts
    for detail in ("hashlib.sha256(b\"lsk\"", "_integrate_to", "socket.socket(", "struct.pack"):
        assert detail not in plug_source
