"""pin_rules: keep chosen files on the Pi: never evicted, and fetched whenever the NAS wakes.

A file is pinned when its path matches one of `globs` (`*` matches across folders too, so
"/Photos/2026/**" and "/Photos/2026/*" both take the whole tree), or when one of `users` uploaded
it within the last `days` days (uploads are remembered in <data_dir>/plugins/pin_rules.json, so a
restart and `balupi evict` know them). Pinned files are refused to eviction (`balupi_before_evict`); when the NAS
wakes, pinned files that are not cached are fetched (never waking it for that), in every view.

    [plugins.pin_rules]
    globs = ["/Photos/2026/**"]
    users = ["bob"]        # uploads by these users are pinned ...
    days = 30              # ... for this many days after the upload
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import threading
import time
from pathlib import Path

from balupi.hookspecs import hookimpl
from balupi.plugins import Setting, parse_float, parse_list

__version__ = "1.0"
log = logging.getLogger("balupi.plugins.pin_rules")

SETTINGS = (
    Setting("globs", (), "Paths (globs) that are always kept and fetched on wake.", parse_list),
    Setting("users", (), "Uploads by these users are pinned for `days` days.", parse_list),
    Setting("days", 30.0, "How long a chosen user's upload stays pinned.", parse_float),
)
DAY_S = 86400.0

config: dict = {}
uploads: dict[str, float] = {}  # path -> when a chosen user uploaded it
_lock = threading.Lock()
_app = None


_data_dir: Path | None = None


def configure(values: dict, settings) -> None:
    global _data_dir
    config.update(values)
    _data_dir = Path(settings.data_dir)
    path = _state_file()
    if path.is_file():  # here, not at start-up: `balupi evict` (no observers run) keeps them too
        with _lock:
            uploads.update(json.loads(path.read_text()))


def _state_file() -> Path | None:
    return _data_dir / "plugins" / "pin_rules.json" if _data_dir is not None else None


def _save() -> None:
    path = _state_file()
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(uploads))
    os.replace(tmp, path)


def is_pinned(path: str, now: float | None = None) -> bool:
    if any(fnmatch.fnmatchcase(path, pattern) for pattern in config.get("globs", ())):
        return True
    at = uploads.get(path)
    return at is not None and (now or time.time()) - at < config["days"] * DAY_S


@hookimpl
def balupi_startup(app) -> None:
    global _app
    _app = app


@hookimpl
def balupi_before_evict(path: str) -> str | None:
    return "pinned by pin_rules" if is_pinned(path) else None


@hookimpl
def balupi_upload_finished(user: str, path: str) -> None:
    if user in config.get("users", ()):
        now = time.time()
        with _lock:
            uploads[path] = now
            for old in [p for p, at in uploads.items() if now - at >= config["days"] * DAY_S]:
                del uploads[old]
            _save()


@hookimpl
def balupi_nas_state_changed(to_state) -> None:
    if getattr(to_state, "value", to_state) == "awake" and _app is not None and config.get("globs"):
        _app.scheduler.run_soon("pin_rules prefetch", prefetch)


def prefetch() -> int:
    """Fetch every pinned glob's uncached files while the NAS is awake. Returns files fetched."""
    from balupi.cache.index import uncached_files

    provider, fetched = _app.provider, 0
    for pattern in config["globs"]:
        for entry in uncached_files(_app.db, pattern):
            if not _app.nas.is_awake():
                return fetched
            try:
                download = provider.start_download(entry, wake=False)
                if download is not None and download.wait_done(300):
                    fetched += 1
            except Exception as exc:  # NAS went away, no credentials for a view: next wake
                log.info("pin_rules: could not fetch %s: %s", entry.path, exc)
    if fetched:
        log.info("pin_rules: fetched %d pinned file(s)", fetched)
    return fetched
