"""The four example plugins in plugins/, each doing its job end to end against the simulated NAS,
loaded from the repository's plugins/ directory together (the unconfigured ones stay inert)."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from balupi import maintenance
from balupi.sim.nas import PowerState
from tests.davkit import index_row, wait_downloads_idle
from tests.pluginkit import REPO_PLUGINS, plugin, plugin_stack, wait_for
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

EXAMPLES = {"notify", "quiet_hours", "pin_rules", "ssh_suspend"}


def example_stack(stack_factory, tmp_path, config: dict, **kwargs):
    stack = plugin_stack(stack_factory, tmp_path, config=config, plugins_dir=REPO_PLUGINS, **kwargs)
    listing = {p["name"]: p for p in stack.app.plugins.listing()["plugins"]}
    assert EXAMPLES <= set(listing) and all(listing[n]["loaded"] and not listing[n]["errors"] for n in EXAMPLES)
    return stack


def cached(stack, path: str, view: str = "") -> bool:
    row = index_row(stack.app, path, view)
    return row is not None and row["cache_key"] is not None


# -- notify ---------------------------------------------------------------------------------------


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that records JSON posts; answers 500 to the first `fail_first`."""

    def __init__(self, fail_first: int = 0):
        self.posts: list[dict] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.attempts += 1
                status = 500 if receiver.attempts <= fail_first else 200
                if status == 200:
                    receiver.posts.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    made = Receiver(fail_first=1)
    yield made
    made.close()


def test_notify_sends_a_sync_conflict_through_apprise_and_retries(stack_factory, tmp_path, receiver):
    stack = example_stack(stack_factory, tmp_path, {"notify": {"urls": [receiver.url], "retry_delay_s": 0.1}},
                          files={"/notes.txt": b"original"})
    assert stack.http.get(stack.url("/notes.txt")).content == b"original"
    stack.suspend_nas()
    assert stack.http.put(stack.url("/notes.txt"), data=b"edited on the Pi").status_code == 204
    (stack.nas.root / "notes.txt").write_bytes(b"edited on the NAS directly, meanwhile")
    stack.wake_nas()
    stack.app.sync.run_once()
    assert wait_for(lambda: receiver.posts, 15)
    post = receiver.posts[0]
    assert post["title"] == "BaluPi: sync conflict"
    assert "/notes.txt" in post["message"] and "(conflict " in post["message"]
    assert receiver.attempts == 2  # the first answer was 500: sent again
    sent = plugin(stack.app, "notify").sent  # noted once the sender's child process has finished
    assert wait_for(lambda: sent) and sent[0][0] == "BaluPi: sync conflict"


def test_notify_tells_when_the_nas_did_not_wake(stack_factory, tmp_path, receiver):
    stack = example_stack(stack_factory, tmp_path, {"notify": {"urls": [receiver.url], "retry_delay_s": 0.1}},
                          nas_mac_address="02:00:00:00:00:99", nas_wake_timeout_s=1)
    stack.suspend_nas()
    assert stack.http.get(stack.url("/anything.txt")).status_code == 503
    assert wait_for(lambda: receiver.posts, 15)
    assert receiver.posts[0]["title"] == "BaluPi: the NAS did not wake"
    assert stack.nas.magic_packet_count == 0  # the packets went to another MAC


def test_notify_refuses_an_unknown_event_name_at_start_up(stack_factory, tmp_path, receiver):
    stack = plugin_stack(stack_factory, tmp_path, config={"notify": {"urls": [receiver.url], "events": ["typo"]}},
                         plugins_dir=REPO_PLUGINS)
    info = stack.app.plugins.infos["notify"]
    assert not info.registered
    assert info.errors == ["[plugins.notify] events: unknown event 'typo'; one of sync_conflict, wake_failed, "
                           "plug_offline, disk_almost_full"]


# -- quiet_hours ------------------------------------------------------------------------------------


def window(contains_now: bool) -> str:
    now = datetime.now()
    start = now - timedelta(hours=1) if contains_now else now + timedelta(hours=2)
    return f"{start:%H:%M}-{start + timedelta(hours=2 if contains_now else 1):%H:%M}"


def test_quiet_hours_keep_background_work_from_waking_but_a_person_still_wakes_it(stack_factory, tmp_path):
    # By the write-back policy alone, any pending byte is worth a wake here.
    stack = example_stack(stack_factory, tmp_path, {"quiet_hours": {"hours": window(True)}},
                          files={"/docs/a.txt": b"alpha"}, sync_max_pending_mb=0.000001)
    assert stack.http.request("PROPFIND", stack.url("/docs/"), headers={"Depth": "1"}).status_code == 207
    stack.suspend_nas()
    assert stack.http.put(stack.url("/note.txt"), data=b"note").status_code == 201
    assert stack.app.sync.tick() is None
    assert stack.nas.magic_packet_count == 0 and not (tmp_path / "nas" / "note.txt").exists()
    # A person opening a file that is not cached: the NAS wakes, and the waiting change goes too.
    assert stack.http.get(stack.url("/docs/a.txt")).content == b"alpha"
    assert stack.nas.magic_packet_count >= 1
    assert wait_for(lambda: (tmp_path / "nas" / "note.txt").exists(), 20)


def test_quiet_hours_that_hold_clients_too_tell_them_to_come_back_when_the_hours_end(stack_factory, tmp_path):
    hours = window(True)  # ends about an hour from now
    stack = example_stack(stack_factory, tmp_path, {"quiet_hours": {"hours": hours, "kinds": ["client", "sync"]}},
                          files={"/docs/a.txt": b"alpha"})
    stack.suspend_nas()
    response = stack.http.get(stack.url("/docs/a.txt"))
    end_hour, end_minute = (int(part) for part in hours.split("-")[1].split(":"))
    now = datetime.now()
    end = now.replace(hour=end_hour, minute=end_minute, second=0, microsecond=0)
    end += timedelta(days=1) if end <= now else timedelta(0)
    assert response.status_code == 503
    assert abs(int(response.headers["Retry-After"]) - (end - now).total_seconds()) <= 5
    assert f"quiet hours {hours}: client waits" in response.text
    assert stack.nas.magic_packet_count == 0


def test_outside_quiet_hours_background_work_wakes_the_nas(stack_factory, tmp_path):
    stack = example_stack(stack_factory, tmp_path, {"quiet_hours": {"hours": window(False)}},
                          sync_max_pending_mb=0.000001)
    stack.suspend_nas()
    assert stack.http.put(stack.url("/note.txt"), data=b"note").status_code == 201
    assert stack.app.sync.tick() is not None
    assert stack.nas.magic_packet_count >= 1 and (tmp_path / "nas" / "note.txt").read_bytes() == b"note"


# -- pin_rules --------------------------------------------------------------------------------------


def test_pin_rules_keep_globbed_paths_and_a_chosen_users_uploads_and_fetch_them_on_wake(stack_factory, tmp_path):
    photos = {"/Photos/2026/a.jpg": os.urandom(250_000), "/Photos/2026/trip/b.jpg": os.urandom(250_000)}
    others = {f"/other/f{i}.bin": os.urandom(250_000) for i in range(6)}
    stack = example_stack(stack_factory, tmp_path,
                          {"pin_rules": {"globs": ["/Photos/2026/**"], "users": ["alice"], "days": 30}},
                          files={**photos, **others}, cache_max_size_gb=1_200_000 / 1e9, cache_min_free_gb=0)
    # a.jpg is read first (the coldest file), b.jpg is only listed (known, not cached).
    assert stack.http.get(stack.url("/Photos/2026/a.jpg")).content == photos["/Photos/2026/a.jpg"]
    assert stack.http.request("PROPFIND", stack.url("/Photos/2026/trip/"), headers={"Depth": "1"}).status_code == 207
    assert stack.http.put(stack.url("/mine.bin"), data=os.urandom(250_000)).status_code == 201
    assert wait_for(lambda: "/mine.bin" in plugin(stack.app, "pin_rules").uploads)
    stack.app.sync.run_once()  # written back: clean, so evictable but for the plugin
    assert wait_for(lambda: index_row(stack.app, "/mine.bin")["dirty"] == 0)
    for path, body in others.items():
        assert stack.http.get(stack.url(path)).content == body
        wait_downloads_idle(stack.app)
    assert stack.app.provider.cache.evictions >= 3
    assert cached(stack, "/Photos/2026/a.jpg") and cached(stack, "/mine.bin")
    assert not cached(stack, "/Photos/2026/trip/b.jpg")
    # The NAS sleeps and wakes (by someone else): the pinned file not cached is fetched.
    stack.suspend_nas()
    stack.wake_nas()
    assert wait_for(lambda: cached(stack, "/Photos/2026/trip/b.jpg"), 20)
    assert stack.app.settings.prefetch_budget_mb == 0  # BaluPi's own prefetch is off: the plugin did it
    # The uploads it pins are kept in the data directory: `balupi evict` beside the server (its own
    # process, which runs no observers) keeps them and the globbed paths, and evicts the rest.
    assert "/mine.bin" in json.loads((stack.app.settings.data_dir / "plugins" / "pin_rules.json").read_text())
    parts = maintenance.Parts(stack.app.settings)
    try:
        files, _ = maintenance.evict(parts, to_gb=0)
    finally:
        parts.close()
    assert files >= 1
    assert cached(stack, "/Photos/2026/a.jpg") and cached(stack, "/Photos/2026/trip/b.jpg") and cached(stack, "/mine.bin")
    assert not any(cached(stack, path) for path in others)


# -- ssh_suspend ------------------------------------------------------------------------------------

STAND_IN = """#!{python}
# Stands in for ssh: records its arguments, then does what `systemctl suspend` does on a NAS
# (here: the simulated NAS's own sleep API, on 127.0.0.1), or fails like a refused login.
import json, sys, urllib.request
open({record!r}, "a").write(json.dumps(sys.argv[1:]) + "\\n")
if {fail!r}:
    sys.stderr.write("Permission denied (publickey).\\n")
    sys.exit(255)
def post(path, body, token=None):
    base = open({base_file!r}).read().strip()
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={{"Content-Type": "application/json"}})
    if token:
        request.add_header("Authorization", "Bearer " + token)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
    return json.loads(opener.open(request, timeout=5).read() or b"{{}}")
token = post("/api/auth/login", {{"username": {user!r}, "password": {password!r}}})["access_token"]
post("/api/system/sleep/suspend", {{}}, token)
"""


def ssh_stand_in(tmp_path, fail: bool = False):
    """The stand-in ssh, its record of calls, a key file, and the file to write the NAS's URL into."""
    script = tmp_path / ("fake-ssh-fail" if fail else "fake-ssh")
    record = tmp_path / "ssh-calls.jsonl"
    base_file = tmp_path / "nas-base-url"
    script.write_text(STAND_IN.format(python=sys.executable, record=str(record), fail=fail, base_file=str(base_file),
                                      user=NAS_USER, password=NAS_PASSWORD))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    key = tmp_path / "nas_key"
    key.write_text("not a real key: the stand-in never reads it\n")
    key.chmod(0o600)
    return script, record, key, base_file


@pytest.mark.parametrize("fail", [False, True])
def test_ssh_suspend_runs_the_command_over_ssh_when_the_nas_is_idle(stack_factory, tmp_path, fail):
    script, record, key, base_file = ssh_stand_in(tmp_path, fail)
    config = {"ssh_suspend": {"host": "nas.example", "user": "admin", "command": "systemctl suspend", "port": 2222,
                              "key_file": str(key), "ssh": [str(script)]}}
    stack = example_stack(stack_factory, tmp_path, config, nas_idle_suspend_minutes=0.0005)
    base_file.write_text(stack.nas.base_url.rstrip("/"))
    assert stack.app.nas.suspend_action is plugin(stack.app, "ssh_suspend").suspend
    stack.wake_nas()
    stack.app.nas.last_used -= 1
    stack.app.nas.check_idle()
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls == [["-i", str(key), "-p", "2222", "-o", "BatchMode=yes", "admin@nas.example", "systemctl suspend"]]
    assert stack.nas.request_count("POST", "/api/system/sleep/suspend") == (0 if fail else 1)
    if fail:
        assert stack.app.nas.is_awake()  # a failed suspend: BaluPi keeps it awake and says why
        assert "exit status 255" in stack.app.nas.transitions()[-1].cause
    else:
        assert stack.nas.wait_for_state(PowerState.SUSPENDED)
        time.sleep(0.1)
        stack.app.nas.probe()
        assert not stack.app.nas.is_awake()
