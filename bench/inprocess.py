"""Calling BaluPi's WSGI app in process, without a server: the in-process benchmarks' one request
helper (`propfind_cpu`, `plugin_overhead`)."""

from __future__ import annotations

import io
import sys


def call(app, method: str, path: str, body: bytes = b"", *, keep_body: bool = True,
         **headers: str) -> tuple[str, bytes | int]:
    """(status line, the answer's body) of one request; with keep_body=False the body's size
    instead, so a large answer is never held whole."""
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), "wsgi.errors": sys.stderr,
        "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0),
    }
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    status: list[str] = []
    result = app(environ, lambda s, h, exc_info=None: status.append(s))
    try:
        if keep_body:
            answer: bytes | int = b"".join(result)
        else:
            answer = sum(len(block) for block in result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return status[0], answer
