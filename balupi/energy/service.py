"""The energy monitor: the plugs, their polling, and what the API and CLI ask of them.

Threads and what they do:
- the scheduler's job thread runs `poll_all` every `energy_sample_interval_seconds`; it only hands
  one poll per plug to the event loop and returns, so a plug that hangs never holds up the job,
  the scheduler or the other plugs. A plug whose previous poll (or its recording) is still going is
  skipped for that tick and the skip counted.
- the event loop thread (loop.py) runs every python-kasa coroutine, each poll under its own deadline.
- one ingest thread records each finished poll (recorder.py) in arrival order and emits the events:
  PLUG_SAMPLE, NAS_POWER_READING (the `nas` plug), NAS_POWER_STATE_CHANGED, PLUG_HEALTH_CHANGED.
  Everything that touches the recorder's NAS power tracker runs there.
- API threads add, change and switch plugs through the loop (`EventLoopThread.run`, with a deadline).

Lock order: `EnergyService._lock` (the plug table) is taken before `Database._write_lock` and never
while waiting for the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable
from zoneinfo import ZoneInfo


from balupi.db import Database
from balupi.energy.loop import EventLoopThread
from balupi.energy.model import (
    ConfirmationRequired,
    PlugConflict,
    PlugHealth,
    PlugNotFound,
    PlugRole,
    Reading,
)
from balupi.energy.nasstate import Thresholds
from balupi.energy.recorder import PlugMeta, Recorder
from balupi.energy.rollups import apply_retention, reprice
from balupi.energy.tariffs import Tariff, TariffBook, load_tariffs, store_tariff, tariff_from_json
from balupi.events import Event, Events
from balupi.settings import Settings

if TYPE_CHECKING:
    from balupi.energy.plugs import PlugLink

def _kasa_plugs():
    """balupi.energy.plugs, imported on first use: python-kasa adds about 23 MB to the process,
    which a Pi with no plugs configured should not pay."""
    from balupi.energy import plugs

    return plugs


def _credentials(username: str, password: str):
    from kasa import Credentials

    return Credentials(username, password)


log = logging.getLogger("balupi.energy")

ONLINE_FACTOR = 3  # a plug is online while its last good poll is younger than 3 sample intervals
ADD_TIMEOUT_FACTOR = 3  # adding a plug may try several protocols: 3 poll deadlines


def energy_zone(settings: Settings) -> ZoneInfo:
    """The zone for local hours, days and tariffs: the setting, else the system's own."""
    if settings.energy_timezone:
        return ZoneInfo(settings.energy_timezone)
    try:
        with open("/etc/timezone", encoding="utf-8") as f:
            return ZoneInfo(f.read().strip())
    except (OSError, ValueError, KeyError):
        pass
    try:
        link = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in link:
            return ZoneInfo(link.split("zoneinfo/", 1)[1])
    except (OSError, ValueError, KeyError):
        pass
    return ZoneInfo("UTC")


@dataclass
class Plug:
    """One plug as the service knows it: its row, its connection, its health, its last reading."""

    id: int
    name: str
    role: PlugRole
    host: str
    port: int | None
    model: str = ""
    mac: str = ""
    hardware_id: str = ""
    timezone: str = ""
    link: "PlugLink | None" = None
    health: PlugHealth = field(default_factory=PlugHealth)
    last: Reading | None = None
    in_flight: bool = False

    def as_dict(self, online: bool) -> dict:
        return {
            "id": self.id,
            "device_id": self.id,
            "name": self.name,
            "role": self.role.value,
            "host": self.host,
            "port": self.port,
            "model": self.model,
            "mac": self.mac,
            "hardware_id": self.hardware_id,
            "timezone": self.timezone,
            "is_on": self.last.is_on if self.last else None,
            "is_online": online,
            "health": self.health.as_dict(),
        }


class EnergyService:
    def __init__(self, settings: Settings, db: Database, events: Events, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.db = db
        self.events = events
        self.clock = clock
        self.zone = energy_zone(settings)
        self.interval_s = float(settings.energy_sample_interval_seconds)
        self.timeout_s = float(settings.energy_poll_timeout_s)
        self.thresholds = Thresholds.from_settings(settings)
        self.recorder = Recorder(db, self.zone, self.interval_s, self.thresholds)
        self.loop = EventLoopThread()
        self.credentials = (
            _credentials(settings.tapo_username, settings.tapo_password) if settings.tapo_username else None
        )
        self.book = self._load_book()
        self._lock = threading.Lock()
        self._plugs: dict[int, Plug] = {}
        self._ingest: concurrent.futures.ThreadPoolExecutor | None = None
        self.plug_driver: Callable[..., Any] = lambda *args: _kasa_plugs().PlugLink(*args)  # the plugins' balupi_plug_driver

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._ingest is not None:
            return
        for row in self.db.query("SELECT * FROM energy_plugs ORDER BY id"):
            plug = self._plug_from_row(row)
            plug.last = self.recorder.last_reading(plug.id, self._plug_zone(plug))
            self._plugs[plug.id] = plug
        self.recorder.track_nas(self._role_plug_id(PlugRole.NAS))
        self.loop.start()
        self._ingest = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="balupi-energy-ingest")
        log.info("energy monitor started: %d plug(s), polled every %g s", len(self._plugs), self.interval_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        ingest, self._ingest = self._ingest, None
        links = [p.link for p in self._plugs.values() if p.link is not None]

        async def close_all() -> None:
            await asyncio.gather(*(link.drop() for link in links), return_exceptions=True)

        self.loop.stop(close_all(), timeout_s)
        if ingest is not None:
            ingest.shutdown(wait=True, cancel_futures=True)

    # -- plugs ---------------------------------------------------------------------------------------

    def _plug_zone(self, plug: Plug) -> ZoneInfo:
        try:
            return ZoneInfo(plug.timezone) if plug.timezone else self.zone
        except (ValueError, KeyError):
            return self.zone

    def _plug_from_row(self, row: Any) -> Plug:
        plug = Plug(row["id"], row["name"], PlugRole(row["role"]), row["host"], row["port"], row["model"] or "",
                    row["mac"] or "", row["hardware_id"] or "", row["timezone"] or "")
        plug.link = self.plug_driver(plug.id, json.loads(row["config_json"]), self.credentials, self.timeout_s,
                                     self._plug_zone(plug))
        return plug

    def _role_plug_id(self, role: PlugRole) -> int | None:
        return next((p.id for p in self._plugs.values() if p.role is role), None)

    def plugs(self) -> list[Plug]:
        with self._lock:
            return list(self._plugs.values())

    def plug(self, plug_id: int) -> Plug:
        with self._lock:
            plug = self._plugs.get(plug_id)
        if plug is None:
            raise PlugNotFound(f"no plug with id {plug_id}")
        return plug

    def is_online(self, plug: Plug) -> bool:
        h = plug.health
        if h.last_success_at is None or h.consecutive_failures:
            return False
        return self.clock() - h.last_success_at <= ONLINE_FACTOR * self.interval_s

    def _check_role(self, role: PlugRole, plug_id: int | None = None) -> None:
        if role.unique:
            holder = self._role_plug_id(role)
            if holder is not None and holder != plug_id:
                raise PlugConflict(f"plug {holder} already has the role {role.value!r}; only one may")

    def _on_ingest(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the ingest thread (where the recorder's state lives) and wait for it."""
        if self._ingest is None:
            return fn()
        return self._ingest.submit(fn).result(self.timeout_s + 60)

    def add_plug(self, host: str, port: int | None, name: str | None, role: PlugRole) -> Plug:
        """Connect to a plug by address (finding its protocol), then keep it. Raises PlugUnavailable with the reason."""
        with self._lock:
            self._check_role(role)
        deadline_s = ADD_TIMEOUT_FACTOR * self.timeout_s
        facts = self.loop.run(
            _kasa_plugs().hard_deadline(_kasa_plugs().probe(host, port, self.credentials, self.timeout_s, self.zone), deadline_s),
            deadline_s + 1,
        )
        now = self.clock()
        with self._lock:
            self._check_role(role)
            for other in self._plugs.values():
                if facts.hardware_id and other.hardware_id == facts.hardware_id:
                    raise PlugConflict(f"this plug is added already, as plug {other.id} ({other.name!r})")
            with self.db.write() as d:
                cursor = d.execute(
                    "INSERT INTO energy_plugs (name, role, host, port, config_json, model, mac, hardware_id, timezone,"
                    " added_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name or facts.alias or host, role.value, host, port, json.dumps(facts.config), facts.model,
                     facts.mac, facts.hardware_id, facts.timezone, now, now),
                )
                row = d.execute("SELECT * FROM energy_plugs WHERE id = ?", (cursor.lastrowid,)).fetchone()
            plug = self._plug_from_row(row)
            self._plugs[plug.id] = plug
        if role is PlugRole.NAS:
            self._on_ingest(lambda: self.recorder.track_nas(plug.id))
        log.info("plug %d added: %s (%s) at %s, role %s", plug.id, plug.name, plug.model, host, role.value)
        return plug

    def update_plug(self, plug_id: int, name: str | None = None, role: PlugRole | None = None,
                    host: str | None = None, port: int | None | bool = False) -> Plug:
        """Rename, give another role, or move to another address (port False: unchanged)."""
        plug = self.plug(plug_id)
        with self._lock:
            if role is not None:
                self._check_role(role, plug_id)
            if name is not None:
                plug.name = name
            if role is not None:
                plug.role = role
            if host is not None or port is not False:
                assert plug.link is not None
                config = dict(plug.link.config)
                if host is not None:
                    plug.host = config["host"] = host
                if port is not False:
                    plug.port = config["port_override"] = port  # type: ignore[assignment]
                plug.link.config = config
                self.loop.submit(plug.link.drop())
            with self.db.write() as d:
                d.execute(
                    "UPDATE energy_plugs SET name = ?, role = ?, host = ?, port = ?, config_json = ?, updated_at = ?"
                    " WHERE id = ?",
                    (plug.name, plug.role.value, plug.host, plug.port, json.dumps(plug.link.config if plug.link else {}),
                     self.clock(), plug_id),
                )
            nas_id = self._role_plug_id(PlugRole.NAS)
        self._on_ingest(lambda: self.recorder.track_nas(nas_id))
        return plug

    def remove_plug(self, plug_id: int) -> None:
        """Forget a plug and everything recorded about it."""
        plug = self.plug(plug_id)
        with self._lock:
            self._plugs.pop(plug_id, None)
            with self.db.write() as d:
                for table in ("energy_samples", "energy_ledger", "energy_gaps", "energy_hourly", "energy_daily",
                              "energy_monthly", "energy_plug_days", "nas_power_transitions"):
                    d.execute(f"DELETE FROM {table} WHERE plug_id = ?", (plug_id,))
                d.execute("DELETE FROM energy_plugs WHERE id = ?", (plug_id,))
            nas_id = self._role_plug_id(PlugRole.NAS)
        if plug.link is not None and self.loop.running:
            self.loop.submit(plug.link.drop())
        self._on_ingest(lambda: self.recorder.track_nas(nas_id))
        log.info("plug %d (%s) removed", plug_id, plug.name)

    def set_on(self, plug_id: int, on: bool | None, confirm: bool = False) -> bool:
        """Switch a plug's relay (None: toggle). Switching off the `nas` plug needs `confirm`."""
        plug = self.plug(plug_id)
        if on is None:
            if plug.last is None or plug.last.is_on is None:
                raise ValueError("the plug's state is not known yet: say \"on\": true or false")
            on = not plug.last.is_on
        if not on and plug.role is PlugRole.NAS and not confirm:
            raise ConfirmationRequired(
                "switching off the 'nas' plug cuts the NAS's power; send \"confirm_nas_off\": true to do it"
            )
        assert plug.link is not None
        self.loop.run(plug.link.set_on(on), self.timeout_s + 1)
        if plug.last is not None:
            plug.last.is_on = on
        log.info("plug %d (%s) switched %s", plug.id, plug.name, "on" if on else "off")
        return on

    def discover(self) -> list[dict]:
        timeout_s = max(3.0, self.timeout_s)
        found = self.loop.run(
            _kasa_plugs().hard_deadline(_kasa_plugs().discover(self.settings.tapo_discovery_target, self.credentials, timeout_s),
                                     3 * timeout_s),
            3 * timeout_s + 1,
        )
        known = {p.hardware_id: p.id for p in self.plugs() if p.hardware_id}
        for entry in found:
            entry["added_as"] = known.get(entry.get("hardware_id"))
        return found

    # -- polling -------------------------------------------------------------------------------------

    def poll_all(self, wait: bool = False) -> int:
        """Start a poll of every plug not still busy with its last one. With `wait`, return when all are recorded."""
        with self._lock:
            todo = []
            for plug in self._plugs.values():
                if plug.in_flight:
                    plug.health.skipped += 1
                else:
                    plug.in_flight = True
                    todo.append(plug)
        done = [self._dispatch(plug) for plug in todo]
        if wait and done:
            concurrent.futures.wait(done, timeout=self.timeout_s + 60)
        return len(todo)

    def _dispatch(self, plug: Plug) -> concurrent.futures.Future:
        done: concurrent.futures.Future = concurrent.futures.Future()
        prev = plug.last
        gap = prev is not None and (
            plug.health.consecutive_failures > 0 or self.clock() - prev.at > self.recorder.gap_after_s
        )
        assert plug.link is not None
        try:
            polled = self.loop.submit(plug.link.poll(prev, gap, self.clock))
        except RuntimeError:  # stopping
            plug.in_flight = False
            done.set_result(None)
            return done

        def polled_cb(f: concurrent.futures.Future) -> None:
            ingest = self._ingest
            try:
                if ingest is None:
                    raise RuntimeError("stopped")
                ingest.submit(self._after_poll, plug, f).add_done_callback(lambda _: done.set_result(None))
            except RuntimeError:
                plug.in_flight = False
                done.set_result(None)

        polled.add_done_callback(polled_cb)
        return done

    def _after_poll(self, plug: Plug, f: concurrent.futures.Future) -> None:
        try:
            exc = TimeoutError("poll cancelled") if f.cancelled() else f.exception()
            if exc is None:
                self._on_reading(plug, f.result())
            else:
                self._on_failure(plug, exc)
        except Exception:
            log.exception("plug %d: recording a poll failed", plug.id)
        finally:
            plug.in_flight = False

    def _on_reading(self, plug: Plug, reading: Reading) -> None:
        h = plug.health
        after_failure = h.consecutive_failures > 0
        if plug.id not in self._plugs:
            return  # removed while polling
        meta = PlugMeta(plug.id, plug.role is PlugRole.NAS)
        recorded = self.recorder.record(meta, [reading], self.book, after_failure)[0]
        plug.last = reading
        h.polls += 1
        h.last_attempt_at = h.last_success_at = reading.at
        h.latency_ms = (reading.latency_s or 0) * 1000
        if after_failure:
            log.info("plug %d (%s) recovered after %d failed poll(s) (%s)", plug.id, plug.name,
                     h.consecutive_failures, h.error_kind.value if h.error_kind else "?")
            self.events.emit(Event.PLUG_HEALTH_CHANGED, device_id=plug.id, error_kind=None, at=reading.at)
        h.consecutive_failures, h.error_kind, h.error, h.failing_since = 0, None, None, None
        self._save_config(plug)
        self.events.emit(Event.PLUG_SAMPLE, device_id=plug.id, power_w=reading.power_w, at=reading.at)
        if recorded.transition is not None:
            t = recorded.transition
            log.info("NAS power state %s -> %s at %.1f W", t.from_state.value if t.from_state else "none",
                     t.to_state.value, t.power_w)
            self.events.emit(Event.NAS_POWER_STATE_CHANGED, from_state=t.from_state, to_state=t.to_state,
                             power_w=t.power_w, at=t.at)
        if recorded.nas_state is not None:
            self.events.emit(Event.NAS_POWER_READING, power_w=reading.power_w, power_state=recorded.nas_state,
                             at=reading.at)

    def _save_config(self, plug: Plug) -> None:
        """Keep the connection config python-kasa settled on (a new credentials hash after a password change)."""
        link = plug.link
        if link is None or getattr(link, "_saved_config", None) == link.config:
            return
        with self.db.write() as d:
            d.execute("UPDATE energy_plugs SET config_json = ?, timezone = ? WHERE id = ?",
                      (json.dumps(link.config), getattr(link.zone, "key", plug.timezone), plug.id))
        link._saved_config = link.config  # type: ignore[attr-defined]

    def _on_failure(self, plug: Plug, exc: BaseException) -> None:
        kind = _kasa_plugs().classify(exc)
        h = plug.health
        now = self.clock()
        first = h.consecutive_failures == 0
        changed = kind is not h.error_kind
        h.polls += 1
        h.failures += 1
        h.consecutive_failures += 1
        h.last_attempt_at = now
        h.error = _kasa_plugs().describe(exc)
        h.error_kind = kind
        if first:
            h.failing_since = now
        if first or changed:  # once when it starts failing (and when the reason changes), never every poll
            log.warning("plug %d (%s) at %s: polling failed (%s): %s", plug.id, plug.name, plug.host, kind.value, h.error)
            self.events.emit(Event.PLUG_HEALTH_CHANGED, device_id=plug.id, error_kind=kind, at=now)
        if plug.id in self._plugs:
            self.recorder.note_failure(plug.id, kind)

    # -- tariffs and retention -------------------------------------------------------------------------

    def _load_book(self) -> TariffBook:
        return TariffBook(load_tariffs(self.db), self.settings.energy_default_price_cents,
                          self.settings.energy_currency, self.zone)

    def add_tariff(self, body: dict) -> tuple[Tariff, int]:
        """Store a tariff version and reprice every hour it covers. Raises ValueError naming each problem."""
        tariff = tariff_from_json(body, self.zone, self.settings.energy_currency)
        tariff_id = store_tariff(self.db, tariff)
        self.book = book = self._load_book()
        with self.db.write() as d:
            repriced = reprice(d, book, tariff.valid_from_s, tariff.valid_to_s, self.clock(),
                               self.settings.energy_hourly_retention_days)
        log.info("tariff %d (%s) stored; %d hour(s) repriced", tariff_id, tariff.name, repriced)
        return next(t for t in book.tariffs if t.id == tariff_id), repriced

    def apply_retention(self) -> dict[str, int]:
        with self.db.write() as d:
            deleted = apply_retention(d, self.clock(), self.settings.energy_raw_retention_days,
                                      self.settings.energy_hourly_retention_days)
        if any(deleted.values()):
            log.debug("energy retention: %s", deleted)
        return deleted
