"""Builds the WsgiDAV application mounted at /dav/."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from wsgidav.fs_dav_provider import FilesystemProvider
from wsgidav.wsgidav_app import WsgiDAVApp

if TYPE_CHECKING:
    from balupi.app import BaluPi

DAV_MOUNT_PATH = "/dav"


def build_dav_app(app: "BaluPi") -> WsgiDAVApp:
    settings = app.settings
    root = settings.cache_dir / "files"
    root.mkdir(parents=True, exist_ok=True)
    provider = FilesystemProvider(str(root))
    config = {
        "mount_path": DAV_MOUNT_PATH,
        "provider_mapping": {"/": provider},
        "block_size": settings.dav_block_size_kib * 1024,
        "property_manager": True,
        "lock_storage": True,
        "http_authenticator": {"domain_controller": None, "accept_basic": True, "accept_digest": False, "default_to_digest": False},
        "simple_dc": {"user_mapping": {"*": True}},
        "verbose": 1,
        "logging": {"enable": False},
        "dir_browser": {"enable": True, "response_trailer": "BaluPi"},
        "add_header_MS_Author_Via": True,
    }
    dav = WsgiDAVApp(config)
    logging.getLogger("wsgidav").setLevel(logging.WARNING)
    return dav
