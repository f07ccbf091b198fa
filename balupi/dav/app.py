"""Builds the WsgiDAV application mounted at /dav/, backed by BaluPi's cache provider."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from wsgidav.dir_browser import WsgiDavDirBrowser
from wsgidav.error_printer import ErrorPrinter
from wsgidav.http_authenticator import HTTPAuthenticator
from wsgidav.mw.cors import Cors
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from balupi.cache.manager import CacheManager
from balupi.dav.auth_dc import AUTHENTICATOR_CONFIG_KEY, NasDomainController
from balupi.dav.fastlane import FastLane
from balupi.dav.guard import DavGuard
from balupi.cache.index import Index
from balupi.dav.locks import SqliteLockStorage
from balupi.dav.parts import CacheParts
from balupi.dav.props import SqlitePropertyManager
from balupi.dav.provider import CacheProvider
from balupi.dav.refusals import ServiceRefusals
from balupi.dav.veto import ClientOpVeto, VetoHost
from balupi.cache.store import ContentStore
from balupi.websec import LISTING_KEY

if TYPE_CHECKING:
    from balupi.auth.service import Authenticator
    from balupi.db import Database
    from balupi.events import Events
    from balupi.nas.client import NasClient
    from balupi.nas.monitor import NasMonitor
    from balupi.settings import Settings


class Plugins(VetoHost, Protocol):
    def eviction_order(self, db: "Database", limit: int) -> list: ...

    def veto_evict(self, path: str, size_bytes: int, reason: str) -> str | None: ...


class Host(Protocol):
    """What building the WebDAV tree takes from the application (`balupi.app.BaluPi`), which
    hands itself in: the WebDAV side never imports the composition root."""

    settings: "Settings"
    db: "Database"
    events: "Events"
    plugins: Plugins
    auth: "Authenticator"
    nas: "NasMonitor"
    nas_client: "NasClient"

DAV_MOUNT_PATH = "/dav"
log = logging.getLogger("balupi.dav")


class ListingBrowser(WsgiDavDirBrowser):
    """WsgiDAV's HTML listing of a folder, marked in the environ while it answers, so that
    `balupi.websec.WebGuard` does not turn BaluPi's own listing into a download (files are)."""

    def __init__(self, wsgidav_app, next_app, config):
        super().__init__(wsgidav_app, _unmarked(next_app), config)

    def __call__(self, environ, start_response):
        environ[LISTING_KEY] = True
        return super().__call__(environ, start_response)


def _unmarked(next_app):
    def app(environ, start_response):
        environ.pop(LISTING_KEY, None)  # the listing passed the request on: not a listing
        return next_app(environ, start_response)

    return app


def build_provider(app: Host) -> CacheProvider:
    settings = app.settings
    store = ContentStore(settings.cache_dir)
    removed = store.clear_temp()
    if removed:
        log.info("removed %d unfinished temp files from an earlier run", removed)
    cache = CacheManager(settings, app.db, store, app.events)
    cache.eviction_order, cache.evict_veto = app.plugins.eviction_order, app.plugins.veto_evict
    index = Index(app.db, half_life_s=settings.cache_heat_half_life_hours * 3600)
    parts = CacheParts.build(index, store, app.nas_client, app.nas, app.events, cache)
    return CacheProvider(parts, local_only_names=settings.dav_local_only_names)


def build_dav_app(app: Host, provider: CacheProvider) -> DavGuard:
    """WsgiDAV behind the fast lane, behind the guard (paths, who is asking, XML bodies)."""
    settings = app.settings
    config = {
        "mount_path": DAV_MOUNT_PATH,
        "provider_mapping": {"/": provider},
        "block_size": settings.dav_block_size_kib * 1024,
        "property_manager": SqlitePropertyManager(app.db),
        "lock_storage": SqliteLockStorage(app.db),
        "middleware_stack": [Cors, ErrorPrinter, ServiceRefusals, HTTPAuthenticator, ListingBrowser, RequestResolver],
        "http_authenticator": {"domain_controller": NasDomainController, "accept_basic": True, "accept_digest": False,
                               "default_to_digest": False},
        AUTHENTICATOR_CONFIG_KEY: app.auth,
        "honor_mtime_header": True,
        "hotfixes": {"emulate_win32_lastmod": True},
        "verbose": 1,
        "logging": {"enable": False},
        "dir_browser": {"enable": True, "response_trailer": "BaluPi", "davmount": True},
        "cors": {"allow_origin": None},
        "add_header_MS_Author_Via": True,
    }
    dav = WsgiDAVApp(config)
    logging.getLogger("wsgidav").setLevel(logging.WARNING)
    return DavGuard(app.auth, ClientOpVeto(app.plugins, FastLane(provider, provider.parts, dav)), settings.dav_max_xml_body_kib * 1024,
                    settings.nas_reserved_name_chars)
