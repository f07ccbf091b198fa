"""The floor of a small request on cheroot: a server answering every GET with the same 4 KiB.

Issue 14 asks, for a target BaluPi misses, for the profile that shows why a request cannot cost less
with cheroot. These servers answer the benchmark's 4 KiB GET with nothing behind the WSGI call (no
login, index, file, security headers or metrics), so what they cost per request is what any
application on that server pays before its first line runs:

- `--mode plain`: cheroot's own `wsgi.Server` as a WSGI application gets it (request parser, gateway,
  keep-alive through its selector thread), with BaluPi's thread count;
- `--mode balupi`: BaluPi's server exactly as `balupi.server.Server` sets it up (the head gate, the
  hot path of `httpio.FastConnection`, the keep-alive follow-up, the per-client limits), with the
  constant application in place of BaluPi's. Its paths are not under `/dav/`, so its answers do not
  pass the hot gate (decision 210, WebDAV's only): an application without system calls has no GIL
  hand-overs for the gate to save.

The body is read once from `--file` (the benchmark's small.bin); HEAD gets the head alone, other
methods 405. Prints "ready" once listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from cheroot import wsgi

from balupi.httpfields import http_date
from balupi.settings import load_settings


def per_request_work(kinds: list[str], path: Path, python_us: float):
    """What the app does per GET before answering, to see what each kind of work costs under a CPU
    quota: "file" opens, stats, reads and closes `path` (four system calls that each let another
    worker take the GIL); "sqlite" runs one statement on a per-thread SQLite connection (sqlite3
    releases the GIL around each step); "python" spends about `python_us` of pure Python (calibrated
    at start, unthrottled)."""
    steps = []
    if "file" in kinds:
        def file_step():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fstat(fd)
                os.read(fd, 4096)
            finally:
                os.close(fd)
        steps.append(file_step)
    if "sqlite" in kinds:
        local = threading.local()
        db_path = str(path.parent / ".floor.sqlite3")

        def sqlite_step():
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = sqlite3.connect(db_path, check_same_thread=False)
            conn.execute("PRAGMA data_version").fetchone()
        steps.append(sqlite_step)
    if "python" in kinds:
        def spin(n: int) -> int:
            total = 0
            for i in range(n):
                total += i * i % 7
            return total
        loops = 10_000
        started = time.perf_counter()
        spin(loops)
        loops = max(1, int(loops * python_us / 1e6 / (time.perf_counter() - started)))
        steps.append(lambda: spin(loops))
    return steps


def constant_app(body: bytes, mtime: float, steps=()):
    """A WSGI app answering GET with `body` and the headers a cached file's GET carries."""
    headers = (
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(len(body))),
        ("Last-Modified", http_date(mtime)),
        ("ETag", f'"{len(body):x}-{int(mtime * 1e6):x}"'),
        ("Accept-Ranges", "bytes"),
    )
    refused = ("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0")])

    def app(environ, start_response):
        method = environ["REQUEST_METHOD"]
        if method not in ("GET", "HEAD"):
            start_response(*refused)
            return [b""]
        for step in steps:
            step()
        start_response("200 OK", list(headers))
        return [body if method == "GET" else b""]

    return app


def gated(app, width: int):
    """`app` run by at most `width` threads at once; the others wait on a semaphore, not on the GIL."""
    gate = threading.BoundedSemaphore(width)

    def gated_app(environ, start_response):
        with gate:
            return app(environ, start_response)

    return gated_app


class _NoDatabase:
    """What `Server.after_turn` hands its connection back to: the floor has no database."""

    def release_thread(self) -> None:
        pass


def balupi_httpd(app, port: int):
    """BaluPi's cheroot server as `balupi.server.Server` builds it, serving `app`, on 127.0.0.1:port."""
    from balupi.server import Server

    settings = load_settings(env={"BALUPI_HOST": "127.0.0.1", "BALUPI_PORT": str(port)}, cwd=Path("/"),
                             prepare_dirs=False)
    stand_in = SimpleNamespace(settings=settings, wsgi=app, metrics=None, db=_NoDatabase())
    server = Server(stand_in)
    return server.httpd, server.limits.watchdog


def plain_httpd(app, port: int):
    threads = load_settings(env={}, cwd=Path("/"), prepare_dirs=False).server_threads
    return wsgi.Server(("127.0.0.1", port), app, numthreads=threads, server_name="cheroot-floor"), None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("plain", "balupi"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", type=Path, required=True, help="the body of every GET")
    parser.add_argument("--work", default="", help="comma-separated per-request work: file, sqlite, python")
    parser.add_argument("--python-us", type=float, default=200.0, help="with --work python: its length")
    parser.add_argument("--gate", type=int, default=0, help="at most this many requests run the app at once (0: no gate)")
    parser.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval, seconds")
    args = parser.parse_args(argv)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    stat = args.file.stat()
    steps = per_request_work([w for w in args.work.split(",") if w], args.file, args.python_us)
    app = constant_app(args.file.read_bytes(), stat.st_mtime, steps)
    if args.gate:
        app = gated(app, args.gate)
    httpd, watchdog = (balupi_httpd if args.mode == "balupi" else plain_httpd)(app, args.port)
    stopping = threading.Event()

    def on_signal(_signum, _frame):
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=httpd.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    httpd.prepare()
    if watchdog is not None:
        watchdog.start()
    print("ready", flush=True)
    httpd.serve()
    if watchdog is not None:
        watchdog.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
