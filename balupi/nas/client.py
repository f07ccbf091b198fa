"""Talking to the NAS: its WebDAV (the source of truth for files) and BaluHost's REST API.

Every request goes through `NasClient.request`, which asks the monitor first: with `wake=True` it
waits for `ensure_awake` (a client is waiting for this file); with `wake=False` it refuses while
the NAS is not known to be awake (refresh, prefetch: never wake the NAS for those). Outcomes are
reported back to the monitor, so real traffic is the best evidence of the NAS's state.

Safety: BaluHost's REST API is only called when `nas_url` names the same host as the WebDAV URL, so a
configuration that points WebDAV at a test server never sends REST calls to the default address.

Views and credentials: a request is made for a `view` (whose tree it is). The shared view "" uses
the service account (`nas_username`); any other view uses the credentials its user last logged in
with (`set_credentials`, memory only, never stored). A 401 for a user's credentials tells
`on_credentials_rejected`, which drops that user's offline login. HTTPS certificates are checked
by a CA file or a pinned fingerprint (`balupi.nas.tls`), never skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator
from urllib.parse import quote, unquote, urljoin, urlsplit

import requests
from defusedxml import ElementTree as ET

from balupi.errors import NasAnswerUnreadable, NasUnavailable, NoViewCredentials
from balupi.httpfields import parse_http_date, strip_etag
from balupi.nas.monitor import NasMonitor, NasState
from balupi.nas.tls import configure_session
from balupi.nas.wakes import cause_for_request
from balupi.perthread import PerThread
from balupi.settings import Settings

log = logging.getLogger("balupi.nas")

READ_TIMEOUT_S = 60.0  # background work (write-back, refresh, prefetch): no byte from the NAS for this long
# A client is waiting (a miss, a listing): give up after this long without a byte, so that the client
# gets an error well within its own timeout (Windows' WebDAV redirector and davfs2 wait 30 s). A NAS
# frozen with its socket open (SIGSTOP, a hung kernel) held clients 60 s. Disks spinning up take
# about 10 s on the NAS's side, so this is not lower.
CLIENT_READ_TIMEOUT_S = 15.0
_current_view: ContextVar[str] = ContextVar("balupi_nas_view", default="")
PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
    b"<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/><D:getcontenttype/>"
    b"</D:prop></D:propfind>"
)


@dataclass(frozen=True)
class RemoteEntry:
    """One member of a NAS collection, as PROPFIND reported it."""

    path: str  # BaluPi path, "/" separated, no trailing slash ("" is the root)
    is_collection: bool
    size_bytes: int
    mtime: float
    etag: str  # without quotes; "" if the NAS gave none
    content_type: str


class NasClient:
    def __init__(self, settings: Settings, monitor: NasMonitor):
        self.settings = settings
        self.monitor = monitor
        self.base_url = settings.nas_webdav_url.rstrip("/") + "/" if settings.nas_webdav_url else ""
        self.base_path = urlsplit(self.base_url).path if self.base_url else "/"
        # One session (and its keep-alive connections) per thread, closed when the thread ends:
        # every download and job run is a new thread.
        self._sessions: PerThread[requests.Session] = PerThread(self._new_session, requests.Session.close, "NAS session")
        self.requests_made = 0
        self._credentials_lock = threading.Lock()
        self._view_credentials: dict[str, tuple[str, bytes, bytes]] = {}  # view -> (username, name, password)
        self.on_credentials_rejected: Callable[[str], None] | None = None

    @property
    def session(self) -> requests.Session:
        return self._sessions.get()

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # no proxies or .netrc credentials from the environment
        configure_session(session, self.settings, pool_connections=2, pool_maxsize=4, max_retries=0)
        if self.settings.nas_username:
            session.auth = (self.settings.nas_username, self.settings.nas_password)
        session.headers["User-Agent"] = "BaluPi"
        return session

    def open_sessions(self) -> int:
        return len(self._sessions)

    def close(self) -> None:
        """Close every thread's session (at shutdown)."""
        self._sessions.close_all()

    # -- credentials per view -----------------------------------------------------------------------

    def set_credentials(self, view: str, username: str, password: str) -> None:
        """Use these credentials for requests of `view` (the shared view keeps the service account)."""
        if view == "" and self.settings.nas_username:
            return
        encoded = (username.encode("utf-8", "surrogateescape"), password.encode("utf-8", "surrogateescape"))
        with self._credentials_lock:
            self._view_credentials[view] = (username, *encoded)

    def forget_credentials(self, username: str) -> None:
        with self._credentials_lock:
            for view in [v for v, c in self._view_credentials.items() if c[0] == username]:
                del self._view_credentials[view]

    @contextmanager
    def for_view(self, view: str) -> Iterator[None]:
        """Requests in this block that name no view are for `view` (the write-back, per journal row)."""
        token = _current_view.set(view)
        try:
            yield
        finally:
            _current_view.reset(token)

    def credentials_for(self, view: str) -> tuple[str, tuple[bytes, bytes]] | None:
        """(username, auth) for requests of `view`; None: the session's service account."""
        if view == "" and self.settings.nas_username:
            return None
        with self._credentials_lock:
            found = self._view_credentials.get(view)
        if found is None:
            if view == "" and not self.settings.nas_username:
                return None  # no service account and no admin logged in yet: anonymous
            raise NoViewCredentials(f"no NAS credentials for view {view!r} yet: its user has not logged in since BaluPi started")
        return found[0], (found[1], found[2])

    def url_for(self, path: str) -> str:
        path = path.strip("/")
        return self.base_url + quote(path, safe="/")

    def request(
        self,
        method: str,
        path: str,
        *,
        wake: bool,
        headers: dict | None = None,
        data=None,
        stream: bool = False,
        timeout_s: float | None = None,
        url: str | None = None,
        auth=None,
        view: str | None = None,
    ) -> requests.Response:
        """One request to the NAS WebDAV for `view`. Raises NasUnavailable when the NAS cannot be had.

        `auth` (explicit credentials) overrides the view's; a 401 is then the caller's business.
        """
        user = None
        if view is None:
            view = _current_view.get()
        if auth is None:
            found = self.credentials_for(view)
            if found is not None:
                user, auth = found
        if not self.base_url:
            self.monitor.ensure_awake()  # raises NasNotConfigured
        self.monitor.waiters.enter(f"{method} {path}")  # a client request depends on the NAS from here
        if wake:
            self.monitor.ensure_awake(reason=cause_for_request(f"{method} {path}", "/" + path.strip("/"), user))
        elif self.monitor.state is not NasState.AWAKE:
            raise NasUnavailable(f"the NAS is {self.monitor.state_words()}; not waking it for {method} {path}")
        target = url or self.url_for(path)
        timeout = (self.settings.nas_connect_timeout_s, timeout_s or (CLIENT_READ_TIMEOUT_S if wake else READ_TIMEOUT_S))
        for attempt in (1, 2):
            try:
                self.requests_made += 1
                response = self.session.request(
                    method, target, headers=headers, data=data, stream=stream, timeout=timeout, auth=auth
                )
            except requests.exceptions.SSLError as exc:
                problem = self.monitor.note_tls_failure(type(exc).__name__)
                raise NasUnavailable(f"the NAS is unreachable: {problem}", retry_after_s=3600) from exc
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                self.monitor.note_unreachable(type(exc).__name__)
                # Refused, reset, or cut off in the middle of a body read here (not streamed): maybe
                # it went to sleep, so wake it and try once more. Not after a read timeout: it took
                # the request and did not answer (frozen), and a retry doubles the client's wait.
                if attempt == 1 and wake and data is None and not isinstance(exc, requests.ReadTimeout):
                    self.monitor.ensure_awake(reason=cause_for_request(f"{method} {path} (retry)", "/" + path.strip("/")))
                    continue
                raise NasUnavailable(f"the NAS did not answer {method} {path}: {type(exc).__name__}") from exc
            except requests.RequestException as exc:
                # It answered, but HTTP cannot read the answer (a body that does not decode, a header
                # that does not parse, redirects without end): unavailable for now, never a crash
                # in a client's request or a job (decision 240).
                log.warning("the NAS's answer to %s %s could not be read: %s", method, path, exc)
                raise NasAnswerUnreadable(f"the NAS's answer to {method} {path} could not be read: "
                                          f"{type(exc).__name__}") from exc
            self.monitor.note_success()
            if user is not None and response.status_code == 401 and self.on_credentials_rejected is not None:
                self.on_credentials_rejected(user)
            return response
        raise AssertionError("unreachable")

    # -- WebDAV helpers ---------------------------------------------------------------------------

    def propfind(self, path: str, depth: str = "1", *, wake: bool, view: str | None = None) -> list[RemoteEntry] | None:
        """Members of a collection (and itself, first). None when the path does not exist."""
        url = self.url_for(path)
        if depth != "0" and not url.endswith("/"):
            url += "/"
        response = self.request(
            "PROPFIND",
            path,
            wake=wake,
            url=url,
            headers={"Depth": depth, "Content-Type": "application/xml"},
            data=PROPFIND_BODY,
            view=view,
        )
        if response.status_code == 404:
            return None
        if response.status_code != 207:
            raise NasUnavailable(f"PROPFIND {path} on the NAS answered {response.status_code}")
        try:
            return list(self._parse_multistatus(response.content))
        except (ET.ParseError, ValueError) as exc:  # defusedxml's refusals (a DTD, entities) are ValueErrors
            log.warning("the NAS's listing of %s could not be read: %s", path or "/", exc)
            raise NasAnswerUnreadable(f"the NAS's listing of {path or '/'} could not be read") from exc

    def _parse_multistatus(self, body: bytes) -> Iterator[RemoteEntry]:
        root = ET.fromstring(body)
        ns = "{DAV:}"
        for response in root.iter(ns + "response"):
            href = response.findtext(ns + "href") or ""
            href_path = unquote(urlsplit(href).path)
            if not href_path.startswith(self.base_path.rstrip("/")):
                continue
            rel = href_path[len(self.base_path.rstrip("/")) :].strip("/")
            props = {}
            for propstat in response.iter(ns + "propstat"):
                status = propstat.findtext(ns + "status") or ""
                if " 200 " not in status:
                    continue
                prop = propstat.find(ns + "prop")
                if prop is not None:
                    for child in prop:
                        props[child.tag] = child
            rtype = props.get(ns + "resourcetype")
            is_collection = rtype is not None and rtype.find(ns + "collection") is not None
            size_text = props[ns + "getcontentlength"].text if ns + "getcontentlength" in props else None
            mtime_text = props[ns + "getlastmodified"].text if ns + "getlastmodified" in props else None
            etag_text = props[ns + "getetag"].text if ns + "getetag" in props else None
            ctype = props[ns + "getcontenttype"].text if ns + "getcontenttype" in props else None
            yield RemoteEntry(
                path=rel,
                is_collection=is_collection,
                size_bytes=int(size_text) if size_text and size_text.strip().isdigit() else 0,
                mtime=_http_date_or_now(mtime_text),
                etag=strip_etag(etag_text) or "",
                content_type=(ctype or "").strip() or ("httpd/unix-directory" if is_collection else "application/octet-stream"),
            )

    # -- BaluHost REST ------------------------------------------------------------------------------

    def rest_allowed(self) -> bool:
        rest_host = urlsplit(self.settings.nas_url).hostname
        return bool(self.base_url) and rest_host == urlsplit(self.base_url).hostname

    def rest_url(self, path: str) -> str:
        if not self.rest_allowed():
            raise NasUnavailable("BALUPI_NAS_URL names another host than BALUPI_NAS_WEBDAV_URL; not calling it")
        return urljoin(self.settings.nas_url.rstrip("/") + "/", path.lstrip("/"))

    def fetch_version(self) -> str | None:
        """The NAS's version from GET /api/health (only while it is awake)."""
        if not self.rest_allowed() or not self.monitor.is_awake():
            return None
        try:
            response = self.request("GET", "/api/health", wake=False, url=self.rest_url("/api/health"), timeout_s=5)
            version = response.json().get("version") if response.ok else None
        except (NasUnavailable, ValueError):
            return None
        self.monitor.version = version
        return version

    def suspend_via_baluhost(self) -> None:
        """BaluHost's sleep API: log in, then POST /api/system/sleep/suspend."""
        login = self.session.post(
            self.rest_url("/api/auth/login"),
            json={"username": self.settings.nas_username, "password": self.settings.nas_password},
            timeout=(self.settings.nas_connect_timeout_s, 10),
        )
        login.raise_for_status()
        token = login.json()["access_token"]
        response = self.session.post(
            self.rest_url("/api/system/sleep/suspend"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=(self.settings.nas_connect_timeout_s, 10),
        )
        response.raise_for_status()


def _http_date_or_now(text: str | None) -> float:
    when = parse_http_date(text)
    return time.time() if when is None else when
