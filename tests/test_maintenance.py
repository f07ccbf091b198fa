"""The cron-style commands (issue 5, behaviour 10), as real subprocesses beside a running BaluPi:
sync, evict, prefetch, refresh, vacuum, backup-db and cache verify; the cron wrapper and the
systemd timer that run them."""

from __future__ import annotations

import fcntl
import os
import pty
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

from balupi.sim.nas import PowerState
from tests.davkit import seed, stack_with, wait_downloads_idle, wait_until
from tests.helpers import REPO_ROOT, subprocess_env, sha
from tests.opskit import balupi, settings_env
from tests.stack import stack, stack_factory  # noqa: F401


def seeded(stack_factory, tmp_path, files: dict[str, bytes], **overrides):
    """The stack with `files` on the NAS from the start, and the cache filled by clients only (no
    prefetch, no first walk on the wake at start-up), so what the test reads is what is cached."""
    return stack_with(stack_factory, tmp_path, files, **overrides)


def cached_path(stack, path: str) -> str:
    entry = stack.app.provider.index.get("", path)
    assert entry is not None and entry.cached
    return stack.app.provider.store.file_of(entry.cache_key)


def run(stack, tmp_path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return balupi(tmp_path, stack.app.settings, *args, **extra)


# -- sync --------------------------------------------------------------------------------------------


def test_sync_command_beside_the_servers_own_sync_applies_each_change_once(stack, tmp_path):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    stack.suspend_nas()
    files = {f"/doc{i:02}.txt": os.urandom(20_000) for i in range(20)}
    for path, body in files.items():
        assert stack.http.put(stack.url(path), data=body).status_code == 201
    stack.nas.faults.latency_s = 0.05  # a slow NAS: the two runs overlap
    stack.nas.wake_now()
    assert stack.nas.wait_for_state(PowerState.AWAKE)
    stack.app.nas.probe()  # the server notices the wake and starts its own sync run ...
    result = run(stack, tmp_path, "sync")  # ... and an operator runs one too

    assert result.returncode == 0, result.stderr
    assert wait_until(lambda: not stack.app.sync.has_pending(), 60)
    assert stack.app.db.query_one("SELECT count(*) FROM conflicts")[0] == 0
    assert not [p.name for p in stack.nas.root.iterdir() if "(conflict" in p.name]
    for path, body in files.items():
        assert sha((stack.nas.root / path.lstrip("/")).read_bytes()) == sha(body)
    assert stack.nas.request_count("PUT") == len(files)  # each change uploaded once


def test_sync_command_leaves_a_sleeping_nas_alone_unless_told_to_wake_it(stack, tmp_path):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    stack.suspend_nas()
    assert stack.http.put(stack.url("/later.txt"), data=b"written while asleep").status_code == 201

    result = run(stack, tmp_path, "sync")
    assert result.returncode == 0, result.stderr
    assert "1 waiting" in result.stdout and "--wake" in result.stdout
    assert stack.nas.request_count() == 0 and stack.nas.magic_packet_count == 0

    result = run(stack, tmp_path, "sync", "--wake")
    assert result.returncode == 0, result.stderr
    assert "1 applied" in result.stdout and "0 waiting" in result.stdout
    assert stack.nas.magic_packet_count >= 1
    assert (stack.nas.root / "later.txt").read_bytes() == b"written while asleep"
    assert not stack.app.sync.has_pending()


# -- evict, refresh, prefetch ---------------------------------------------------------------------------


def test_evict_command_keeps_dirty_files_and_the_server_refetches_what_went(stack_factory, tmp_path):
    files = {f"/f{i}.bin": bytes([i]) * 200_000 for i in range(4)}
    stack = seeded(stack_factory, tmp_path, files)
    for path, body in files.items():
        assert stack.http.get(stack.url(path)).content == body
    wait_downloads_idle(stack.app)
    stack.nas.faults.fail(507, count=None, method="PUT")  # uploads refused: the new file stays dirty
    assert stack.http.put(stack.url("/mine.bin"), data=b"m" * 100_000).status_code == 201

    result = run(stack, tmp_path, "evict", "--to-gb", "0")

    assert result.returncode == 0, result.stderr
    assert "4 file(s), 0.8 MB freed" in result.stdout
    assert stack.app.provider.cache.used_bytes() == 100_000
    assert stack.app.provider.index.get("", "/mine.bin").cached
    for path, body in files.items():
        assert not stack.app.provider.index.get("", path).cached
        assert stack.http.get(stack.url(path)).content == body  # fetched again from the NAS


def test_refresh_and_prefetch_commands_use_an_awake_nas_and_never_wake_it(stack, tmp_path):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})  # the root is listed: empty
    seed(stack.nas.root, {"/new/a.txt": b"alpha" * 100, "/new/deeper/b.txt": b"beta" * 100})
    index = stack.app.provider.index

    result = run(stack, tmp_path, "refresh")
    assert result.returncode == 0, result.stderr
    assert index.get("", "/new/deeper/b.txt") is not None and not index.get("", "/new/deeper/b.txt").cached
    result = run(stack, tmp_path, "prefetch")
    assert result.returncode == 0, result.stderr
    assert "2 file(s)" in result.stdout
    assert index.get("", "/new/a.txt").cached and index.get("", "/new/deeper/b.txt").cached

    stack.suspend_nas()
    assert stack.http.get(stack.url("/new/deeper/b.txt")).content == b"beta" * 100
    for command in ("refresh", "prefetch"):
        result = run(stack, tmp_path, command)
        assert result.returncode == 0, result.stderr
        assert "never wakes it" in result.stdout
    assert stack.nas.request_count() == 0 and stack.nas.magic_packet_count == 0


# -- the database --------------------------------------------------------------------------------------


def test_vacuum_while_the_server_runs_and_writes(stack, tmp_path):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    for i in range(30):
        assert stack.http.put(stack.url(f"/v{i}.txt"), data=b"x" * 1000).status_code == 201
    for i in range(0, 30, 2):
        assert stack.http.delete(stack.url(f"/v{i}.txt")).status_code == 204
    stop = threading.Event()
    statuses = []

    def keep_writing():
        n = 0
        while not stop.is_set():
            statuses.append(stack.http.put(stack.url(f"/during{n % 5}.txt"), data=b"w" * 500).status_code)
            n += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        result = run(stack, tmp_path, "vacuum")
    finally:
        stop.set()
        writer.join()

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("vacuum: ")
    assert statuses and set(statuses) <= {201, 204}  # the server's writes went on meanwhile
    assert stack.app.db.query_one("PRAGMA integrity_check")[0] == "ok"
    assert stack.app.db.query_one("SELECT count(*) FROM entries WHERE path LIKE '/v%'")[0] == 15


def test_backup_db_is_a_valid_copy_with_the_same_rows(stack, tmp_path):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    stack.suspend_nas()
    for i in range(10):
        assert stack.http.put(stack.url(f"/b{i}.txt"), data=b"b" * i).status_code == 201
    target = tmp_path / "backups" / "balupi-copy.db"
    target.parent.mkdir()

    result = run(stack, tmp_path, "backup-db", str(target))

    assert result.returncode == 0, result.stderr
    assert str(target) in result.stdout
    assert not [p for p in target.parent.iterdir() if p != target]  # no temp or -wal file beside it
    copy = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for table in ("entries", "journal", "dav_props", "conflicts", "kv"):
            live = [tuple(r) for r in stack.app.db.query(f"SELECT * FROM {table} ORDER BY rowid")]
            assert copy.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall() == live, table
    finally:
        copy.close()
    # A directory gets a dated name.
    result = run(stack, tmp_path, "backup-db", str(target.parent))
    assert result.returncode == 0, result.stderr
    assert len(list(target.parent.glob("balupi-2*.db"))) == 1


# -- cache verify ----------------------------------------------------------------------------------------


def make_orphan(stack, key: str, age_s: float) -> str:
    store = stack.app.provider.store
    path = store.file_of(key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"left behind by a crash")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_cache_verify_finds_and_repairs_an_orphan_and_missing_content(stack_factory, tmp_path):
    files = {"/keep.txt": b"k" * 5000, "/gone.txt": b"g" * 4000, "/short.txt": b"s" * 3000}
    stack = seeded(stack_factory, tmp_path, files)
    for path, body in files.items():
        assert stack.http.get(stack.url(path)).content == body
    wait_downloads_idle(stack.app)
    os.unlink(cached_path(stack, "/gone.txt"))
    with open(cached_path(stack, "/short.txt"), "r+b") as f:
        f.truncate(100)
    old_orphan = make_orphan(stack, "ab" + "0" * 30, age_s=3600)
    new_orphan = make_orphan(stack, "cd" + "1" * 30, age_s=0)  # maybe being committed right now

    check = run(stack, tmp_path, "cache", "verify")
    assert check.returncode == 1
    assert "content missing (to fix (--repair)): /gone.txt" in check.stdout
    assert "wrong size (to fix (--repair)): /short.txt" in check.stdout
    assert f"orphan content (to fix (--repair)): {old_orphan}" in check.stdout
    assert os.path.exists(old_orphan) and stack.app.provider.index.get("", "/gone.txt").cached  # only looked

    repair = run(stack, tmp_path, "cache", "verify", "--repair")
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert "3 repaired" in repair.stdout and "1 unreferenced file(s) too new to judge" in repair.stdout
    # Without a sidecar nobody can tell what the orphan was: moved to quarantine, never deleted.
    assert not os.path.exists(old_orphan) and os.path.exists(new_orphan)
    quarantine = Path(stack.app.settings.cache_dir) / "quarantine"
    assert sum(p.name.endswith("-" + os.path.basename(old_orphan)) for p in quarantine.iterdir()) == 1
    # The NAS is awake: the two bad copies were fetched again (with fresh content keys).
    assert "2 fetched again from the NAS" in repair.stdout
    index = stack.app.provider.index
    assert index.get("", "/keep.txt").cached
    for path in ("/gone.txt", "/short.txt"):
        with open(cached_path(stack, path), "rb") as f:
            assert f.read() == files[path]
    for path, body in files.items():
        assert stack.http.get(stack.url(path)).content == body  # fetched again
    assert run(stack, tmp_path, "cache", "verify").returncode == 0


def test_cache_verify_reports_lost_changes_loudly_and_keeps_them(stack, tmp_path):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    stack.suspend_nas()
    assert stack.http.put(stack.url("/only-here.txt"), data=b"not on the NAS yet").status_code == 201
    os.unlink(cached_path(stack, "/only-here.txt"))

    result = run(stack, tmp_path, "cache", "verify", "--repair")

    assert result.returncode == 1
    assert "DATA LOSS: /only-here.txt" in result.stderr
    assert "1 lost" in result.stdout
    entry = stack.app.provider.index.get("", "/only-here.txt")
    assert entry.dirty and entry.cached  # kept as it was, for an operator to look at
    assert stack.app.db.query_one("SELECT count(*) FROM journal WHERE state = 'pending'")[0] == 1


def test_long_commands_show_progress_only_on_a_terminal(stack, tmp_path):
    for i in range(3):
        assert stack.http.put(stack.url(f"/p{i}.txt"), data=b"p").status_code in (201, 204)
    plain = run(stack, tmp_path, "cache", "verify")
    assert "verify entries" not in plain.stderr

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # an 80-column terminal
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "balupi", "cache", "verify"], cwd=tmp_path, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=follower,
            env=subprocess_env(tmp_path, **settings_env(stack.app.settings)),
        )
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed
                break
            if not chunk:
                break
            seen += chunk
        process.wait(timeout=60)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert process.returncode == 0
    assert b"verify entries" in seen


# -- cron and systemd ------------------------------------------------------------------------------------


def test_nightly_script_vacuums_verifies_and_backs_up(stack, tmp_path):
    script = REPO_ROOT / "scripts" / "balupi-nightly.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "set -euo pipefail" in script.read_text()
    launcher = tmp_path / "balupi-launcher"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} -m balupi \"$@\"\n")
    launcher.chmod(0o755)
    backups = tmp_path / "backups"
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    assert stack.http.put(stack.url("/n.txt"), data=b"n").status_code == 201

    result = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        env=subprocess_env(tmp_path, **settings_env(stack.app.settings), BALUPI=str(launcher),
                           ENV_FILE=os.devnull, BACKUP_DIR=str(backups), BACKUP_KEEP="2"),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "vacuum:" in result.stdout and "cache verify:" in result.stdout and "backup-db:" in result.stdout
    [copy] = backups.glob("balupi-*.db")
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("SELECT count(*) FROM entries WHERE path = '/n.txt'").fetchone()[0] == 1
    finally:
        conn.close()


def unit(name: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for line in (REPO_ROOT / "etc" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            directives.setdefault(key.strip(), []).append(value.strip())
    return directives


def test_systemd_timer_runs_the_nightly_script_as_the_service_user():
    service, timer, main = unit("balupi-maintenance.service"), unit("balupi-maintenance.timer"), unit("balupi.service")
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"][0].endswith("balupi-nightly.sh")
    for key in ("User", "Group", "EnvironmentFile", "ReadWritePaths", "ProtectSystem", "NoNewPrivileges"):
        assert service[key] == main[key], key
    assert set(main["Environment"]) <= set(service["Environment"])
    assert timer["OnCalendar"] and timer["Persistent"] == ["true"]
    assert timer["Unit"] == ["balupi-maintenance.service"]
    install = (REPO_ROOT / "scripts" / "install.sh").read_text()
    assert 'install -m 0755 "$SOURCE_DIR"/scripts/balupi-*.sh "$PREFIX/scripts/"' in install
    assert service["ExecStart"] == ["/opt/balupi/scripts/balupi-nightly.sh"] and "PREFIX=/opt/balupi" in install
    assert "balupi-maintenance.timer" in install and "systemctl enable balupi.service balupi-maintenance.timer" in install


def test_maintenance_scripts_parse_and_are_strict():
    for script in sorted((REPO_ROOT / "scripts").glob("balupi-*.sh")):
        subprocess.run(["bash", "-n", str(script)], check=True)
        assert "set -euo pipefail" in script.read_text(), script.name
        assert os.access(script, os.X_OK), script.name
