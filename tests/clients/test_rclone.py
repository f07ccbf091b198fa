"""rclone as a client (a `:webdav:` remote, vendor=other), with the write-back running between its
commands (issue 12). Written against rclone v1.60.1 (`rclone version`).

copy, check --download (every byte read back), sync after local changes, moveto, delete of a tree,
with the NAS awake and asleep; then the NAS's copy once synced.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.clients.kit import FAST_SYNC, require, version_of
from tests.davkit import listing
from tests.helpers import sha
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

WRITTEN_AGAINST = "rclone v1.60"


class Rclone:
    def __init__(self, stack, tmp_path):
        obscured = subprocess.run(["rclone", "obscure", NAS_PASSWORD], capture_output=True, text=True,
                                  check=True, timeout=30).stdout.strip()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")},
            "RCLONE_CONFIG": str(tmp_path / "rclone.conf"),  # nothing of the machine's own
            "RCLONE_WEBDAV_URL": stack.dav + "/",
            "RCLONE_WEBDAV_VENDOR": "other",
            "RCLONE_WEBDAV_USER": NAS_USER,
            "RCLONE_WEBDAV_PASS": obscured,
            "HOME": str(tmp_path),
        }
        (tmp_path / "rclone.conf").write_text("")

    def __call__(self, *args: str) -> str:
        done = subprocess.run(["rclone", *args, "--retries", "1", "--low-level-retries", "2"], env=self.env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"rclone {' '.join(args)} failed:\n{done.stderr[-3000:]}"
        return done.stdout


def local_tree(root) -> None:
    files = {
        "Fotos 2026/été à la plage.jpg": os.urandom(300_000),
        "Fotos 2026/日本/桜.png": os.urandom(120_000),
        "docs/a/b/notes.txt": b"notes\n" * 500,
        "docs/empty.txt": b"",
        "docs/big.bin": os.urandom(5 * 1024 * 1024),
        "readme.md": b"# readme\n",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def nas_tree(stack, top: str) -> dict[str, str]:
    root = stack.nas.root / top
    return {str(p.relative_to(root)): sha(p.read_bytes()) for p in root.rglob("*")
            if p.is_file() and ".balupi-upload-" not in p.name} if root.is_dir() else {}


def local_digests(root) -> dict[str, str]:
    return {str(p.relative_to(root)): sha(p.read_bytes()) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("nas", ["awake", "asleep"])
def test_rclone_copy_sync_check_moveto_delete(stack_factory, tmp_path, nas, record_property):
    require("rclone")
    record_property("client_version", version_of(["rclone", "version"]))  # written against WRITTEN_AGAINST
    stack = stack_factory(**FAST_SYNC)
    listing(stack, "/")
    rclone = Rclone(stack, tmp_path)
    if nas == "asleep":
        stack.suspend_nas()

    def write_back():
        if nas == "awake":
            stack.app.sync.run_once()
            assert stack.app.sync.pending()["count"] == 0

    src = tmp_path / "src"
    local_tree(src)
    rclone("copy", str(src), ":webdav:backup")
    write_back()
    rclone("check", "--download", str(src), ":webdav:backup")

    # Local changes, then sync: one file changed, one deleted, one added.
    (src / "docs/a/b/notes.txt").write_bytes(b"changed notes\n" * 700)
    (src / "readme.md").unlink()
    (src / "docs/new file.txt").write_bytes(b"new")
    rclone("sync", str(src), ":webdav:backup")
    write_back()
    rclone("check", "--download", str(src), ":webdav:backup")

    # moveto on the remote side, mirrored locally so the trees can be compared again.
    rclone("moveto", ":webdav:backup/docs/big.bin", ":webdav:backup/archive/big moved.bin")
    (src / "archive").mkdir()
    shutil.move(src / "docs/big.bin", src / "archive/big moved.bin")
    write_back()
    rclone("check", "--download", str(src), ":webdav:backup")

    # Delete a tree's files, then its empty folders.
    rclone("delete", ":webdav:backup/Fotos 2026")
    rclone("rmdirs", ":webdav:backup/Fotos 2026")
    shutil.rmtree(src / "Fotos 2026")
    write_back()
    rclone("check", "--download", str(src), ":webdav:backup")
    assert "Fotos 2026" not in rclone("lsf", ":webdav:backup")

    if nas == "asleep":
        assert nas_tree(stack, "backup") == {}
        stack.wake_nas()
    stack.app.sync.run_once()
    assert stack.app.sync.pending()["count"] == 0
    assert nas_tree(stack, "backup") == local_digests(src)
    assert not (stack.nas.root / "backup" / "Fotos 2026").exists()
    assert stack.app.db.query_one("SELECT count(*) FROM conflicts")[0] == 0
