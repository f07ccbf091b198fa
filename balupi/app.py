"""Assembles BaluPi: settings, database, scheduler, NAS, WebDAV and API into one WSGI tree.

    /dav/...  -> WsgiDAV (mount_path "/dav", so hrefs, MOVE and COPY destinations are right)
    /api/...  -> the JSON sub-app (balupi.api)
    /metrics  -> Prometheus metrics (balupi.metrics)
    /ui/...   -> the dashboard's script, style sheet and icon (balupi.web)
    /         -> the dashboard page; a JSON pointer to /dav/ and /api/ for Accept: application/json

`BaluPi.start()` starts the background work (the scheduler thread and its jobs); `stop()` ends it
safely and closes the database. The HTTP server itself lives in `balupi.server`.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, Iterable

from balupi import __version__, jobs
from balupi.api import Response, json_error_app, respond
from balupi.api.context import ApiContext
from balupi.api.routes import build_api
from balupi.auth.service import Authenticator
from balupi.db import DB_FILENAME, Database, open_database
from balupi.dav.props import dead_prop_values
from balupi.dav.refusals import log_refusal
from balupi.errors import ServiceBusy
from balupi.events import Event, Events
from balupi.metrics import Metrics
from balupi.nas.client import NasClient
from balupi.nas.monitor import NasMonitor, NasState
from balupi.nas.waiters import NasWaiters
from balupi.nas.wakes import current_request
from balupi.plugins import PluginHost
from balupi.scheduler import Scheduler
from balupi.settings import Settings
from balupi.cache.prefetch import Prefetcher
from balupi.sync.refresh import Refresher
from balupi.sync.worker import SyncWorker
from balupi.web import StaticFiles, wants_json
from balupi.system import SystemSampler
from balupi.websec import WebGuard

log = logging.getLogger("balupi")



class Dispatcher:
    """Routes a request to the app mounted at the longest matching path prefix."""

    def __init__(self, mounts: dict[str, Callable], fallback: Callable, waiters: NasWaiters | None = None):
        self.mounts = sorted(mounts.items(), key=lambda item: len(item[0]), reverse=True)
        self._routes = [(prefix, prefix + "/", app) for prefix, app in self.mounts]
        self.fallback = fallback
        self.waiters = waiters

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self.waiters is None:
            return self._route(environ, start_response)
        self.waiters.begin_request()  # the request may take a NAS slot; released once answered
        try:
            result = self._route(environ, start_response)
        except ServiceBusy as exc:  # the database locked by another process (the fast lane's reads and writes)
            self.waiters.end_request()
            log_refusal(environ, exc)
            return json_error_app(503, str(exc), {"Retry-After": str(exc.retry_after_s)})(environ, start_response)
        except BaseException:
            self.waiters.end_request()
            raise
        return self.waiters.wrap(result)

    def _route(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        current_request.set(environ)  # who a NAS wake is for (balupi.nas.wakes); the next request replaces it
        for prefix, below, app in self._routes:
            if path.startswith(below) or path == prefix:
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix) :] or "/"
                return app(environ, start_response)
        return self.fallback(environ, start_response)


class BaluPi:
    """One running BaluPi: everything the HTTP layers and background jobs share."""

    def __init__(self, settings: Settings):
        from balupi.energy.service import EnergyService
        from balupi.dav.app import build_dav_app, build_provider

        self.settings = settings
        self.db: Database = open_database(settings.data_dir / DB_FILENAME)
        self.events = Events()
        self.plugins = PluginHost(settings, self.events)
        self.scheduler = Scheduler()
        self.system = SystemSampler(settings.cache_dir)
        self.nas = NasMonitor(settings, self.db, self.events)
        self.nas_client = NasClient(settings, self.nas)
        self.nas.wake_veto = self.plugins.veto_wake
        self.nas.suspend_action = self.plugins.first("balupi_nas_suspend_action", app=self)
        self.auth = Authenticator(settings, self.db, self.nas_client, self.nas)
        self.energy = EnergyService(settings, self.db, self.events)
        self.energy.plug_driver = self.plugins.plug_driver
        self.provider = build_provider(self)
        if self.db.fresh:  # a new database (lost, or damaged and moved aside): take back what the cache holds
            from balupi.cache.recovery import recover_from_store

            self.recovery = recover_from_store(self.db, self.provider.store)
        self.dav = build_dav_app(self, self.provider)
        self.sync = SyncWorker(settings, self.db, self.provider.index, self.provider.store, self.nas_client,
                               self.nas, self.events, dead_props=functools.partial(dead_prop_values, self.db))
        self.nas.has_pending_work = self.sync.has_pending
        self.sync.wake_reason = self.plugins.sync_wake_reason
        self.refresher = Refresher(settings, self.provider.index, self.provider.store, self.nas_client, self.nas)
        self.prefetcher = Prefetcher(settings, self.provider, self.nas)
        self.api_context = ApiContext(
            settings=settings, db=self.db, auth=self.auth, scheduler=self.scheduler, system=self.system, nas=self.nas,
            nas_client=self.nas_client, energy=self.energy, plugins=self.plugins, cache=self.provider.cache,
            cache_stats=self.provider.stats, verified=self.provider.verified, sync=self.sync,
            prefetcher=self.prefetcher, refresh_all=self._refresh_all)
        self.api = build_api(self.api_context)
        self.plugins.register_routes(self.api, self)  # under /api/plugins/<name>/, behind the same login
        self.metrics = Metrics(self)
        self.web = StaticFiles()
        self.wsgi = WebGuard(Dispatcher({"/dav": self.dav, "/api": self.api, "/metrics": self.metrics.wsgi,
                                         "/ui": self.web.assets}, self._root, self.nas.waiters),
                             settings.http_allowed_hosts)
        self._started = False

    def nas_summary(self) -> dict:
        return self.api_context.nas_summary()

    def _on_nas_state(self, to_state: NasState, **_: object) -> None:
        """The NAS woke (for whatever reason): use the awake time."""
        if to_state is NasState.AWAKE and self._started:
            self.scheduler.run_soon("sync", self.sync.tick)
            self.scheduler.run_soon("awake-time", self._use_awake_time)

    def _refresh_all(self) -> None:
        """POST /api/cache/refresh: list every folder the index knows from the NAS once."""
        from balupi.sync.refresh import refresh_all

        refresh_all(self.refresher, self.provider.index)

    def _use_awake_time(self) -> None:
        """After a wake: first learn the folders the index has never listed (so the prefetch sees
        their files), then fetch ahead, so the next hours need the NAS as little as possible."""
        if self.settings.refresh_walk_budget_s > 0:
            self.refresher.walk(budget_s=self.settings.refresh_walk_budget_s)
        self.prefetcher.run()

    def _root(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/") not in ("", "/"):
            return json_error_app(404, f"no such path: {environ.get('PATH_INFO')}")(environ, start_response)
        if environ["REQUEST_METHOD"] == "OPTIONS":
            # Windows' WebDAV redirector asks the server root before it maps /dav/ as a drive.
            start_response("200 OK", [("DAV", "1, 2"), ("MS-Author-Via", "DAV"), ("Allow", "OPTIONS, GET, HEAD"),
                                      ("Content-Length", "0")])
            return []
        if environ["REQUEST_METHOD"] in ("GET", "HEAD") and not wants_json(environ):
            return self.web.page(environ, start_response)  # the dashboard
        body = {"service": "balupi", "version": __version__, "webdav": "/dav/", "api": "/api/", "dashboard": "/"}
        return respond(start_response, Response.json(body), head=environ["REQUEST_METHOD"] == "HEAD")

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.nas.wake_log.close_stale()
        if self.nas.configured:
            self.events.subscribe(Event.NAS_STATE_CHANGED, self._on_nas_state)
        if self.settings.energy_enabled:
            self.energy.start()  # its plugs loaded before the first poll
        jobs.schedule(self.scheduler, jobs.app_jobs(self))  # every scheduled job: balupi/jobs.py
        self.plugins.start(self)
        self.scheduler.start()
        problem = self.provider.cache.volume_problem()
        if problem:
            log.error("cache: %s (a larger volume, or a smaller BALUPI_CACHE_MIN_FREE_GB)", problem)
        nas = self.nas_summary()
        if not nas["configured"]:
            log.warning("no NAS configured (BALUPI_NAS_WEBDAV_URL is empty): serving only what the cache holds, to %s",
                        self.auth.open_access())
        log.info("BaluPi %s started: data in %s, cache in %s", __version__, self.settings.data_dir, self.settings.cache_dir)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish or abandon background work safely, then close the database."""
        self.nas.stop()
        # Downloads end (cancelled, unpublished) before the jobs that wait for them (a prefetch) and
        # long before the store and the database close under them.
        self.provider.downloads.stop(timeout_s)
        self.plugins.stop(self)
        self.scheduler.stop(timeout_s)
        self.energy.stop()
        self.provider.index.flush_access()
        self.provider.store.close()
        self.nas_client.close()
        self.db.close()
        log.info("BaluPi stopped")
