"""The floor servers of the WebDAV benchmark (`bench/cheroot_floor.py`) answer as the benchmark expects."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys

import pytest

from bench.servers import free_port, read_ready_line, stop_process_group
from tests.helpers import REPO_ROOT


@pytest.mark.parametrize("mode,extra", [("plain", []), ("balupi", []),
                                        ("balupi", ["--work", "file,sqlite,python", "--gate", "1", "--switch-interval", "0.01"])])
def test_floor_answers_get_with_the_file_and_refuses_writes(tmp_path, mode, extra):
    body = os.urandom(4096)
    (tmp_path / "small.bin").write_bytes(body)
    port = free_port()
    argv = [sys.executable, str(REPO_ROOT / "bench" / "cheroot_floor.py"), "--mode", mode, "--port", str(port),
            "--file", str(tmp_path / "small.bin"), "--python-us", "50", *extra]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert read_ready_line(process, timeout_s=30, name="the floor").strip() == "ready"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(3):  # keep-alive: the same connection answers again
            conn.request("GET", "/small.bin", headers={"Authorization": "Basic eDp5"})
            answer = conn.getresponse()
            assert (answer.status, answer.read()) == (200, body)
            assert answer.getheader("Content-Length") == "4096" and answer.getheader("ETag")
        conn.request("HEAD", "/anything")
        answer = conn.getresponse()
        assert (answer.status, answer.read(), answer.getheader("Content-Length")) == (200, b"", "4096")
        conn.request("PUT", "/small.bin", body=b"x")
        answer = conn.getresponse()
        assert (answer.status, answer.getheader("Allow")) == (405, "GET, HEAD")
        answer.read()
        conn.close()
    finally:
        stop_process_group(process)
