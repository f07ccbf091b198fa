"""Starting servers for the benchmarks: a free port, the ready line, "answers yet?", a clean stop.

Every benchmark starts its servers (BaluPi, the simulated NAS, rclone, nginx, stock WsgiDAV) as
subprocesses on 127.0.0.1 and must know when they answer and stop them whatever happens. These are
the one copy of those steps; each caller names the exception its own command reports (a benchmark
that prints a failed row raises its own error, a script that gives up raises SystemExit).
"""

from __future__ import annotations

import http.client
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable

__all__ = ["ServerFailed", "free_port", "read_ready_line", "stop_process_group", "wait_until_answers"]

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.1


class ServerFailed(Exception):
    """A server did not start or stopped answering; the message says why."""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 nothing listens on right now (TCP, or UDP with ``socket.SOCK_DGRAM``)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _no_log() -> str:
    return ""


def wait_until_answers(
    port: int,
    *,
    method: str = "GET",
    path: str = "/",
    headers: dict[str, str] | None = None,
    process: subprocess.Popen | None = None,
    accept: Callable[[int], bool] = lambda status: status < 500,
    timeout_s: float = START_TIMEOUT_S,
    name: str = "the server",
    log_tail: Callable[[], str] = _no_log,
    error: type[BaseException] = ServerFailed,
) -> None:
    """Poll ``method path`` on 127.0.0.1:``port`` until the status is one ``accept`` takes.

    Raises ``error`` as soon as ``process`` has exited, or after ``timeout_s``; the message names
    the last answer (or connection error) and ends with ``log_tail()``.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise error(f"{name} exited with {process.returncode} before answering; log: {log_tail()}")
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=2)
        try:
            conn.request(method, path, headers=headers or {})
            status = conn.getresponse().status
            if accept(status):
                return
            last = f"{method} {path} answered {status}"
        except OSError as exc:
            last = str(exc)
        finally:
            conn.close()
        time.sleep(POLL_INTERVAL_S)
    raise error(f"{name} did not answer within {timeout_s:.0f} s ({last}); log: {log_tail()}")


def read_ready_line(
    process: subprocess.Popen,
    *,
    timeout_s: float = START_TIMEOUT_S,
    name: str = "the server",
    log_tail: Callable[[], str] = _no_log,
    error: type[BaseException] = ServerFailed,
) -> str:
    """The first line ``process`` writes to its stdout pipe (a simulator's JSON "ready" line).

    Raises ``error`` when the process exits first or nothing comes within ``timeout_s``.
    """
    assert process.stdout is not None, "start the process with stdout=subprocess.PIPE"
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise error(f"{name}: no ready line within {timeout_s:.0f} s; log: {log_tail()}")
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                process.poll()
                raise error(f"{name} exited ({process.returncode}); log: {log_tail()}")
            buf += chunk
    return buf.decode()


def stop_process_group(process: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, a grace of ``timeout_s``, then SIGKILL to the whole process group.

    The process must lead its own group (``start_new_session=True``), so nothing it started
    (nginx's workers, rclone's children) outlives it.
    """
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        pass
