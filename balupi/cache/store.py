"""The content store on the SSD: one file per cached version, named by a random key, never edited.

Layout under `cache_dir`: `data/<k0k1>/<key>` holds content and `data/<k0k1>/<key>.meta` its
sidecar (path, view, state, block checksums: `balupi.cache.integrity`), `tmp/` holds files being
written (same volume, so a rename publishes them atomically), `quarantine/` damaged content. A new version of a file is a new key (copy on
write): a reader with the old version open keeps reading it undisturbed, and a MOVE or rename is
only an index update.

Durability (`publish`): fsync the temp file and its sidecar, rename both into `data/`, fsync the
directory. Only after
that does the caller commit the index transaction and acknowledge the client.

Nothing outside the cache directory is ever read or written through it, whatever is placed inside:
every file operation is relative to directory descriptors opened with O_NOFOLLOW (`data/`, `tmp/`
and each `data/<k0k1>/`), content is opened with O_NOFOLLOW and must be a regular file with one
link (a symbolic link, hard link, FIFO or device placed under a key counts as missing, and is
replaced when the content is fetched again), and a symbolic link where a `data/<k0k1>/` directory
belongs is removed, never followed. `data/` or `tmp/` being a symbolic link stops start-up.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import stat
import threading
import time
from pathlib import Path
from typing import BinaryIO

from balupi.cache.integrity import BLOCK_BYTES, BlockHasher, ContentDamaged, Meta, check_block
from balupi.errors import ConfigError

log = logging.getLogger("balupi.cache.store")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_A_PLAIN_DIR = (errno.ELOOP, errno.ENOTDIR)


_KEY = re.compile(r"[0-9a-f]{32}")
KEY_PATTERN = _KEY  # the name of a content file
META_SUFFIX = ".meta"  # the sidecar of content `<key>` is `<key>.meta` beside it (balupi.cache.integrity)
QUARANTINE = "quarantine"  # damaged content is moved here, never deleted


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


SMALL_COPY_FILE_BYTES = 64 * 1024  # content up to this size may be kept in memory (decision 200)
SMALL_COPY_TOTAL_BYTES = 1 << 20  # all the copies together: RSS may not grow past issue 14's 65 MB


class SmallCopies:
    """The bytes of small content files, kept in memory so that a cached GET of one costs one
    stat(2) instead of opening, checking, reading and closing the file (decision 200).

    A copy is made only of bytes the caller has already sent as the fast lane sends them (content
    this process verified whole), and is stamped with the file's identity when it was read: device,
    inode, size, modification and change times, one link. It is used only while a stat of the same
    name finds exactly that identity, so content removed, evicted, taken aside or replaced under its
    key is never served from memory; the store's own `remove` and `quarantine` drop it at once.
    Content files are never edited (a new version is a new key), so a copy of a key whose file
    is unchanged holds that version's bytes. At most `total_bytes` in all; the oldest copy goes first."""

    def __init__(self, file_bytes: int = SMALL_COPY_FILE_BYTES, total_bytes: int = SMALL_COPY_TOTAL_BYTES):
        self.file_bytes = file_bytes
        self.total_bytes = total_bytes
        self._copies: dict[str, tuple[bytes, tuple]] = {}  # key -> (bytes, identity); oldest first
        self._bytes = 0
        self._lock = threading.Lock()  # for changes; a lookup is one dict read
        self.hits = 0

    @staticmethod
    def identity(st: os.stat_result) -> tuple | None:
        """What must not change for a copy to stay valid; None for anything but a plain content file."""
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def lookup(self, key: str) -> tuple[bytes, tuple] | None:
        return self._copies.get(key)

    def keep(self, key: str, data: bytes, st: os.stat_result) -> None:
        identity = self.identity(st)
        if identity is None or len(data) > self.file_bytes or len(data) != st.st_size:
            return
        with self._lock:
            old = self._copies.pop(key, None)
            if old is not None:
                self._bytes -= len(old[0])
            while self._copies and self._bytes + len(data) > self.total_bytes:
                oldest = next(iter(self._copies))
                self._bytes -= len(self._copies.pop(oldest)[0])
            if self._bytes + len(data) <= self.total_bytes:
                self._copies[key] = (data, identity)
                self._bytes += len(data)

    def drop(self, key: str) -> None:
        with self._lock:
            old = self._copies.pop(key, None)
            if old is not None:
                self._bytes -= len(old[0])

    def clear(self) -> None:
        with self._lock:
            self._copies.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._copies)

    @property
    def bytes(self) -> int:
        return self._bytes


class ContentStore:
    def __init__(self, cache_dir: Path):
        self.root = cache_dir
        self.data_dir = cache_dir / "data"
        self.tmp_dir = cache_dir / "tmp"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._data_prefix = str(self.data_dir) + os.sep
        self._fd_lock = threading.Lock()
        self._sub_fds: dict[str, int] = {}
        self._data_fd = self._tmp_fd = -1
        self.small = SmallCopies()
        try:
            self._data_fd = os.open(self.data_dir, _DIR_FLAGS)
            self._tmp_fd = os.open(self.tmp_dir, _DIR_FLAGS)
        except OSError as exc:
            self.close()
            if exc.errno in _NOT_A_PLAIN_DIR:
                raise ConfigError(f"BALUPI_CACHE_DIR: {exc.filename} is not a plain directory (a symbolic link?); "
                                  "BaluPi does not follow links inside its cache") from None
            raise

    def close(self) -> None:
        with self._fd_lock:
            fds = [self._data_fd, self._tmp_fd, *self._sub_fds.values()]
            self._data_fd = self._tmp_fd = -1
            self._sub_fds = {}
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    @staticmethod
    def new_key() -> str:
        return secrets.token_hex(16)

    def path_of(self, key: str) -> Path:
        return Path(self.file_of(key))

    def file_of(self, key: str) -> str:
        """The content file of `key`, as a string (for messages and stat; open it with `open_content`)."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a content key: {key!r}")
        return f"{self._data_prefix}{key[:2]}{os.sep}{key}"

    def _sub_fd(self, key: str, create: bool) -> int:
        """The descriptor of `data/<k0k1>/` (opened without following links; created if asked)."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a content key: {key!r}")
        sub = key[:2]
        fd = self._sub_fds.get(sub)
        if fd is not None:
            return fd
        with self._fd_lock:
            fd = self._sub_fds.get(sub)
            if fd is not None:
                return fd
            try:
                fd = os.open(sub, _DIR_FLAGS, dir_fd=self._data_fd)
            except OSError as exc:
                if not create:
                    raise FileNotFoundError(errno.ENOENT, "no such content directory", sub) from None
                if exc.errno in _NOT_A_PLAIN_DIR:
                    log.warning("removed %s%s: not a directory (a symbolic link?); the cache does not follow links",
                                self._data_prefix, sub)
                    os.unlink(sub, dir_fd=self._data_fd)
                elif exc.errno != errno.ENOENT:
                    raise
                os.mkdir(sub, 0o700, dir_fd=self._data_fd)
                fd = os.open(sub, _DIR_FLAGS, dir_fd=self._data_fd)
            self._sub_fds[sub] = fd
            return fd

    def open_content(self, key: str) -> int:
        """A read descriptor of the content of `key`. FileNotFoundError when there is no such
        content, or when what is there is not a regular file of the cache's own (a link, a FIFO...)."""
        sub = self._sub_fd(key, create=False)
        try:
            fd = os.open(key, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=sub)
        except OSError as exc:
            if exc.errno in _NOT_A_PLAIN_DIR or exc.errno == errno.ENOENT:
                raise FileNotFoundError(errno.ENOENT, "no such content", self.file_of(key)) from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            log.warning("%s is not a plain file of the cache (a link?): treated as missing", self.file_of(key))
            raise FileNotFoundError(errno.ENOENT, "not a plain content file", self.file_of(key))
        return fd

    def open_read(self, key: str) -> BinaryIO:
        """The content of `key` as a file object (see `open_content`)."""
        return os.fdopen(self.open_content(key), "rb")

    def exists(self, key: str) -> bool:
        try:
            st = os.stat(key, dir_fd=self._sub_fd(key, create=False), follow_symlinks=False)
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_nlink == 1

    def open_temp(self) -> tuple[str, Path, BinaryIO]:
        """A new temp file for content being written: (key, temp path, file opened for writing)."""
        key = self.new_key()
        name = f"{key}.part"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=self._tmp_fd)
        return key, self.tmp_dir / name, os.fdopen(fd, "wb")

    def _temp_name(self, tmp: Path) -> str:
        if Path(tmp).parent != self.tmp_dir:
            raise ValueError(f"not a temp file of this cache: {tmp}")
        return Path(tmp).name

    def publish(self, key: str, tmp: Path, meta: Meta | None = None) -> Path:
        """Make a fully written temp file durable under its key, with its sidecar `meta` (both
        fsynced, the sidecar renamed into place first, one fsync of the directory for both)."""
        name = self._temp_name(tmp)
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._tmp_fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        sub = self._sub_fd(key, create=True)
        if meta is not None:
            meta_tmp = self._write_temp_meta(key, meta)
            os.replace(meta_tmp, key + META_SUFFIX, src_dir_fd=self._tmp_fd, dst_dir_fd=sub)
        os.replace(name, key, src_dir_fd=self._tmp_fd, dst_dir_fd=sub)
        os.fsync(sub)
        return self.path_of(key)

    def _write_temp_meta(self, key: str, meta: Meta) -> str:
        name = f"{key}.meta.{secrets.token_hex(4)}.part"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=self._tmp_fd)
        try:
            data = memoryview(meta.to_bytes())
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(name, dir_fd=self._tmp_fd)
            raise
        os.close(fd)
        return name

    # -- sidecars --------------------------------------------------------------------------------

    def small_copy(self, key: str) -> bytes | None:
        """The in-memory copy of content `key` (`SmallCopies`), if there is one and its file is
        still exactly the one it was read from (one stat(2)); else None, and the copy is dropped."""
        found = self.small.lookup(key)
        if found is None:
            return None
        try:
            st = os.stat(key, dir_fd=self._sub_fd(key, create=False), follow_symlinks=False)
        except OSError:
            st = None
        if st is None or SmallCopies.identity(st) != found[1]:
            self.small.drop(key)
            return None
        self.small.hits += 1
        return found[0]

    def read_meta(self, key: str) -> Meta | None:
        """The sidecar of `key`; None when it has none (content from before sidecars).
        Raises ContentDamaged when the sidecar is there but unreadable."""
        try:
            sub = self._sub_fd(key, create=False)
            fd = os.open(key + META_SUFFIX, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sub)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ContentDamaged(key, f"sidecar cannot be opened: {exc}") from None
        try:
            with os.fdopen(fd, "rb") as f:
                data = f.read(1 << 24)
            return Meta.from_bytes(data)
        except (ValueError, TypeError, KeyError) as exc:
            raise ContentDamaged(key, f"sidecar unreadable: {exc}") from None

    def write_meta(self, key: str, meta: Meta) -> None:
        """Replace the sidecar of `key` durably (a synced upload, a move of pending content)."""
        sub = self._sub_fd(key, create=True)
        os.replace(self._write_temp_meta(key, meta), key + META_SUFFIX, src_dir_fd=self._tmp_fd, dst_dir_fd=sub)
        os.fsync(sub)

    def update_meta(self, key: str, **changes) -> bool:
        """Change fields of the sidecar of `key`, if it has a readable one. Returns whether it did."""
        try:
            meta = self.read_meta(key)
        except ContentDamaged:
            return False
        if meta is None or not self.exists(key):
            return False
        for name, value in changes.items():
            setattr(meta, name, value)
        self.write_meta(key, meta)
        return True

    def meta_of_file(self, key: str) -> Meta:
        """Compute a sidecar for content that has none (content from before sidecars): its current
        bytes are taken as good. `view`, `path` and `state` are for the caller to fill in."""
        fd = self.open_content(key)
        try:
            size = os.fstat(fd).st_size
            hasher = BlockHasher()
            offset = 0
            while offset < size:
                block = os.pread(fd, BLOCK_BYTES, offset)
                if not block:
                    break
                hasher.update(block)
                offset += len(block)
        finally:
            os.close(fd)
        return Meta(view="", path="", state="", size=hasher.size, blocks=hasher.blocks_hex())

    def quarantine(self, key: str) -> Path | None:
        """Move the content of `key` and its sidecar out of the store into `quarantine/` (same
        volume: a rename). Returns where the content went, or None if it was gone."""
        self.small.drop(key)
        qdir = self.root / QUARANTINE
        qdir.mkdir(mode=0o700, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = qdir / f"{stamp}-{key}"
        try:
            sub = self._sub_fd(key, create=False)
        except FileNotFoundError:
            return None
        moved = None
        for suffix in ("", META_SUFFIX):
            try:
                os.rename(key + suffix, str(target) + suffix, src_dir_fd=sub)
                if not suffix:
                    moved = target
            except FileNotFoundError:
                continue
        fsync_dir(qdir)
        os.fsync(sub)
        return moved

    def copy(self, key: str, meta: Meta | None = None) -> str:
        """A durable copy of a content file under a new key (for WebDAV COPY), with sidecar `meta`
        (its `size`, `blocks` and `alg` are filled in from the bytes copied)."""
        source_meta = self.read_meta(key)  # the source is checked as it is copied: damage is not spread
        new_key, tmp, f = self.open_temp()
        hasher = BlockHasher()
        try:
            with f, self.open_read(key) as src:
                index = 0
                while True:
                    block = src.read(source_meta.block_bytes if source_meta else BLOCK_BYTES)
                    if source_meta is not None and (block or index == 0):
                        check_block(key, source_meta, index, block)
                    if not block:
                        break
                    hasher.update(block)
                    f.write(block)
                    index += 1
        except BaseException:
            self.discard_temp(tmp)
            raise
        if meta is not None:
            meta.size, meta.blocks, meta.alg = hasher.size, hasher.blocks_hex(), hasher.alg
        self.publish(new_key, tmp, meta)
        return new_key

    def remove(self, key: str) -> int:
        """Delete a content file and its sidecar; returns the bytes freed (0 if it was gone)."""
        self.small.drop(key)
        try:
            sub = self._sub_fd(key, create=False)
        except FileNotFoundError:
            return 0
        try:
            st = os.stat(key, dir_fd=sub, follow_symlinks=False)
            os.unlink(key, dir_fd=sub)  # a link placed here is removed itself, never its target
        except FileNotFoundError:
            st = None
        try:  # after the content: a sidecar left alone by a crash is harmless, content without one is not
            os.unlink(key + META_SUFFIX, dir_fd=sub)
        except FileNotFoundError:
            pass
        return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0

    def discard_temp(self, tmp: Path) -> None:
        tmp = Path(tmp)
        try:
            if tmp.parent == self.tmp_dir:
                os.unlink(tmp.name, dir_fd=self._tmp_fd)
            elif tmp.parent.parent == self.data_dir and _KEY.fullmatch(tmp.name):
                self.remove(tmp.name)  # already published
        except FileNotFoundError:
            pass

    def clear_temp(self) -> int:
        """At start-up: temp files are never valid content (a crash mid-write); remove them."""
        count = 0
        for name in os.listdir(self._tmp_fd):
            try:
                os.unlink(name, dir_fd=self._tmp_fd)
            except IsADirectoryError:
                log.warning("left %s in place: a directory, not a temp file of the cache", self.tmp_dir / name)
                continue
            except FileNotFoundError:
                continue
            count += 1
        return count
