"""Plugin hooks against the whole stack (simulated NAS on loopback): each veto hook's refusal gives
the stated status and changes nothing, a broken plugin never takes the share down, observers stay
off the request path, plugin routes sit behind the same login, and plugins are found, configured,
reported and skipped as docs/plugins.md says."""

from __future__ import annotations

import logging
import os
import time

import requests

from balupi import plugins as plugins_module
from balupi.sim.nas import PowerState
from tests.davkit import index_row, journal, wait_downloads_idle
from tests.pluginkit import plugin, plugin_stack, wait_for
from tests.stack import stack_factory  # noqa: F401
from tests.test_energy_e2e import rig_factory  # noqa: F401

GUARD = '''
from balupi.hookspecs import hookimpl

refused_ops = []

@hookimpl
def balupi_before_client_op(op, method, user, path, destination):
    if path.startswith("/locked") or (destination or "").startswith("/locked"):
        refused_ops.append((op.value, method, user, path, destination))
        return "the /locked folder is read-only"
'''


def test_a_refused_client_operation_is_403_with_the_message_and_changes_nothing(stack_factory, tmp_path):
    files = {"/locked/old.txt": b"old", "/open/a.txt": b"a"}
    stack = plugin_stack(stack_factory, tmp_path, {"guard": GUARD}, files=files)
    http, url = stack.http, stack.url
    assert http.request("PROPFIND", url("/locked/"), headers={"Depth": "1"}).status_code == 207
    assert http.request("PROPFIND", url("/open/"), headers={"Depth": "1"}).status_code == 207
    before = stack.nas.request_count()
    attempts = [
        ("PUT", "/locked/new.txt", {}, b"new"),
        ("PUT", "/locked/old.txt", {}, b"overwritten"),
        ("DELETE", "/locked/old.txt", {}, None),
        ("MKCOL", "/locked/sub", {}, None),
        ("MOVE", "/open/a.txt", {"Destination": url("/locked/a.txt")}, None),
        ("COPY", "/open/a.txt", {"Destination": url("/locked/a.txt")}, None),
        ("MOVE", "/locked/old.txt", {"Destination": url("/open/old.txt")}, None),
        ("PROPPATCH", "/locked/old.txt", {"Content-Type": "application/xml"},
         b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop>'
         b"<Z:color>red</Z:color></D:prop></D:set></D:propertyupdate>"),
    ]
    for method, path, headers, body in attempts:
        response = requests.request(method, url(path), headers=headers, data=body, auth=stack.auth)
        assert response.status_code == 403, (method, path, response.status_code)
        assert "guard: the /locked folder is read-only" in response.text
    assert [op for op, *_ in plugin(stack.app, "guard").refused_ops] == [
        "write", "write", "delete", "mkcol", "move", "copy", "move", "write"]
    assert plugin(stack.app, "guard").refused_ops[0][2] == "alice"
    # Nothing changed: not on the Pi, not in the journal, not on the NAS.
    assert index_row(stack.app, "/locked/new.txt") is None and index_row(stack.app, "/locked/sub") is None
    assert index_row(stack.app, "/locked/a.txt") is None and index_row(stack.app, "/open/a.txt") is not None
    assert journal(stack.app) == []
    assert stack.nas.request_count() == before
    assert (tmp_path / "nas" / "locked" / "old.txt").read_bytes() == b"old"
    # Elsewhere the share works as before.
    assert http.put(url("/open/b.txt"), data=b"b").status_code == 201
    assert http.get(url("/locked/old.txt")).content == b"old"


SLEEPY = '''
from balupi.hookspecs import hookimpl

asked = []

@hookimpl
def balupi_before_wake(reason, kind, user, path):
    asked.append((reason, kind.value, user, path))
    return "the NAS rests until 07:00"
'''


def test_a_refused_wake_answers_503_with_retry_after_and_sends_no_packet(stack_factory, tmp_path):
    stack = plugin_stack(stack_factory, tmp_path, {"sleepy": SLEEPY}, files={"/docs/a.txt": b"alpha"})
    stack.suspend_nas()
    response = stack.http.get(stack.url("/docs/a.txt"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "300"  # a plain message names no time: decision 119's default
    assert "sleepy: the NAS rests until 07:00" in response.text
    asked = plugin(stack.app, "sleepy").asked
    assert asked and asked[0][1] == "client"
    # Manual wakes are asked too: 503 with the reason from the API.
    api = stack.http.post(stack.server.url + "/api/nas/wol")
    assert api.status_code == 503 and "the NAS rests until 07:00" in api.json()["detail"]
    assert "Retry-After" in api.headers
    assert asked[-1][1] == "manual"
    time.sleep(0.3)
    assert stack.nas.magic_packet_count == 0 and stack.nas.state is PowerState.SUSPENDED
    assert stack.app.nas.wakes == 0


NAMES_ITS_TIME = '''
from balupi.hookspecs import WakeRefusal, hookimpl

@hookimpl
def balupi_before_wake(kind):
    return WakeRefusal("back in half an hour", retry_after_s=1800.4)
'''


def test_a_refusal_that_names_its_time_is_the_clients_retry_after(stack_factory, tmp_path):
    stack = plugin_stack(stack_factory, tmp_path, {"timed": NAMES_ITS_TIME}, files={"/docs/a.txt": b"alpha"})
    stack.suspend_nas()
    response = stack.http.get(stack.url("/docs/a.txt"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1800"
    assert "timed: back in half an hour" in response.text
    api = stack.http.post(stack.server.url + "/api/nas/wol")
    assert api.status_code == 503 and api.headers["Retry-After"] == "1800"
    assert stack.nas.magic_packet_count == 0


WAKE_FOR_SYNC = '''
from balupi.hookspecs import hookimpl

@hookimpl(tryfirst=True)
def balupi_sync_wake_reason(pending, now):
    return f"{pending['count']} change(s) wait and this household wants them on the NAS now"
'''


def test_a_refused_background_wake_leaves_the_job_waiting_for_the_next_wake(stack_factory, tmp_path):
    stack = plugin_stack(stack_factory, tmp_path, {"sleepy": SLEEPY, "eager": WAKE_FOR_SYNC})
    stack.suspend_nas()
    assert stack.http.put(stack.url("/note.txt"), data=b"written while it sleeps").status_code == 201
    assert stack.app.sync.tick() is None  # the policy says wake; the veto says no
    assert plugin(stack.app, "sleepy").asked[-1][1] == "sync"
    assert stack.nas.magic_packet_count == 0 and stack.app.nas.wakes == 0
    assert "/note.txt" in [path for _, path, _ in journal(stack.app)]
    assert not (tmp_path / "nas" / "note.txt").exists()
    stack.wake_nas()  # the NAS's next wake, for whatever reason: the change goes
    assert wait_for(lambda: (tmp_path / "nas" / "note.txt").exists(), 20)


KEEPER = '''
from balupi.hookspecs import hookimpl

refused = []

@hookimpl
def balupi_before_evict(path, size_bytes, reason):
    if path == "/keep.bin":
        refused.append((path, size_bytes, reason))
        return "kept for the test"
'''


def test_a_refused_eviction_keeps_the_file_and_evicts_others(stack_factory, tmp_path):
    files = {"/keep.bin": os.urandom(300_000), **{f"/f{i}.bin": os.urandom(300_000) for i in range(8)}}
    stack = plugin_stack(stack_factory, tmp_path, {"keeper": KEEPER}, files=files,
                         cache_max_size_gb=1_000_000 / 1e9, cache_min_free_gb=0)
    for path in files:  # /keep.bin first: the coldest, the first to go without the plugin
        assert stack.http.get(stack.url(path)).content == files[path]
        wait_downloads_idle(stack.app)
    assert index_row(stack.app, "/keep.bin")["cache_key"] is not None
    assert plugin(stack.app, "keeper").refused and plugin(stack.app, "keeper").refused[0][2] == "room"
    assert stack.app.provider.cache.evictions >= 5


BROKEN = '''
from balupi.hookspecs import hookimpl

@hookimpl
def balupi_before_client_op(op, path):
    raise RuntimeError("bug in the plugin")

@hookimpl
def balupi_before_wake(reason):
    raise RuntimeError("another bug")

@hookimpl
def balupi_before_evict(path):
    raise RuntimeError("and another")
'''


def test_an_exception_in_a_veto_hook_is_logged_with_the_plugins_name_and_is_no_veto(stack_factory, tmp_path, caplog):
    stack = plugin_stack(stack_factory, tmp_path, {"broken": BROKEN}, files={"/a.txt": b"a"})
    stack.suspend_nas()
    with caplog.at_level(logging.ERROR, logger="balupi.plugins"):
        assert stack.http.put(stack.url("/b.txt"), data=b"b").status_code == 201
        assert stack.http.get(stack.url("/a.txt")).content == b"a"  # woke the NAS despite the raising veto
    assert stack.nas.magic_packet_count >= 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("plugin broken: balupi_before_client_op raised" in m for m in messages)
    assert any("plugin broken: balupi_before_wake raised" in m for m in messages)
    assert stack.app.plugins.listing()["plugins"][-1]["exceptions"] >= 2


OBSERVER = '''
import time
from balupi.hookspecs import hookimpl

seen = []

@hookimpl
def balupi_upload_finished(user, path, size_bytes):
    time.sleep(2)
    seen.append(("upload_finished", user, path, size_bytes))
    raise RuntimeError("observers may fail")

@hookimpl
def balupi_miss_served(user, path, size_bytes):
    time.sleep(2)
    seen.append(("miss_served", user, path, size_bytes))

@hookimpl
def balupi_cache_file_added(path, size_bytes):
    raise RuntimeError("observers may fail")
'''


def test_a_slow_and_a_raising_observer_change_neither_the_result_nor_the_latency(stack_factory, tmp_path):
    stack = plugin_stack(stack_factory, tmp_path, {"observer": OBSERVER}, files={"/big.bin": os.urandom(100_000)})
    slowest = 0.0
    for i in range(3):
        started = time.monotonic()
        assert stack.http.put(stack.url(f"/up{i}.txt"), data=b"x" * 1000).status_code == 201
        slowest = max(slowest, time.monotonic() - started)
    started = time.monotonic()
    assert stack.http.get(stack.url("/big.bin")).status_code == 200
    slowest = max(slowest, time.monotonic() - started)
    # Each observer call sleeps 2 s (6 s of uploads alone): none of it is on a request's path.
    assert slowest < 1.5, slowest
    assert stack.http.get(stack.url("/up1.txt")).content == b"x" * 1000
    seen = plugin(stack.app, "observer").seen
    assert wait_for(lambda: len(seen) == 4, 15)
    assert ("upload_finished", "alice", "/up0.txt", 1000) in seen
    assert ("miss_served", "alice", "/big.bin", 100_000) in seen


def test_a_full_observer_queue_drops_and_counts_and_never_blocks(stack_factory, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plugins_module, "OBSERVE_QUEUE_SIZE", 2)
    stack = plugin_stack(stack_factory, tmp_path, {"observer": OBSERVER})
    started = time.monotonic()
    for i in range(8):
        assert stack.http.put(stack.url(f"/up{i}.txt"), data=b"y").status_code == 201
    assert time.monotonic() - started < 4  # 8 uploads, observed at 2 s each: the queue did not block them
    listing = stack.app.plugins.listing()
    observer = next(p for p in listing["plugins"] if p["name"] == "observer")
    assert observer["dropped_events"] >= 4 and listing["dropped_events"] >= 4
    # `balupi plugins` shows the running server's count (from its status file).
    stack.app.plugins.write_status()
    capsys.readouterr()
    plugins_module.print_listing(stack.app.settings)
    row = next(line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("observer "))
    assert int(row[4]) >= 4


ROUTES = '''
from balupi.hookspecs import PluginRoute, hookimpl

def hello(request):
    return {"hello": request.user.username, "id": request.params.get("id")}

def status(request):
    return {"ok": True}

@hookimpl
def balupi_api_routes(app):
    return [PluginRoute("GET", "/hello/{id}", hello), PluginRoute("GET", "/status", status, admin_only=False)]
'''


def test_plugin_routes_are_under_api_plugins_behind_the_same_login(stack_factory, tmp_path):
    stack = plugin_stack(stack_factory, tmp_path, {"greeter": ROUTES},
                         nas_kwargs={"users": {"bob": ("bob-pw", "user")}})
    base = stack.server.url + "/api/plugins/greeter"
    assert stack.http.get(base + "/hello/7").json() == {"hello": "alice", "id": "7"}
    assert requests.get(base + "/hello/7").status_code == 401
    assert requests.get(base + "/status").status_code == 401
    bob = ("bob", "bob-pw")
    assert requests.get(base + "/hello/7", auth=bob).status_code == 403  # admin-only by default
    assert requests.get(base + "/status", auth=bob).json() == {"ok": True}
    assert stack.http.get(stack.server.url + "/api/plugins/other/status").status_code == 404


def test_startup_and_shutdown_reach_the_observers(stack_factory, tmp_path):
    lifecycle = '''
    from balupi.hookspecs import hookimpl
    seen = []

    @hookimpl
    def balupi_startup(app):
        seen.append(("startup", app.settings.port))

    @hookimpl
    def balupi_shutdown(app):
        seen.append("shutdown")
    '''
    stack = plugin_stack(stack_factory, tmp_path, {"lifecycle": lifecycle})
    seen = plugin(stack.app, "lifecycle").seen
    assert wait_for(lambda: seen)
    assert seen[0][0] == "startup"
    stack.server.stop()
    assert seen[-1] == "shutdown"


RECORDER = '''
from balupi.hookspecs import ScheduledJob, hookimpl

seen = []
ticks = []

def _record(name, **payload):
    seen.append((name, payload))

@hookimpl
def balupi_nas_state_changed(from_state, to_state, cause, at):
    _record("nas_state_changed", to_state=to_state.value, cause=cause)

@hookimpl
def balupi_nas_wake_requested(reason, at):
    _record("nas_wake_requested", reason=reason)

@hookimpl
def balupi_cache_file_added(path, size_bytes):
    _record("cache_file_added", path=path, size_bytes=size_bytes)

@hookimpl
def balupi_cache_file_evicted(path, size_bytes, reason):
    _record("cache_file_evicted", path=path, reason=reason)

@hookimpl
def balupi_sync_done(path, action):
    _record("sync_done", path=path, action=action)

@hookimpl
def balupi_sync_conflict(path, conflict_path, at):
    _record("sync_conflict", path=path)

@hookimpl
def balupi_plug_sample(device_id, power_w, at):
    _record("plug_sample", power_w=power_w)

@hookimpl
def balupi_plug_health_changed(device_id, error_kind, at):
    _record("plug_health_changed", error_kind=getattr(error_kind, "value", error_kind))

@hookimpl
def balupi_nas_power_reading(power_w, power_state, at):
    _record("nas_power_reading", power_state=power_state.value)

@hookimpl
def balupi_nas_power_state_changed(from_state, to_state, power_w, at):
    _record("nas_power_state_changed", to_state=to_state.value)

@hookimpl
def balupi_scheduled_jobs(app):
    return [ScheduledJob("tick", 0.05, lambda: ticks.append(1))]
'''


def names(seen: list) -> list[str]:
    return [name for name, _ in seen]


def test_observers_hear_the_nas_the_cache_and_the_write_back(stack_factory, tmp_path):
    files = {f"/f{i}.bin": os.urandom(300_000) for i in range(5)}
    stack = plugin_stack(stack_factory, tmp_path, {"recorder": RECORDER}, files={**files, "/n.txt": b"original"},
                         cache_max_size_gb=1_000_000 / 1e9, cache_min_free_gb=0)
    module = plugin(stack.app, "recorder")
    assert wait_for(lambda: len(module.ticks) >= 2)  # its scheduled job runs
    assert stack.http.get(stack.url("/n.txt")).content == b"original"
    for path in files:
        assert stack.http.get(stack.url(path)).content == files[path]
        wait_downloads_idle(stack.app)
    stack.suspend_nas()
    assert stack.http.put(stack.url("/n.txt"), data=b"pi").status_code == 204
    assert stack.http.put(stack.url("/new.txt"), data=b"new").status_code == 201
    (tmp_path / "nas" / "n.txt").write_bytes(b"nas")
    evicted = next(p["path"] for n, p in module.seen if n == "cache_file_evicted" and p["path"] != "/n.txt")
    assert stack.http.get(stack.url(evicted)).content == files[evicted]  # a miss: wakes the NAS
    stack.app.sync.run_once()
    seen = module.seen
    assert wait_for(lambda: "sync_conflict" in names(seen) and "sync_done" in names(seen), 15)
    assert ("cache_file_added", {"path": "/f0.bin", "size_bytes": 300_000}) in seen
    assert any(n == "cache_file_evicted" and p["reason"] == "room" for n, p in seen)
    assert any(n == "nas_state_changed" and p["to_state"] == "asleep" for n, p in seen)
    assert any(n == "nas_wake_requested" and evicted in p["reason"] for n, p in seen)
    assert ("sync_done", {"path": "/new.txt", "action": "put"}) in seen
    assert ("sync_conflict", {"path": "/n.txt"}) in seen


def test_observers_hear_the_plugs(rig_factory, tmp_path):
    from balupi.energy.model import PlugRole
    from tests.helpers import free_port
    from tests.pluginkit import write_plugins

    rig = rig_factory(plugins_dir=str(write_plugins(tmp_path / "plugins", {"recorder": RECORDER})),
                      nas_webdav_url=f"http://127.0.0.1:{free_port()}/")
    rig.app.plugins.start(rig.app)  # the observer thread (the rig does not start the whole app)
    sim, _ = rig.add(power_w=4.0, role=PlugRole.NAS, name="nas")
    rig.poll(2)
    sim.down = True
    rig.poll(1)
    seen = plugin(rig.app, "recorder").seen
    assert wait_for(lambda: "plug_health_changed" in names(seen))
    assert ("plug_sample", {"power_w": 4.0}) in seen
    assert ("nas_power_reading", {"power_state": "standby"}) in seen
    assert ("nas_power_state_changed", {"to_state": "standby"}) in seen
    assert ("plug_health_changed", {"error_kind": "offline"}) in seen
