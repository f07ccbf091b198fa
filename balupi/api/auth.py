"""POST /api/auth/login and GET /api/auth/me, and the hook that authenticates every other endpoint.

Every endpoint needs a login except those marked `public` (GET /api/health, the login itself):
either `Authorization: Bearer <token>` with a token from POST /api/auth/login, or HTTP Basic with
the NAS user's name and password (checked like a WebDAV login, throttled alike). Endpoints marked
`admin_only` (changing things, controlling hardware) need the admin role: the NAS's own role, or a
name listed in `auth_admins`. With no NAS configured, requests are anonymous and admin only from
the Pi itself (loopback).

Before all that, a request that changes things must not be one another web site could make a browser
send (`balupi.websec.cross_site_problem`: JSON bodies only, no foreign `Origin`/`Sec-Fetch-Site`),
and a browser may not use Basic credentials for it (browsers resend those by themselves): 415/403.
"""

from __future__ import annotations

from balupi.api import ApiError, Request, Route
from balupi.auth.basic import parse_basic, split_authorization
from balupi.auth.service import Authenticator, Identity
from balupi.errors import LoginRefused, LoginThrottled, LoginUnverifiable, OpenModeRefused
from balupi.websec import SAFE_METHODS, cross_site_problem, from_browser

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="BaluPi", Basic realm="BaluPi"'}
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="BaluPi", error="invalid_token"'}


def _throttled(exc: LoginThrottled) -> ApiError:
    retry = max(1, round(exc.retry_after_s))
    return ApiError(429, str(exc), {"Retry-After": str(retry)}, retry_after_s=retry)


def _unverifiable(exc: LoginUnverifiable) -> ApiError:
    retry = max(1, round(exc.retry_after_s))
    return ApiError(503, str(exc), {"Retry-After": str(retry)}, retry_after_s=retry)


def identify(auth: Authenticator, request: Request) -> Identity:
    """Who sent `request` (raises ApiError 401/429 when nobody acceptable)."""
    address = request.environ.get("REMOTE_ADDR", "")
    scheme, value = split_authorization(request.header("Authorization"))
    if auth.open_mode:
        try:
            return auth.open_identity(address, parse_basic(value) if scheme == "basic" else None)
        except LoginThrottled as exc:
            raise _throttled(exc) from None
        except LoginRefused:
            raise ApiError(401, "invalid user name or password", CHALLENGE) from None
        except OpenModeRefused as exc:
            raise (ApiError(401, str(exc), CHALLENGE) if exc.challenge else ApiError(403, str(exc))) from None
    if scheme == "bearer":
        try:
            return auth.token_identity(value)
        except LoginRefused:  # no Basic offered here: a browser page must not get the browser's login box
            raise ApiError(401, "invalid or expired token", BEARER_CHALLENGE) from None
    if scheme == "basic":
        credentials = parse_basic(value)
        if credentials is not None:
            try:
                return auth.login(credentials.username, credentials.password, address)
            except LoginThrottled as exc:
                raise _throttled(exc) from None
            except LoginUnverifiable as exc:
                raise _unverifiable(exc) from None
            except LoginRefused:
                pass
        raise ApiError(401, "invalid user name or password", CHALLENGE)
    raise ApiError(401, "authentication required", CHALLENGE)


def authenticate(request: Request, route: Route) -> None:
    """The API's first `before_request` hook: refuse what another web site could have sent, then
    find who is asking (unless the route is public) and whether they may (admin-only routes)."""
    problem = cross_site_problem(request.environ)
    if problem is not None:
        raise ApiError(*problem)
    if route.public:
        return
    scheme, _ = split_authorization(request.header("Authorization"))
    if scheme == "basic" and request.method not in SAFE_METHODS and from_browser(request.environ):
        # A browser resends Basic credentials by itself (ambient authority): a page must use a token.
        raise ApiError(403, "a browser must use a Bearer token (POST /api/auth/login) to change things")
    request.user = identify(request.ctx.auth, request)
    request.environ["balupi.user"] = request.user.username  # who a NAS wake is for (balupi.nas.wakes)
    if route.admin_only and not request.user.is_admin:
        raise ApiError(403, "this endpoint needs the admin role")


def login(request: Request) -> dict:
    auth = request.ctx.auth
    if auth.open_mode:
        raise ApiError(409, "no NAS is configured, so there is nothing to log in against; requests are anonymous")
    body = request.json_object()
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise ApiError(422, "username and password (strings) are required")
    try:
        identity = auth.login(username, password, request.environ.get("REMOTE_ADDR", ""))
    except LoginThrottled as exc:
        raise _throttled(exc) from None
    except LoginUnverifiable as exc:
        raise _unverifiable(exc) from None
    except LoginRefused:
        raise ApiError(401, "invalid user name or password", CHALLENGE) from None
    token, expires_at = auth.issue_token(identity)
    return {"access_token": token, "token_type": "bearer", "expires_at": expires_at, "user": identity.public()}


def me(request: Request) -> dict:
    return {"user": request.user.public(), "open_mode": request.ctx.auth.open_mode}


ROUTES = (
    Route("POST", "/auth/login", login, public=True),
    Route("GET", "/auth/me", me),
)
