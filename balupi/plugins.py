"""The plugin host: one pluggy manager per BaluPi, its plugins, their settings, and the hook calls.

Plugins come from three places, registered in this order (pluggy calls the last registered first):
the built-in defaults (`balupi.default_plugins`), the `plugins_dir` directory (one module per
`*.py` file, its name the file's stem), and installed packages' `balupi.plugins` entry points (the
entry point's name). A plugin is enabled unless `[plugins.<name>] enabled = false`.

Settings: a plugin may declare `SETTINGS` (a tuple of `balupi.settings.Setting`) and a
`configure(config: dict)` function (or `configure(config, settings)`, to see BaluPi's settings too). Values come from `[plugins.<name>]` in the TOML file and from
`BALUPI_PLUGINS_<NAME>_<KEY>` (the environment wins), are checked like every other setting (one line
per bad value), and go to `configure`. A plugin that fails to import or to configure (a bad value,
`configure` raising) is logged at start-up, listed with its errors (GET /api/plugins, `balupi
plugins`) and skipped: BaluPi starts anyway.

Calls: veto and provide hooks run on the caller's thread, one implementation at a time, so an
exception is logged with the plugin's name and skipped (never a 500). Observe hooks go through a
bounded queue to one worker thread; a full queue drops the event and counts it, never blocks.
"""

from __future__ import annotations

import collections
import itertools
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import os
import queue
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pluggy

from balupi import hookspecs
from balupi.events import Event, Events
from balupi.hookspecs import DEFAULT_WAKE_RETRY_AFTER_S, WakeKind, WakeRefusal
from balupi.settings import Setting  # noqa: F401  (for plugins: `from balupi.plugins import Setting, parse_int`)
from balupi.settings import _parse_bool as parse_bool  # noqa: F401
from balupi.settings import _parse_float as parse_float  # noqa: F401
from balupi.settings import _parse_int as parse_int  # noqa: F401
from balupi.settings import _parse_list as parse_list  # noqa: F401
from balupi.settings import _parse_path as parse_path  # noqa: F401
from balupi.settings import _parse_str as parse_str  # noqa: F401

log = logging.getLogger("balupi.plugins")

ENTRY_POINT_GROUP = "balupi.plugins"
STATUS_FILENAME = "plugins-status.json"  # in data_dir: the server's counts, for `balupi plugins`
ENV_PREFIX = "BALUPI_PLUGINS_"
OBSERVE_QUEUE_SIZE = 1000
SHUTDOWN_GRACE_S = 2.0

_STOP = object()
_module_serial = itertools.count(1)


@dataclass
class PluginInfo:
    """What GET /api/plugins says about one plugin."""

    name: str
    source: str  # "built-in", "directory", "entry point"
    version: str | None = None
    enabled: bool = True
    errors: list[str] = field(default_factory=list)
    obj: Any = None  # the registered module or object (None: not registered)

    @property
    def registered(self) -> bool:
        return self.obj is not None

    def hooks(self, pm: pluggy.PluginManager) -> list[str]:
        if self.obj is None:
            return []
        return sorted(h.name for h in pm.get_hookcallers(self.obj) or ())


class PluginHost:
    def __init__(self, settings: Any, events: Events):
        self.settings = settings
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.general_errors: list[str] = []  # not about one plugin (an environment variable for none)
        self.dropped: collections.Counter[str] = collections.Counter()  # hook name -> events dropped
        self.failures: collections.Counter[str] = collections.Counter()  # plugin name -> exceptions
        self._queue: queue.Queue = queue.Queue(maxsize=OBSERVE_QUEUE_SIZE)
        self._worker: threading.Thread | None = None
        raw = getattr(settings, "plugins", None) or {}
        self._tables: dict[str, dict] = {k.lower(): dict(v) for k, v in (raw.get("toml") or {}).items()}
        self._env: dict[str, str] = dict(raw.get("env") or {})
        self._load_all()
        for event in Event:
            name = "balupi_" + event.value
            if hasattr(self.pm.hook, name):
                events.subscribe(event, self._forwarder(name))

    # -- loading -----------------------------------------------------------------------------------

    def _load_all(self) -> None:
        from balupi import __version__, default_plugins

        candidates: list[tuple[str, str, Callable[[], Any], str | None]] = []
        for name, obj in default_plugins.defaults(self.settings).items():
            candidates.append((name, "built-in", lambda obj=obj: obj, __version__))
        directory = getattr(self.settings, "plugins_dir", None)
        if directory and Path(directory).is_dir():
            for path in sorted(Path(directory).glob("*.py")):
                if not path.name.startswith("_"):
                    candidates.append((path.stem, "directory", lambda path=path: _import_file(path), None))
        for ep in _entry_points():
            version = ep.dist.version if ep.dist is not None else None
            candidates.append((ep.name, "entry point", lambda ep=ep: _instantiate(ep.load()), version))
        names = [c[0].lower() for c in candidates]
        env_config = self._split_env(names)
        for name, source, load, version in candidates:
            name = name.lower()
            if name in self.infos:
                self.infos[name].errors.append(f"another plugin named {name!r} ({source}) was skipped")
                log.error("plugin %s: another plugin of that name (%s) was skipped", name, source)
                continue
            info = self.infos[name] = PluginInfo(name, source, version)
            self._load_one(info, load, {**self._tables.get(name, {}), **env_config.get(name, {})})
        for name in self._tables:
            if name not in self.infos:
                self.general_errors.append(f"[plugins.{name}]: no plugin of that name was found")
        for problem in self.general_errors:
            log.error("plugins: %s", problem)

    def _split_env(self, names: list[str]) -> dict[str, dict[str, tuple[str, str]]]:
        """BALUPI_PLUGINS_<NAME>_<KEY> -> {name: {key: (value, variable)}}, longest plugin name first."""
        found: dict[str, dict[str, tuple[str, str]]] = {}
        for variable, value in self._env.items():
            rest = variable[len(ENV_PREFIX):].lower() if variable.startswith(ENV_PREFIX) else variable.lower()
            for name in sorted(names, key=len, reverse=True):
                if rest.startswith(name + "_"):
                    found.setdefault(name, {})[rest[len(name) + 1:]] = (value, variable)
                    break
            else:
                self.general_errors.append(f"{variable}: no plugin of that name was found")
        return found

    def _load_one(self, info: PluginInfo, load: Callable[[], Any], raw: Mapping[str, Any]) -> None:
        errors = info.errors
        enabled = raw.get("enabled", True)
        if isinstance(enabled, tuple):  # from the environment: (value, variable)
            enabled = enabled[0]
        if isinstance(enabled, str):
            enabled = enabled.strip().lower() not in ("0", "false", "no", "off")
        info.enabled = bool(enabled)
        if not info.enabled:
            log.info("plugin %s (%s) is disabled", info.name, info.source)
            return
        try:
            obj = load()
        except Exception as exc:
            errors.append(f"failed to import: {type(exc).__name__}: {exc}")
            log.error("plugin %s (%s): failed to import: %s: %s", info.name, info.source, type(exc).__name__, exc)
            return
        info.version = info.version or getattr(obj, "__version__", None)
        config: dict[str, Any] = {}
        declared = {s.name: s for s in getattr(obj, "SETTINGS", ())}
        for key, value in raw.items():
            if key == "enabled":
                continue
            label = value[1] if isinstance(value, tuple) else f"[plugins.{info.name}] {key}"
            value = value[0] if isinstance(value, tuple) else value
            setting = declared.get(key)
            if setting is None:
                errors.append(f"{label}: unknown setting of plugin {info.name}")
                continue
            try:
                config[key] = setting.parse(value)
                if setting.check is not None:
                    setting.check(config[key])
            except ValueError as exc:
                errors.append(f"{label}: {exc}")
        for name, setting in declared.items():
            config.setdefault(name, setting.default)
        if not errors and hasattr(obj, "configure"):
            try:
                wants_settings = len(inspect.signature(obj.configure).parameters) >= 2
                obj.configure(config, self.settings) if wants_settings else obj.configure(config)
            except Exception as exc:
                errors.append(f"configure failed: {type(exc).__name__}: {exc}")
        if errors:
            for problem in errors:
                log.error("plugin %s: %s", info.name, problem)
            log.error("plugin %s (%s) skipped", info.name, info.source)
            return
        try:
            self.pm.register(obj, name=info.name)
        except Exception as exc:  # a hook name that is no hook, a bad signature
            errors.append(f"cannot register: {exc}")
            log.error("plugin %s (%s): cannot register: %s", info.name, info.source, exc)
            return
        info.obj = obj
        log.log(logging.DEBUG if info.source == "built-in" else logging.INFO, "plugin %s (%s) loaded", info.name,
                info.source)

    # -- calling hooks on the caller's thread --------------------------------------------------------

    def _impls(self, hook_name: str) -> list:
        """Implementations in call order (pluggy keeps them reversed), wrappers left out."""
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        return [i for i in reversed(impls) if not (i.hookwrapper or i.wrapper)]

    def has_impls(self, hook_name: str) -> bool:
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    def _call_each(self, hook_name: str, kwargs: dict) -> Iterable[tuple[str, Any]]:
        """(plugin name, result) of each implementation; an exception is logged and skipped."""
        for impl in self._impls(hook_name):
            try:
                result = impl.function(*[kwargs.get(arg) for arg in impl.argnames])
            except Exception:
                self.failures[impl.plugin_name] += 1
                log.exception("plugin %s: %s raised (ignored)", impl.plugin_name, hook_name)
                continue
            yield impl.plugin_name, result

    def first(self, hook_name: str, **kwargs: Any) -> Any:
        """The first result that is not None (a firstresult provide hook), or None."""
        for _, result in self._call_each(hook_name, kwargs):
            if result is not None:
                return result
        return None

    def veto(self, hook_name: str, **kwargs: Any) -> str | None:
        """The first refusal ("<plugin>: <message>") of a veto hook, or None."""
        refusal = self._first_refusal(hook_name, kwargs)
        return None if refusal is None else refusal.message

    def _first_refusal(self, hook_name: str, kwargs: dict) -> WakeRefusal | None:
        if not self.has_impls(hook_name):
            return None
        for plugin, result in self._call_each(hook_name, kwargs):
            if isinstance(result, WakeRefusal):
                message, retry_after_s = result.message, result.retry_after_s
            else:
                message, retry_after_s = result, DEFAULT_WAKE_RETRY_AFTER_S
            if message:
                log.info("plugin %s refused %s: %s", plugin, hook_name[len("balupi_before_"):], message)
                return WakeRefusal(f"{plugin}: {message}", retry_after_s)
        return None

    def veto_wake(self, reason: str, kind: WakeKind | str = WakeKind.CLIENT, user: str | None = None,
                  path: str | None = None) -> WakeRefusal | None:
        """The first refusal ("<plugin>: <message>", and when to ask again) of a wake, or None."""
        return self._first_refusal("balupi_before_wake",
                                   dict(reason=reason, kind=WakeKind(kind), user=user, path=path))

    def veto_evict(self, path: str, size_bytes: int, reason: str) -> str | None:
        return self.veto("balupi_before_evict", path=path, size_bytes=size_bytes, reason=reason)

    def eviction_order(self, db: Any, limit: int) -> list:
        return self.first("balupi_eviction_order", db=db, limit=limit) or []

    def sync_wake_reason(self, pending: dict, now: float) -> str | None:
        return self.first("balupi_sync_wake_reason", pending=pending, now=now) or None

    def plug_driver(self, plug_id: int, config: dict, credentials: Any, timeout_s: float, zone: Any) -> Any:
        driver = self.first("balupi_plug_driver", plug_id=plug_id, config=config, credentials=credentials,
                            timeout_s=timeout_s, zone=zone)
        if driver is None:
            raise RuntimeError("no plugin provides a plug driver (the default kasa_plugs is disabled)")
        return driver

    # -- observe hooks: off the request path ---------------------------------------------------------

    def _forwarder(self, hook_name: str) -> Callable[..., None]:
        def forward(**payload: Any) -> None:
            self.observe(hook_name, **payload)

        return forward

    def observe(self, hook_name: str, **kwargs: Any) -> None:
        """Queue an observe hook's call; never blocks (a full queue drops and counts it)."""
        if not self.has_impls(hook_name):
            return
        try:
            self._queue.put_nowait((hook_name, kwargs))
        except queue.Full:
            self.dropped[hook_name] += 1

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            hook_name, kwargs = item
            for _ in self._call_each(hook_name, kwargs):
                pass

    def start(self, app: Any) -> None:
        """Start the observer thread, add the plugins' scheduled jobs, and tell them BaluPi started."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="balupi-plugins", daemon=True)
            self._worker.start()
        for plugin, jobs in self._call_each("balupi_scheduled_jobs", {"app": app}):
            for job in jobs or ():
                app.scheduler.every(job.interval_s, f"plugin {plugin}: {job.name}", job.fn)
        self.observe("balupi_startup", app=app)

    def stop(self, app: Any, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Tell the plugins BaluPi stops, then end the observer thread (waiting at most `grace_s`)."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        self.observe("balupi_shutdown", app=app)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                self._queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        worker.join(max(0.0, deadline - time.monotonic()))
        self.write_status()

    # -- what the API and the CLI show ---------------------------------------------------------------

    def listing(self) -> dict:
        plugins = []
        for info in self.infos.values():
            hooks = info.hooks(self.pm)
            plugins.append({
                "name": info.name,
                "source": info.source,
                "version": info.version,
                "enabled": info.enabled,
                "loaded": info.registered,
                "hooks": hooks,
                "errors": list(info.errors),
                "exceptions": self.failures.get(info.name, 0),
                "dropped_events": sum(self.dropped.get(h, 0) for h in hooks),
            })
        return {"plugins": plugins, "errors": list(self.general_errors),
                "dropped_events": sum(self.dropped.values()), "queued_events": self._queue.qsize()}

    def write_status(self) -> None:
        """Keep the listing (with the running counts) in data_dir for `balupi plugins`."""
        path = Path(self.settings.data_dir) / STATUS_FILENAME
        try:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps({"at": time.time(), "pid": os.getpid(), **self.listing()}))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("plugins: could not write %s: %s", path, exc)

    # -- API routes ---------------------------------------------------------------------------------

    def register_routes(self, api: Any, app: Any) -> None:
        """Each plugin's routes under /api/plugins/<name>/, through the API's own dispatch (same login)."""
        for plugin, routes in self._call_each("balupi_api_routes", {"app": app}):
            for route in routes or ():
                path = "/" + route.path.strip("/") if route.path.strip("/") else ""
                api.route(route.method, f"/plugins/{plugin}{path}", admin_only=route.admin_only)(route.handler)


# -- loading helpers --------------------------------------------------------------------------------


def _import_file(path: Path) -> types.ModuleType:
    """A fresh module from a plugin file (each BaluPi in a process gets its own, with its own settings)."""
    name = f"balupi_plugin_{path.stem}_{next(_module_serial)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look a module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _instantiate(obj: Any) -> Any:
    """An entry point may name a module, an object, or a class (made once per BaluPi)."""
    return obj() if isinstance(obj, type) else obj


def _entry_points() -> list:
    try:
        return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # a broken installed distribution must not stop start-up
        log.exception("plugins: could not read installed entry points")
        return []


def print_listing(settings: Any, as_json: bool = False) -> int:
    """`balupi plugins`: load the plugins as the server would (so import and setting errors show
    before a start), with the running server's counts from its status file when there is one."""
    host = PluginHost(settings, Events())
    listing = host.listing()
    status_path = Path(settings.data_dir) / STATUS_FILENAME
    running: dict = {}
    if status_path.is_file():
        try:
            running = json.loads(status_path.read_text())
        except (OSError, ValueError):
            running = {}
    counts = {p["name"]: p for p in running.get("plugins", ())}
    for entry in listing["plugins"]:
        seen = counts.get(entry["name"], {})
        entry["dropped_events"] = seen.get("dropped_events", 0)
        entry["exceptions"] = seen.get("exceptions", 0)
    listing["counts_at"] = running.get("at")
    if as_json:
        print(json.dumps(listing, indent=2))
        return 0
    print(f"{'NAME':<24} {'VERSION':<10} {'ENABLED':<8} {'SOURCE':<12} {'DROPPED':>7}  HOOKS")
    for p in listing["plugins"]:
        hooks = ", ".join(h[len("balupi_"):] for h in p["hooks"]) or "-"
        print(f"{p['name']:<24} {p['version'] or '-':<10} {'yes' if p['enabled'] else 'no':<8} {p['source']:<12} "
              f"{p['dropped_events']:>7}  {hooks}")
        for problem in p["errors"]:
            print(f"  error: {problem}")
    for problem in listing["errors"]:
        print(f"error: {problem}")
    if listing["counts_at"] is None:
        print("(dropped-event counts: no running server has written them yet)")
    else:
        print(f"(dropped-event counts as of {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(listing['counts_at']))})")
    return 1 if listing["errors"] or any(p["errors"] for p in listing["plugins"]) else 0

