"""Nothing acknowledged is ever lost (issue 5, "Done when"): `balupi serve` as a real process, killed
with SIGKILL at random moments while clients upload concurrently and while it syncs to a simulated
NAS that drops uploads, restarted on the same data directory, many rounds over.

Checked after every kill and every restart, and at the end after a full sync:
- every upload that got a 2xx is served by BaluPi with its checksum, or a later version of the
  same file is (versions of a file are written one after another by one client); a version once
  served is never replaced by an older one;
- no partial file is visible on either side: every file BaluPi lists or serves, and every file on
  the NAS at its final name, is a complete version some client sent; nothing BaluPi lists was never
  sent; and no conflict copies appear (nobody else writes to the NAS);
- after the sync, the NAS holds exactly what BaluPi serves, and no temporary upload is left.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import requests

from balupi.sim.nas import DEFAULT_MAC, SimNas
from tests.davkit import parse_multistatus
from tests.helpers import free_port, subprocess_env, sha
from tests.opskit import balupi as run_balupi
from tests.opskit import settings_env
from tests.stack import NAS_PASSWORD, NAS_USER

ROUNDS_MIN, ROUNDS_MAX = 8, 16
ROUNDS_BUDGET_S = 40.0  # the rounds stop after this long (at least ROUNDS_MIN of them)
WRITERS = 4
FILES_PER_WRITER = 5
START_TIMEOUT_S = 60.0  # bounds for hangs, never assertions about speed
SYNC_TIMEOUT_S = 60.0


@dataclass
class Version:
    sha: str
    size: int
    acked: bool = False


@dataclass
class Ledger:
    """What the clients sent: per path, every version in the order it was sent."""

    versions: dict[str, list[Version]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)  # highest version index BaluPi ever served
    lock: threading.Lock = field(default_factory=threading.Lock)

    def index_of(self, path: str, digest: str) -> int | None:
        found = [i for i, v in enumerate(self.versions.get(path, [])) if v.sha == digest]
        return found[-1] if found else None

    def last_acked(self, path: str) -> int:
        acked = [i for i, v in enumerate(self.versions.get(path, [])) if v.acked]
        return acked[-1] if acked else -1


class Served:
    """`balupi serve` as a subprocess on a fixed port and data directory."""

    def __init__(self, tmp_path: Path, env: dict[str, str], port: int):
        self.tmp_path, self.env, self.port = tmp_path, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        log = open(self.tmp_path / f"serve-{self.starts}.log", "w")
        self.starts += 1
        with log:
            self.process = subprocess.Popen([sys.executable, "-m", "balupi", "serve"], cwd=self.tmp_path,
                                            env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        with requests.Session() as http:
            http.trust_env = False
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.logs()
                try:
                    if http.get(self.url + "/api/health", timeout=2).status_code == 200:
                        return
                except requests.ConnectionError:
                    pass
                time.sleep(0.02)
        raise AssertionError("balupi serve did not start:\n" + self.logs())

    def kill9(self) -> None:
        assert self.process is not None and self.process.poll() is None, self.logs()
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.tmp_path.glob("serve-*.log")))


class Writers:
    """Threads uploading random content to their own files, over and over; pausable between requests."""

    def __init__(self, url: str, ledger: Ledger, seed: int):
        self.url, self.ledger = url, ledger
        self.go = threading.Event()
        self.stop = threading.Event()
        self._idle = threading.Semaphore(0)
        self._busy = 0
        self._cond = threading.Condition()
        self.acked = self.failed = 0
        self.threads = [threading.Thread(target=self._run, args=(n, seed + n), daemon=True) for n in range(WRITERS)]

    def _run(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        http = requests.Session()
        http.trust_env = False
        http.auth = (NAS_USER, NAS_PASSWORD)
        k = 0
        while not self.stop.is_set():
            if not self.go.wait(0.05):
                continue
            with self._cond:
                if not self.go.is_set():
                    continue
                self._busy += 1
            try:
                path = f"/w{n}/f{k % FILES_PER_WRITER}.bin"
                k += 1
                size = rng.choice([0, 1, 700, 20_000, 150_000, 600_000, 2_500_000])
                body = rng.randbytes(size)
                version = Version(sha(body), size)
                with self.ledger.lock:
                    self.ledger.versions.setdefault(path, []).append(version)
                try:
                    response = http.put(self.url + "/dav" + path, data=body, timeout=(2, 30))
                    version.acked = 200 <= response.status_code < 300
                except requests.RequestException:
                    version.acked = False
                if version.acked:
                    self.acked += 1
                else:
                    self.failed += 1
                    http.close()
                    time.sleep(0.01)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def resume(self) -> None:
        self.go.set()

    def pause(self) -> None:
        """Stop starting requests and wait for those in flight to end (they fail fast after a kill)."""
        with self._cond:
            self.go.clear()
            assert self._cond.wait_for(lambda: self._busy == 0, timeout=60), "uploads did not end"

    def close(self) -> None:
        self.stop.set()
        self.go.set()
        for t in self.threads:
            t.join(timeout=60)


def history(db_path: Path, path: str) -> str:
    """The journal rows and the index entry of `path`, for a failure message."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT id, op, dest, cache_key, size, base_etag, state, attempts, phase, last_error"
                            " FROM journal WHERE path = ? OR dest = ? ORDER BY id DESC LIMIT 6", (path, path)).fetchall()
        entry = conn.execute("SELECT cache_key, size, etag, base_etag, dirty FROM entries WHERE path = ?", (path,)).fetchall()
    finally:
        conn.close()
    return f"\n  journal (newest first): {rows}\n  entry: {entry}"


def check_balupi(url: str, ledger: Ledger, db_path: Path) -> int:
    """BaluPi serves, for every file, a complete version sent for it, no older than the last one
    acknowledged or than one it served before; it lists nothing else. Returns files checked."""
    http = requests.Session()
    http.trust_env = False
    http.auth = (NAS_USER, NAS_PASSWORD)
    checked = 0
    listed: set[str] = set()
    for n in range(WRITERS):
        response = http.request("PROPFIND", f"{url}/dav/w{n}/", headers={"Depth": "1"}, timeout=30)
        assert response.status_code == 207, response.status_code
        members = parse_multistatus(response.content)
        listed |= {p for p, m in members.items() if not m.is_dir}
    sent = set(ledger.versions)
    assert listed <= sent, f"listed but never sent: {sorted(listed - sent)}"
    for path, versions in ledger.versions.items():
        acked = ledger.last_acked(path)
        response = http.get(url + "/dav" + quote(path), timeout=30)
        if response.status_code == 404:
            assert acked < 0 and path not in ledger.seen, f"{path}: acknowledged or served before, now gone"
            assert path not in listed
            continue
        assert response.status_code == 200, (path, response.status_code)
        assert path in listed, f"{path} is served but not listed"
        got = ledger.index_of(path, sha(response.content))
        assert got is not None, f"{path}: BaluPi serves content no client sent (partial?), {len(response.content)} bytes"
        assert got >= acked, f"{path}: serves version {got}, but version {acked} was acknowledged" + history(db_path, path)
        assert got >= ledger.seen.get(path, -1), f"{path}: serves version {got}, served {ledger.seen[path]} before"
        ledger.seen[path] = got
        checked += 1
    http.close()
    return checked


def check_nas(root: Path, ledger: Ledger) -> None:
    """Every file at its final name on the NAS is a complete version sent for it; no conflict copies."""
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.startswith(".balupi-upload-") and name.endswith(".part"):
                continue  # a temporary upload (may be partial: that is what the temp name is for)
            rel = "/" + str(Path(dirpath, name).relative_to(root))
            assert "(conflict" not in name, f"a conflict copy appeared on the NAS: {rel}"
            assert rel in ledger.versions, f"the NAS has a file nobody sent: {rel}"
            digest = sha(Path(dirpath, name).read_bytes())
            assert ledger.index_of(rel, digest) is not None, f"{rel} on the NAS is not a complete version (partial?)"


def journal_head(db_path: Path) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT id, op, path, size, attempts, phase, last_error FROM journal"
                            " WHERE state = 'pending' ORDER BY id LIMIT 3").fetchall()
    finally:
        conn.close()


def pending_changes(db_path: Path) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM journal WHERE state = 'pending'").fetchone()[0]
    finally:
        conn.close()


def test_kill_9_at_random_moments_loses_no_acknowledged_upload(tmp_path, settings_factory):
    rng = random.Random(int(os.environ.get("BALUPI_TEST_SEED", "0")) or None)
    seed_value = rng.randrange(1 << 30)
    rng.seed(seed_value)
    nas = SimNas(tmp_path / "nas", users={NAS_USER: (NAS_PASSWORD, "admin")}, wol_port=free_port(socket.SOCK_DGRAM),
                 control_port=None, boot_delay_s=0.3)
    nas.start()
    port = free_port()
    settings = settings_factory(
        nas_webdav_url=nas.dav_url, nas_url=nas.base_url, nas_username=NAS_USER, nas_password=NAS_PASSWORD,
        nas_mac_address=DEFAULT_MAC, wol_port=nas.wol_port, nas_wake_timeout_s=5, nas_boot_time_s=1,
        nas_ready_poll_s=0.05, nas_wol_resend_s=1, nas_probe_interval_s=1, sync_interval_s=1,
        cache_min_free_gb=0, prefetch_budget_mb=0, port=port,
    )
    env = subprocess_env(tmp_path, **settings_env(settings, BALUPI_PORT=str(port)))
    served = Served(tmp_path, env, port)
    db_path = settings.data_dir / "balupi.db"
    ledger = Ledger()
    writers = Writers(served.url, ledger, seed_value)
    rounds = 0
    try:
        served.start()
        mk = requests.Session()
        mk.trust_env = False
        mk.auth = (NAS_USER, NAS_PASSWORD)
        for n in range(WRITERS):
            assert mk.request("MKCOL", f"{served.url}/dav/w{n}", timeout=30).status_code == 201
        writers.start()
        began = time.monotonic()
        while rounds < ROUNDS_MAX and (rounds < ROUNDS_MIN or time.monotonic() - began < ROUNDS_BUDGET_S):
            rounds += 1
            # The NAS drops some uploads mid-body this round, at a random point.
            nas.faults.drop_put(after_bytes=rng.randrange(0, 400_000), count=rng.randrange(0, 3))
            writers.resume()
            time.sleep(rng.uniform(0.1, 2.0))
            served.kill9()  # mid-upload, mid-sync, mid-commit: wherever it is
            writers.pause()
            check_nas(nas.root, ledger)
            served.start()
            check_balupi(served.url, ledger, db_path)

        # The end: no more faults, no more uploads; let the restarted server sync everything.
        writers.close()
        nas.faults.clear()
        served.kill9()
        conn = sqlite3.connect(db_path, timeout=10)
        with conn:
            conn.execute("UPDATE journal SET next_at = 0")  # don't wait out the retries' backoff
        conn.close()
        served.start()
        deadline = time.monotonic() + SYNC_TIMEOUT_S
        while pending_changes(db_path):
            assert time.monotonic() < deadline, f"the sync did not finish: {journal_head(db_path)}\n" + served.logs()
            time.sleep(0.1)
        checked = check_balupi(served.url, ledger, db_path)
        check_nas(nas.root, ledger)

        http = requests.Session()
        http.trust_env = False
        http.auth = (NAS_USER, NAS_PASSWORD)
        for path in ledger.versions:
            response = http.get(served.url + "/dav" + quote(path), timeout=30)
            on_nas = nas.root / path.lstrip("/")
            if response.status_code == 404:
                assert not on_nas.exists(), path
                continue
            assert on_nas.exists(), f"{path} was acknowledged (or served) but never reached the NAS"
            assert sha(on_nas.read_bytes()) == sha(response.content), f"{path}: the NAS and BaluPi differ"
        leftovers = [str(p.relative_to(nas.root)) for p in nas.root.rglob(".balupi-upload-*")]
        assert leftovers == [], f"temporary uploads left on the NAS: {leftovers}"
        conflicts = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        assert conflicts.execute("SELECT path, conflict_path FROM conflicts").fetchall() == []
        conflicts.close()
        assert served.stop() == 0
        verify = run_balupi(tmp_path, settings, "cache", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert " 0 lost" in verify.stdout
    finally:
        writers.close()
        if served.process is not None and served.process.poll() is None:
            served.process.kill()
        nas.stop()
    acked = sum(v.acked for vs in ledger.versions.values() for v in vs)
    print(f"seed {seed_value}: {rounds} rounds, {acked} uploads acknowledged, {writers.failed} cut off; "
          f"{checked} files checked on both sides")
    assert rounds >= ROUNDS_MIN and acked >= rounds and writers.failed >= 1
