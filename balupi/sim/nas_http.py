"""HTTP side of the simulated NAS: the cheroot server class, the main-port WSGI app, the REST subset.

Main port layout (one cheroot server, closed while the NAS is suspended):

- ``/dav/...``: WebDAV (WsgiDAV, HTTP Basic auth). Each configured user gets a WsgiDAV app of
  its own (own property manager and lock storage) whose share ``/dav`` is the storage root for
  role "admin" and ``<root>/home/<user>`` for any other role. This dispatcher picks the app from
  the Basic credentials; requests without valid credentials go to the first user's app, whose
  authenticator answers 401.
- ``/api/...``: the BaluHost REST subset (health, ping, login, sleep status/suspend/wake).

The control port app (always on, JSON) lives in `balupi.sim.nas_control`.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import threading
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote

import jwt
from cheroot import wsgi
from cheroot.workers import threadpool
from wsgidav.wsgidav_app import WsgiDAVApp

from balupi.sim.nas_faults import (
    ResponseBody,
    SimulatedDrop,
    ThrottledInput,
    abort_connection,
    read_then_drop,
)
from balupi.sim.nas_state import SleepMode

if TYPE_CHECKING:
    from balupi.sim.nas import SimNas

log = logging.getLogger("balupi.sim.nas")

CHEROOT_REQ_KEY = "balupi.sim.cheroot_req"
API_VERSION_BODY = {"status": "ok", "version": "sim-1", "api_version": "1"}
TOKEN_LIFETIME_S = 3600
JWT_ALGORITHM = "HS256"


# --- cheroot plumbing ----------------------------------------------------------------------------


class _DaemonThreadPool(threadpool.ThreadPool):
    """Worker threads are daemons (a sim someone forgot to stop must not hang the interpreter),
    and each is waited for in milliseconds rather than cheroot's 0.1 s polling."""

    def _spawn_worker(self):
        worker = threadpool.WorkerThread(self.server)
        worker.name = f"sim-nas {worker.name}"
        worker.daemon = True
        worker.start()
        deadline = time.monotonic() + 5.0
        while not worker.ready and time.monotonic() < deadline:
            time.sleep(0.001)
        return worker


class _Gateway(wsgi.Gateway_10):
    """WSGI 1.0 gateway that also puts cheroot's request object into the environ (to cut
    connections on purpose)."""

    def get_environ(self):
        environ = super().get_environ()
        environ[CHEROOT_REQ_KEY] = self.req
        return environ


class SimHTTPServer(wsgi.Server):
    """A cheroot WSGI server tuned for the simulator: quick start/stop, daemon threads, quiet."""

    def __init__(self, bind_addr, app, *, threads: int, name: str):
        super().__init__(bind_addr, app, numthreads=threads, server_name=name, timeout=10,
                         shutdown_timeout=1)
        self.gateway = _Gateway
        self.expiration_interval = 0.05
        self.requests = _DaemonThreadPool(self, min=threads, max=-1)

    def serve(self):
        """Like cheroot's serve(), but its helper thread is a daemon."""
        threading.Thread(target=self._serve_unservicable, daemon=True,
                         name="sim-nas unservicable").start()
        while self.ready and not self.interrupt:
            try:
                self._connections.run(self.expiration_interval)
            except Exception:  # pragma: no cover - mirrors cheroot
                self.error_log("Error in HTTPServer.serve", level=logging.ERROR, traceback=True)

    def error_log(self, msg="", level=20, traceback=False):
        log.log(logging.DEBUG if level < logging.ERROR else logging.WARNING, "cheroot: %s", msg,
                exc_info=traceback)


# --- helpers -------------------------------------------------------------------------------------


def wsgi_path(environ) -> str:
    """PATH_INFO as real unicode (WSGI hands it over as latin-1-decoded bytes)."""
    path = environ.get("PATH_INFO", "") or "/"
    try:
        return path.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return path


def read_body(environ, limit_bytes: int = 1 << 20) -> bytes:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        return stream.read(min(int(length), limit_bytes))
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        return stream.read(limit_bytes)
    return b""


def json_response(start_response, status: int, obj, headers=()) -> list[bytes]:
    body = json.dumps(obj).encode("utf-8")
    start_response(f"{status} {_REASONS.get(status, 'Status')}", [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *headers,
    ])
    return [body]


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
            507: "Insufficient Storage"}


def parse_json_or_form(environ) -> dict:
    raw = read_body(environ)
    if not raw:
        return {}
    if "application/x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
        return {k: v[0] for k, v in parse_qs(raw.decode("utf-8")).items()}
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("JSON body must be an object")
    return data


class _AfterClose(list):
    """A response body (list of bytes) that runs `callback` once the server has sent it."""

    def __init__(self, chunks, callback):
        super().__init__(chunks)
        self._callback = callback

    def close(self):
        self._callback()


# --- WebDAV --------------------------------------------------------------------------------------


def check_users(users) -> dict[str, tuple[str, str]]:
    """Normalise {name: (password, role)} (a bare password string means role "user")."""
    if not users:
        raise ValueError("at least one user is needed")
    checked = {}
    for name, entry in users.items():
        password, role = (entry, "user") if isinstance(entry, str) else entry
        if not name or any(c in name for c in "/\\:") or name in (".", ".."):
            raise ValueError(f"invalid user name {name!r}")
        checked[name] = (str(password), str(role))
    return checked


def build_dav_app(share_root, share: str, user: str, password: str, role: str) -> WsgiDAVApp:
    """A compliant WsgiDAV app (property manager, lock storage) publishing `share_root` at
    `share` for one Basic-auth user."""
    share_root.mkdir(parents=True, exist_ok=True)
    return WsgiDAVApp({
        "provider_mapping": {share: str(share_root)},
        "block_size": 64 * 1024,
        "property_manager": True,
        "lock_storage": True,
        "http_authenticator": {"domain_controller": None, "accept_basic": True,
                               "accept_digest": False, "default_to_digest": False},
        "simple_dc": {"user_mapping": {"*": {user: {"password": password, "roles": [role]}}}},
        "verbose": 1,
        "logging": {"enable": False},
        # directory_slash off: WsgiDAV's redirect drops the share prefix (/dav/x -> /x/);
        # NasApp redirects collections itself.
        "dir_browser": {"enable": True, "directory_slash": False,
                        "response_trailer": "BaluHost (simulated)"},
    })


# --- the main-port app ---------------------------------------------------------------------------


class NasApp:
    """WSGI app of the NAS's main port: records, applies faults, then routes to WebDAV or REST."""

    def __init__(self, sim: "SimNas"):
        self.sim = sim

    # identity

    def identify(self, environ) -> tuple[str | None, str | None]:
        """(user, role) from Basic credentials or a Bearer token; (None, None) if not valid."""
        scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        users = self.sim.users
        if scheme.lower() == "basic":
            try:
                name, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return None, None
            entry = users.get(name)
            if entry and hmac.compare_digest(entry[0].encode(), password.encode()):
                return name, entry[1]
        elif scheme.lower() == "bearer":
            try:
                claims = jwt.decode(value.strip(), self.sim.jwt_secret, algorithms=[JWT_ALGORITHM])
            except jwt.PyJWTError:
                return None, None
            name = claims.get("sub")
            if name in users:
                return name, users[name][1]
        return None, None

    # request pipeline

    def __call__(self, environ, start_response):
        sim = self.sim
        method = environ["REQUEST_METHOD"].upper()
        path = wsgi_path(environ)
        user, role = self.identify(environ)
        arrival = sim.arrive(method, path, user)
        record, halt = arrival.record, arrival.halt
        req = environ.get(CHEROOT_REQ_KEY)
        try:
            if not arrival.accepted:
                record.fault = "halted"
                sim.finish_request(record, None)
                abort_connection(req)
                raise SimulatedDrop("NAS is not awake")
            if arrival.spinup_wait_s > 0 and halt.wait(arrival.spinup_wait_s):
                record.fault = "halted"
                raise SimulatedDrop("NAS went to sleep during spin-up")
            sim.spun_up(arrival)
            faults = sim.faults
            if faults.latency_s > 0 and halt.wait(faults.latency_s):
                record.fault = "halted"
                raise SimulatedDrop("NAS went to sleep")
            fail_status = faults.take_fail(method, path)
            if fail_status is not None:
                record.fault = "fail"
                record.status = fail_status
                inner = json_response(start_response, fail_status,
                                      {"detail": "simulated failure", "status": fail_status})
                return self._wrap(inner, record, halt, req, None, faults)
            if faults.bandwidth_bytes_per_s:
                environ["wsgi.input"] = ThrottledInput(
                    environ["wsgi.input"], rate_bytes_per_s=faults.bandwidth_bytes_per_s,
                    halt=halt)
            if method == "PUT":
                drop_after = faults.take_drop_put(method, path)
                if drop_after is not None and _body_longer_than(environ, drop_after):
                    record.fault = "drop_put"
                    read_then_drop(environ["wsgi.input"], drop_after, req,
                                   before_abort=lambda: sim.finish_request(record, None))
            drop_get_after = faults.take_drop_get(method, path)
            garble = faults.take_garble(method, path)
            if garble is not None:
                record.fault = "garble"

            def recording_start_response(status, headers, exc_info=None):
                record.status = int(status.split(" ", 1)[0])
                if garble is not None and garble.encoding:
                    headers = [(k, v) for k, v in headers if k.lower() != "content-encoding"]
                    headers.append(("Content-Encoding", garble.encoding))
                return start_response(status, headers, exc_info)

            inner = self.route(environ, recording_start_response, method, path, user, role)
            return self._wrap(inner, record, halt, req, drop_get_after, faults, garble=garble is not None)
        except BaseException:  # SimulatedDrop included: cheroot closes the connection quietly
            sim.finish_request(record, None)
            raise

    def _wrap(self, inner, record, halt, req, drop_after, faults, garble: bool = False):
        def on_done(body: ResponseBody) -> None:
            if body.dropped and record.fault is None:
                record.fault = "drop_get" if drop_after is not None else "halted"
            self.sim.finish_request(record, body)

        return ResponseBody(inner, rate_bytes_per_s=faults.bandwidth_bytes_per_s,
                            drop_after_bytes=drop_after, halt=halt, cheroot_req=req,
                            on_done=on_done, garble=garble)

    def route(self, environ, start_response, method, path, user, role):
        if path == "/api" or path.startswith("/api/"):
            return self.api(environ, start_response, method, path, user, role)
        lower = path.lower()
        if lower == "/dav" or lower.startswith(("/dav/", "/:dir_browser/")):
            if method in ("GET", "HEAD") and user and not path.endswith("/"):
                redirect = self._collection_slash_redirect(start_response, path, user)
                if redirect is not None:
                    return redirect
            # /:dir_browser/ holds the (anonymous, read-only) assets of WsgiDAV's HTML listing
            return self.sim.dav_app_for(user)(environ, start_response)
        return json_response(start_response, 404, {"detail": "Not Found"})

    def _collection_slash_redirect(self, start_response, path, user):
        """GET /dav/dir -> 301 /dav/dir/ (WsgiDAV's own redirect loses the /dav share prefix)."""
        home = self.sim.home_of(user).resolve()
        target = (home / path[len("/dav"):].strip("/")).resolve()
        if target != home and home not in target.parents:
            return None
        if not target.is_dir():
            return None
        start_response("301 Moved Permanently", [("Location", quote(path + "/")),
                                                 ("Content-Length", "0")])
        return [b""]

    # REST

    def api(self, environ, start_response, method, path, user, role):
        routes = {
            ("GET", "/api/health"): self._health,
            ("GET", "/api/ping"): self._health,
            ("POST", "/api/auth/login"): self._login,
            ("GET", "/api/auth/me"): self._me,
            ("GET", "/api/system/sleep/status"): self._sleep_status,
            ("POST", "/api/system/sleep/suspend"): self._sleep_suspend,
            ("POST", "/api/system/sleep/wake"): self._sleep_wake,
        }
        path = path.rstrip("/") or "/"
        handler = routes.get((method, path))
        if handler is None:
            if any(p == path for (_m, p) in routes):
                return json_response(start_response, 405, {"detail": "Method Not Allowed"})
            return json_response(start_response, 404, {"detail": "Not Found"})
        needs = {self._sleep_status: "user", self._me: "user", self._sleep_suspend: "admin",
                 self._sleep_wake: "admin"}.get(handler)
        if needs and user is None:
            return json_response(start_response, 401, {"detail": "Not authenticated"},
                                 [("WWW-Authenticate", "Bearer")])
        if needs == "admin" and role != "admin":
            return json_response(start_response, 403, {"detail": "Admin privileges required"})
        try:
            return handler(environ, start_response, user, role)
        except (ValueError, json.JSONDecodeError) as exc:
            return json_response(start_response, 400, {"detail": str(exc)})

    def _health(self, environ, start_response, user, role):
        return json_response(start_response, 200, dict(API_VERSION_BODY))

    def _user_json(self, name: str) -> dict:
        return {"id": self.sim.user_id(name), "username": name, "role": self.sim.users[name][1]}

    def _login(self, environ, start_response, user, role):
        data = parse_json_or_form(environ)
        name, password = str(data.get("username", "")), str(data.get("password", ""))
        entry = self.sim.users.get(name)
        if not entry or not hmac.compare_digest(entry[0].encode(), password.encode()):
            return json_response(start_response, 401, {"detail": "Incorrect username or password"},
                                 [("WWW-Authenticate", "Bearer")])
        now = int(time.time())
        token = jwt.encode({"sub": name, "role": entry[1], "uid": self.sim.user_id(name),
                            "iat": now, "exp": now + TOKEN_LIFETIME_S},
                           self.sim.jwt_secret, algorithm=JWT_ALGORITHM)
        return json_response(start_response, 200, {"access_token": token, "token_type": "bearer",
                                                    "user": self._user_json(name)})

    def _me(self, environ, start_response, user, role):
        return json_response(start_response, 200, self._user_json(user))

    def _sleep_status(self, environ, start_response, user, role):
        return json_response(start_response, 200, self.sim.sleep_status())

    def _sleep_suspend(self, environ, start_response, user, role):
        data = parse_json_or_form(environ)
        mode = SleepMode(data.get("mode") or self.sim.sleep_mode)
        close_listener = self.sim.suspend_after_response(mode)
        body = json_response(start_response, 200, {"status": "suspending", "mode": mode.value,
                                                   "state": mode.target_state.value})
        return _AfterClose(body, close_listener)

    def _sleep_wake(self, environ, start_response, user, role):
        # Any request wakes a soft-sleeping NAS, so by now it is awake.
        return json_response(start_response, 200, {"status": "awake",
                                                    "state": self.sim.state.value})


def _body_longer_than(environ, n_bytes: int) -> bool:
    length = environ.get("CONTENT_LENGTH")
    if length:
        return int(length) > n_bytes
    return environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"


__all__ = ["CHEROOT_REQ_KEY", "NasApp", "SimHTTPServer", "build_dav_app", "check_users",
           "json_response", "parse_json_or_form", "wsgi_path"]
