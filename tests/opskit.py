"""Helpers for the operations tests: the `balupi` command as a subprocess configured like a server
(the same data dir, cache dir and NAS), and reading a data dir's database from outside."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from balupi.settings import SETTINGS, Settings
from tests.helpers import subprocess_env

COMMAND_TIMEOUT_S = 120.0  # a bound for a hang, never an assertion about speed


def env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(value)
    return str(value)


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """BALUPI_* variables giving a subprocess the settings `settings` has (all but the defaults)."""
    env = {}
    for s in SETTINGS:
        value = getattr(settings, s.name)
        if settings.sources.get(s.name, "default") != "default" and value is not None:
            env[s.env_name] = env_value(value)
    env.update({"BALUPI_DATA_DIR": str(settings.data_dir), "BALUPI_CACHE_DIR": str(settings.cache_dir),
                "BALUPI_ENERGY_ENABLED": "false", "BALUPI_LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


def balupi(tmp_path: Path, settings: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess:
    """Run `python -m balupi ARGS` with `settings` (from the environment) and return the result."""
    return subprocess.run(
        [sys.executable, "-m", "balupi", *args],
        cwd=tmp_path,
        env=subprocess_env(tmp_path, **settings_env(settings, **extra)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def query(db_path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read from a BaluPi database another process may be writing (WAL: no waiting)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
