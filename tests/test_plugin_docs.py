"""Keeps the plugin hooks honest (as Datasette's suite does): every hookspec has a section in
docs/plugins.md, is called from BaluPi's code, and is exercised by a test; every event is a hook."""

from __future__ import annotations

import inspect
import re

import pytest

from balupi import hookspecs
from balupi.events import Event
from tests.helpers import REPO_ROOT

HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("balupi_"))
EVENT_HOOKS = {"balupi_" + e.value: e for e in Event}
DOC = (REPO_ROOT / "docs" / "plugins.md").read_text()
CODE = {p: p.read_text() for p in (REPO_ROOT / "balupi").rglob("*.py") if p.name != "hookspecs.py"}
TESTS = "\n".join(p.read_text() for p in (REPO_ROOT / "tests").glob("test_*.py") if p.name != "test_plugin_docs.py")


def test_there_are_hooks_of_each_kind():
    assert "balupi_before_wake" in HOOKS and "balupi_startup" in HOOKS and "balupi_eviction_order" in HOOKS


def test_every_event_is_an_observe_hook():
    assert [name for name in EVENT_HOOKS if name not in HOOKS] == []


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    section = re.search(rf"^### `{hook}`\n(.*?)(?=^##)", DOC + "\n##", re.S | re.M)
    assert section is not None, f"add a '### `{hook}`' section to docs/plugins.md"
    assert f"{hook}(" in section.group(1), "the section shows the signature"
    assert "```python" in section.group(1) and "def " + hook in section.group(1), "and a minimal example"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_called_from_balupis_code(hook):
    if hook in EVENT_HOOKS:  # called by the plugin host for every emit of its event
        event = EVENT_HOOKS[hook]
        callers = [p for p, text in CODE.items() if f"emit(Event.{event.name}," in text]
    else:
        callers = [p for p, text in CODE.items() if f'"{hook}"' in text]
    assert callers, f"nothing in balupi/ calls {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook):
    assert re.search(rf"def {hook}\(", TESTS), f"no test plugin implements {hook}"
