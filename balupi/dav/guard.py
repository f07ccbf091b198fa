"""`DavGuard`: the front door of /dav/, in front of the fast lane and WsgiDAV.

Per request, before anything else looks at it:

1. The path (and a COPY/MOVE `Destination`) must be a plain path: valid UTF-8 (so no overlong
   forms), no NUL or other control characters, no backslashes, no `.` or `..` segments, no name
   that Unicode compatibility normalization (NFKC) turns into one or into a slash, and no
   percent-encoded dot, slash, backslash or NUL left after decoding (double encoding). A
   `Destination` must name a path under /dav/ with http or https. Anything else is 400. (The cache
   never maps request paths to files anyway: content files are named by random keys.) WsgiDAV's
   share of the HTML listing's assets (`/:dir_browser`) is read-only: writes, and COPY/MOVE into
   it, are 403. A name a PUT, MKCOL, LOCK, MOVE or COPY would create that the NAS cannot store
   (`balupi.nas.names`: over 255 bytes, a reserved character) is 400 too.
2. Who is asking: HTTP Basic credentials, judged by the `Authenticator` (balupi.auth.service).
   Missing or refused: 401 with the same `WWW-Authenticate: Basic realm="BaluPi"` and body WsgiDAV
   sends; throttled: 429 with `Retry-After`. With no NAS configured, requests are anonymous.
3. Request bodies of every method but GET, HEAD and PUT are read here, at most
   `dav_max_xml_body_kib` (more: 413, without reading it); XML bodies (PROPFIND, PROPPATCH, LOCK,
   REPORT, SEARCH) are parsed with defusedxml with DTDs forbidden, so entity expansion ("billion
   laughs"), external entities and DTDs are refused at once, as is malformed or absurdly deep XML
   (400). The body is then handed on in memory.

The request's `Identity` goes into the environ (`IDENTITY_KEY`): its view scopes the index, the
cache, dead properties and locks (`balupi.dav.locks.current_view` is set for the request).
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
from typing import Callable, Iterable
from urllib.parse import unquote_to_bytes, urlsplit

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET
from wsgidav.dav_error import HTTP_BAD_REQUEST, DAVError
from wsgidav.http_authenticator import HTTPAuthenticator

from balupi.answermemo import MEMO_KEY
from balupi.auth.basic import parse_basic, split_authorization
from balupi.auth.service import (Authenticator, Identity, LoginRefused, LoginThrottled, LoginUnverifiable,
                                 OpenModeRefused)
from balupi.dav import locks
from balupi.dav.auth_dc import REALM, set_wsgidav_identity
from balupi.nas.names import CREATING_METHODS, nas_name_problem

log = logging.getLogger("balupi.dav.guard")

XML_METHODS = frozenset({"PROPFIND", "PROPPATCH", "LOCK", "REPORT", "SEARCH"})
ASSET_SHARE = "/:dir_browser"  # WsgiDAV's read-only share of the HTML listing's assets
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND"})
STREAMED_BODY_METHODS = frozenset({"GET", "HEAD", "PUT"})
MAX_XML_DEPTH = 64
UNAUTHORIZED_BODY = HTTPAuthenticator.error_message_401.encode()
CHECKED_PATH_KEY = "balupi.dav.checked_path"  # environ: (PATH_INFO, its decoded path) that passed `path_problem`
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DOUBLE_ENCODED = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)


def path_problem(path: str) -> str | None:
    """Why a decoded path is refused, or None when it is a plain path."""
    if _CONTROL.search(path):
        return "control character in the path"
    if "\\" in path:
        return "backslash in the path"
    if path.isascii() and "%" not in path and "/." not in path and not path.startswith("."):
        return None  # no segment can be a dot segment, double-encoded or changed by NFKC
    for segment in path.split("/"):
        if segment in (".", ".."):
            return "dot segment in the path"
        if "%" in segment and _DOUBLE_ENCODED.search(segment):
            return "a percent-encoded dot, slash, backslash or NUL in a name (double encoding)"
        if segment and not segment.isascii():
            folded = unicodedata.normalize("NFKC", segment)
            if folded in (".", "..") or "/" in folded or "\\" in folded:
                return "a name that Unicode normalization turns into a dot segment or a separator"
    return None


def wsgi_path(raw: str) -> str | None:
    """A WSGI PATH_INFO (latin-1 over the percent-decoded bytes) as text; None if not UTF-8."""
    try:
        return raw.encode("iso-8859-1").decode("utf-8")  # strict: overlong forms and surrogates fail
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None


def wsgi_path_problem(raw: str) -> str | None:
    """Like `path_problem`, for a WSGI PATH_INFO."""
    path = wsgi_path(raw)
    if path is None:
        return "the path is not valid UTF-8"
    return path_problem(path)


def destination_problem(value: str, mount: str) -> str | None:
    """Why a COPY/MOVE Destination is refused (it must be a plain path under `mount`), or None."""
    try:
        parts = urlsplit(value.strip())
        path = unquote_to_bytes(parts.path).decode("utf-8")
    except (UnicodeDecodeError, ValueError):
        return "the Destination is not a valid UTF-8 URL"
    if parts.scheme not in ("", "http", "https") or not path.startswith(mount.rstrip("/") + "/"):
        return f"the Destination must be a path under {mount.rstrip('/')}/"
    problem = path_problem(path)
    return f"Destination: {problem}" if problem else None


def xml_problem(body: bytes) -> str | None:
    """Why an XML request body is refused (DTD, entities, malformed, too deep), or None."""
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        return f"XML with {type(exc).__name__.removesuffix('Forbidden').lower()} is not accepted"
    except SafeET.ParseError as exc:
        return f"malformed XML: {exc}"
    except Exception as exc:  # noqa: BLE001 - whatever the parser raises, the body is bad
        return f"malformed XML: {type(exc).__name__}"
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > MAX_XML_DEPTH:
            return f"XML nested deeper than {MAX_XML_DEPTH} levels"
        stack.extend((child, depth + 1) for child in element)
    return None


def _text(start_response: Callable, status: str, text: str, headers: list | None = None) -> list[bytes]:
    body = (text + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
                   + (headers or []))
    return [body]


class DavGuard:
    """WSGI middleware in front of the fast lane (see the module docstring)."""

    def __init__(self, authenticator: Authenticator, next_app: Callable, max_xml_body_bytes: int,
                 reserved_name_chars: str = ""):
        self.authenticator = authenticator
        self.reserved_name_chars = reserved_name_chars
        self.next_app = next_app
        self.max_body_bytes = max_xml_body_bytes
        self.refused = 0  # requests answered 400/401/413/429 here

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        raw = environ.get("PATH_INFO", "/")
        path = wsgi_path(raw)
        problem = "the path is not valid UTF-8" if path is None else path_problem(path)
        if problem is None and environ.get("HTTP_DESTINATION"):
            problem = destination_problem(environ["HTTP_DESTINATION"], environ.get("SCRIPT_NAME", "") or "/")
        if problem is None:
            problem = self._name_problem(environ)
        if problem is not None:
            self.refused += 1
            return _text(start_response, "400 Bad Request", problem)
        if self._touches_assets(environ):
            self.refused += 1
            return _text(start_response, "403 Forbidden", "the listing's assets are read-only")
        identity = self._identify(environ, start_response)
        if not isinstance(identity, Identity):
            self.refused += 1
            return identity
        set_wsgidav_identity(environ, identity)
        environ[CHECKED_PATH_KEY] = (raw, path)  # the fast lane need not check it again
        method = environ["REQUEST_METHOD"].upper()
        if method == "PUT" and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            environ["wsgi.input"] = _ChunkedInput(environ["wsgi.input"])
        if method not in STREAMED_BODY_METHODS:
            refusal = self._take_body(environ, start_response, method)
            if refusal is not None:
                self.refused += 1
                return refusal
        token = locks.current_view.set(identity.view)
        try:
            result = self.next_app(environ, start_response)
        finally:
            locks.current_view.reset(token)
        if isinstance(result, (list, tuple)):
            return result
        return _InView(result, identity.view)  # WsgiDAV does its work while its answer is iterated

    def _name_problem(self, environ: dict) -> str | None:
        """A name this request would create that the NAS cannot store (balupi.nas.names)."""
        method = environ["REQUEST_METHOD"].upper()
        if method in CREATING_METHODS:
            path = environ.get("PATH_INFO", "/").encode("iso-8859-1").decode("utf-8")  # checked above
            return nas_name_problem(path, self.reserved_name_chars)
        if method in ("MOVE", "COPY") and environ.get("HTTP_DESTINATION"):
            path = unquote_to_bytes(urlsplit(environ["HTTP_DESTINATION"].strip()).path).decode("utf-8")
            problem = nas_name_problem(path, self.reserved_name_chars)
            return f"Destination: {problem}" if problem else None
        return None

    @staticmethod
    def _touches_assets(environ: dict) -> bool:
        """A write to WsgiDAV's asset share, or a COPY/MOVE into it (WsgiDAV would answer 403 or 502)."""
        def under_assets(path: str) -> bool:
            return path == ASSET_SHARE or path.startswith(ASSET_SHARE + "/")

        if under_assets(environ.get("PATH_INFO", "")) and environ["REQUEST_METHOD"].upper() not in READ_METHODS:
            return True
        destination = environ.get("HTTP_DESTINATION")
        if destination:
            path = urlsplit(destination.strip()).path
            mount = (environ.get("SCRIPT_NAME", "") or "").rstrip("/")
            return under_assets(path[len(mount):]) if path.startswith(mount + "/") else False
        return False

    def _identify(self, environ: dict, start_response: Callable) -> Identity | list[bytes]:
        address = environ.get("REMOTE_ADDR", "")
        auth = self.authenticator
        scheme, value = split_authorization(environ.get("HTTP_AUTHORIZATION"))
        if auth.open_mode:
            credentials = parse_basic(value) if scheme == "basic" else None
            try:
                return auth.open_identity(address, credentials)
            except LoginThrottled as exc:
                retry = str(max(1, round(exc.retry_after_s)))
                return _text(start_response, "429 Too Many Requests", str(exc), [("Retry-After", retry)])
            except LoginRefused:
                return self._challenge(start_response)
            except OpenModeRefused as exc:
                if exc.challenge:
                    return self._challenge(start_response)
                return _text(start_response, "403 Forbidden", str(exc))
        if scheme != "basic":
            return self._challenge(start_response)
        try:
            return auth.login_basic(value, address, environ.get(MEMO_KEY))
        except LoginThrottled as exc:
            retry = str(max(1, round(exc.retry_after_s)))
            return _text(start_response, "429 Too Many Requests", str(exc), [("Retry-After", retry)])
        except LoginUnverifiable as exc:
            retry = str(max(1, round(exc.retry_after_s)))
            return _text(start_response, "503 Service Unavailable", str(exc), [("Retry-After", retry)])
        except LoginRefused:
            return self._challenge(start_response)

    @staticmethod
    def _challenge(start_response: Callable) -> list[bytes]:
        start_response("401 Not Authorized", [
            ("WWW-Authenticate", f'Basic realm="{REALM}"'),
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(UNAUTHORIZED_BODY))),
        ])
        return [UNAUTHORIZED_BODY]

    def _take_body(self, environ: dict, start_response: Callable, method: str) -> list[bytes] | None:
        """Read a (small) request body into memory and check it; a refusal, or None to go on."""
        limit = self.max_body_bytes
        length_text = (environ.get("CONTENT_LENGTH") or "").strip()
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        too_large = [("Connection", "close")]
        if length_text:
            if not length_text.isdigit():
                return _text(start_response, "400 Bad Request", "invalid Content-Length")
            length = int(length_text)
            if length > limit:
                return _text(start_response, "413 Request Entity Too Large",
                             f"request body larger than {limit} bytes", too_large)
            body = _read_exactly(environ["wsgi.input"], length)
            if len(body) != length:
                return _text(start_response, "400 Bad Request", "request body shorter than its Content-Length")
        elif chunked:
            body = _read_exactly(environ["wsgi.input"], limit + 1)
            if len(body) > limit:
                return _text(start_response, "413 Request Entity Too Large",
                             f"request body larger than {limit} bytes", too_large)
        else:
            body = b""
        if body and method in XML_METHODS:
            problem = xml_problem(body)
            if problem is not None:
                return _text(start_response, "400 Bad Request", problem)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return None


class _ChunkedInput:
    """A chunked request body whose framing errors are the client's (400), not the server's (500)."""

    def __init__(self, inner):
        self._inner = inner

    def _call(self, name: str, *args):
        try:
            return getattr(self._inner, name)(*args)
        except ValueError as exc:  # cheroot: "Bad chunked transfer size", bad trailers
            raise DAVError(HTTP_BAD_REQUEST, f"malformed chunked body: {exc}") from None

    def read(self, *args):
        return self._call("read", *args)

    def readline(self, *args):
        return self._call("readline", *args)

    def readlines(self, *args):
        return self._call("readlines", *args)

    def __iter__(self):
        while line := self.readline():
            yield line


class _InView:
    """An answer's iterator, run with `current_view` set to the request's view."""

    def __init__(self, inner: Iterable[bytes], view: str):
        self._inner = iter(inner)
        self._closer = getattr(inner, "close", None)
        self._view = view

    def __iter__(self) -> "_InView":
        return self

    def __next__(self) -> bytes:
        token = locks.current_view.set(self._view)
        try:
            return next(self._inner)
        finally:
            locks.current_view.reset(token)

    def close(self) -> None:
        if self._closer is not None:
            token = locks.current_view.set(self._view)
            try:
                self._closer()
            finally:
                locks.current_view.reset(token)


def _read_exactly(stream, n: int) -> bytes:
    parts, remaining = [], n
    while remaining > 0:
        block = stream.read(min(remaining, 64 * 1024))
        if not block:
            break
        parts.append(block)
        remaining -= len(block)
    return b"".join(parts)
