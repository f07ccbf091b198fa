"""BaluPi's own exceptions, named together in one place.

Subsystems raise these; the HTTP layers map them to status codes (the API in `balupi.api.app`, the
WebDAV provider through WsgiDAV's `DAVError`).
"""


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


class NasNotConfigured(NasUnavailable):
    """No NAS WebDAV URL is configured, so there is nothing to fall through to."""


class WakeNotPossible(BaluPiError):
    """Wake-on-LAN was asked for but cannot be sent (no MAC address configured)."""


class InsufficientStorage(BaluPiError):
    """A write cannot be taken: the cache volume or the database's volume has no room for it (507).
    The message says which volume and how much room there is."""
