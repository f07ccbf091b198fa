"""davfs2 (a Linux kernel mount through FUSE) as a client, with real timing (issue 12).

Written against davfs2 1.6.1 (`mount.davfs --version`), with its defaults: locks on,
`delay_upload` 10 s. davfs2 creates a file with LOCK, reads its ETag, and uploads the content after
the delay with `If-Match`; BaluPi's write-back (every second here) syncs the empty file in between.
The copy is checked while the drive stays mounted past the upload delay and past a write-back,
then after renames, an overwrite and deletes, then from a fresh mount (every byte), then on the NAS.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.clients.davfs import DELAY_UPLOAD_S, DavfsMount
from tests.clients.kit import FAST_SYNC, require, tree_files, version_of, wait_for
from tests.davkit import listing
from tests.helpers import sha
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

WRITTEN_AGAINST = "davfs2 1.6.1"
BIG_BYTES = 20 * 1024 * 1024


def source_tree() -> dict[str, bytes]:
    files = {
        "Über Café/naïve résumé.txt": "ça marche, über alles\n".encode() * 50,
        "Über Café/日本語/ファイル.bin": os.urandom(70_000),
        "emoji 😀 folder/smile 😀.txt": b"smile\n" * 10,
        "nested/a/b/c/deep.txt": b"deep " * 2000,
        "nested/a/b/empty.txt": b"",
        "nested/a/sibling.md": b"# sibling\n",
        "big/twenty-mb.bin": os.urandom(BIG_BYTES),
        "Spaces and (parens) & more/file name.txt": b"x" * 1234,
    }
    for i in range(12):
        files[f"many/file-{i:02d}.txt"] = f"small file {i}\n".encode() * (i + 1) * 40
    return files


def write_tree(root, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {rel: sha(data) for rel, data in files.items()}


def balupi_files(stack, top: str) -> dict[str, int]:
    """What BaluPi's index holds under /<top>: relative path -> size (files only)."""
    rows = stack.app.db.query("SELECT path, size FROM entries WHERE view = '' AND is_dir = 0 AND path LIKE ?",
                              (f"/{top}/%",))
    return {r["path"][len(top) + 2:]: r["size"] for r in rows}


def nas_files(stack, top: str) -> dict[str, str]:
    root = stack.nas.root / top
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): sha(p.read_bytes()) for p in root.rglob("*")
            if p.is_file() and ".balupi-upload-" not in p.name}


@pytest.mark.parametrize("nas", ["awake", "asleep"])
def test_davfs2_copy_stays_whole_through_write_back_renames_and_a_remount(stack_factory, tmp_path, nas,
                                                                         record_property):
    require("mount.davfs", "umount.davfs", root=True, fuse=True)
    record_property("client_version", version_of(["mount.davfs", "--version"]))  # written against WRITTEN_AGAINST
    stack = stack_factory(**FAST_SYNC)
    listing(stack, "/")
    if nas == "asleep":
        stack.suspend_nas()
    expected = source_tree()
    write_tree(tmp_path / "src", expected)

    with DavfsMount(stack.dav, NAS_USER, NAS_PASSWORD, tmp_path / "davfs1") as drive:
        started = time.monotonic()
        shutil.copytree(tmp_path / "src", drive.point / "tree")
        # Stay mounted past davfs2's upload delay: its PUTs (If-Match) land after BaluPi's
        # write-back synced the empty files its LOCKs created.
        sizes = {rel: len(data) for rel, data in expected.items()}
        wait_for(lambda: balupi_files(stack, "tree") == sizes, 120, "davfs2's uploads to reach BaluPi")
        assert time.monotonic() - started >= DELAY_UPLOAD_S - 1
        if nas == "awake":  # and past a write-back of the uploaded content
            wait_for(lambda: nas_files(stack, "tree") == digests(expected), 120, "the write-back of the copy")
        assert tree_files(drive.point / "tree") == expected  # what the mount shows meanwhile

        # Rename, overwrite, delete, as someone working in the folder would.
        os.rename(drive.point / "tree/nested/a/sibling.md", drive.point / "tree/nested/a/renamed sibling.md")
        expected["nested/a/renamed sibling.md"] = expected.pop("nested/a/sibling.md")
        os.rename(drive.point / "tree/Über Café", drive.point / "tree/Über Café renamed")
        for rel in [r for r in expected if r.startswith("Über Café/")]:
            expected["Über Café renamed/" + rel[len("Über Café/"):]] = expected.pop(rel)
        (drive.point / "tree/many/file-03.txt").write_bytes(b"overwritten, and longer than before\n" * 30)
        expected["many/file-03.txt"] = b"overwritten, and longer than before\n" * 30
        (drive.point / "tree/nested/a/b/c/deep.txt").write_bytes(b"short")
        expected["nested/a/b/c/deep.txt"] = b"short"
        os.remove(drive.point / "tree/many/file-07.txt")
        del expected["many/file-07.txt"]
        shutil.rmtree(drive.point / "tree/emoji 😀 folder")
        del expected["emoji 😀 folder/smile 😀.txt"]

        sizes = {rel: len(data) for rel, data in expected.items()}
        wait_for(lambda: balupi_files(stack, "tree") == sizes, 120, "the changes to reach BaluPi")
        if nas == "awake":
            wait_for(lambda: nas_files(stack, "tree") == digests(expected), 120, "the write-back of the changes")
        assert drive.lost_and_found() == [], "davfs2 could not upload these"

    with DavfsMount(stack.dav, NAS_USER, NAS_PASSWORD, tmp_path / "davfs2") as again:  # a fresh cache
        assert digests(tree_files(again.point / "tree")) == digests(expected)

    if nas == "asleep":
        assert nas_files(stack, "tree") == {}  # nothing reached the sleeping NAS
        stack.wake_nas()
    stack.app.sync.run_once()
    assert stack.app.sync.pending()["count"] == 0
    assert nas_files(stack, "tree") == digests(expected)
    assert stack.app.db.query_one("SELECT count(*) FROM conflicts")[0] == 0
