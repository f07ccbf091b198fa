"""BaluPi's own exceptions, named together in one place.

Subsystems raise these; the HTTP layers map them to status codes (the API in `balupi.api`, the
WebDAV guard and provider through WsgiDAV's `DAVError`). Every one is a `BaluPiError`, so the CLI
prints any of them as one line. (The energy monitor's plug errors live beside the plug model in
`balupi.energy.model`, also under `BaluPiError`; `balupi.api.ApiError` is an HTTP answer, not an error.)
"""

from __future__ import annotations

import errno


class BaluPiError(Exception):
    """Base class of every error BaluPi raises on purpose."""


class ConfigError(BaluPiError):
    """A setting has a bad value. The message names the setting and is fit to print as one line."""


class DatabaseError(BaluPiError):
    """The SQLite database cannot be opened or migrated."""


class NasUnavailable(BaluPiError):
    """The NAS is needed but did not become ready in time (asleep, waking, unreachable, unconfigured).

    `retry_after_s` tells an HTTP client when to try again.
    """

    def __init__(self, message: str, retry_after_s: int = 30):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NoViewCredentials(NasUnavailable):
    """A user's view needs that user's NAS credentials, which BaluPi holds only in memory after the
    user logged in; nobody has since the start."""


class NasBusy(NasUnavailable):
    """As many client requests as may wait for the NAS already do (a wake, downloads); this one is
    refused at once so that workers stay free for what the cache can answer."""


class ServiceBusy(BaluPiError):
    """BaluPi cannot do this now, for a reason that passes (the database locked by another process).

    `retry_after_s` tells an HTTP client when to try again; the HTTP layers answer 503.
    """

    def __init__(self, message: str, retry_after_s: int = 5):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NasAnswerUnreadable(NasUnavailable):
    """The NAS answered, but not in a form BaluPi can read: a listing that is not XML, a body that
    does not decode, a header that does not parse. Treated as the NAS being unavailable for now (a
    client gets 503 with Retry-After, a job stops and retries later; decision 240), never as a crash."""


class NasNotConfigured(NasUnavailable):
    """No NAS WebDAV URL is configured, so there is nothing to fall through to."""


class WakeNotPossible(BaluPiError):
    """Wake-on-LAN was asked for but cannot be sent (no MAC address configured)."""


class InsufficientStorage(BaluPiError):
    """A write cannot be taken: the cache volume or the database's volume has no room for it (507).
    The message says which volume and how much room there is."""


# -- logins and tokens (balupi.auth; the API answers 401/403/429/503, the WebDAV guard alike) ------------


class LoginRefused(BaluPiError):
    """Wrong name or password, unknown user, or no way to check: one answer for all."""


class LoginUnverifiable(BaluPiError):
    """The password could not be checked now (the NAS is waking up, or unreachable for a named
    reason) and nothing stored decides it: 503 with Retry-After, never 401."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OpenModeRefused(BaluPiError):
    """No NAS is configured and this address may not use BaluPi anonymously. `challenge`: a local
    admin password is set, so a login prompt (401) makes sense; otherwise 403."""

    def __init__(self, message: str, challenge: bool):
        super().__init__(message)
        self.challenge = challenge


class LoginThrottled(BaluPiError):
    """Too many failed logins from this address or for this name: 429 with Retry-After."""

    def __init__(self, retry_after_s: float):
        super().__init__(f"too many failed logins; try again in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class InvalidToken(BaluPiError):
    """The token is not one BaluPi issued, or no longer valid. The message says why (for logs)."""


# -- the NAS as upstream: downloads and the write-back --------------------------------------------------


class UpstreamMissing(BaluPiError):
    """The NAS says the file does not exist (404)."""


class UpstreamError(BaluPiError):
    """The NAS failed the download (status, dropped connection, short body, changed under us)."""


class AnswerCut(ConnectionResetError):
    """An answer whose head is sent cannot be finished: the NAS broke off the body it is streamed
    from. The client's connection is closed, so the client sees a short body (decision 240).

    A ConnectionResetError (ECONNRESET) on purpose: cheroot, and the hot path in `balupi.httpio`,
    close such a connection quietly instead of logging a traceback for the answer."""

    def __init__(self, message: str):
        super().__init__(errno.ECONNRESET, message)


# 4xx answers that a retry can change (credentials, a missing parent, a lock, a rate limit...);
# any other 4xx is the NAS refusing this change for good.
TRANSIENT_4XX = frozenset({401, 404, 408, 409, 412, 423, 424, 425, 429})


class SyncError(BaluPiError):
    """The NAS refused or failed a step of the write-back; the change is retried later, unless `permanent`."""

    def __init__(self, message: str, status: int | None = None, permanent: bool | None = None):
        super().__init__(message)
        self.status = status
        self.permanent = permanent if permanent is not None else (
            status is not None and 400 <= status < 500 and status not in TRANSIENT_4XX)


# -- the content store ----------------------------------------------------------------------------------


class ContentDamaged(BaluPiError):
    """Cached content no longer matches its checksum (or its sidecar is unreadable)."""

    def __init__(self, key: str, detail: str):
        super().__init__(f"content {key} is damaged: {detail}")
        self.key = key
        self.detail = detail
