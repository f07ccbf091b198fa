"""Prometheus metrics at /metrics (issue 11, item 4): parsed with prometheus_client's own parser and
checked against the API; who may read them."""

from __future__ import annotations

import io
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.authkit import api, dav
from tests.dashkit import stack_with_plug
from tests.davkit import listing, wait_downloads_idle
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

ALICE = (NAS_USER, NAS_PASSWORD)
FILES = {"/music/song.flac": b"la " * 50_000, "/docs/a.txt": b"alpha\n" * 100}


def scrape(url: str, **kwargs) -> dict[tuple[str, tuple], float]:
    response = requests.get(url + "/metrics", timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")  # the text exposition format
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, metric: str, /, **labels) -> float:
    return samples[(metric, tuple(sorted((k, str(v)) for k, v in labels.items())))]


@pytest.fixture
def rig(stack_factory, tmp_path):
    ps = stack_with_plug(stack_factory, tmp_path, FILES, power_w=3600.0)  # 1 Wh a second: today's energy moves
    yield ps
    ps.plug.stop()


def test_metrics_parse_and_agree_with_the_api(rig):
    stack = rig.stack
    listing(stack, "/")
    listing(stack, "/music")
    stack.suspend_nas()
    assert dav(stack, "GET", "/music/song.flac", auth=ALICE).status_code == 200  # a miss: wakes the NAS
    wait_downloads_idle(stack.app)
    for _ in range(3):
        assert dav(stack, "GET", "/music/song.flac", auth=ALICE).status_code == 200  # hits
    assert dav(stack, "PUT", "/docs/new.txt", auth=ALICE, data=b"x" * 10).status_code in (201, 204)
    time.sleep(2.1)
    stack.app.energy.poll_all(wait=True)  # a second reading: energy in the ledger

    samples = scrape(stack.server.url)
    plug = {"plug": rig.plug_id, "name": "NAS", "role": "nas"}
    current = api(stack, "GET", "/energy/current", auth=ALICE).json()["devices"][0]
    assert value(samples, "balupi_plug_power_watts", **plug) == current["power_w"] == 3600.0
    assert value(samples, "balupi_plug_voltage_volts", **plug) == current["voltage_v"]
    assert value(samples, "balupi_plug_current_amperes", **plug) == current["current_a"]
    assert value(samples, "balupi_plug_up", **plug) == 1.0
    assert value(samples, "balupi_plug_polls_total", **plug) >= 2
    assert value(samples, "balupi_plug_poll_errors_total", **plug) == 0
    assert value(samples, "balupi_plug_poll_latency_seconds", **plug) > 0

    summary = api(stack, "GET", "/energy/summary", auth=ALICE).json()
    assert summary["today"]["energy_wh"] > 0
    assert value(samples, "balupi_energy_consumed_joules", period="today") == pytest.approx(
        summary["today"]["energy_wh"] * 3600, abs=0.01 * 3600)
    assert value(samples, "balupi_energy_cost", period="today", currency=summary["currency"]) == pytest.approx(
        summary["today"]["cost_cents"] / 100, abs=0.0001)
    assert value(samples, "balupi_plug_energy_joules_total", **plug) >= summary["today"]["energy_wh"] * 3600 - 36

    nas = api(stack, "GET", "/nas/status", auth=ALICE).json()
    assert value(samples, "balupi_nas_state", state=nas["nas_state"]) == 1.0
    assert sum(v for (n, _), v in samples.items() if n == "balupi_nas_state") == 1.0
    wakes = api(stack, "GET", "/nas/wakes", auth=ALICE).json()
    for kind, count in wakes["by_kind"].items():
        assert value(samples, "balupi_nas_wakes_total", cause=kind) == count
    assert value(samples, "balupi_nas_wakes_total", cause="request") == 1
    assert value(samples, "balupi_nas_awake_seconds_total") > 0

    cache = api(stack, "GET", "/cache/stats", auth=ALICE).json()
    assert value(samples, "balupi_cache_hits_total") == cache["requests"]["hits"] >= 3
    assert value(samples, "balupi_cache_misses_total") == cache["requests"]["misses"] >= 1
    assert value(samples, "balupi_served_bytes_total", source="cache") == cache["requests"]["hit_bytes"]
    assert value(samples, "balupi_served_bytes_total", source="nas") == cache["requests"]["miss_bytes"]
    assert value(samples, "balupi_cache_files") == cache["total_files"]
    assert value(samples, "balupi_cache_size_bytes") == pytest.approx(cache["total_size_mb"] * 1e6, abs=1000)
    assert value(samples, "balupi_cache_limit_bytes") == cache["max_size_gb"] * 1e9
    assert value(samples, "balupi_sync_pending_changes") == cache["pending_changes"]
    assert value(samples, "balupi_sync_conflicts") == cache["conflicts"]["count"]
    assert value(samples, "balupi_sync_errors_total") == 0
    assert value(samples, "balupi_http_request_duration_seconds_count", method="GET") >= 5
    assert value(samples, "balupi_http_request_duration_seconds_count", method="PUT") == 1
    assert value(samples, "process_resident_memory_bytes") > 10e6
    plugins = api(stack, "GET", "/plugins", auth=ALICE).json()
    assert value(samples, "balupi_plugin_events_dropped_all_total") == plugins["dropped_events"]


def call(app, remote: str, authorization: str | None = None) -> tuple[str, bytes]:
    """The /metrics WSGI app asked as if from `remote` (no packet leaves the machine)."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": remote, "wsgi.input": io.BytesIO()}
    if authorization:
        environ["HTTP_AUTHORIZATION"] = authorization
    got = {}

    def start_response(status, headers, exc_info=None):
        got["status"] = status

    body = b"".join(app.metrics.wsgi(environ, start_response))
    return got["status"], body


def test_metrics_need_loopback_an_admin_token_or_the_scrape_token(stack_factory, tmp_path):
    from tests.authkit import BOB, BOB_PASSWORD, multi_user_stack

    stack = multi_user_stack(stack_factory, tmp_path, FILES, metrics_token="scrape-secret-123")
    app = stack.app
    assert call(app, "127.0.0.1")[0].startswith("200")
    assert call(app, "192.0.2.7")[0].startswith("401")
    assert call(app, "192.0.2.7", "Bearer wrong")[0].startswith("401")
    assert call(app, "192.0.2.7", "Basic YWxpY2U6YWxpY2UtcHc=")[0].startswith("401")  # never Basic
    status, body = call(app, "192.0.2.7", "Bearer scrape-secret-123")
    assert status.startswith("200") and b"balupi_nas_state" in body
    admin = api(stack, "POST", "/auth/login", json={"username": NAS_USER, "password": NAS_PASSWORD}).json()["access_token"]
    assert call(app, "192.0.2.7", f"Bearer {admin}")[0].startswith("200")
    user = api(stack, "POST", "/auth/login", json={"username": BOB, "password": BOB_PASSWORD}).json()["access_token"]
    assert call(app, "192.0.2.7", f"Bearer {user}")[0].startswith("403")
    assert requests.post(stack.server.url + "/metrics", timeout=10).status_code == 405


def test_request_histogram_exposes_what_prometheus_clients_histogram_does():
    """The lock-free per-thread histogram (decision 195) against prometheus_client's own Histogram:
    the same observations from several threads, bucket edges included, give the same exposition
    (the sums to 1e-9, the created times aside), and invented methods fold into OTHER the same way."""
    import random
    import re
    import threading

    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from balupi.metrics import LATENCY_BUCKETS_S, RequestHistogram

    name, doc = "balupi_http_request_duration_seconds", "Time to answer."
    theirs_registry, ours_registry = CollectorRegistry(auto_describe=False), CollectorRegistry(auto_describe=False)
    theirs = Histogram(name, doc, ["method"], registry=theirs_registry, buckets=LATENCY_BUCKETS_S)
    ours = RequestHistogram(name, doc, LATENCY_BUCKETS_S)
    ours_registry.register(ours)
    assert generate_latest(theirs_registry) == generate_latest(ours_registry)  # nothing observed yet

    their_children: dict[str, object] = {}

    def their_observe(method: str, seconds: float) -> None:  # what Metrics.observe_request did before
        child = their_children.get(method)
        if child is None:
            if len(their_children) > 64:
                method = "OTHER"
            child = their_children.setdefault(method, theirs.labels(method))
        child.observe(seconds)

    rng = random.Random(195)
    seconds = [rng.choice(LATENCY_BUCKETS_S) for _ in range(300)] + [0.0, 1e-9, 61.0, 0.0050001]
    seconds += [rng.expovariate(5) for _ in range(3000)]
    lock = threading.Lock()

    def work(methods: list[str]) -> None:
        for value in seconds:
            method = rng.choice(methods)
            with lock:  # which methods fold into OTHER depends on the order of first sight: the same in both
                ours.observe(method, value)
                their_observe(method, value)

    threads = [threading.Thread(target=work, args=(["GET", "PUT", "PROPFIND"],)) for _ in range(4)]
    threads.append(threading.Thread(target=work, args=([f"M{i}" for i in range(70)],)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    def comparable(text: bytes) -> str:
        text = re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", text.decode())
        return re.sub(r"(_sum\{[^}]*\}) (\S+)", lambda m: f"{m.group(1)} {float(m.group(2)):.9f}", text)

    ours_text = comparable(generate_latest(ours_registry))
    assert 'method="OTHER"' in ours_text and 'le="+Inf",method="GET"' in ours_text
    assert sorted(ours_text.splitlines()) == sorted(comparable(generate_latest(theirs_registry)).splitlines())
