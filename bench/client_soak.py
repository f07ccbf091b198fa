"""Soak of real clients (issue 12): the davfs2 and rclone scenarios repeated for a while, with
write-back, refresh and eviction at short intervals and the NAS going to sleep and waking between
rounds. Reports files written, files verified and files lost (must be 0).

    .venv/bin/python -m bench.client_soak                 # 10 minutes
    .venv/bin/python -m bench.client_soak --minutes 3

Needs root, /dev/fuse, davfs2 and rclone (as the tests in tests/clients/). Everything runs on
127.0.0.1: a simulated NAS and a BaluPi server in this process, temporary directories only.

Each round (alternately with the NAS awake and asleep):
- davfs2: a mount stays open while files (unicode names, 0 bytes to 3 MB) are copied in, past
  davfs2's 10 s upload delay; some earlier files are overwritten, renamed or deleted;
- rclone: a folder of files is copied (`copy`), then changed and synced (`sync`);
while a churn thread runs the write-back every 2 s, a refresh of every folder every 5 s and evicts
the whole cache every 7 s. After each round a fresh davfs2 mount and `rclone check --download`
read everything back. At the end the NAS is woken, the write-back drains, and every file is
compared on the NAS too. A file is lost when any read-back or the NAS's copy differs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from balupi.app import BaluPi
from balupi.server import Server
from balupi.settings import load_settings
from balupi.sim.nas import DEFAULT_MAC, PowerState, SimNas
from bench.servers import free_port
from tests.clients.davfs import DELAY_UPLOAD_S, DavfsMount

USER, PASSWORD = "soak", "soak-pw"
NAMES = ["Bericht über Ärger", "café crème", "日本語のメモ", "emoji 😀", "plain", "with space", "data (1)"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content(rng: random.Random) -> bytes:
    size = rng.choice([0, 1, 100, 4096, 70_000, 500_000, 3_000_000])
    return rng.randbytes(size)


class Soak:
    def __init__(self, workdir: Path, seed: int):
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.nas = SimNas(workdir / "nas", users={USER: (PASSWORD, "admin")}, wol_port=free_port(socket.SOCK_DGRAM),
                          control_port=None, boot_delay_s=0.3)
        self.nas.start()
        settings = load_settings(env={}, cwd=workdir, overrides={
            "data_dir": str(workdir / "data"), "cache_dir": str(workdir / "cache"), "host": "127.0.0.1", "port": 0,
            "wol_address": "127.0.0.1", "wol_port": self.nas.wol_port, "tapo_discovery_target": "127.0.0.1",
            "nas_webdav_url": self.nas.dav_url, "nas_url": self.nas.base_url, "nas_username": USER,
            "nas_password": PASSWORD, "nas_mac_address": DEFAULT_MAC, "nas_wake_timeout_s": 10,
            "nas_boot_time_s": 1, "nas_ready_poll_s": 0.05, "nas_wol_resend_s": 1, "nas_probe_interval_s": 3600,
            "sync_interval_s": 1, "prefetch_budget_mb": 0, "refresh_walk_budget_s": 0,
        })
        self.server = Server(BaluPi(settings))
        self.server.start()
        self.app = self.server.app
        self.dav = self.server.url + "/dav"
        self.davfs_expected: dict[str, bytes] = {}  # path under /soak-davfs -> content
        self.rclone_rounds: list[Path] = []
        self.written = 0
        self.stop = threading.Event()
        self.churn_counts = {"write-backs": 0, "refreshes": 0, "evictions": 0}
        obscured = subprocess.run(["rclone", "obscure", PASSWORD], capture_output=True, text=True, check=True).stdout
        self.rclone_env = {**{k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")},
                           "RCLONE_CONFIG": str(workdir / "rclone.conf"), "RCLONE_WEBDAV_URL": self.dav + "/",
                           "RCLONE_WEBDAV_VENDOR": "other", "RCLONE_WEBDAV_USER": USER,
                           "RCLONE_WEBDAV_PASS": obscured.strip()}
        (workdir / "rclone.conf").write_text("")

    # -- background churn ------------------------------------------------------------------------

    def churn(self) -> None:
        ticks = 0
        while not self.stop.wait(1.0):
            ticks += 1
            try:
                if ticks % 2 == 0 and self.app.nas.is_awake():
                    self.app.sync.run_once()
                    self.churn_counts["write-backs"] += 1
                if ticks % 5 == 0 and self.app.nas.is_awake():
                    self.app.refresher.tick(limit=200, min_age_s=0)
                    self.churn_counts["refreshes"] += 1
                if ticks % 7 == 0:
                    self.app.provider.cache.evict_to(0)
                    self.churn_counts["evictions"] += 1
            except Exception as exc:  # noqa: BLE001 - a churn step failing is reported, not fatal
                print(f"  churn: {type(exc).__name__}: {exc}", flush=True)

    def sleep_nas(self) -> None:
        self.nas.suspend()
        self.nas.wait_for_state(PowerState.SUSPENDED)
        self.app.nas.probe()

    def wake_nas(self) -> None:
        self.nas.wake_now()
        self.nas.wait_for_state(PowerState.AWAKE)
        self.app.nas.probe()

    # -- the scenarios ---------------------------------------------------------------------------

    def davfs_round(self, n: int) -> None:
        rng = self.rng
        with DavfsMount(self.dav, USER, PASSWORD, self.workdir / f"davfs-{n}") as drive:
            root = drive.point / "soak-davfs"
            for i in range(12):
                rel = f"r{n:03d}/{rng.choice(NAMES)} {i}/{rng.choice(NAMES)}-{i}.bin"
                data = content(rng)
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(data)
                self.davfs_expected[rel] = data
                self.written += 1
            earlier = [p for p in self.davfs_expected if not p.startswith(f"r{n:03d}/")]
            for rel in rng.sample(earlier, min(3, len(earlier))):
                action = rng.choice(["overwrite", "rename", "delete"])
                try:
                    self._change(root, rel, action)
                except OSError as exc:  # the mount refused: what was there is still expected
                    print(f"  davfs2 {action} {rel}: {exc}", flush=True)
            time.sleep(DELAY_UPLOAD_S + 4)  # mounted past the upload delay, the churn running
            lost = drive.lost_and_found()
            if lost:
                print(f"  davfs2 lost+found: {lost}", flush=True)

    def _change(self, root: Path, rel: str, action: str) -> None:
        """Overwrite, rename or delete an earlier file through the mount, and expect the result."""
        if action == "overwrite":
            data = content(self.rng)
            (root / rel).write_bytes(data)
            self.davfs_expected[rel] = data
            self.written += 1
        elif action == "rename":
            new = rel + ".renamed"
            os.rename(root / rel, root / new)
            self.davfs_expected[new] = self.davfs_expected.pop(rel)
        else:
            os.remove(root / rel)
            del self.davfs_expected[rel]

    def rclone(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["rclone", *args], env=self.rclone_env, capture_output=True, text=True, timeout=600)

    def rclone_round(self, n: int) -> None:
        rng = self.rng
        src = self.workdir / f"rclone-src-{n}"
        for i in range(10):
            path = src / f"{rng.choice(NAMES)}/{i}.dat"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content(rng))
            self.written += 1
        done = self.rclone("copy", str(src), f":webdav:soak-rclone/r{n:03d}")
        if done.returncode:
            print(f"  rclone copy failed: {done.stderr[-500:]}", flush=True)
        victim = sorted(src.rglob("*.dat"))[0]
        victim.write_bytes(content(rng))
        self.written += 1
        done = self.rclone("sync", str(src), f":webdav:soak-rclone/r{n:03d}")
        if done.returncode:
            print(f"  rclone sync failed: {done.stderr[-500:]}", flush=True)
        self.rclone_rounds.append(src)

    # -- verification ----------------------------------------------------------------------------

    def verify_through_balupi(self, n: int) -> tuple[int, set[str]]:
        """Read every file back through BaluPi. Returns (files that match, keys of those that do not)."""
        bad: set[str] = set()
        with DavfsMount(self.dav, USER, PASSWORD, self.workdir / f"verify-{n}") as drive:
            for rel, data in self.davfs_expected.items():
                try:
                    if sha((drive.point / "soak-davfs" / rel).read_bytes()) != sha(data):
                        bad.add(f"davfs2 {rel}")
                except OSError:
                    bad.add(f"davfs2 {rel}")
        for i, src in enumerate(self.rclone_rounds):
            report = self.workdir / "check.txt"
            self.rclone("check", "--download", "--combined", str(report), str(src), f":webdav:soak-rclone/r{i:03d}")
            lines = report.read_text().splitlines() if report.exists() else []
            bad |= {f"rclone r{i:03d}/{line[2:]}" for line in lines if not line.startswith("= ")}
            if not lines:
                bad |= {f"rclone r{i:03d}/{p.relative_to(src)}" for p in src.rglob("*.dat")}
        return self.file_count() - len(bad), bad

    def verify_on_nas(self) -> tuple[int, set[str]]:
        """Compare every file on the NAS. Same keys as `verify_through_balupi`."""
        bad: set[str] = set()
        for rel, data in self.davfs_expected.items():
            path = self.nas.root / "soak-davfs" / rel
            if not path.is_file() or sha(path.read_bytes()) != sha(data):
                bad.add(f"davfs2 {rel}")
        for i, src in enumerate(self.rclone_rounds):
            for local in src.rglob("*.dat"):
                remote = self.nas.root / "soak-rclone" / f"r{i:03d}" / local.relative_to(src)
                if not remote.is_file() or sha(remote.read_bytes()) != sha(local.read_bytes()):
                    bad.add(f"rclone r{i:03d}/{local.relative_to(src)}")
        return self.file_count() - len(bad), bad

    def file_count(self) -> int:
        return len(self.davfs_expected) + sum(len(list(s.rglob("*.dat"))) for s in self.rclone_rounds)

    def close(self) -> None:
        self.stop.set()
        self.server.stop()
        self.nas.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to repeat the rounds (default 10)")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    missing = [t for t in ("mount.davfs", "rclone") if shutil.which(t) is None]
    if os.geteuid() != 0 or missing or not Path("/dev/fuse").exists():
        print(f"needs root, /dev/fuse, davfs2 and rclone (missing: {missing or 'root or /dev/fuse'})")
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="balupi-soak-"))
    soak = Soak(workdir, args.seed)
    churn = threading.Thread(target=soak.churn, daemon=True)
    churn.start()
    started = time.monotonic()
    deadline = started + args.minutes * 60
    rounds = 0
    try:
        while time.monotonic() < deadline:
            asleep = rounds % 2 == 1
            if asleep:
                soak.sleep_nas()
            soak.davfs_round(rounds)
            soak.rclone_round(rounds)
            if asleep:
                soak.wake_nas()
            verified, bad = soak.verify_through_balupi(rounds)
            rounds += 1
            print(f"round {rounds} ({'NAS asleep' if asleep else 'NAS awake'}): written {soak.written},"
                  f" verified {verified}, differing {len(bad)}, {time.monotonic() - started:.0f} s", flush=True)
        soak.stop.set()
        churn.join()
        soak.wake_nas()
        for _ in range(30):
            soak.app.sync.run_once()
            if soak.app.sync.pending()["count"] == 0:
                break
        verified_balupi, bad_balupi = soak.verify_through_balupi(rounds)
        verified_nas, bad_nas = soak.verify_on_nas()
        lost = sorted(bad_balupi | bad_nas)  # a file is lost if either copy differs
        conflicts = soak.app.db.query_one("SELECT count(*) FROM conflicts")[0]
        print()
        print(f"duration          {(time.monotonic() - started) / 60:.1f} min, {rounds} rounds (davfs2 + rclone each)")
        print(f"files written     {soak.written} (each version of a file counts: overwrites too)")
        print(f"files verified    {verified_balupi} through BaluPi, {verified_nas} on the NAS"
              " (every file there at the end, renamed ones under their new name)")
        print(f"files lost        {len(lost)} of {soak.file_count()}")
        print(f"conflicts         {conflicts}")
        print(f"churn             {soak.churn_counts}")
        print(f"pending changes   {soak.app.sync.pending()['count']}")
        for line in lost[:20]:
            print("  lost:", line)
        return 1 if lost else 0
    finally:
        soak.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
