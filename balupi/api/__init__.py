"""The JSON sub-app mounted at /api/: a small router, requests, responses and JSON errors.

The routes are a table: each endpoint module (`system.py`, `nas.py`, ...) ends in a `ROUTES` tuple of
`Route(method, path, handler, admin_only=..., public=...)` naming module-level handlers, and
`balupi.api.routes` joins them. A handler takes the `Request` and finds what it works with in
`request.ctx` (an `ApiContext`, handed in by the composition root: the API never imports `balupi.app`).
Every error is JSON with a `detail` field: unknown route 404, wrong method 405 (with `Allow`),
bad input 400/422, and an unexpected exception 500 without a traceback in the body.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

from balupi.errors import NasUnavailable, ServiceBusy

log = logging.getLogger("balupi.api")

MAX_JSON_BODY_BYTES = 1 << 20


class ApiError(Exception):
    """Raise in a handler to answer with this status and `{"detail": ...}`."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


@dataclass
class Response:
    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> "Response":
        return cls(json.dumps(data, default=str).encode(), status, "application/json", headers or {})


class Request:
    def __init__(self, environ: dict, params: dict[str, str], ctx: Any = None):
        self.environ = environ
        self.method = environ["REQUEST_METHOD"].upper()
        self.path = environ.get("PATH_INFO", "/")
        self.params = params
        self.query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        self.ctx = ctx  # the ApiContext (balupi.api.context): what handlers work with
        self._json: Any = None
        self.user: Any = None  # set by authentication

    def header(self, name: str, default: str | None = None) -> str | None:
        key = "HTTP_" + name.upper().replace("-", "_")
        if name.lower() == "content-type":
            key = "CONTENT_TYPE"
        return self.environ.get(key, default)

    def json(self) -> Any:
        """The request body parsed as JSON (400 when it is not, 413 when too large)."""
        if self._json is None:
            try:
                length = int(self.environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                raise ApiError(400, "invalid Content-Length") from None
            if length > MAX_JSON_BODY_BYTES:
                raise ApiError(413, f"request body larger than {MAX_JSON_BODY_BYTES} bytes")
            raw = self.environ["wsgi.input"].read(length) if length else b""
            if not raw.strip():
                self._json = {}
            else:
                try:
                    self._json = json.loads(raw)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise ApiError(400, f"request body is not valid JSON: {exc}") from None
                except RecursionError:  # [[[[... nested past the parser's stack
                    raise ApiError(400, "request body is not valid JSON: nested too deeply") from None
        return self._json

    def json_object(self) -> dict:
        body = self.json()
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body

    def query_int(self, name: str, default: int | None = None) -> int | None:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ApiError(400, f"query parameter {name!r} must be an integer, got {raw!r}") from None


Handler = Callable[[Request], Any]


@dataclass(frozen=True)
class Route:
    """One row of the route table. `admin_only`: changes things or controls hardware, so only admins
    may call it. `public`: anyone may call it without logging in (GET /api/health, the login itself)."""

    method: str
    path: str  # a pattern: `/tapo/devices/{id}` puts the segment in `request.params["id"]`
    handler: Handler
    admin_only: bool = False
    public: bool = False


_PARAM = re.compile(r"\{(\w+)\}")


class JsonApi:
    """A WSGI app routing (method, path pattern) to the handlers of a route table.

    `before_request` hooks run, in order, with the request and its `Route` before the handler (the
    authentication in `balupi.api.auth` is the first)."""

    def __init__(self, routes: Iterable[Route] = (), ctx: Any = None) -> None:
        self.ctx = ctx
        self._paths: list[tuple[re.Pattern, str, dict[str, Route]]] = []  # in the order added
        self.before_request: list[Callable[[Request, Route], None]] = []
        for route in routes:
            self.add(route)

    def add(self, route: Route) -> Route:
        """Add a route (a later one for the same method and path replaces the earlier)."""
        route = Route(route.method.upper(), route.path, route.handler, route.admin_only, route.public)
        for _, pattern, by_method in self._paths:
            if pattern == route.path:
                by_method[route.method] = route
                break
        else:
            regex = re.compile("^" + _PARAM.sub(r"(?P<\1>[^/]+)", route.path) + "/?$")
            self._paths.append((regex, route.path, {route.method: route}))
        return route

    def route(self, method: str, path: str, *, admin_only: bool = False,
              public: bool = False) -> Callable[[Handler], Handler]:
        """Decorator form of `add`, for routes made at run time (plugins' routes)."""
        def register(handler: Handler) -> Handler:
            self.add(Route(method, path, handler, admin_only, public))
            return handler

        return register

    def routes(self) -> list[tuple[str, str]]:
        return [(m, pattern) for _, pattern, by_method in self._paths for m in by_method]

    def endpoints(self) -> list[Route]:
        """Every route, with its marks (`admin_only`, `public`)."""
        return [route for _, _, by_method in self._paths for route in by_method.values()]

    def find(self, method: str, path: str) -> Route | None:
        """The route answering `method` on `path` (a concrete path or a route's own pattern), or None."""
        for regex, pattern, by_method in self._paths:
            if pattern == path or regex.match(path):
                return by_method.get(method.upper())
        return None

    def _dispatch(self, environ: dict) -> Response:
        path = environ.get("PATH_INFO", "") or "/"
        method = environ["REQUEST_METHOD"].upper()
        for regex, _, by_method in self._paths:
            match = regex.match(path)
            if not match:
                continue
            route = by_method.get(method) or (by_method.get("GET") if method == "HEAD" else None)
            if route is None:
                allow = ", ".join(sorted(by_method))
                raise ApiError(405, f"method {method} not allowed on {path}; allowed: {allow}", {"Allow": allow})
            request = Request(environ, match.groupdict(), self.ctx)
            for hook in self.before_request:
                hook(request, route)
            result = route.handler(request)
            if isinstance(result, Response):
                return result
            if isinstance(result, tuple):
                status, data = result
                return Response.json(data, status)
            return Response.json(result)
        raise ApiError(404, f"no such endpoint: {path}")

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            response = self._dispatch(environ)
        except ApiError as exc:
            body = {"detail": exc.detail, **exc.extra}
            response = Response.json(body, exc.status, exc.headers)
        except (NasUnavailable, ServiceBusy) as exc:  # the NAS, or the database locked by another process
            if isinstance(exc, ServiceBusy):
                log.warning("503 for %s %s: %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), exc)
            response = Response.json({"detail": str(exc)}, 503, {"Retry-After": str(exc.retry_after_s)})
        except Exception:
            log.exception("api: unexpected error on %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            response = Response.json({"detail": "internal server error"}, 500)
        return respond(start_response, response, head=environ["REQUEST_METHOD"].upper() == "HEAD")


def respond(start_response: Callable, response: Response, head: bool = False) -> list[bytes]:
    reason = HTTPStatus(response.status).phrase
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Cache-Control", "no-store"),
    ]
    headers += list(response.headers.items())
    start_response(f"{response.status} {reason}", headers)
    return [] if head else [response.body]


def json_error_app(status: int, detail: str, headers: dict | None = None) -> Callable:
    """A WSGI app that always answers with a JSON error (used by the top-level dispatcher)."""

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        return respond(start_response, Response.json({"detail": detail}, status, headers or {}))

    return app
