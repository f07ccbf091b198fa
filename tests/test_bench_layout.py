"""`bench` is a package run from the repository root, and its servers start through one helper."""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import sys
import threading

import pytest

from bench import servers
from tests.helpers import REPO_ROOT

REPLAY_OPTIONS = ("--quick", "--only", "--seed", "--scenarios", "--time-scale", "--rclone-max-age-h", "--tmpdir",
                  "--keep", "--no-docs", "--reanalyse", "--balupi-source")


def test_no_benchmark_edits_sys_path():
    offenders = [str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "bench").rglob("*.py")
                 if "sys.path.insert" in p.read_text()]
    assert offenders == []


def test_the_replay_is_a_package_with_its_options():
    assert not list((REPO_ROOT / "bench").glob("replay*.py"))
    answer = subprocess.run([sys.executable, "-m", "bench.replay", "--help"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("usage: python -m bench.replay")
    assert [option for option in REPLAY_OPTIONS if option not in answer.stdout] == []


@pytest.mark.parametrize("doc", ["bench/README.md", "docs/performance.md", "docs/reliability.md", "README.md"])
def test_documented_bench_commands_name_modules_that_exist(doc):
    modules = set(re.findall(r"python -m (bench(?:\.\w+)+)", (REPO_ROOT / doc).read_text()))
    for module in modules:
        path = REPO_ROOT.joinpath(*module.split("."))
        assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), module
    assert not re.search(r"python3? bench/\w+\.py", (REPO_ROOT / doc).read_text())


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def loopback_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_wait_until_answers_returns_once_the_status_is_accepted(loopback_server):
    port = loopback_server.server_address[1]
    servers.wait_until_answers(port, path="/api/health", accept=lambda status: status == 200, timeout_s=5)
    _Answer.status = 503
    try:
        with pytest.raises(servers.ServerFailed, match="answered 503"):
            servers.wait_until_answers(port, path="/api/health", timeout_s=0.5, name="the test server")
    finally:
        _Answer.status = 200


def test_wait_until_answers_fails_at_once_when_the_process_died():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait(30)
    with pytest.raises(RuntimeError, match="exited with 3 before answering; log: its log"):
        servers.wait_until_answers(servers.free_port(), process=process, timeout_s=30, name="the test server",
                                   log_tail=lambda: "its log", error=RuntimeError)


def test_read_ready_line_and_stop_process_group():
    code = "import time; print('{\"port\": 1}', flush=True); time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert servers.read_ready_line(process, timeout_s=30) == '{"port": 1}\n'
    finally:
        servers.stop_process_group(process, timeout_s=5)
    assert process.returncode is not None
    process.stdout.close()


def test_read_ready_line_names_a_process_that_exits_silently():
    process = subprocess.Popen([sys.executable, "-c", "pass"], stdout=subprocess.PIPE)
    try:
        with pytest.raises(servers.ServerFailed, match="the sim exited"):
            servers.read_ready_line(process, timeout_s=30, name="the sim")
    finally:
        process.wait(30)
        process.stdout.close()


# ---------------------------------------------------------------- dav_bench's photo-grid load (no benchmark runs)


class _Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str | None]] = []

    def do_GET(self):  # noqa: N802
        _Recorder.seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_dav_bench_takes_the_number_of_thumbnails_and_the_order_of_servers():
    from bench import dav_bench

    assert dav_bench.parse_args(["--thumbs", "40", "--only", "stock"]).thumbs == 40
    assert dav_bench.parse_args(["--only", "stock"]).thumbs is None
    order = dav_bench.parse_args(["--only", "rclone,stock,rclone"]).kinds
    assert [kind.key for kind in order] == ["rclone", "stock"]  # measured in the order named, each once
    assert dav_bench.Plan.full().thumbs == 500
    assert dav_bench.Plan.quick().thumbs < dav_bench.Plan.full().thumbs
    with pytest.raises(SystemExit):
        dav_bench.parse_args(["--thumbs", "0"])


def test_dav_bench_makes_distinct_thumbnails(tmp_path):
    from bench import dav_bench

    plan = dav_bench.Plan(big_bytes=10, entries=2, get_runs=1, propfind_runs=1, wrk_duration_s=1, thumbs=12)
    dav_bench.make_data(tmp_path / "data", plan)
    names = dav_bench.thumb_names(plan.thumbs)
    assert names[0] == "thumbs/t000.jpg" and names[-1] == "thumbs/t011.jpg"
    bodies = [(tmp_path / "data" / name).read_bytes() for name in names]
    assert {len(b) for b in bodies} == {dav_bench.SMALL_FILE_BYTES}
    assert len(set(bodies)) == plan.thumbs
    assert sorted(p.name for p in (tmp_path / "data" / "thumbs").iterdir()) == [n.split("/")[1] for n in names]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (scripts/test-deps.sh installs it)")
def test_the_round_robin_script_asks_for_every_file_in_turn_with_the_login(tmp_path):
    from bench import dav_bench

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _Recorder.seen = []
    paths = [f"/dav/thumbs/t{i:03d}.jpg" for i in range(5)]
    plan = dav_bench.Plan(big_bytes=0, entries=0, get_runs=1, propfind_runs=1, wrk_duration_s=1,
                          wrk_threads=1, wrk_connections=1)
    try:
        script = dav_bench.write_round_robin_script(paths, plan.wrk_threads, tmp_path / "rr.lua")
        wrk = dav_bench.run_wrk(f"http://127.0.0.1:{server.server_address[1]}{paths[0]}", plan, "Basic dTpw", script)
    finally:
        server.shutdown()
        server.server_close()
    seen = list(_Recorder.seen)
    assert wrk["requests"] >= 2 * len(paths) and wrk["non_2xx"] == 0
    assert {auth for _, auth in seen} == {"Basic dTpw"}
    asked = [path for path, _ in seen]
    # one connection, one thread: each request asks for the path after the one before, round the list
    assert set(asked) == set(paths)
    assert all(asked[i + 1] == paths[(paths.index(asked[i]) + 1) % len(paths)] for i in range(len(asked) - 1))


def test_the_round_robin_script_refuses_a_path_it_cannot_quote(tmp_path):
    from bench import dav_bench

    with pytest.raises(ValueError):
        dav_bench.write_round_robin_script(['/dav/a"b.jpg'], 2, tmp_path / "rr.lua")
    with pytest.raises(ValueError):
        dav_bench.write_round_robin_script([], 2, tmp_path / "rr.lua")


def test_the_table_puts_both_4k_loads_side_by_side():
    from bench import dav_bench

    plan = dav_bench.Plan.full()
    ok = {"status": "ok"}
    servers = {
        "stock": {**ok, "small_gets_per_s": 100.0, "thumb_gets_per_s": 80.0, "thumb_get_cpu_us": 900.0},
        "rclone": {**ok, "small_gets_per_s": 400.0, "thumb_gets_per_s": 300.0, "thumb_get_cpu_us": 250.0},
        "balupi": {**ok, "small_gets_per_s": 300.0, "thumb_gets_per_s": 120.0, "thumb_get_cpu_us": 700.0},
    }
    report = {"date": "d", "machine": {"cpus": 2, "load_before": [0], "load_after": [0]}, "quick": False,
              "balupi_env": {}, "servers": servers, "pi_class": True,
              "ratios": dav_bench.ratios(servers, dav_bench.TARGETS_PI)}
    text = dav_bench.markdown(report, plan)
    assert "| 4 KiB GETs over 500 files, /s (wrk, 16 connections) | 80 | 300 | 120 |" in text
    assert "| server CPU us per 4 KiB GET over 500 files | 900 | 250 | 700 |" in text
    assert "- BaluPi 4 KiB GETs/s over many files: 1.50 x stock WsgiDAV, 0.40 x rclone VFS full" in text
    assert "4 KiB GETs/s over many files vs rclone (the same target): 0.40 (target >= 0.5): MISSED" in text
    assert "4 KiB GETs/s vs rclone: 0.75 (target >= 0.5): met" in text
