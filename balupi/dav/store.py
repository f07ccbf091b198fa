"""The content store on the SSD: one file per cached version, named by a random key, never edited.

Layout under `cache_dir`: `data/<k0k1>/<key>` holds content, `tmp/` holds files being written (same
volume, so a rename publishes them atomically). A new version of a file is a new key (copy on
write): a reader with the old version open keeps reading it undisturbed, and a MOVE or rename is
only an index update.

Durability (`publish`): fsync the temp file, rename it into `data/`, fsync the directory. Only after
that does the caller commit the index transaction and acknowledge the client.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO


_KEY = re.compile(r"[0-9a-f]{32}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ContentStore:
    def __init__(self, cache_dir: Path):
        self.root = cache_dir
        self.data_dir = cache_dir / "data"
        self.tmp_dir = cache_dir / "tmp"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._data_prefix = str(self.data_dir) + os.sep

    @staticmethod
    def new_key() -> str:
        return secrets.token_hex(16)

    def path_of(self, key: str) -> Path:
        return Path(self.file_of(key))

    def file_of(self, key: str) -> str:
        """The content file of `key`, as a string (the hot path of every cache hit)."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a content key: {key!r}")
        return f"{self._data_prefix}{key[:2]}{os.sep}{key}"

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def open_temp(self) -> tuple[str, Path, BinaryIO]:
        """A new temp file for content being written: (key, temp path, file opened for writing)."""
        key = self.new_key()
        tmp = self.tmp_dir / f"{key}.part"
        return key, tmp, open(tmp, "wb")

    def publish(self, key: str, tmp: Path) -> Path:
        """Make a fully written temp file durable under its key. The file must be closed or flushed."""
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        final = self.path_of(key)
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        return final

    def copy(self, key: str) -> str:
        """A durable copy of a content file under a new key (for WebDAV COPY)."""
        new_key, tmp, f = self.open_temp()
        with f, open(self.path_of(key), "rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)
        self.publish(new_key, tmp)
        return new_key

    def remove(self, key: str) -> int:
        """Delete a content file; returns the bytes freed (0 if it was gone)."""
        path = self.path_of(key)
        try:
            size = path.stat().st_size
            path.unlink()
            return size
        except FileNotFoundError:
            return 0

    def discard_temp(self, tmp: Path) -> None:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass

    def clear_temp(self) -> int:
        """At start-up: temp files are never valid content (a crash mid-write); remove them."""
        count = 0
        for tmp in self.tmp_dir.iterdir():
            tmp.unlink(missing_ok=True)
            count += 1
        return count
