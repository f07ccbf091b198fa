"""systemd's notify protocol, spoken directly: one datagram per message on the unix socket named
by NOTIFY_SOCKET (a path, or "@name" for the abstract namespace). `READY=1` once BaluPi accepts
connections, `WATCHDOG=1` every half of `WatchdogSec` while it is healthy, `STOPPING=1` at shutdown.
Without NOTIFY_SOCKET (not started by systemd with Type=notify) every call does nothing.

The watchdog pings only while BaluPi is healthy (`healthy()`: the HTTP server's thread runs and
accepts a TCP connection, and the scheduler ran its heartbeat job recently), so systemd restarts a
BaluPi whose server or scheduler has stopped, not one that is merely busy.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Callable, Mapping

log = logging.getLogger("balupi.systemd")


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = ("\0" + raw[1:]) if raw.startswith("@") else raw
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        for_us = not pid or pid == str(os.getpid())
        self.watchdog_interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and for_us else None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> bool:
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError as exc:
            log.warning("could not notify systemd at %s: %s", self.address.replace("\0", "@"), exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")


class Watchdog:
    """Pings systemd's watchdog every `notifier.watchdog_interval_s`, but only while `healthy()`."""

    def __init__(self, notifier: Notifier, healthy: Callable[[], bool]):
        self.notifier = notifier
        self.healthy = healthy
        self.pings = 0
        self.skipped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.notifier.watchdog_interval_s is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="balupi-systemd-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval_s = self.notifier.watchdog_interval_s
        while not self._stop.wait(interval_s):
            try:
                ok = self.healthy()
            except Exception:
                log.exception("health check for the watchdog failed")
                ok = False
            if ok:
                self.notifier.watchdog()
                self.pings += 1
            else:
                self.skipped += 1
                log.error("not healthy: no watchdog ping (systemd restarts BaluPi if this goes on)")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
