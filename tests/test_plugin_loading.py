"""Finding, configuring and reporting plugins: the plugins directory, installed packages' entry
points (a real dist-info on the path), settings from the TOML file and the environment checked one
line per bad value, and plugins that fail to import or to configure reported and skipped while
BaluPi starts anyway (GET /api/plugins, `balupi plugins`)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import requests

from balupi.events import Events
from balupi.plugins import PluginHost
from balupi.settings import load_settings
from tests.helpers import subprocess_env
from tests.pluginkit import plugin_stack, write_plugins
from tests.stack import stack_factory  # noqa: F401

COUNTER = '''
"""Counts uploads; refuses uploads of files larger than `max_kib`."""
from balupi.hookspecs import hookimpl
from balupi.plugins import Setting, parse_int, parse_list

__version__ = "2.1"
SETTINGS = (
    Setting("max_kib", 1024, "Largest upload in KiB.", parse_int),
    Setting("folders", (), "Folders it watches.", parse_list),
)
config = {}

def configure(values):
    if values["max_kib"] < 0:
        raise ValueError("max_kib must not be negative")
    config.update(values)

@hookimpl
def balupi_before_client_op(op, path):
    return None
'''

BROKEN_SYNTAX = "def oops(:\n"
BROKEN_IMPORT = "import balupi_no_such_module_anywhere\n"


def host_for(tmp_path: Path, sources: dict[str, str], toml: str = "", env: dict | None = None) -> PluginHost:
    write_plugins(tmp_path / "plugins", sources)
    config = tmp_path / "balupi.toml"
    config.write_text(f'plugins_dir = "{tmp_path / "plugins"}"\ndata_dir = "{tmp_path / "data"}"\n' + textwrap.dedent(toml))
    settings = load_settings(env={"BALUPI_CONFIG": str(config), **(env or {})}, cwd=tmp_path)
    return PluginHost(settings, Events())


def test_settings_come_from_the_toml_table_and_the_environment_wins(tmp_path):
    host = host_for(tmp_path, {"upload_counter": COUNTER}, toml="""
        [plugins.upload_counter]
        max_kib = 10
        folders = ["/a", "/b"]
    """, env={"BALUPI_PLUGINS_UPLOAD_COUNTER_MAX_KIB": "20"})
    module = host.infos["upload_counter"].obj
    assert host.infos["upload_counter"].errors == []
    assert module.config == {"max_kib": 20, "folders": ("/a", "/b")}
    assert host.infos["upload_counter"].version == "2.1"


def test_bad_plugin_settings_give_one_line_each_and_the_plugin_is_skipped(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="balupi.plugins"):
        host = host_for(tmp_path, {"upload_counter": COUNTER}, toml="""
            [plugins.upload_counter]
            max_kib = "lots"
            colour = "red"
            [plugins.nobody]
            x = 1
        """, env={"BALUPI_PLUGINS_UPLOAD_COUNTER_FOLDERS": "/a", "BALUPI_PLUGINS_GHOST_X": "1"})
    info = host.infos["upload_counter"]
    assert not info.registered
    assert info.errors == [
        "[plugins.upload_counter] max_kib: expected an integer, got 'lots'",
        "[plugins.upload_counter] colour: unknown setting of plugin upload_counter",
    ]
    assert host.general_errors == ["BALUPI_PLUGINS_GHOST_X: no plugin of that name was found",
                                   "[plugins.nobody]: no plugin of that name was found"]
    logged = [r.getMessage() for r in caplog.records]
    assert "plugin upload_counter: [plugins.upload_counter] max_kib: expected an integer, got 'lots'" in logged
    assert "plugin upload_counter (directory) skipped" in logged


def test_a_configure_that_refuses_is_reported_and_skipped(tmp_path):
    host = host_for(tmp_path, {"upload_counter": COUNTER}, env={"BALUPI_PLUGINS_UPLOAD_COUNTER_MAX_KIB": "-1"})
    assert host.infos["upload_counter"].errors == ["configure failed: ValueError: max_kib must not be negative"]
    assert not host.infos["upload_counter"].registered


def test_plugins_that_fail_to_import_are_reported_and_skipped_and_balupi_starts(stack_factory, tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="balupi.plugins"):
        stack = plugin_stack(stack_factory, tmp_path, {"syntax": BROKEN_SYNTAX, "missing": BROKEN_IMPORT,
                                                       "upload_counter": COUNTER})
    assert stack.http.put(stack.url("/a.txt"), data=b"a").status_code == 201
    listing = {p["name"]: p for p in stack.http.get(stack.server.url + "/api/plugins").json()["plugins"]}
    assert listing["syntax"]["loaded"] is False and listing["syntax"]["errors"][0].startswith("failed to import: SyntaxError")
    assert listing["missing"]["errors"] == [
        "failed to import: ModuleNotFoundError: No module named 'balupi_no_such_module_anywhere'"]
    assert listing["upload_counter"] == {
        "name": "upload_counter", "source": "directory", "version": "2.1", "enabled": True, "loaded": True,
        "hooks": ["balupi_before_client_op"], "errors": [], "exceptions": 0, "dropped_events": 0}
    assert {"heat_eviction", "baluhost_suspend", "kasa_plugs", "writeback_wake_policy"} <= set(listing)
    assert any(r.getMessage().startswith("plugin missing (directory): failed to import") for r in caplog.records)


def test_plugin_listing_is_admin_only(stack_factory, tmp_path):
    stack = plugin_stack(stack_factory, tmp_path, {}, nas_kwargs={"users": {"bob": ("bob-pw", "user")}})
    assert requests.get(stack.server.url + "/api/plugins", auth=("bob", "bob-pw")).status_code == 403
    assert requests.get(stack.server.url + "/api/plugins").status_code == 401


def test_a_disabled_plugin_is_listed_and_not_loaded(stack_factory, tmp_path):
    stack = plugin_stack(stack_factory, tmp_path, {"upload_counter": COUNTER},
                         config={"upload_counter": {"enabled": False}})
    entry = next(p for p in stack.app.plugins.listing()["plugins"] if p["name"] == "upload_counter")
    assert entry["enabled"] is False and entry["loaded"] is False and entry["hooks"] == []


# -- entry points: a real installed distribution -------------------------------------------------------

EP_MODULE = '''
"""An installed plugin: refuses deleting anything under /archive."""
from balupi.hookspecs import hookimpl

class ArchiveGuard:
    @hookimpl
    def balupi_before_client_op(self, op, path):
        if op.value == "delete" and path.startswith("/archive"):
            return "the archive is kept forever"
'''


def install_entry_point_package(site: Path) -> Path:
    """A tiny distribution as pip would leave it: the package and its dist-info with entry_points.txt."""
    package = site / "balupi_archive_guard"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(EP_MODULE)
    dist = site / "balupi_archive_guard-1.4.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: balupi-archive-guard\nVersion: 1.4.0\n")
    (dist / "entry_points.txt").write_text("[balupi.plugins]\narchive_guard = balupi_archive_guard:ArchiveGuard\n")
    (dist / "RECORD").write_text("")
    return site


def test_an_installed_packages_entry_point_is_found_and_works(stack_factory, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(install_entry_point_package(tmp_path / "site")))
    stack = plugin_stack(stack_factory, tmp_path, {}, files={"/archive/2019.tar": b"old"})
    entry = next(p for p in stack.app.plugins.listing()["plugins"] if p["name"] == "archive_guard")
    assert entry["source"] == "entry point" and entry["version"] == "1.4.0"
    assert entry["hooks"] == ["balupi_before_client_op"]
    response = stack.http.delete(stack.url("/archive/2019.tar"))
    assert response.status_code == 403 and "the archive is kept forever" in response.text
    assert stack.http.get(stack.url("/archive/2019.tar")).content == b"old"


def test_balupi_plugins_lists_every_plugin_with_its_errors(tmp_path):
    site = install_entry_point_package(tmp_path / "site")
    plugins_dir = write_plugins(tmp_path / "plugins", {"upload_counter": COUNTER, "missing": BROKEN_IMPORT})
    env = subprocess_env(tmp_path, BALUPI_PLUGINS_DIR=str(plugins_dir), BALUPI_DATA_DIR=str(tmp_path / "data"),
                         BALUPI_PLUGINS_UPLOAD_COUNTER_MAX_KIB="64", BALUPI_LOG_LEVEL="WARNING")
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    done = subprocess.run([sys.executable, "-m", "balupi", "plugins"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    lines = done.stdout.splitlines()
    assert done.returncode == 1, done.stderr  # a plugin has errors
    assert lines[0].split() == ["NAME", "VERSION", "ENABLED", "SOURCE", "DROPPED", "HOOKS"]
    rows = {line.split()[0]: line.split() for line in lines[1:] if not line.startswith((" ", "("))}
    assert rows["upload_counter"] == ["upload_counter", "2.1", "yes", "directory", "0", "before_client_op"]
    assert rows["archive_guard"][:3] == ["archive_guard", "1.4.0", "yes"]
    assert rows["heat_eviction"][-1] == "eviction_order"
    assert "  error: failed to import: ModuleNotFoundError: No module named 'balupi_no_such_module_anywhere'" in lines
