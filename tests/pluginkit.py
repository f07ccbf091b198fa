"""Helpers for the plugin tests: write plugin modules into a plugins directory, start the whole
stack (tests/stack.py) with it, and reach a loaded plugin module to read what it recorded.

Plugins here are real plugin files found by directory discovery, not objects slipped into the
manager: the tests go through the same loading, configuration and hook calls as a household's.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any, Callable

from tests.davkit import CLIENT_DRIVEN, seed

REPO_PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def write_plugins(directory: Path, sources: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return directory


def plugin_stack(stack_factory: Callable, tmp_path: Path, sources: dict[str, str] | None = None,
                 config: dict | None = None, files: dict[str, bytes] | None = None, plugins_dir: Path | None = None,
                 **overrides: Any):
    """A stack whose plugins_dir holds `sources` ({name: module source}) with `config` ({name: {key: value}})."""
    if plugins_dir is None:
        plugins_dir = write_plugins(tmp_path / "plugins", sources or {})
    seed(tmp_path / "nas", files or {})
    return stack_factory(**{**CLIENT_DRIVEN, "plugins_dir": str(plugins_dir), "plugins": config or {}, **overrides})


def plugin(app, name: str) -> Any:
    """The loaded module (or object) of plugin `name`."""
    info = app.plugins.infos[name]
    assert info.registered, (name, info.errors)
    return info.obj


def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return predicate()
