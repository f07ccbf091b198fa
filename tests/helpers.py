"""Small helpers for tests that are not fixtures."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

GUARD_SITE_DIR = Path(__file__).parent / "guard_site"
REPO_ROOT = Path(__file__).parent.parent


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago (TCP by default, or SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(tmp_path: Path, **env: str) -> dict[str, str]:
    """An environment for `python -m balupi` in a test: none of the caller's BALUPI_* variables,
    HOME and XDG_DATA_HOME inside tmp_path, this checkout first on the path, and the loopback
    guard loaded (a refused address shows as a "LOOPBACK GUARD" line on stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BALUPI_") and k != "JOURNAL_STREAM"}
    clean.update(
        HOME=str(tmp_path / "home"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
        PYTHONPATH=os.pathsep.join([str(GUARD_SITE_DIR), str(REPO_ROOT)]),
        PYTHONUNBUFFERED="1",
    )
    clean.update(env)
    return clean



def sha(data: bytes) -> str:
    """The SHA-256 of `data`, as hex (to compare file contents in assertions)."""
    return hashlib.sha256(data).hexdigest()
