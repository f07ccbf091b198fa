"""Reliability scenarios of data integrity (issue 17): bit rot, a lost or damaged database, a full disk.

Each scenario builds the real thing on loopback in a temporary directory: the simulated NAS
(`balupi.sim.nas`, sleeping and waking on a magic packet) and a BaluPi server, talks to it over
HTTP like a client, does the damage (flips bytes on the SSD, deletes or corrupts the database, fills
a tmpfs volume), and returns its figures. `tests/reliability/` runs them short (`long=False`) and
asserts on the figures; `python -m bench.reliability --long` runs them long.

Full-disk scenarios mount small tmpfs volumes and need root; without it they return
`{"skipped": "..."}`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import requests

from bench.servers import free_port

USER, PASSWORD = "alice", "alice-pw"
REPO_ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20


# -- the rig ------------------------------------------------------------------------------------------


class LogTap(logging.Handler):
    """BaluPi's own log lines (WARNING and up) while a scenario runs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)


class Rig:
    """A simulated NAS and a BaluPi server in this process, on 127.0.0.1, under `root`."""

    def __init__(self, root: Path, data_dir: Path | None = None, cache_dir: Path | None = None,
                 files: dict[str, bytes | None] | None = None, **overrides):
        from balupi.settings import load_settings
        from balupi.sim.nas import DEFAULT_MAC, SimNas

        self.root = root
        self.nas = SimNas(root / "nas", users={USER: (PASSWORD, "admin")}, wol_port=free_port(socket.SOCK_DGRAM),
                          control_port=None, boot_delay_s=0.3)
        self.nas.start()
        self.seed(files or {})  # before BaluPi starts: it lists the NAS's root as soon as it sees it awake
        raw = {
            "data_dir": data_dir or root / "data", "cache_dir": cache_dir or root / "cache",
            "host": "127.0.0.1", "port": 0, "wol_address": "127.0.0.1", "wol_port": self.nas.wol_port,
            "tapo_discovery_target": "127.0.0.1", "energy_enabled": False,
            "nas_webdav_url": self.nas.dav_url, "nas_url": self.nas.base_url, "nas_username": USER,
            "nas_password": PASSWORD, "nas_mac_address": DEFAULT_MAC, "nas_wake_timeout_s": 5,
            "nas_boot_time_s": 1, "nas_ready_poll_s": 0.05, "nas_wol_resend_s": 1, "nas_probe_interval_s": 3600,
            "sync_interval_s": 3600, "cache_min_free_gb": 0,
            # No prefetch after a wake: the scenarios decide what is cached (a prefetch may fetch
            # a file again right after a client's miss cached it, replacing the damaged copy).
            "prefetch_budget_mb": 0,
            **overrides,
        }
        self.settings = load_settings(env={}, cwd=root, overrides={k: str(v) if isinstance(v, Path) else v
                                                                   for k, v in raw.items()})
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.auth = (USER, PASSWORD)
        self.log = LogTap()
        logging.getLogger("balupi").addHandler(self.log)
        self.server = None
        self.start()

    # -- BaluPi ---------------------------------------------------------------------------------

    def start(self) -> None:
        from balupi.app import BaluPi
        from balupi.server import Server

        self.server = Server(BaluPi(self.settings))
        self.server.httpd.expiration_interval = 0.05
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def app(self):
        return self.server.app

    def url(self, path: str) -> str:
        return self.server.url + "/dav" + path

    def close(self) -> None:
        logging.getLogger("balupi").removeHandler(self.log)
        try:
            self.stop()
        finally:
            self.nas.stop()

    # -- the NAS --------------------------------------------------------------------------------

    def seed(self, files: dict[str, bytes | None]) -> None:
        """Files on the NAS (None: a folder)."""
        for path, body in files.items():
            target = self.nas.root / path.lstrip("/")
            if body is None:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)

    def nas_file(self, path: str) -> bytes | None:
        target = self.nas.root / path.lstrip("/")
        return target.read_bytes() if target.is_file() else None

    def wake(self) -> None:
        from balupi.sim.nas import PowerState

        self.nas.wake_now()
        assert self.nas.wait_for_state(PowerState.AWAKE)
        self.app.nas.probe()
        assert self.app.nas.is_awake()

    def suspend(self) -> None:
        from balupi.sim.nas import PowerState

        assert self.http.get(self.server.url + "/api/auth/me").status_code == 200  # offline login from now on
        self.nas.suspend()
        assert self.nas.wait_for_state(PowerState.SUSPENDED)
        self.app.nas.probe()

    def sync(self, timeout_s: float = 60.0) -> None:
        """Apply every pending change now (the NAS must be awake)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.app.sync.run_once()
            if not result.remaining or (not result.applied and not result.damaged):
                return
        raise TimeoutError("sync did not finish")

    def wait_downloads(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.app.provider.downloads.count() and time.monotonic() < deadline:
            time.sleep(0.02)

    # -- what is on the SSD ---------------------------------------------------------------------

    def content_file(self, path: str) -> Path:
        entry = self.app.provider.index.get("", path)
        assert entry is not None and entry.cache_key, f"{path} is not cached"
        return Path(self.app.provider.store.file_of(entry.cache_key))

    def content_keys(self) -> set[str]:
        data = Path(self.settings.cache_dir) / "data"
        return {p.name for p in data.rglob("*") if p.is_file() and not p.name.endswith(".meta")}

    def referenced_keys(self) -> set[str]:
        rows = self.app.db.query("SELECT cache_key FROM entries WHERE cache_key IS NOT NULL"
                                 " UNION SELECT cache_key FROM journal WHERE state = 'pending' AND cache_key IS NOT NULL")
        return {r[0] for r in rows}

    def temp_files(self) -> list[Path]:
        return list((Path(self.settings.cache_dir) / "tmp").iterdir())

    def balupi(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        """`python -m balupi ARGS` with this rig's settings (a maintenance command, as cron runs it)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BALUPI_")}
        guard = REPO_ROOT / "tests" / "guard_site"  # the tests' loopback guard, when there
        env.update(PYTHONPATH=os.pathsep.join([str(guard), str(REPO_ROOT)] if guard.is_dir() else [str(REPO_ROOT)]),
                   BALUPI_DATA_DIR=str(self.settings.data_dir),
                   BALUPI_CACHE_DIR=str(self.settings.cache_dir), BALUPI_NAS_WEBDAV_URL=self.settings.nas_webdav_url,
                   BALUPI_NAS_URL=self.settings.nas_url, BALUPI_NAS_USERNAME=USER, BALUPI_NAS_PASSWORD=PASSWORD,
                   BALUPI_NAS_MAC_ADDRESS=self.settings.nas_mac_address, BALUPI_WOL_ADDRESS="127.0.0.1",
                   BALUPI_WOL_PORT=str(self.settings.wol_port), BALUPI_CACHE_MIN_FREE_GB="0",
                   BALUPI_ENERGY_ENABLED="false", HOME=str(self.root))
        return subprocess.run([sys.executable, "-m", "balupi", *args], cwd=self.root, env=env, capture_output=True,
                              text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


@contextmanager
def rig(**kwargs) -> Iterator[Rig]:
    with tempfile.TemporaryDirectory(prefix="balupi-rel-") as tmp:
        made = Rig(Path(tmp), **kwargs)
        try:
            yield made
        finally:
            made.close()


@contextmanager
def tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of `size_bytes` mounted at `path` (root only), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(path)], check=True,
                   capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


@functools.lru_cache(maxsize=1)
def can_mount() -> str | None:
    """Why tmpfs volumes cannot be mounted here (not root, no mount, a container without the right
    to mount), or None: a 1 MB tmpfs is mounted and unmounted once to find out."""
    if os.geteuid() != 0:
        return "needs root to mount tmpfs volumes"
    if shutil.which("mount") is None:
        return "no mount command"
    with tempfile.TemporaryDirectory(prefix="balupi-mount-") as tmp:
        tried = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", tmp], capture_output=True, text=True)
        if tried.returncode != 0:
            return f"cannot mount a tmpfs here: {tried.stderr.strip()[:200]}"
        subprocess.run(["umount", tmp], capture_output=True)
    return None


def body_of(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def flip(path: Path, offset: int) -> None:
    """Flip one bit of the file at `offset`, as bit rot on the SSD would."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def fetch(rig: Rig, path: str, timeout_s: float = 60.0) -> tuple[int | None, bytes]:
    """(status, body) of a GET; status None when the connection was cut before the body was complete."""
    try:
        response = rig.http.get(rig.url(path), timeout=timeout_s)
        return response.status_code, response.content
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        return None, b""


def report(name: str, figures: dict) -> dict:
    figures = {"scenario": name, **figures}
    print(f"[reliability] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items() if k != "scenario"), flush=True)
    return figures


# -- bit rot ------------------------------------------------------------------------------------------


def bit_flips(long: bool = False) -> dict:
    """One bit flipped in clean and in pending content on the SSD: nothing damaged is served as good
    or uploaded; damaged clean files come back from the NAS, damaged pending ones are reported."""
    rng = random.Random(17)
    n = 24 if long else 4
    sizes = [150_000, 3 * MB + 12_345] * (n // 2)
    clean = {f"/clean/c{i}.bin": body_of(rng, sizes[i]) for i in range(n)}
    pending = {f"/pending/p{i}.bin": body_of(rng, sizes[i]) for i in range(n)}
    intact = {f"/pending/ok{i}.bin": body_of(rng, sizes[i]) for i in range(n)}
    with rig(files={**clean, "/pending": None}) as r:
        for path, body in clean.items():  # cached by a miss each
            assert r.http.get(r.url(path)).content == body
        r.wait_downloads()
        r.http.request("PROPFIND", r.url("/pending/"), headers={"Depth": "1"})
        r.suspend()
        for path, body in {**pending, **intact}.items():
            assert r.http.put(r.url(path), data=body).status_code == 201
        r.restart()  # nothing verified by this process yet
        damaged_versions: dict[str, bytes] = {}
        for i, path in enumerate([*clean, *pending]):
            body = clean.get(path) or pending[path]
            offset = rng.randrange(len(body)) if i % 2 == 0 else len(body) - 1 - rng.randrange(min(len(body), 1000))
            flip(r.content_file(path), offset)
            damaged_versions[path] = r.content_file(path).read_bytes()
        served_damaged = refused_or_cut = served_good = 0
        read_paths = list(clean) + list(pending)[: n // 2]  # the other pending ones are found by the sync
        for path in read_paths:
            status, data = fetch(r, path)
            expected = clean.get(path) or pending[path]
            if status == 200 and data == expected:
                served_good += 1
            elif status == 200 and len(data) == len(expected):
                served_damaged += 1  # a complete wrong body: what must never happen
            else:
                refused_or_cut += 1
        r.wake()
        r.sync()
        uploaded_damaged = sum(r.nas_file(p) == damaged_versions[p] for p in pending)
        uploaded_pending = sum(r.nas_file(p) is not None for p in pending)
        intact_on_nas = sum(r.nas_file(p) == body for p, body in intact.items())
        reported = r.app.db.query_one("SELECT count(*) FROM conflicts WHERE kind = 'damaged'")[0]
        clean_again = sum(fetch(r, p) == (200, body) for p, body in clean.items())
        verify = r.balupi("cache", "verify")
        return report("bit_flips", {
            "clean_flipped": len(clean), "pending_flipped": len(pending), "reads": len(read_paths),
            "served_damaged": served_damaged, "served_good": served_good, "refused_or_cut": refused_or_cut,
            "uploaded_damaged": uploaded_damaged, "uploaded_pending_damaged": uploaded_pending,
            "damaged_reported": reported, "intact_pending": len(intact), "intact_on_nas": intact_on_nas,
            "clean_served_after": clean_again, "verify_after_exit": verify.returncode,
            "damage_log_lines": r.log.count("no longer matches its checksum"),
        })


def verify_finds_rot(long: bool = False) -> dict:
    """`balupi cache verify` finds bit flips by content (not size), quarantines them, fetches clean
    ones again from the NAS, and keeps a damaged pending file from ever being uploaded."""
    rng = random.Random(5)
    n = 20 if long else 2
    clean = {f"/v/c{i}.bin": body_of(rng, 2 * MB + i) for i in range(n)}
    with rig(files=clean) as r:
        for path, body in clean.items():
            assert r.http.get(r.url(path)).content == body
        r.wait_downloads()
        r.http.request("PROPFIND", r.url("/v/"), headers={"Depth": "1"})
        r.suspend()
        pending = body_of(rng, 1 * MB + 7)
        assert r.http.put(r.url("/v/new.bin"), data=pending).status_code == 201
        for path in [*clean, "/v/new.bin"]:
            flip(r.content_file(path), 1234)
        check = r.balupi("cache", "verify")
        found = check.stdout.count("damaged content (to fix") + check.stderr.count("DAMAGED:")
        r.wake()
        repair = r.balupi("cache", "verify", "--repair")
        quarantine = Path(r.settings.cache_dir) / "quarantine"
        quarantined = len([p for p in quarantine.iterdir() if not p.name.endswith(".meta")]) if quarantine.exists() else 0
        r.sync()
        served = sum(fetch(r, p) == (200, body) for p, body in clean.items())
        return report("verify_finds_rot", {
            "flipped": n + 1, "found_by_verify": found, "verify_exit": check.returncode,
            "quarantined": quarantined, "clean_served_after_repair": served, "clean": n,
            "damaged_pending_on_nas": int(r.nas_file("/v/new.bin") is not None),
            "repair_exit": repair.returncode,
        })


def legacy_sidecar(content: Path, alg: str = "blake2b-128") -> None:
    """Rewrite the sidecar of `content` as BaluPi before decision 170 wrote it: BLAKE2b-128 of each
    1 MiB block, computed here with hashlib (not with BaluPi's code), and the algorithm named. With
    another `alg`, only the name changes: a sidecar from a version that knows an algorithm this one
    does not."""
    import hashlib

    sidecar = content.with_name(content.name + ".meta")
    meta = json.loads(sidecar.read_bytes())
    if alg == "blake2b-128":
        data = content.read_bytes()
        blocks = [data[i:i + MB] for i in range(0, len(data), MB)] or [b""]
        meta["blocks"] = "".join(hashlib.blake2b(b, digest_size=16).hexdigest() for b in blocks)
    meta["alg"] = alg
    sidecar.write_bytes(json.dumps(meta, separators=(",", ":")).encode())


def mixed_checksums(long: bool = False) -> dict:
    """A cache filled by BaluPi before decision 170 (BLAKE2b sidecars) beside new content (XXH3):
    both verify clean, served and `cache verify`; a bit flip is found under either algorithm; a
    sidecar naming an algorithm this version does not know is damage with its reason, not a crash."""
    rng = random.Random(170)
    n = 6 if long else 2
    old = {f"/m/old{i}.bin": body_of(rng, 2 * MB + 100 * i) for i in range(n)}
    new = {f"/m/new{i}.bin": body_of(rng, 2 * MB + 100 * i + 7) for i in range(n)}
    unknown = {"/m/unknown.bin": body_of(rng, MB + 3)}
    with rig(files={**old, **new, **unknown}) as r:
        for path, body in {**old, **new, **unknown}.items():
            assert r.http.get(r.url(path)).content == body
        r.wait_downloads()
        r.http.request("PROPFIND", r.url("/m/"), headers={"Depth": "1"})
        r.suspend()
        old_pending = {"/m/old-pending.bin": body_of(rng, 3 * MB + 5)}
        new_pending = {"/m/new-pending.bin": body_of(rng, 3 * MB + 9)}
        for path, body in {**old_pending, **new_pending}.items():
            assert r.http.put(r.url(path), data=body).status_code == 201
        algs_written = sorted({_sidecar_alg(r.content_file(p)) for p in [*new, *unknown, *new_pending]})
        old_files = [r.content_file(p) for p in [*old, *old_pending]]
        r.stop()
        for content in old_files:
            legacy_sidecar(content)
        r.start()  # nothing verified by this process
        served_after_upgrade = sum(fetch(r, p) == (200, b) for p, b in {**old, **old_pending, **new}.items())
        # A copy of old content is checked with BLAKE2b as it is read and gets XXH3 as it is written.
        source = list(old)[-1]
        copied = r.http.request("COPY", r.url(source), headers={"Destination": r.url("/m/copy.bin")}).status_code
        copy_of_old = {"status": copied, "alg": _sidecar_alg(r.content_file("/m/copy.bin")),
                       "served_right": fetch(r, "/m/copy.bin") == (200, old[source])}
        clean_check = r.balupi("cache", "verify")
        # Bit rot under both algorithms, in clean and pending content.
        flipped = [next(iter(old)), next(iter(new)), *old_pending, *new_pending]
        for path in flipped:
            flip(r.content_file(path), MB + 17)
        legacy_sidecar(r.content_file("/m/unknown.bin"), alg="sha3-512")
        r.restart()
        rot_check = r.balupi("cache", "verify")
        found = sum(path in line for path in flipped for line in rot_check.stdout.splitlines() + rot_check.stderr.splitlines()
                    if "damaged content" in line or "DAMAGED" in line)
        unknown_reported = [line for line in rot_check.stdout.splitlines() if "/m/unknown.bin" in line]
        r.wake()
        repair = r.balupi("cache", "verify", "--repair")
        quarantine = Path(r.settings.cache_dir) / "quarantine"
        quarantined = sorted(json.loads(p.read_bytes())["path"] for p in quarantine.iterdir() if p.name.endswith(".meta"))
        clean_again = sum(fetch(r, p) == (200, b) for p, b in {**old, **new, **unknown}.items())
        after = r.balupi("cache", "verify")
        r.sync()
        pending_on_nas = sum(r.nas_file(p) is not None for p in [*old_pending, *new_pending])
        return report("mixed_checksums", {
            "algs_written": algs_written, "served_after_upgrade": served_after_upgrade, "copy_of_old": copy_of_old,
            "old_and_new": len(old) + len(old_pending) + len(new),
            "verify_after_upgrade_exit": clean_check.returncode, "verify_after_upgrade_out": clean_check.stdout.strip(),
            "flipped": len(flipped), "found_by_verify": found, "rot_verify_exit": rot_check.returncode,
            "unknown_reported": unknown_reported, "tracebacks": sum("Traceback" in run.stderr for run in
                                                                   (clean_check, rot_check, repair, after)),
            "repair_exit": repair.returncode, "quarantined": quarantined,
            "clean_served_after_repair": clean_again, "clean": len(old) + len(new) + len(unknown),
            "verify_after_repair_out": after.stdout.strip(), "damaged_pending_on_nas": pending_on_nas,
        })


def _sidecar_alg(content: Path) -> str:
    return json.loads(content.with_name(content.name + ".meta").read_bytes())["alg"]


# -- a lost or damaged database ---------------------------------------------------------------------


def _corrupt(db_path: Path, rng: random.Random) -> None:
    """Overwrite the database's pages after the first with noise (its header stays: SQLite opens it
    and then finds it malformed)."""
    size = db_path.stat().st_size
    page = 4096
    with open(db_path, "r+b") as f:
        for offset in range(page, size, page):
            f.seek(offset + 100)
            f.write(rng.randbytes(page - 200))


def _database_loss(kind: str, long: bool) -> dict:
    rng = random.Random(3)
    n = 2000 if long else 8  # long: 3,000 content files, about the 2,665 of the finding
    clean = {f"/docs/c{i}.txt": body_of(rng, 20_000 + i) for i in range(n // 2)}
    uploads = {f"/docs/new/u{i}.bin": body_of(rng, 50_000 + 1000 * i) for i in range(n)}
    with rig(files=clean) as r:
        for path, body in clean.items():
            assert r.http.get(r.url(path)).content == body
        r.wait_downloads()
        r.http.request("PROPFIND", r.url("/docs/"), headers={"Depth": "1"})
        r.suspend()
        assert r.http.request("MKCOL", r.url("/docs/new")).status_code == 201
        acked = sum(r.http.put(r.url(p), data=b).status_code == 201 for p, b in uploads.items())
        # One of them renamed before the loss: it must come back under its new name.
        old = next(iter(uploads))
        moved = r.http.request("MOVE", r.url(old), headers={"Destination": r.url("/docs/new/renamed.bin")})
        if moved.status_code == 201:
            uploads["/docs/new/renamed.bin"] = uploads.pop(old)
        r.stop()
        db_path = Path(r.settings.data_dir) / "balupi.db"
        if kind == "deleted":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        else:
            _corrupt(db_path, rng)
        data_dir = Path(r.settings.cache_dir) / "data"
        keys_before = {p.name for p in data_dir.rglob("*") if p.is_file() and not p.name.endswith(".meta")}
        started = time.monotonic()
        try:
            r.start()
            start_error = ""
        except Exception as exc:  # noqa: BLE001 - the figure says what happened
            start_error = f"{type(exc).__name__}: {exc}"
        start_s = time.monotonic() - started
        if start_error:
            return report(f"database_{kind}", {"start_error": start_error})
        journaled = r.app.db.query_one("SELECT count(*) FROM journal WHERE state = 'pending' AND op = 'put'")[0]
        repair = r.balupi("cache", "verify", "--repair")  # the nightly job, the NAS asleep
        keys_after = r.content_keys()
        # The offline-login verifiers were in the lost database: the first login needs the NAS.
        r.wake()
        r.sync()
        on_nas = sum(r.nas_file(p) == b for p, b in uploads.items())
        r.suspend()
        wakes = r.nas.wake_count
        served_asleep = sum(fetch(r, p) == (200, b) for p, b in uploads.items())
        clean_served_asleep = sum(fetch(r, p) == (200, b) for p, b in clean.items())
        conflicts = r.app.db.query_one("SELECT count(*) FROM conflicts")[0]
        return report(f"database_{kind}", {
            "acknowledged": acked, "renamed": moved.status_code, "start_s": round(start_s, 2), "start_error": start_error,
            "moved_aside": int(any(Path(r.settings.data_dir).glob("balupi.db.damaged-*"))),
            "journaled_again": journaled, "content_files_before": len(keys_before),
            "content_files_after_repair": len(keys_after), "deleted_by_repair": len(keys_before - keys_after),
            "repair_exit": repair.returncode, "reached_nas": on_nas,
            "served_nas_asleep": served_asleep, "clean_served_nas_asleep": clean_served_asleep,
            "clean_cached": len(clean), "nas_wakes_during_reads": r.nas.wake_count - wakes,
            "conflicts": conflicts, "log_errors": r.log.count("is damaged"),
        })


def database_deleted(long: bool = False) -> dict:
    """The database deleted with acknowledged uploads not yet on the NAS."""
    return _database_loss("deleted", long)


def database_corrupted(long: bool = False) -> dict:
    """The database's pages overwritten with noise, acknowledged uploads not yet on the NAS."""
    return _database_loss("corrupted", long)


def database_restored(long: bool = False) -> dict:
    """The nightly backup restored (`balupi restore-db`) after the database was lost: what was
    written after the backup comes back from the cache's sidecars."""
    rng = random.Random(9)
    n = 100 if long else 4
    before = {f"/r/b{i}.bin": body_of(rng, 30_000 + i) for i in range(n)}
    after = {f"/r/a{i}.bin": body_of(rng, 40_000 + i) for i in range(n)}
    with rig(files={"/r": None}) as r:
        r.http.request("PROPFIND", r.url("/r/"), headers={"Depth": "1"})
        r.suspend()
        for p, b in before.items():
            assert r.http.put(r.url(p), data=b).status_code == 201
        backup = r.root / "backups" / "balupi-nightly.db"
        backup.parent.mkdir()
        made = r.balupi("backup-db", str(backup))
        for p, b in after.items():
            assert r.http.put(r.url(p), data=b).status_code == 201
        r.stop()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{Path(r.settings.data_dir) / 'balupi.db'}{suffix}").unlink(missing_ok=True)
        restore = r.balupi("restore-db", str(backup))
        r.start()
        served = sum(fetch(r, p) == (200, b) for p, b in {**before, **after}.items())
        r.wake()
        r.sync()
        on_nas = sum(r.nas_file(p) == b for p, b in {**before, **after}.items())
        return report("database_restored", {
            "backup_exit": made.returncode, "restore_exit": restore.returncode, "acknowledged": 2 * n,
            "served_after_restore": served, "reached_nas": on_nas,
            "conflicts": r.app.db.query_one("SELECT count(*) FROM conflicts")[0],
            "restore_output": restore.stdout.strip().splitlines()[-1:] or restore.stderr.strip()[-200:],
        })


# -- a full disk --------------------------------------------------------------------------------------


def _raw_put(rig: Rig, path: str, headers: str, body: bytes = b"", timeout_s: float = 10.0) -> tuple[str, float]:
    """A PUT over a raw socket (headers as given); (status line or 'timeout'/'closed', seconds)."""
    import base64

    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", rig.server.port), timeout=timeout_s) as sock:
        sock.sendall(f"PUT /dav{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n{headers}\r\n".encode()
                     + body)
        try:
            data = sock.recv(4096)
        except socket.timeout:
            return "timeout", time.monotonic() - started
    line = data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed"
    return line, time.monotonic() - started


def _put_while_filling(rig: Rig, volume: Path, path: str, size: int, rng: random.Random) -> str:
    """A PUT of `size` bytes over a raw socket: the first MB, then a filler file takes the volume's
    free space, then the rest. Returns the status line (the filler is removed again)."""
    import base64

    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    body = body_of(rng, size)
    filler = volume / "filler"
    with socket.create_connection(("127.0.0.1", rig.server.port), timeout=30) as sock:
        sock.sendall(f"PUT /dav{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
                     f"Content-Length: {size}\r\n\r\n".encode() + body[:MB])
        time.sleep(0.3)
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * MB)
                    f.flush()
            except OSError:
                pass
        try:
            sock.sendall(body[MB:])
        except OSError:
            pass
        data = sock.recv(4096)
    filler.unlink()
    return data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed"


def full_cache_volume(long: bool = False) -> dict:
    """The cache on a small tmpfs: uploads beyond its room are 507 before anything is written (and
    an impossible one evicts nothing); every acknowledged upload is served; no orphan content."""
    why = can_mount()
    if why:
        return report("full_cache_volume", {"skipped": why})
    rng = random.Random(11)
    volume_bytes = (192 if long else 48) * MB
    file_bytes = 4 * MB
    with tempfile.TemporaryDirectory(prefix="balupi-rel-") as tmp, tmpfs(Path(tmp) / "cachevol", volume_bytes) as vol:
        clean = {f"/c/{i}.bin": body_of(rng, 1 * MB) for i in range(4)}
        made = Rig(Path(tmp), cache_dir=vol / "cache", files=clean)
        try:
            r = made
            for p, b in clean.items():
                got = r.http.get(r.url(p))
                assert got.content == b, (got.status_code, got.text[:300])
            r.wait_downloads()
            r.http.request("PROPFIND", r.url("/"), headers={"Depth": "1"})
            r.suspend()
            cached_before = r.app.db.query_one("SELECT count(*) FROM entries WHERE cache_key IS NOT NULL")[0]
            evictions_before = r.app.provider.cache.evictions
            huge, huge_s = _raw_put(r, "/huge.bin", "Content-Length: 10000000000000\r\n", b"x" * 100)
            evicted_by_huge = r.app.provider.cache.evictions - evictions_before
            negative, negative_s = _raw_put(r, "/neg.bin", "Content-Length: -1\r\n")
            # The volume fills up behind BaluPi's back during an upload it had room for.
            filled_during = _put_while_filling(r, vol, "/late.bin", 4 * MB, rng)
            late_left = r.app.provider.index.get("", "/late.bin") is not None
            acked: dict[str, bytes] = {}
            statuses: dict[int, int] = {}
            assert r.http.request("MKCOL", r.url("/u")).status_code == 201
            for i in range(volume_bytes // file_bytes + 4):
                body = body_of(rng, file_bytes)
                status = r.http.put(r.url(f"/u/{i}.bin"), data=body).status_code
                statuses[status] = statuses.get(status, 0) + 1
                if status in (201, 204):
                    acked[f"/u/{i}.bin"] = body
            orphans = r.content_keys() - r.referenced_keys()
            temps = r.temp_files()
            acknowledged = len(acked)
            served = sum(fetch(r, p) == (200, b) for p, b in acked.items())
            refusal_lines = r.log.count("507 Insufficient Storage")
            # Room again: once the NAS has the uploads they are clean and can be evicted, so a new
            # upload makes its room (a deleted pending file frees nothing before the sync).
            r.wake()
            r.sync()
            on_nas = sum(r.nas_file(p) == b for p, b in acked.items())
            r.suspend()
            again = r.http.put(r.url("/u/again.bin"), data=body_of(rng, file_bytes)).status_code
            return report("full_cache_volume", {
                "volume_mb": volume_bytes // MB, "huge_put": huge, "huge_put_s": round(huge_s, 2),
                "evicted_by_huge_put": evicted_by_huge, "cached_before": cached_before,
                "negative_length_put": negative, "negative_length_s": round(negative_s, 2),
                "puts": sum(statuses.values()), "statuses": statuses, "put_while_volume_filled": filled_during, "late_put_in_index": int(late_left),
                "acknowledged": acknowledged, "served": served,
                "orphan_content_files": len(orphans), "temp_files_left": len(temps),
                "refusal_log_lines": refusal_lines, "reached_nas": on_nas, "put_after_sync": again,
            })
        finally:
            made.close()


def full_db_volume(long: bool = False) -> dict:
    """The database on a small tmpfs filled up: uploads are 507 before a byte is written, no
    content file is left without an index entry, and service recovers once there is room."""
    why = can_mount()
    if why:
        return report("full_db_volume", {"skipped": why})
    rng = random.Random(13)
    with tempfile.TemporaryDirectory(prefix="balupi-rel-") as tmp, tmpfs(Path(tmp) / "datavol", 24 * MB) as vol:
        made = Rig(Path(tmp), data_dir=vol / "data", files={"/d": None})
        try:
            r = made
            r.http.request("PROPFIND", r.url("/d/"), headers={"Depth": "1"})
            r.suspend()
            acked: dict[str, bytes] = {}
            for i in range(3):
                body = body_of(rng, 200_000)
                if r.http.put(r.url(f"/d/before{i}.bin"), data=body).status_code == 201:
                    acked[f"/d/before{i}.bin"] = body
            filler = vol / "filler"
            free = shutil.disk_usage(vol).free
            with open(filler, "wb") as f:
                f.write(b"\0" * max(0, free - 1 * MB))  # leave 1 MB: below BaluPi's floor for its database
            keys_before = r.content_keys()
            statuses: dict[int, int] = {}
            n = 20 if long else 5
            for i in range(n):
                status = r.http.put(r.url(f"/d/full{i}.bin"), data=body_of(rng, 300_000)).status_code
                statuses[status] = statuses.get(status, 0) + 1
            mkcol = r.http.request("MKCOL", r.url("/d/folder")).status_code
            new_content = r.content_keys() - keys_before
            orphans = r.content_keys() - r.referenced_keys()
            refusal_lines = r.log.count("507 Insufficient Storage")
            served_while_full = sum(fetch(r, p) == (200, b) for p, b in acked.items())
            filler.unlink()
            body = body_of(rng, 200_000)
            again = r.http.put(r.url("/d/after.bin"), data=body).status_code
            if again == 201:
                acked["/d/after.bin"] = body
            r.wake()
            r.sync()
            on_nas = sum(r.nas_file(p) == b for p, b in acked.items())
            return report("full_db_volume", {
                "puts_while_full": n, "statuses_while_full": statuses, "mkcol_while_full": mkcol,
                "content_files_written_while_full": len(new_content), "orphan_content_files": len(orphans),
                "refusal_log_lines": refusal_lines, "served_while_full": served_while_full,
                "put_after_room": again, "acknowledged": len(acked), "reached_nas": on_nas,
            })
        finally:
            made.close()


def small_cache_volume(long: bool = False) -> dict:
    """A cache volume smaller than cache_min_free_gb: an error at start-up and in /api/health."""
    why = can_mount()
    if why:
        return report("small_cache_volume", {"skipped": why})
    with tempfile.TemporaryDirectory(prefix="balupi-rel-") as tmp, tmpfs(Path(tmp) / "tiny", 16 * MB) as vol:
        made = Rig(Path(tmp), cache_dir=vol / "cache", cache_min_free_gb=1)
        try:
            health = made.http.get(made.server.url + "/api/health")
            return report("small_cache_volume", {
                "health_status": health.status_code, "health": health.json().get("status"),
                "problems": len(health.json().get("problems", [])),
                "startup_error_lines": made.log.count("nothing can ever be cached"),
            })
        finally:
            made.close()


SCENARIOS: list[Callable[[bool], dict]] = [
    bit_flips, verify_finds_rot, mixed_checksums, database_deleted, database_corrupted, database_restored,
    full_cache_volume, full_db_volume, small_cache_volume,
]
