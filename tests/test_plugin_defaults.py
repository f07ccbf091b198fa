"""The built-in defaults are plugins (balupi/default_plugins.py), reached through their hooks: each
test shows the default at work, then a test plugin (or turning the default off) changing it.
Against the whole stack, and for the plug driver, against the simulated Tapo plug."""

from __future__ import annotations

import os

from balupi.energy.model import PlugRole
from balupi.events import Event
from tests.davkit import index_row, journal, wait_downloads_idle
from tests.pluginkit import plugin, plugin_stack, wait_for, write_plugins
from tests.stack import stack_factory  # noqa: F401
from tests.test_energy_e2e import rig_factory  # noqa: F401

# -- eviction order -------------------------------------------------------------------------------

LARGEST_FIRST = '''
from balupi.hookspecs import hookimpl

@hookimpl(tryfirst=True)
def balupi_eviction_order(db, limit):
    return db.query("SELECT id, path, cache_key, size FROM entries WHERE cache_key IS NOT NULL AND dirty = 0"
                    f" ORDER BY size DESC LIMIT {int(limit)}")
'''

SMALL = {f"/s{i}.bin": os.urandom(100_000) for i in range(8)}
FILES = {"/big.bin": os.urandom(400_000), **SMALL}


def read_hot_big_file_then_more(stack) -> None:
    """s0..s3 once, big.bin three times (the hottest), then s4..s7: room must be made."""
    order = ["/s0.bin", "/s1.bin", "/s2.bin", "/s3.bin", "/big.bin", "/big.bin", "/big.bin",
             "/s4.bin", "/s5.bin", "/s6.bin", "/s7.bin"]
    for path in order:
        assert stack.http.get(stack.url(path)).content == FILES[path]
        wait_downloads_idle(stack.app)
    stack.app.provider.index.flush_access()


def cached(stack, path: str) -> bool:
    row = index_row(stack.app, path)
    return row is not None and row["cache_key"] is not None


LIMIT = {"cache_max_size_gb": 1_000_000 / 1e9, "cache_min_free_gb": 0}


def test_default_eviction_order_keeps_the_hot_file(stack_factory, tmp_path):
    stack = plugin_stack(stack_factory, tmp_path, {}, files=FILES, **LIMIT)
    read_hot_big_file_then_more(stack)
    assert cached(stack, "/big.bin")
    assert not cached(stack, "/s0.bin")
    assert "heat_eviction" in [p["name"] for p in stack.app.plugins.listing()["plugins"]]


def test_a_plugin_replaces_the_eviction_order(stack_factory, tmp_path):
    stack = plugin_stack(stack_factory, tmp_path, {"largest_first": LARGEST_FIRST}, files=FILES, **LIMIT)
    read_hot_big_file_then_more(stack)
    assert not cached(stack, "/big.bin")  # the largest went first, hot or not
    assert cached(stack, "/s0.bin")


def test_with_the_default_eviction_order_disabled_nothing_is_evicted(stack_factory, tmp_path):
    stack = plugin_stack(stack_factory, tmp_path, {}, config={"heat_eviction": {"enabled": False}},
                         files=FILES, **LIMIT)
    read_hot_big_file_then_more(stack)
    assert stack.app.provider.cache.evictions == 0
    assert not cached(stack, "/s7.bin")  # no room, nothing to evict: served, not cached
    assert stack.app.provider.cache.used_bytes() <= 1_000_000


# -- the NAS suspend action ----------------------------------------------------------------------

OTHER_SUSPEND = '''
from balupi.hookspecs import hookimpl

calls = []

@hookimpl(tryfirst=True)
def balupi_nas_suspend_action(app):
    return lambda: calls.append("suspend")
'''

IDLE = {"nas_idle_suspend_minutes": 0.0005}  # 30 ms


def test_default_suspend_action_is_baluhosts_api(stack_factory, tmp_path):
    stack = plugin_stack(stack_factory, tmp_path, {}, **IDLE)
    stack.wake_nas()
    stack.app.nas.last_used -= 1
    stack.app.nas.check_idle()
    assert stack.nas.request_count("POST", "/api/system/sleep/suspend") == 1


def test_a_plugin_replaces_the_suspend_action(stack_factory, tmp_path):
    stack = plugin_stack(stack_factory, tmp_path, {"other_suspend": OTHER_SUSPEND}, **IDLE)
    stack.wake_nas()
    stack.app.nas.last_used -= 1
    stack.app.nas.check_idle()
    assert plugin(stack.app, "other_suspend").calls == ["suspend"]
    assert stack.nas.request_count("POST", "/api/system/sleep/suspend") == 0


def test_with_the_default_suspend_action_disabled_the_nas_is_never_asked(stack_factory, tmp_path):
    stack = plugin_stack(stack_factory, tmp_path, {}, config={"baluhost_suspend": {"enabled": False}}, **IDLE)
    stack.wake_nas()
    stack.app.nas.last_used -= 1
    stack.app.nas.check_idle()
    assert stack.app.nas.suspend_action is None
    assert stack.nas.request_count("POST", "/api/system/sleep/suspend") == 0
    assert stack.app.nas.is_awake()


# -- the write-back wake policy ------------------------------------------------------------------

ALWAYS = '''
from balupi.hookspecs import hookimpl

@hookimpl(tryfirst=True)
def balupi_sync_wake_reason(pending, now):
    return "this household wants every change on the NAS at once"
'''

NEVER = '''
from balupi.hookspecs import hookimpl

@hookimpl(tryfirst=True)
def balupi_sync_wake_reason(pending, now):
    return ""
'''


def write_while_asleep(stack) -> None:
    stack.suspend_nas()
    assert stack.http.put(stack.url("/note.txt"), data=b"note").status_code == 201
    assert [path for _, path, _ in journal(stack.app)] == ["/note.txt"]


def test_default_wake_policy_lets_a_fresh_small_change_wait(stack_factory, tmp_path):
    stack = plugin_stack(stack_factory, tmp_path, {})
    write_while_asleep(stack)
    assert stack.app.sync.tick() is None
    assert stack.nas.magic_packet_count == 0


def test_a_plugin_replaces_the_wake_policy_to_wake_at_once(stack_factory, tmp_path):
    stack = plugin_stack(stack_factory, tmp_path, {"always": ALWAYS})
    write_while_asleep(stack)
    result = stack.app.sync.tick()
    assert result is not None and stack.nas.magic_packet_count >= 1
    assert (tmp_path / "nas" / "note.txt").read_bytes() == b"note"


def test_a_plugin_replaces_the_wake_policy_to_never_wake(stack_factory, tmp_path):
    # By the default, any pending byte is worth a wake here; the plugin says no.
    stack = plugin_stack(stack_factory, tmp_path, {"never": NEVER}, sync_max_pending_mb=0.000001)
    write_while_asleep(stack)
    assert stack.app.plugins.first("balupi_sync_wake_reason", pending=stack.app.sync.pending(), now=0) == ""
    assert stack.app.sync.tick() is None
    assert stack.nas.magic_packet_count == 0


# -- the plug driver ------------------------------------------------------------------------------

CALIBRATED = '''
"""A plug driver that corrects a plug reading 20 % low: the kasa link, with the power scaled."""
from balupi.energy.plugs import PlugLink
from balupi.hookspecs import hookimpl

class Calibrated(PlugLink):
    async def poll(self, prev, gap, clock):
        reading = await super().poll(prev, gap, clock)
        reading.power_w = round(reading.power_w * 1.25, 3)
        return reading

@hookimpl(tryfirst=True)
def balupi_plug_driver(plug_id, config, credentials, timeout_s, zone):
    return Calibrated(plug_id, config, credentials, timeout_s, zone)
'''


def test_default_plug_driver_is_python_kasa(rig_factory, tmp_path):
    rig = rig_factory(plugins_dir=str(write_plugins(tmp_path / "plugins", {})))
    _, plug = rig.add(power_w=80.0, role=PlugRole.GENERIC)
    assert type(plug.link).__name__ == "PlugLink"
    rig.poll()
    assert [e["power_w"] for e in rig.events_of(Event.PLUG_SAMPLE)] == [80.0]


def test_a_plugin_replaces_the_plug_driver(rig_factory, tmp_path):
    rig = rig_factory(plugins_dir=str(write_plugins(tmp_path / "plugins", {"calibrated": CALIBRATED})))
    _, plug = rig.add(power_w=80.0, role=PlugRole.GENERIC)
    assert type(plug.link).__name__ == "Calibrated"
    rig.poll()
    assert [e["power_w"] for e in rig.events_of(Event.PLUG_SAMPLE)] == [100.0]
