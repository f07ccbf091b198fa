"""cadaver (the command-line WebDAV client) scripted, with a write-back between its sessions
(issue 12). Written against cadaver 0.24 (`cadaver --version`).

put, get, mkcol, move, copy, lock, unlock, propset, propget; then the NAS's copy once synced.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.clients.kit import FAST_SYNC, require, version_of
from tests.davkit import listing
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

WRITTEN_AGAINST = "cadaver 0.24"


def cadaver(stack, tmp_path, commands: list[str]) -> str:
    """Run one cadaver session with `commands` on stdin (credentials from a .netrc in tmp_path)."""
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login {NAS_USER} password {NAS_PASSWORD}\n")
    netrc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run(["cadaver", stack.dav + "/"], input="\n".join(commands + ["quit"]) + "\n",
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("nas", ["awake", "asleep"])
def test_cadaver_session_with_a_write_back_between_steps(stack_factory, tmp_path, nas, record_property):
    require("cadaver")
    record_property("client_version", version_of(["cadaver", "--version"]))  # written against WRITTEN_AGAINST
    stack = stack_factory(**FAST_SYNC)
    listing(stack, "/")
    if nas == "asleep":
        stack.suspend_nas()

    def write_back():
        if nas == "awake":
            stack.app.sync.run_once()
            assert stack.app.sync.pending()["count"] == 0

    (tmp_path / "one.txt").write_bytes(b"first version\n" * 100)
    (tmp_path / "two.txt").write_bytes(b"second version, locked\n" * 80)
    out = cadaver(stack, tmp_path, ["mkcol Projekt", "put one.txt Projekt/plan.txt", "get Projekt/plan.txt got.txt"])
    assert "Creating `Projekt': succeeded" in out, out
    assert (tmp_path / "got.txt").read_bytes() == b"first version\n" * 100
    write_back()

    out = cadaver(stack, tmp_path, ["copy Projekt/plan.txt Projekt/copy.txt", "move Projekt/copy.txt Projekt/moved.txt",
                                    "propset Projekt/plan.txt colour blue", "propget Projekt/plan.txt colour"])
    assert "Copying `/dav/Projekt/plan.txt' to `/dav/Projekt/copy.txt':  succeeded." in out, out
    assert "Moving `/dav/Projekt/copy.txt' to `/dav/Projekt/moved.txt':  succeeded." in out, out
    assert "Setting property on `Projekt/plan.txt': succeeded." in out, out
    assert "Value of colour is: blue" in out, out
    write_back()

    out = cadaver(stack, tmp_path, ["lock Projekt/plan.txt", "put two.txt Projekt/plan.txt",
                                    "unlock Projekt/plan.txt", "get Projekt/plan.txt got2.txt",
                                    "get Projekt/moved.txt got3.txt"])
    assert "Locking `Projekt/plan.txt': succeeded" in out, out
    assert "Unlocking `Projekt/plan.txt': succeeded" in out, out
    assert (tmp_path / "got2.txt").read_bytes() == b"second version, locked\n" * 80
    assert (tmp_path / "got3.txt").read_bytes() == b"first version\n" * 100
    assert stack.app.db.query_one("SELECT count(*) FROM dav_locks")[0] == 0

    if nas == "asleep":
        stack.wake_nas()
    stack.app.sync.run_once()
    assert stack.app.sync.pending()["count"] == 0, [tuple(r) for r in stack.app.db.query(
        "SELECT op, path, dest, attempts, last_error FROM journal WHERE state = 'pending'")]
    assert (stack.nas.root / "Projekt/plan.txt").read_bytes() == b"second version, locked\n" * 80
    assert (stack.nas.root / "Projekt/moved.txt").read_bytes() == b"first version\n" * 100
    assert not (stack.nas.root / "Projekt/copy.txt").exists()
    assert stack.app.db.query_one("SELECT count(*) FROM conflicts")[0] == 0
