"""A davfs2 kernel mount of a BaluPi share, configured in a temporary directory.

`mount -t davfs <url> <dir> -o conf=<tmp>/davfs2.conf`: the credentials go in a secrets file
(mode 600) named by that configuration, the cache in the same temporary directory; locks and
`delay_upload` keep davfs2's defaults (on, 10 s). Unmounting waits until davfs2 has uploaded
what it still holds (umount.davfs waits for the daemon to exit).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

DELAY_UPLOAD_S = 10  # davfs2's default; not changed here


class DavfsMount:
    def __init__(self, url: str, user: str, password: str, workdir: Path):
        self.url = url if url.endswith("/") else url + "/"
        self.workdir = workdir
        self.point = workdir / "mnt"
        self.point.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "davfs2.conf"
        secrets = workdir / "secrets"
        secrets.write_text(f'{self.url} "{user}" "{password}"\n')
        secrets.chmod(0o600)
        # The daemon runs as the davfs2 user: its cache must be reachable by it (pytest's tmp_path
        # is not: /tmp/pytest-of-root is private to root).
        self.cache = Path(tempfile.mkdtemp(prefix="balupi-davfs-cache-"))
        self.cache.chmod(0o775)  # as davfs2's own /var/cache/davfs2: root's, group davfs2
        try:
            shutil.chown(self.cache, "root", "davfs2")
        except (LookupError, PermissionError):
            pass
        cache = self.cache
        self.conf.write_text(
            f"secrets {secrets}\n"
            f"cache_dir {cache}\n"
            "ask_auth 0\n"
            "use_locks 1\n"
            f"delay_upload {DELAY_UPLOAD_S}\n"
            # Linux 6.16 and later refuse davfs2's directory reads (EINVAL) with its default
            # 16 KiB buffer; 64 KiB works (davfs2 bug, fixed in 1.7.2).
            "buf_size 64\n"
        )
        self.mounted = False

    def mount(self) -> None:
        done = subprocess.run(
            ["mount", "-t", "davfs", self.url, str(self.point), "-o", f"conf={self.conf},uid=0,gid=0"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            shutil.rmtree(self.cache, ignore_errors=True)
            raise AssertionError(f"mount.davfs failed: {done.stdout} {done.stderr}")
        self.mounted = True

    def umount(self, timeout_s: float = 180) -> None:
        if not self.mounted:
            return
        done = subprocess.run(["umount", str(self.point)], capture_output=True, text=True, timeout=timeout_s)
        assert done.returncode == 0, f"umount failed: {done.stdout} {done.stderr}"
        # umount.davfs returns once the daemon has synced and exited; the kernel mount is gone then.
        deadline = time.monotonic() + timeout_s
        while os.path.ismount(self.point):
            assert time.monotonic() < deadline, "the davfs2 mount did not go away"
            time.sleep(0.1)
        self.mounted = False
        shutil.rmtree(self.cache, ignore_errors=True)

    def lost_and_found(self) -> list[str]:
        """Files davfs2 could not upload: it keeps them in the mount's lost+found (read while mounted)."""
        folder = self.point / "lost+found"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def __enter__(self) -> "DavfsMount":
        self.mount()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.umount()
        except AssertionError:
            subprocess.run(["umount", "-l", str(self.point)], capture_output=True, timeout=30)
            raise
