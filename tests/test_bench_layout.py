"""`bench` is a package run from the repository root, and its servers start through one helper."""

from __future__ import annotations

import http.server
import re
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
