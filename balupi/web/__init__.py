"""The dashboard: static files from inside the package, served at `/` (the page) and `/ui/` (its
script, style sheet and icon). No build step, nothing from the internet; every figure the page
shows it asks of the JSON API (`/api/`), with the token from POST /api/auth/login.

Headers: ETags, so a phone re-downloads nothing unchanged; the Content-Security-Policy (same-origin
scripts, styles, images and fetches only: the page has no inline script or style), no sniffing and
no framing come from `balupi.websec.WebGuard`, like every answer outside /dav/.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Callable, Iterable

STATIC = "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

class StaticFiles:
    """The package's static files, read once (a few tens of KB) and answered from memory."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        root = resources.files(__package__).joinpath(STATIC)
        for item in root.iterdir():
            suffix = "." + item.name.rsplit(".", 1)[-1]
            if item.is_file() and suffix in CONTENT_TYPES:
                body = item.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                self.files[item.name] = (body, CONTENT_TYPES[suffix], etag)

    def total_bytes(self) -> int:
        return sum(len(body) for body, _, _ in self.files.values())

    def serve(self, name: str, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"].upper()
        found = self.files.get(name)
        if found is None:
            return _plain(start_response, "404 Not Found", b"no such file\n")
        if method not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", b"GET only\n", [("Allow", "GET, HEAD")])
        body, content_type, etag = found
        headers = [("ETag", etag), ("Cache-Control", "no-cache")]  # CSP and the rest: balupi.websec.WebGuard
        if environ.get("HTTP_IF_NONE_MATCH") == etag:
            start_response("304 Not Modified", headers)
            return []
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers])
        return [] if method == "HEAD" else [body]

    def assets(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """The WSGI app mounted at /ui: one flat folder of files."""
        name = environ.get("PATH_INFO", "/").lstrip("/")
        if "/" in name or name == "index.html":
            return _plain(start_response, "404 Not Found", b"no such file\n")
        return self.serve(name, environ, start_response)

    def page(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        return self.serve("index.html", environ, start_response)


def wants_json(environ: dict) -> bool:
    """A script asking `/` for JSON (Accept: application/json and not text/html) gets the pointer
    to /dav/ and /api/ it always got; a browser gets the page."""
    accept = environ.get("HTTP_ACCEPT", "")
    return "application/json" in accept and "text/html" not in accept


def _plain(start_response: Callable, status: str, body: bytes, extra: list | None = None) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                            *(extra or [])])
    return [body]
