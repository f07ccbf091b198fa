"""Browser-facing protections for every answer BaluPi gives: who may address it (`Host`), which
requests a foreign web page could forge (CSRF), and what a browser may do with an answer.

- `WebGuard` wraps the whole WSGI tree. A `Host` that is neither an IP address, `localhost`, the
  Pi's own name (`<hostname>`, `<hostname>.local`, `<hostname>.<DNS search domain>`) nor listed in
  `http_allowed_hosts` is refused
  with 421 (DNS rebinding needs a name the attacker controls; an IP literal cannot be rebound).
  Answers outside /dav/ carry `SECURITY_HEADERS` (nosniff, no framing, `CSP`); answers under /dav/
  carry `DAV_SECURITY_HEADERS` (nosniff, `CSP: sandbox`), and a file whose type a browser could
  run (anything not in `INERT_TYPES`) is sent as an attachment of type application/octet-stream,
  whatever type its uploader declared (WsgiDAV's own HTML listing of a folder is left as it is).
- `cross_site_problem(environ)` is what the API asks before a state-changing request: a body must
  be declared `application/json` (forms and text/plain cannot), and a request a browser marks as
  coming from another site (`Origin`, `Sec-Fetch-Site`) is refused.

`CSP` is the one policy for BaluPi's own pages (the API, the dashboard): same-origin scripts,
styles, images and fetches, nothing else, never framed.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Callable, Iterable

from balupi.answermemo import MEMO_KEY

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", CSP),
    ("Referrer-Policy", "same-origin"),
)
DAV_CSP = "sandbox; frame-ancestors 'none'"
DAV_SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", DAV_CSP),
)
DAV_PREFIX = "/dav"
_DAV_PREFIX_SLASH = DAV_PREFIX + "/"
DAV_ASSETS = DAV_PREFIX + "/:dir_browser/"  # WsgiDAV's own (read-only) styles and scripts of the listing
LISTING_KEY = "balupi.dav.listing"  # set while WsgiDAV's folder listing answers (see balupi.dav.app)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND"})
JSON_TYPES = frozenset({"application/json"})
ATTACHMENT_TYPE = "application/octet-stream"

# Types a browser shows but never runs: served inline with their type. Everything else a file on the
# share may be (HTML, SVG, XML, XSLT, JavaScript, CSS, PDF with scripts, unknown types a client
# declared...) goes out as an attachment.
INERT_TYPES = frozenset({
    "text/plain", "text/csv", "application/octet-stream", "application/json", "application/zip",
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp", "image/heic", "image/heif",
    "image/tiff", "image/x-icon", "image/vnd.microsoft.icon",
    "audio/mpeg", "audio/mp4", "audio/ogg", "audio/wav", "audio/x-wav", "audio/flac", "audio/aac", "audio/webm",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime", "video/x-matroska",
    "multipart/byteranges",
})


def media_type(value: str | None) -> str:
    """The bare `type/subtype` of a Content-Type value, in lower case ('' when there is none)."""
    return (value or "").split(";", 1)[0].split(",", 1)[0].strip().lower()


RESOLV_CONF = "/etc/resolv.conf"


def search_domains(path: str = RESOLV_CONF) -> list[str]:
    """The local DNS search domains (a home router's `fritz.box`, `home.arpa`, `lan`, ...)."""
    domains: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                words = line.split()
                if words and words[0] in ("search", "domain"):
                    domains += [w.lower().rstrip(".") for w in words[1:] if w.strip(".")]
    except OSError:
        pass
    return domains


@functools.lru_cache(maxsize=1)
def own_names() -> frozenset[str]:
    """The names this machine answers to without a setting: localhost, its host name, the name
    with `.local` (mDNS) and with each DNS search domain. No DNS query is made."""
    names = {"localhost"}
    try:
        host = socket.gethostname().strip().lower().rstrip(".")
    except OSError:
        host = ""
    if host:
        short = host.split(".", 1)[0]
        names |= {host, short, short + ".local"}
        names |= {f"{short}.{domain}" for domain in search_domains()}
    return frozenset(names)


def host_name(value: str) -> str:
    """The host part of a `Host` header value, without port or brackets, in lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


@functools.lru_cache(maxsize=256)
def host_allowed(value: str, allowed: tuple[str, ...]) -> bool:
    """Whether a request with `Host: value` is meant for this Pi (see the module docstring)."""
    if "*" in allowed:
        return True
    name = host_name(value)
    if not name:
        return True  # HTTP/1.0 without Host: no browser sends that
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
        return True
    except ValueError:
        pass
    if name in own_names() or name.endswith(".localhost"):
        return True
    return name in {a.strip().lower().rstrip(".") for a in allowed}


def same_origin(origin: str, environ: dict) -> bool:
    """Whether an `Origin` header names the scheme, host and port this request was sent to."""
    host = environ.get("HTTP_HOST", "")
    scheme = environ.get("wsgi.url_scheme", "http")
    if not host:
        return False
    default_port = {"http": "80", "https": "443"}.get(scheme, "")
    want = f"{scheme}://{host.lower()}"
    if want.endswith(":" + default_port):
        want = want[: -len(default_port) - 1]
    got = origin.strip().lower()
    if got.endswith(":" + default_port) and got.startswith(scheme + "://"):
        got = got[: -len(default_port) - 1]
    return got == want


def from_browser(environ: dict) -> bool:
    """A request a browser sent on a page's behalf (it carries `Origin` or `Sec-Fetch-*`)."""
    return "HTTP_ORIGIN" in environ or any(key.startswith("HTTP_SEC_FETCH_") for key in environ)


def cross_site_problem(environ: dict) -> tuple[int, str] | None:
    """Why a state-changing API request might be forged by another site: (status, reason), or None."""
    if environ.get("REQUEST_METHOD", "GET").upper() in SAFE_METHODS:
        return None
    declared = environ.get("CONTENT_TYPE", "")
    has_body = (environ.get("CONTENT_LENGTH") or "0").strip() not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ
    if (declared or has_body) and media_type(declared) not in JSON_TYPES:
        return 415, "requests that change things must send Content-Type: application/json"
    origin = environ.get("HTTP_ORIGIN")
    if origin is not None and not same_origin(origin, environ):
        return 403, "cross-site request refused (Origin is not this server)"
    site = environ.get("HTTP_SEC_FETCH_SITE")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return 403, "cross-site request refused (Sec-Fetch-Site)"
    return None


_SECURITY_NAMES = frozenset(name.lower() for name, _ in SECURITY_HEADERS + DAV_SECURITY_HEADERS)


def _with(headers: list[tuple[str, str]], extra: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """`headers` plus those of `extra` it does not set itself (a page may bring its own CSP)."""
    for name, _ in headers:
        if name.lower() in _SECURITY_NAMES:
            present = {n.lower() for n, _ in headers}
            return headers + [(n, v) for n, v in extra if n.lower() not in present]
    return headers + list(extra)


@functools.lru_cache(maxsize=128)
def _inert(content_type: str) -> bool:
    return media_type(content_type) in INERT_TYPES


def dav_file_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A /dav/ file's answer headers, with an active type replaced by an attachment."""
    ctype = next((value for name, value in headers if name.lower() == "content-type"), None)
    if ctype is None or _inert(ctype):
        return headers
    kept = [(n, v) for n, v in headers if n.lower() not in ("content-type", "content-disposition")]
    return kept + [("Content-Type", ATTACHMENT_TYPE), ("Content-Disposition", "attachment")]


class WebGuard:
    """WSGI middleware around the whole tree (see the module docstring)."""

    def __init__(self, app: Callable, allowed_hosts: Iterable[str] = ()):
        self.app = app
        self.allowed_hosts = tuple(allowed_hosts)
        self.refused = 0
        self._fixed_hosts: set[str] = set()  # Host values allowed whatever the names: addresses, none

    def host_ok(self, host: str) -> bool:
        """Whether a Host value passes (`host_allowed`); for an answer memo's replay
        (balupi.answermemo), so an address is judged once, a name every time."""
        if host in self._fixed_hosts:
            return True
        if not host_allowed(host, self.allowed_hosts):
            return False
        name = host_name(host)
        fixed = not name or "*" in self.allowed_hosts
        if not fixed:
            try:
                ipaddress.ip_address(name.split("%", 1)[0])
                fixed = True
            except ValueError:
                pass
        if fixed and len(self._fixed_hosts) < 64:
            self._fixed_hosts.add(host)
        return True

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST", "")
        if host and not host_allowed(host, self.allowed_hosts):
            self.refused += 1
            body = b'{"detail": "unknown Host: this server answers only to its own addresses and names"}'
            start_response("421 Misdirected Request", _with(
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))], SECURITY_HEADERS))
            return [body]
        path = environ.get("PATH_INFO", "") or "/"
        if path.startswith(_DAV_PREFIX_SLASH) or path == DAV_PREFIX:
            # Decided once per request, not in the answer's start_response.
            files = environ.get("REQUEST_METHOD", "GET").upper() in ("GET", "HEAD") and not path.startswith(DAV_ASSETS)
            memo = environ.get(MEMO_KEY)
            if memo is not None:  # the Host is judged again before the answer is replayed
                memo.host_ok, memo.host = self.host_ok, host

            def dav_start(status: str, headers: list, exc_info=None):
                if type(headers) is not list:
                    headers = list(headers)  # (neither function below changes the list it is given)
                if files and status[:1] == "2" and not environ.get(LISTING_KEY):
                    headers = dav_file_headers(headers)
                return start_response(status, _with(headers, DAV_SECURITY_HEADERS), exc_info)

            return self.app(environ, dav_start)

        def api_start(status: str, headers: list, exc_info=None):
            return start_response(status, _with(list(headers), SECURITY_HEADERS), exc_info)

        return self.app(environ, api_start)
