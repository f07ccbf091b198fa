"""notify: tell a phone or a chat when something needs a person, through Apprise URLs.

Events it can send (`events`):
- `sync_conflict`: the write-back met a change on the NAS; both versions were kept.
- `wake_failed`: magic packets went out and the NAS did not answer.
- `plug_offline`: a smart plug stopped answering (one message per outage; "recovered" too).
- `disk_almost_full`: the cache volume has less than `disk_free_gb` free (checked every 10 min;
  once until it has room again).

Messages go to every URL in `urls` (Apprise: ntfy://, gotify://, tgram://, mailto://, hassio://,
json://... see https://github.com/caronc/apprise/wiki). Sending is off the observer thread: a
bounded queue (`queue_size`; full: the message is dropped, counted, logged) and one sender thread
that retries a failing URL with a doubling delay (`retries` times, from `retry_delay_s`).

Needs Apprise, an optional dependency: `pip install 'balupi[plugins]'` (or `pip install apprise`).
Apprise is imported in a short-lived child process (once at start-up to check the URLs, once per
message to send it), never in BaluPi itself: importing it costs about 20 MB, which a Pi keeps for
files, and messages are rare.

    [plugins.notify]
    urls = ["ntfy://ntfy.sh/my-balupi", "json://homeassistant.local:8123/api/webhook/balupi"]
    events = ["sync_conflict", "wake_failed", "plug_offline", "disk_almost_full"]
    disk_free_gb = 5.0
    retries = 3
    retry_delay_s = 5.0
    queue_size = 100
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import subprocess
import sys
import threading

from balupi.hookspecs import ScheduledJob, hookimpl
from balupi.plugins import Setting, parse_float, parse_int, parse_list

__version__ = "1.0"
log = logging.getLogger("balupi.plugins.notify")

EVENTS = ("sync_conflict", "wake_failed", "plug_offline", "disk_almost_full")
DISK_CHECK_INTERVAL_S = 600.0


def _events(values: tuple[str, ...]) -> None:
    for value in values:
        if value not in EVENTS:
            raise ValueError(f"unknown event {value!r}; one of {', '.join(EVENTS)}")


SETTINGS = (
    Setting("urls", (), "Apprise URLs to send to. Empty: this plugin does nothing.", parse_list),
    Setting("events", EVENTS, "Which events to send.", parse_list, _events),
    Setting("disk_free_gb", 5.0, "disk_almost_full: below this many GB free on the cache volume.", parse_float),
    Setting("retries", 3, "Tries again this many times after a failed send.", parse_int),
    Setting("retry_delay_s", 5.0, "First delay before trying again (doubles each time, at most 5 min).", parse_float),
    Setting("queue_size", 100, "Messages waiting to be sent at most (more: dropped and counted).", parse_int),
)
MAX_RETRY_DELAY_S = 300.0

config: dict = {}
sent: list[tuple[str, str]] = []  # (title, body) delivered to every URL, newest last (the last 100)
dropped = 0
_queue: queue.Queue | None = None
_senders: list[str] = []  # the checked URLs
_stop = threading.Event()
_thread: threading.Thread | None = None
_disk_low = False
_app = None


CHECK_SCRIPT = """
import json, sys
try:
    import apprise
except ImportError:
    sys.exit(3)
print(json.dumps([url for url in json.load(sys.stdin) if not apprise.Apprise().add(url)]))
"""
SEND_SCRIPT = """
import json, sys
import apprise
message = json.load(sys.stdin)
sender = apprise.Apprise()
sender.add(message["url"])
sys.exit(0 if sender.notify(title=message["title"], body=message["body"]) else 1)
"""
CHILD_TIMEOUT_S = 120.0


def _child(script: str, data) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], input=json.dumps(data), capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S)


def configure(values: dict) -> None:
    global _queue, _senders
    if values["urls"]:
        checked = _child(CHECK_SCRIPT, list(values["urls"]))
        if checked.returncode == 3:
            raise ValueError("needs Apprise: pip install 'balupi[plugins]'")
        if checked.returncode != 0:
            raise ValueError(f"checking the URLs failed: {checked.stderr.strip()[-200:]}")
        bad = json.loads(checked.stdout)
        if bad:
            raise ValueError(f"not an Apprise URL Apprise understands: {', '.join(map(repr, bad))}")
        _senders = list(values["urls"])
    _queue = queue.Queue(maxsize=max(1, values["queue_size"]))
    config.update(values)


def _send_one(url: str, title: str, body: str) -> bool:
    try:
        return _child(SEND_SCRIPT, {"url": url, "title": title, "body": body}).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def send(title: str, body: str) -> None:
    """Queue a message for every URL (never blocks)."""
    global dropped
    if not _senders or _queue is None:
        return
    try:
        _queue.put_nowait((title, body))
    except queue.Full:
        dropped += 1
        log.warning("notify: queue full, dropped %r (%d dropped so far)", title, dropped)


def _deliver(title: str, body: str) -> None:
    pending = list(_senders)
    delay = config["retry_delay_s"]
    for attempt in range(config["retries"] + 1):
        pending = [url for url in pending if not _send_one(url, title, body)]
        if not pending or _stop.is_set():
            break
        if attempt < config["retries"]:
            _stop.wait(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY_S)
    if pending:
        log.warning("notify: could not send %r to %d URL(s) after %d tries", title, len(pending), config["retries"] + 1)
    else:
        sent.append((title, body))
        del sent[:-100]


def _run() -> None:
    while not _stop.is_set():
        try:
            title, body = _queue.get(timeout=0.5)
        except queue.Empty:
            continue
        _deliver(title, body)


def _wanted(event: str) -> bool:
    return event in config.get("events", ())


@hookimpl
def balupi_startup(app) -> None:
    global _thread, _app
    _app = app
    if _senders and _thread is None:
        _stop.clear()
        _thread = threading.Thread(target=_run, name="balupi-notify", daemon=True)
        _thread.start()


@hookimpl
def balupi_shutdown() -> None:
    global _thread
    _stop.set()
    if _thread is not None:
        _thread.join(2)
        _thread = None


@hookimpl
def balupi_sync_conflict(path: str, conflict_path: str) -> None:
    if _wanted("sync_conflict"):
        send("BaluPi: sync conflict", f"{path} was changed on the NAS and on the Pi. The NAS keeps its version "
             f"under {path}; the Pi's version is {conflict_path}.")


@hookimpl
def balupi_nas_state_changed(to_state, cause: str) -> None:
    if _wanted("wake_failed") and getattr(to_state, "value", to_state) == "unreachable":
        send("BaluPi: the NAS did not wake", f"The NAS did not answer ({cause}). Files not on the Pi cannot be "
             "opened until it does.")


@hookimpl
def balupi_plug_health_changed(device_id: int, error_kind) -> None:
    if not _wanted("plug_offline"):
        return
    if error_kind is None:
        send("BaluPi: plug back", f"Smart plug {device_id} answers again.")
    else:
        send("BaluPi: plug offline", f"Smart plug {device_id} stopped answering ({getattr(error_kind, 'value', error_kind)}).")


def check_disk() -> None:
    global _disk_low
    if _app is None or not _wanted("disk_almost_full"):
        return
    free_gb = shutil.disk_usage(_app.settings.cache_dir).free / 1e9
    if free_gb < config["disk_free_gb"] and not _disk_low:
        _disk_low = True
        send("BaluPi: disk almost full", f"{free_gb:.1f} GB free on the cache volume ({_app.settings.cache_dir}).")
    elif free_gb >= config["disk_free_gb"]:
        _disk_low = False


@hookimpl
def balupi_scheduled_jobs(app):
    global _app
    _app = app
    return [ScheduledJob("disk check", DISK_CHECK_INTERVAL_S, check_disk)] if _senders else []
