"""Long commands show a tqdm progress bar on a terminal and plain lines otherwise (issue 11, item 5):
`balupi backup-db` and `balupi cache verify` run once on a pseudo-terminal, once on a pipe."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tests.helpers import subprocess_env
from tests.opskit import balupi, settings_env

COMMAND_TIMEOUT_S = 120.0


def on_terminal(tmp_path: Path, settings, *args: str) -> tuple[int, str]:
    """Run `balupi ARGS` with stderr on a pseudo-terminal; return its exit status and what it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    try:
        process = subprocess.Popen([sys.executable, "-m", "balupi", *args], cwd=tmp_path,
                                   env=subprocess_env(tmp_path, **settings_env(settings)),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        drawn = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        process.wait(COMMAND_TIMEOUT_S)
        return process.returncode, drawn.decode(errors="replace")
    finally:
        os.close(master)


def test_backup_and_verify_draw_a_bar_on_a_terminal_and_plain_lines_on_a_pipe(tmp_path, settings_factory):
    settings = settings_factory()
    assert balupi(tmp_path, settings, "cache", "stats", "--init").returncode == 0  # a database to work on
    for args, name in ((("backup-db", str(tmp_path / "copy.db")), "backup"), (("cache", "verify"), "verify")):
        status, drawn = on_terminal(tmp_path, settings, *args)
        assert status == 0, drawn
        assert f"{name}" in drawn and "\r" in drawn and "/s]" in drawn, drawn  # tqdm's bar, redrawn in place
        piped = balupi(tmp_path, settings, *args)
        assert piped.returncode == 0, piped.stderr
        assert "\r" not in piped.stderr and "/s]" not in piped.stderr  # no bar in a log or cron mail
        assert piped.stdout.strip() and "\r" not in piped.stdout  # one plain summary line
