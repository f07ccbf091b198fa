"""The JSON API at /api/: endpoints of issue 2, JSON errors with `detail`, HEAD, background CPU sample."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from balupi import __version__
from balupi import jobs as jobs_module
from balupi import system as system_module
from balupi.api import ApiError
from balupi.scheduler import TICK_S

SYSTEM_STATUS_FIELDS = {
    "cpu_percent", "cpu_temp_celsius", "memory_total_mb", "memory_used_mb", "memory_percent",
    "disk_total_gb", "disk_used_gb", "disk_percent", "uptime_seconds", "load_avg",
}  # fmt: skip


@pytest.fixture
def server(running_server):
    return running_server()


def assert_json_error(response, status: int) -> dict:
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    return body


# -- the endpoints -------------------------------------------------------------------------------


def test_health_reports_service_version_and_an_unconfigured_nas(server, http):
    body = http.get(server.url + "/api/health").json()
    assert body["status"] == "ok"
    assert body["service"] == "balupi"
    assert body["version"] == __version__
    assert body["cache_enabled"] is True
    assert body["energy_enabled"] is False
    assert body["nas"] == {
        "configured": False,
        "state": "unconfigured",
        "online": False,
        "message": "no NAS configured: serving only what the cache holds",
        "state_words": "unconfigured",
        "problem": None,
        "access": "the Pi itself only (127.0.0.1); set local_admin_password (balupi setup) or a NAS to let others in",
    }


def test_system_status_has_every_field_of_the_issue(server, http):
    body = http.get(server.url + "/api/system/status").json()
    assert SYSTEM_STATUS_FIELDS <= set(body)
    assert 0 <= body["memory_used_mb"] <= body["memory_total_mb"]
    assert 0 <= body["disk_used_gb"] <= body["disk_total_gb"]
    assert 0 <= body["disk_percent"] <= 100
    assert body["uptime_seconds"] > 0
    assert len(body["load_avg"]) == 3
    assert body["cpu_temp_celsius"] is None or isinstance(body["cpu_temp_celsius"], float)


def test_disk_figures_are_of_the_cache_volume(server):
    assert server.app.system.disk_path == server.app.settings.cache_dir


def test_system_status_takes_cpu_from_the_background_sample(monkeypatch, running_server, http):
    calls: list[tuple[str, object]] = []

    def fake_cpu_percent(interval=None, percpu=False):
        calls.append((threading.current_thread().name, interval))
        return 42.5

    monkeypatch.setattr(system_module.psutil, "cpu_percent", fake_cpu_percent)
    monkeypatch.setattr(jobs_module, "SYSTEM_SAMPLE_INTERVAL_S", TICK_S)
    server = running_server()
    jobs = {job["name"]: job for job in http.get(server.url + "/api/system/jobs").json()["jobs"]}
    assert jobs["system-sample"]["interval_s"] == TICK_S

    deadline = time.monotonic() + 20
    while http.get(server.url + "/api/system/status").json()["cpu_percent"] != 42.5:
        assert time.monotonic() < deadline, "the background sample never arrived"
        time.sleep(0.05)
    for _ in range(3):
        http.get(server.url + "/api/system/status")
    assert all(interval is None for _, interval in calls)  # never a blocking sample
    threads = {name for name, _ in calls}
    assert "balupi-job-system-sample" in threads
    assert threads <= {"balupi-job-system-sample", "MainThread"}  # never a request thread


def test_jobs_lists_the_scheduled_jobs(server, http):
    jobs = http.get(server.url + "/api/system/jobs").json()["jobs"]
    sample = next(job for job in jobs if job["name"] == "system-sample")
    assert {"interval_s", "runs", "skipped", "running", "last_started", "last_duration_s", "last_error"} <= set(sample)


def test_routes_are_a_table_of_module_level_handlers_callable_with_a_context(server):
    from balupi.api import Request
    from balupi.api import system as system_api
    from balupi.api.routes import ROUTES

    assert len({(r.method, r.path) for r in ROUTES}) == len(ROUTES)
    assert [r for r in ROUTES if "<locals>" in r.handler.__qualname__] == []  # no closures
    served = [(r.method, r.path) for r in server.app.api.endpoints()]
    assert served[:len(ROUTES)] == [(r.method, r.path) for r in ROUTES]  # then plugins' routes, if any
    route = server.app.api.find("GET", "/system/jobs")
    assert route.handler is system_api.jobs and not route.admin_only and not route.public
    assert server.app.api.find("DELETE", "/system/jobs") is None
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/system/jobs", "QUERY_STRING": ""}
    body = system_api.jobs(Request(environ, {}, server.app.api_context))
    assert "system-sample" in {job["name"] for job in body["jobs"]}


def test_nas_status_without_a_nas(server, http):
    body = http.get(server.url + "/api/nas/status").json()
    assert body["configured"] is False
    assert body["online"] is False
    assert body["nas_state"] == "unconfigured"
    assert body["wol_configured"] is False
    assert body["magic_packets_sent"] == 0


def test_wol_without_a_mac_address_is_a_json_conflict(server, http):
    body = assert_json_error(http.post(server.url + "/api/nas/wol"), 409)
    assert "BALUPI_NAS_MAC_ADDRESS" in body["detail"]


def test_a_trailing_slash_is_the_same_endpoint(server, http):
    assert http.get(server.url + "/api/health/").json()["status"] == "ok"


# -- errors --------------------------------------------------------------------------------------


def test_unknown_route_is_a_json_404(server, http):
    body = assert_json_error(http.get(server.url + "/api/no/such/thing"), 404)
    assert body["detail"] == "no such endpoint: /no/such/thing"


def test_wrong_method_is_a_json_405_with_allow(server, http):
    response = http.delete(server.url + "/api/system/status")
    body = assert_json_error(response, 405)
    assert response.headers["Allow"] == "GET"
    assert "DELETE" in body["detail"]
    assert http.get(server.url + "/api/nas/wol").headers["Allow"] == "POST"


def test_a_handler_exception_is_a_json_500_without_traceback(server, http, caplog):
    @server.app.api.route("GET", "/test/explode")
    def explode(request):
        raise KeyError("secret internals")

    response = http.get(server.url + "/api/test/explode")
    assert assert_json_error(response, 500) == {"detail": "internal server error"}
    assert "Traceback" not in response.text and "secret internals" not in response.text
    logged = [r for r in caplog.records if r.name == "balupi.api" and r.levelno == logging.ERROR]
    assert logged and logged[0].exc_info is not None  # the traceback goes to the log instead


def test_api_errors_carry_status_detail_headers_and_extra_fields(server, http):
    @server.app.api.route("GET", "/test/busy")
    def busy(request):
        raise ApiError(503, "the NAS is waking", {"Retry-After": "30"}, retry_after_s=30)

    response = http.get(server.url + "/api/test/busy")
    assert assert_json_error(response, 503) == {"detail": "the NAS is waking", "retry_after_s": 30}
    assert response.headers["Retry-After"] == "30"


def test_request_bodies_and_query_parameters_are_checked(server, http):
    @server.app.api.route("POST", "/test/echo")
    def echo(request):
        return {"body": request.json_object(), "n": request.query_int("n", 0)}

    url = server.url + "/api/test/echo"
    assert http.post(url + "?n=3", json={"a": 1}).json() == {"body": {"a": 1}, "n": 3}
    json_type = {"Content-Type": "application/json"}
    assert "not valid JSON" in assert_json_error(http.post(url, data=b"{nope", headers=json_type), 400)["detail"]
    assert assert_json_error(http.post(url, json=[1, 2]), 400)["detail"] == "request body must be a JSON object"
    assert "'n'" in assert_json_error(http.post(url + "?n=many", json={}), 400)["detail"]
    too_big = http.post(url, data=b" " * ((1 << 20) + 1), headers=json_type)
    assert "larger than" in assert_json_error(too_big, 413)["detail"]


def test_status_tuples_from_handlers(server, http):
    @server.app.api.route("POST", "/test/create")
    def create(request):
        return 201, {"created": True}

    response = http.post(server.url + "/api/test/create")
    assert (response.status_code, response.json()) == (201, {"created": True})


# -- HEAD ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/health", "/api/system/status", "/"])
def test_head_answers_like_get_without_a_body(server, http, path):
    json_please = {"Accept": "application/json"}  # "/" answers the dashboard to browsers, JSON to scripts
    get = http.get(server.url + path, headers=json_please)
    head = http.head(server.url + path, headers=json_please)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Type"] == "application/json"
    assert int(head.headers["Content-Length"]) > 0
    assert get.status_code == 200


def test_api_responses_are_not_cached(server, http):
    assert http.get(server.url + "/api/health").headers["Cache-Control"] == "no-store"
