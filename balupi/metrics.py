"""Prometheus metrics at /metrics, through prometheus_client.

Almost every figure is read at scrape time from where BaluPi already keeps it (the database, the
energy monitor's last readings, the provider's and the monitor's counters) by one custom collector,
so nothing else in BaluPi updates metrics. The one exception is the request latency histogram,
observed by the HTTP gateway (`balupi.httpio`) around each request: into per-thread bucket counts
(`RequestHistogram`), summed at scrape time, so a request takes no lock (decision 195).

Access: from loopback, with an admin's API token, or with `metrics_token` (Bearer), else 401/403.
Each BaluPi has its own registry (tests run several in one process).
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from bisect import bisect_left
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Iterable

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from balupi.cache import index as cache_index
from balupi.cache import journal
from balupi.auth.basic import split_authorization
from balupi.auth.service import LoginRefused, is_loopback
from balupi.nas.monitor import NasState
from balupi.nas.wakes import WakeKind

if TYPE_CHECKING:
    from balupi.app import BaluPi

log = logging.getLogger("balupi.metrics")

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WH_TO_JOULES = 3600.0


class BaluPiCollector:
    """Reads every BaluPi figure at scrape time."""

    def __init__(self, app: "BaluPi"):
        self.app = app

    def collect(self) -> Iterable:
        yield from self._nas()
        yield from self._cache()
        yield from self._sync()
        if self.app.settings.energy_enabled:
            yield from self._energy()
        yield from self._plugins()

    # -- plugins ---------------------------------------------------------------------------------

    def _plugins(self) -> Iterable:
        host = getattr(self.app, "plugins", None)
        if host is None:
            return
        dropped = CounterMetricFamily("balupi_plugin_events_dropped", "Events not handed to plugins' observe hooks "
                                      "because their queue was full.", labels=["hook"])
        for hook, count in sorted(host.dropped.items()):
            dropped.add_metric([hook], count)
        yield dropped
        yield CounterMetricFamily("balupi_plugin_events_dropped_all", "All events dropped, every hook together.",
                                  value=sum(host.dropped.values()))
        errors = CounterMetricFamily("balupi_plugin_hook_errors", "Exceptions raised by a plugin's hooks.",
                                     labels=["plugin"])
        for name, count in sorted(host.failures.items()):
            errors.add_metric([name], count)
        yield errors

    # -- NAS -------------------------------------------------------------------------------------

    def _nas(self) -> Iterable:
        nas = self.app.nas
        state = GaugeMetricFamily("balupi_nas_state", "The NAS's power state as BaluPi believes it (1 for the current one).",
                                  labels=["state"])
        for s in NasState:
            state.add_metric([s.value], 1.0 if nas.state is s else 0.0)
        yield state
        yield GaugeMetricFamily("balupi_nas_state_since_timestamp_seconds", "When the NAS entered its current state.",
                                value=nas.since)
        counts = nas.wake_log.counts_by_kind()
        wakes = CounterMetricFamily("balupi_nas_wakes", "NAS wake-ups (and times found awake) by cause.", labels=["cause"])
        for kind in WakeKind:
            wakes.add_metric([kind.value], counts.get(kind.value, 0))
        yield wakes
        yield CounterMetricFamily("balupi_nas_awake_seconds", "Seconds the NAS was awake, from its wakes.",
                                  value=nas.wake_log.awake_seconds_total())
        yield CounterMetricFamily("balupi_nas_magic_packets_sent", "Wake-on-LAN packets sent since start.",
                                  value=nas.wakes_sent)

    # -- cache -----------------------------------------------------------------------------------

    def _cache(self) -> Iterable:
        app = self.app
        counts = app.provider.stats
        yield CounterMetricFamily("balupi_cache_hits", "File reads answered from the Pi's cache.", value=counts.hits)
        yield CounterMetricFamily("balupi_cache_misses", "File reads that needed the NAS.", value=counts.misses)
        served = CounterMetricFamily("balupi_served_bytes", "File bytes served to clients, by where they came from.",
                                     labels=["source"])
        served.add_metric(["cache"], counts.hit_bytes)
        served.add_metric(["nas"], counts.miss_bytes)
        yield served
        row = cache_index.counts(app.db)["cached"]
        yield GaugeMetricFamily("balupi_cache_files", "Files held in the cache.", value=row[0])
        yield GaugeMetricFamily("balupi_cache_size_bytes", "Bytes of file content held in the cache.", value=row[1])
        yield GaugeMetricFamily("balupi_cache_limit_bytes", "The cache's size limit (cache_max_size_gb).",
                                value=app.provider.cache.max_bytes)
        yield GaugeMetricFamily("balupi_cache_pinned_bytes", "Cached bytes of pinned paths.", value=pinned_bytes(app))
        yield CounterMetricFamily("balupi_cache_evictions", "Files evicted to make room.", value=app.provider.cache.evictions)

    # -- write-back ------------------------------------------------------------------------------

    def _sync(self) -> Iterable:
        app = self.app
        pending = journal.Journal(app.db).pending()
        yield GaugeMetricFamily("balupi_sync_pending_changes", "Changes waiting to be written to the NAS.", value=pending["count"])
        yield GaugeMetricFamily("balupi_sync_pending_bytes", "Bytes of the changes waiting for the NAS.", value=pending["bytes"])
        yield CounterMetricFamily("balupi_sync_errors", "Failed attempts to apply a change to the NAS, since start.",
                                  value=app.sync.errors)
        conflicts = journal.counts(app.db)["conflicts"]
        yield GaugeMetricFamily("balupi_sync_conflicts", "Conflicts recorded (both copies kept).", value=conflicts[0])
        yield GaugeMetricFamily("balupi_sync_conflicts_unresolved", "Conflicts not marked resolved.", value=conflicts[1])

    # -- energy ----------------------------------------------------------------------------------

    def _energy(self) -> Iterable:
        from balupi.energy.queries import Window, energy_by_plug

        svc = self.app.energy
        labels = ["plug", "name", "role"]
        power = GaugeMetricFamily("balupi_plug_power_watts", "The plug's last power reading.", labels=labels)
        voltage = GaugeMetricFamily("balupi_plug_voltage_volts", "The plug's last voltage reading.", labels=labels)
        current = GaugeMetricFamily("balupi_plug_current_amperes", "The plug's last current reading.", labels=labels)
        up = GaugeMetricFamily("balupi_plug_up", "1 while the plug answers polls.", labels=labels)
        energy = CounterMetricFamily("balupi_plug_energy_joules", "Energy the plug measured (from its Wh counters; "
                                     "3.6e6 J = 1 kWh).", labels=labels)
        latency = GaugeMetricFamily("balupi_plug_poll_latency_seconds", "How long the plug's last poll took.", labels=labels)
        polls = CounterMetricFamily("balupi_plug_polls", "Polls of the plug since start.", labels=labels)
        errors = CounterMetricFamily("balupi_plug_poll_errors", "Failed polls of the plug since start.", labels=labels)
        totals = {plug_id: wh for plug_id, (wh, _) in energy_by_plug(svc.db, Window(0.0, svc.clock() + 1, svc.zone)).items()}
        for plug in svc.plugs():
            values = [str(plug.id), plug.name, plug.role.value]
            r = plug.last
            online = svc.is_online(plug)
            up.add_metric(values, 1.0 if online else 0.0)
            if r is not None and online:
                power.add_metric(values, r.power_w)
                if r.voltage_v is not None:
                    voltage.add_metric(values, r.voltage_v)
                if r.current_a is not None:
                    current.add_metric(values, r.current_a)
            energy.add_metric(values, totals.get(plug.id, 0.0) * WH_TO_JOULES)
            if plug.health.latency_ms is not None:
                latency.add_metric(values, plug.health.latency_ms / 1000.0)
            polls.add_metric(values, plug.health.polls)
            errors.add_metric(values, plug.health.failures)
        yield from (power, voltage, current, up, energy, latency, polls, errors)
        now = svc.clock()
        local = datetime.fromtimestamp(now, svc.zone)
        consumed = GaugeMetricFamily("balupi_energy_consumed_joules", "Energy of all plugs today and this month.",
                                     labels=["period"])
        cost = GaugeMetricFamily("balupi_energy_cost", "Energy cost of all plugs today and this month, in the tariff's "
                                 "currency (standing charges not included).", labels=["period", "currency"])
        for period, start in (("today", local.replace(hour=0, minute=0, second=0, microsecond=0)),
                              ("month", local.replace(day=1, hour=0, minute=0, second=0, microsecond=0))):
            by_plug = energy_by_plug(svc.db, Window(start.timestamp(), now + 1, svc.zone))
            consumed.add_metric([period], sum(e for e, _ in by_plug.values()) * WH_TO_JOULES)
            cost.add_metric([period, svc.book.currency], sum(c for _, c in by_plug.values()) / 100.0)
        yield consumed
        yield cost


def pinned_bytes(app: "BaluPi") -> int:
    return cache_index.cached_bytes_matching(app.db, app.provider.cache.pinned)


class RequestHistogram:
    """balupi_http_request_duration_seconds by method, as prometheus_client's `Histogram` exposes it
    (buckets, count, sum, created), without its lock per observation (decision 195).

    Each thread counts into its own lists (a bucket per bound and +Inf, and the sum), which only it
    writes; a scrape adds the threads' lists up. Reading another thread's list while it counts can
    miss that one observation, or see its bucket without its seconds in the sum, until the next
    scrape: Prometheus compares scrapes over time, and no observation is ever lost.
    """

    MAX_METHODS = 64  # a client inventing methods must not grow the label set

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]):
        self.name, self.documentation, self.bounds = name, documentation, tuple(buckets)
        self._bucket_names = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        self._per_thread: dict[int, dict[str, list]] = {}  # thread id -> method -> [counts..., seconds]
        self._created: dict[str, float] = {}
        self._lock = threading.Lock()  # taken when a thread first sees a method, and by scrapes

    def observe(self, method: str, seconds: float) -> None:
        mine = self._per_thread.get(threading.get_ident())
        row = mine.get(method) if mine is not None else None
        if row is None:
            row = self._new_row(method)
        row[bisect_left(self.bounds, seconds)] += 1  # the first bound >= seconds, as `le` means
        row[-1] += seconds

    def _new_row(self, method: str) -> list:
        with self._lock:
            if method not in self._created:
                if len(self._created) > self.MAX_METHODS:
                    method = "OTHER"
                self._created.setdefault(method, time.time())
            mine = self._per_thread.setdefault(threading.get_ident(), {})
            return mine.setdefault(method, [0] * (len(self.bounds) + 1) + [0.0])

    def collect(self) -> Iterable:
        with self._lock:
            rows = [(method, row) for mine in self._per_thread.values() for method, row in list(mine.items())]
            created = dict(self._created)
        totals: dict[str, list] = {}
        for method, row in rows:
            total = totals.get(method)
            if total is None:
                totals[method] = list(row)
            else:
                for i, value in enumerate(row):
                    total[i] += value
        family = HistogramMetricFamily(self.name, self.documentation, labels=["method"])
        created_family = GaugeMetricFamily(self.name + "_created", self.documentation, labels=["method"])
        for method in created:  # in the order the methods were first seen, as prometheus_client
            total = totals[method]
            cumulative, buckets = 0, []
            for bucket_name, count in zip(self._bucket_names, total):
                cumulative += count
                buckets.append((bucket_name, float(cumulative)))
            family.add_metric([method], buckets, total[-1])
            created_family.add_metric([method], created[method])
        yield family
        if created:  # prometheus_client shows no _created family before the first observation
            yield created_family


class Metrics:
    """The registry of one BaluPi, its request histogram, and the WSGI app answering /metrics."""

    def __init__(self, app: "BaluPi"):
        self.app = app
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BaluPiCollector(app))
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU seconds, open fds
        self.request_seconds = RequestHistogram(
            "balupi_http_request_duration_seconds", "Time to answer an HTTP request (WebDAV, API, page), by method.",
            LATENCY_BUCKETS_S)
        self.registry.register(self.request_seconds)
        self.observe_request = self.request_seconds.observe  # (method, seconds), per request

    def allowed(self, environ: dict) -> int:
        """200, or the status to refuse with (401 nobody, 403 not an admin)."""
        if is_loopback(environ.get("REMOTE_ADDR", "")):
            return 200
        scheme, value = split_authorization(environ.get("HTTP_AUTHORIZATION"))
        if scheme != "bearer" or not value:
            return 401
        token = self.app.settings.metrics_token
        if token and hmac.compare_digest(value.encode(), token.encode()):
            return 200
        try:
            identity = self.app.auth.token_identity(value)
        except LoginRefused:
            return 401
        return 200 if identity.is_admin else 403

    def wsgi(self, environ: dict, start_response: Callable) -> list[bytes]:
        method = environ["REQUEST_METHOD"].upper()
        if environ.get("PATH_INFO", "/") not in ("", "/"):
            return _plain(start_response, "404 Not Found", b"no such path\n")
        if method not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", b"GET only\n", [("Allow", "GET, HEAD")])
        status = self.allowed(environ)
        if status == 401:
            return _plain(start_response, "401 Unauthorized", b"metrics need loopback, an admin token or the metrics token\n",
                          [("WWW-Authenticate", 'Bearer realm="BaluPi metrics"')])
        if status == 403:
            return _plain(start_response, "403 Forbidden", b"metrics need the admin role\n")
        body = generate_latest(self.registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [] if method == "HEAD" else [body]


def _plain(start_response: Callable, status: str, body: bytes, extra: list | None = None) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                            *(extra or [])])
    return [body]
