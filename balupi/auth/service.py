"""The `Authenticator`: the one place a user name and password are judged.

A login (`login(username, password, address)`) is decided, in this order:

1. A login checked less than `auth_recheck_s` ago with the same name and password is accepted from
   memory (an HMAC of name and password under a per-process key: no scrypt, no NAS request).
   WebDAV's Basic headers have a second key into the same memo (`login_basic`: an HMAC of the
   header's credentials as sent), so a repeated header costs one HMAC and one dict lookup; such an
   entry is as old as the check it copies and is dropped with it (`forget`).
2. An address still in its throttle delay is refused with the time to wait (`LoginThrottled`),
   before anything is checked; so is a name in its delay, unless the password matches the name's
   stored verifier (others guessing a member's name from elsewhere must not lock the member out).
3. With the NAS awake, the NAS decides (`auth_nas_method`: an authenticated PROPFIND of the WebDAV
   root, or BaluHost's `POST /api/auth/login`, which also tells the role). Accepted: a fresh scrypt
   verifier is stored (or the stored one confirmed). Rejected: the stored verifier is dropped. A
   NAS that does not answer falls through to 4.
4. Otherwise the stored verifier decides, if the NAS accepted that password within
   `auth_offline_days`. An unknown user is checked against a dummy verifier (the same time), then,
   with `auth_wake_nas_for_unknown` (the default: a person is waiting), a name without a usable
   verifier (never seen, or older than the offline window) wakes the NAS to decide;
   a wake that outlasts the request's wait answers `LoginUnverifiable` ("checking your password with
   the NAS, which is waking up": 503 with Retry-After), as does a NAS unreachable for a named reason
   (its certificate is not trusted). Without the setting: refused.

Every refusal is the same `LoginRefused`, whatever the reason, so answers never tell whether a user
exists; and costs the same work (a refusal by the NAS is followed by a scrypt against the stored
verifier, or a dummy one for a name the Pi does not know). A failed check is never remembered;
only the throttle counts it.

API tokens carry a digest of the verifier they were issued under: a new password (a new verifier)
or a dropped one (the NAS rejected the password) refuses every older token. A token's role and
view are those of the stored record at each use (updated at every NAS check of the password), not
the role the token was issued with.

Whose files a user sees (`Identity.view`): NAS admins and the service account (`nas_username`) share
the view "" (the NAS root, requested with the service account); every other user has a view named
after them, requested with their own credentials (`NasClient.set_credentials`).

With no NAS configured there is no authority to ask (`open_identity()`): the Pi itself (loopback)
is an anonymous admin; another address needs the local admin password (`local_admin_password`,
user `admin`), or is anonymous without admin rights only when `anonymous_lan_access` says so, and
is refused otherwise (decision 86).

Lock order: `Authenticator._lock` before a per-login lock (`_login_locks`); the database and NAS
requests happen under the per-login lock only.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from balupi.auth.basic import MAX_PASSWORD_CHARS, parse_basic, valid_username
from balupi.auth.throttle import Throttle
from balupi.auth.tokens import TokenIssuer, load_signing_key
from balupi.auth.verifiers import (VerifierStore, check_verifier, dummy_verifier, make_verifier, password_bytes,
                                   verifier_binding)
from balupi.db import Database
from balupi.errors import (InvalidToken, LoginRefused, LoginThrottled, LoginUnverifiable, NasUnavailable,
                           OpenModeRefused)
from balupi.log import register_secret
from balupi.nas.monitor import NasState
from balupi.settings import Settings

if TYPE_CHECKING:
    from balupi.nas.client import NasClient
    from balupi.nas.monitor import NasMonitor

log = logging.getLogger("balupi.auth")

IDENTITY_KEY = "balupi.identity"  # the WSGI environ key of the request's Identity
SHARED_VIEW = ""
NAS_CHECK_TIMEOUT_S = 15.0
MEMO_MAX = 4096
DAY_S = 86400.0


class Role(enum.Enum):
    USER = "user"
    ADMIN = "admin"


class AuthMethod(enum.Enum):
    NAS = "nas"  # the NAS accepted the password just now
    OFFLINE = "offline"  # the stored verifier matched (the NAS was not asked)
    REMEMBERED = "remembered"  # checked within auth_recheck_s
    TOKEN = "token"  # an API token
    ANONYMOUS = "anonymous"  # no NAS configured
    LOCAL = "local"  # no NAS configured: the local admin password


class NasVerdict(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    NO_ANSWER = "no_answer"


@dataclass(frozen=True)
class Identity:
    username: str
    role: Role
    view: str
    method: AuthMethod

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def public(self) -> dict:
        return {"username": self.username, "role": self.role.value, "view": self.view, "method": self.method.value}


LOCAL_ADMIN_USER = "admin"


@dataclass
class _Remembered:
    identity: Identity
    checked_at_s: float  # time.monotonic()
    recalled: Identity | None = None  # `identity` as a remembered login (AuthMethod.REMEMBERED)

    def __post_init__(self):
        if self.recalled is None:
            self.recalled = Identity(self.identity.username, self.identity.role, self.identity.view,
                                     AuthMethod.REMEMBERED)


@functools.lru_cache(maxsize=1024)
def is_loopback(address: str) -> bool:
    """(Asked on every anonymous request: a household has a handful of addresses, so remember.)"""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class Authenticator:
    def __init__(self, settings: Settings, db: Database, client: "NasClient", monitor: "NasMonitor"):
        self.settings = settings
        self.client = client
        self.monitor = monitor
        self.verifiers = VerifierStore(db)
        self.throttle = Throttle(settings.auth_throttle_free_attempts, settings.auth_throttle_base_delay_s,
                                 settings.auth_throttle_max_delay_s)
        self.tokens = TokenIssuer(load_signing_key(settings), settings.auth_token_lifetime_minutes * 60)
        self.admins = frozenset(settings.auth_admins)
        self.offline_window_s = settings.auth_offline_days * DAY_S
        self._memo_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._remembered: dict[bytes, _Remembered] = {}
        self.generation = 0  # one more each time remembered logins are dropped (the answer memo's check)
        self._login_locks: dict[bytes, threading.Lock] = {}
        self._confirmed: dict[str, bytes] = {}  # username -> memo key of the password its verifier holds
        client.on_credentials_rejected = self._nas_rejected_credentials
        if monitor.configured and settings.auth_nas_method == "rest" and not client.rest_allowed():
            log.error("BALUPI_AUTH_NAS_METHOD is rest, but BALUPI_NAS_URL names another host than the WebDAV URL:"
                      " the NAS cannot be asked about logins (only stored verifiers work)")

    @property
    def open_mode(self) -> bool:
        """No NAS configured: nothing to check logins against; requests are anonymous."""
        return not self.monitor.configured

    # -- identities -----------------------------------------------------------------------------

    def view_of(self, username: str, nas_role: str) -> str:
        if nas_role == "admin" or (self.settings.nas_username and username == self.settings.nas_username):
            return SHARED_VIEW
        return username

    def identity(self, username: str, nas_role: str, method: AuthMethod) -> Identity:
        role = Role.ADMIN if nas_role == "admin" or username in self.admins else Role.USER
        return Identity(username, role, self.view_of(username, nas_role), method)

    def anonymous(self, address: str) -> Identity:
        """Open mode only, no credentials: see `open_identity`."""
        return self.open_identity(address, None)

    def open_access(self) -> str:
        """Who may use BaluPi with no NAS configured, in words (for the log and /api/health)."""
        if self.settings.anonymous_lan_access:
            return "anyone on the network (anonymous_lan_access); admin only from the Pi itself or with the local admin password"
        if self.settings.local_admin_password:
            return "the Pi itself, and others with user admin and the local admin password"
        return "the Pi itself only (127.0.0.1); set local_admin_password (balupi setup) or a NAS to let others in"

    def open_identity(self, address: str, credentials) -> Identity:
        """Open mode only (no NAS to ask): the Pi itself is an anonymous admin; others log in with
        the local admin password, or are anonymous users when `anonymous_lan_access` is on.
        Raises OpenModeRefused, LoginRefused or LoginThrottled."""
        assert self.open_mode
        if is_loopback(address):
            return Identity("", Role.ADMIN, SHARED_VIEW, AuthMethod.ANONYMOUS)
        secret = self.settings.local_admin_password
        if credentials is not None and secret:
            wait = self.throttle.retry_after_s(address, credentials.username)
            if wait > 0:
                raise LoginThrottled(wait)
            if credentials.username == LOCAL_ADMIN_USER and hmac.compare_digest(
                    password_bytes(credentials.password), password_bytes(secret)):
                self.throttle.succeeded(address, credentials.username)
                return Identity(LOCAL_ADMIN_USER, Role.ADMIN, SHARED_VIEW, AuthMethod.LOCAL)
            self.throttle.failed(address, credentials.username)
            log.warning("local admin login refused for user %r from %s", credentials.username[:64], address)
            raise LoginRefused("wrong local admin password")
        if self.settings.anonymous_lan_access:
            return Identity("", Role.USER, SHARED_VIEW, AuthMethod.ANONYMOUS)
        if secret:
            raise OpenModeRefused("no NAS is configured: log in as admin with the local admin password", challenge=True)
        raise OpenModeRefused("no NAS is configured, so BaluPi serves only the Pi itself (127.0.0.1); set "
                              "BALUPI_LOCAL_ADMIN_PASSWORD (balupi setup) or a NAS, or BALUPI_ANONYMOUS_LAN_ACCESS=true",
                              challenge=False)

    # -- logins ---------------------------------------------------------------------------------

    def _memo(self, username: str, password: str) -> bytes:
        return hmac.new(self._memo_key, password_bytes(username) + b"\x00" + password_bytes(password), hashlib.sha256).digest()

    def login(self, username: str, password: str, address: str) -> Identity:
        """The identity of a name and password, or LoginRefused / LoginThrottled."""
        if self.open_mode:
            raise LoginRefused("no NAS is configured to check logins against")
        if not valid_username(username) or len(password) > MAX_PASSWORD_CHARS or "\x00" in password:
            self.throttle.failed(address, username)
            raise LoginRefused("malformed user name or password")
        key = self._memo(username, password)
        remembered = self._recall(key)
        if remembered is not None:
            self.client.set_credentials(remembered.view, username, password)
            return remembered
        address_wait, name_wait = self.throttle.waits(address, username)
        if address_wait > 0:
            raise LoginThrottled(address_wait)
        if name_wait > 0 and not self._matches_stored(username, password):
            self.throttle.failed(address, username)
            raise LoginThrottled(name_wait)
        with self._login_lock(key):
            remembered = self._recall(key)  # a parallel request with the same login may have checked it
            if remembered is not None:
                return remembered
            try:
                identity = self._check(username, password, key)
            except LoginUnverifiable as exc:
                log.warning("login of %r from %s not checked: %s", username[:64], address, exc)
                raise
            except LoginRefused:
                self.throttle.failed(address, username)
                log.warning("login refused for user %r from %s", username[:64], address)
                raise
        self.throttle.succeeded(address, username)
        register_secret(password)
        self.client.set_credentials(identity.view, username, password)
        with self._lock:
            if len(self._remembered) >= MEMO_MAX:
                self.generation += 1
                self._remembered.clear()
            self._remembered[key] = _Remembered(identity, time.monotonic())
        return identity

    def login_basic(self, encoded: str, address: str, memo=None) -> Identity:
        """`login` for the credentials of a Basic header (`encoded`: the part after 'Basic ').

        A header whose login was checked (or recalled) less than `auth_recheck_s` ago is found by
        an HMAC of `encoded` alone: no base64 decoding, name check or second HMAC. The entry copies
        the time of the check it stands for, so a password is rechecked as often as through
        `login`, and `forget` drops it with the login's own entry. LoginRefused for a malformed
        header (not counted by the throttle, as before).

        `memo`: an `AnswerMemo` (balupi.answermemo); a remembered login stamps it with what
        `login_still_good` needs to say, later, that this login still stands."""
        if self.open_mode:
            raise LoginRefused("no NAS is configured to check logins against")
        header_key = self._header_memo(encoded)
        generation = self.generation  # read first: a login dropped after this read changes it
        found = self._remembered.get(header_key)  # a dict read is atomic; writers hold the lock
        if found is not None and time.monotonic() - found.checked_at_s <= self.settings.auth_recheck_s:
            view = found.identity.view
            credentials = None
            if view != SHARED_VIEW or not self.settings.nas_username:  # the view's NAS requests use them
                credentials = parse_basic(encoded)
                self.client.set_credentials(view, credentials.username, credentials.password)
            if memo is not None:
                memo.auth = self
                memo.login = (generation, found.checked_at_s, view, credentials)
            return found.recalled
        credentials = parse_basic(encoded)
        if credentials is None:
            raise LoginRefused("malformed Basic credentials")
        identity = self.login(credentials.username, credentials.password, address)
        with self._lock:  # with `forget`'s lock: an entry it just dropped is not copied back
            entry = self._remembered.get(self._memo(credentials.username, credentials.password))
            if entry is not None:
                if len(self._remembered) >= MEMO_MAX:
                    self.generation += 1
                    self._remembered.clear()
                self._remembered[header_key] = entry
        return identity

    def login_still_good(self, stamp: tuple) -> bool:
        """Whether the remembered login `stamp` stands for (`login_basic`'s `memo`) would be
        recalled now as then: no remembered login dropped since (a password the NAS rejected, a
        forgotten user), a NAS still configured, its recheck not yet due. Then the side effect of
        recalling it is repeated (the view's NAS credentials)."""
        generation, checked_at_s, view, credentials = stamp
        if (generation != self.generation or time.monotonic() - checked_at_s > self.settings.auth_recheck_s
                or self.open_mode):
            return False
        if credentials is not None:
            self.client.set_credentials(view, credentials.username, credentials.password)
        return True

    def _header_memo(self, encoded: str) -> bytes:
        # surrogatepass: one-to-one for any str, so two headers never share a key
        # hmac.digest: the same HMAC-SHA256 in one C call (hmac.new builds a Python HMAC object)
        return hmac.digest(self._memo_key, b"basic\x00" + encoded.encode("utf-8", "surrogatepass"), "sha256")

    def _matches_stored(self, username: str, password: str) -> bool:
        """Whether `password` matches `username`'s stored verifier (one scrypt, dummy when none)."""
        stored = self.verifiers.get(username)
        return check_verifier(stored.verifier if stored else dummy_verifier(), password) and stored is not None

    def _recall(self, key: bytes) -> Identity | None:
        with self._lock:
            found = self._remembered.get(key)
        if found is None or time.monotonic() - found.checked_at_s > self.settings.auth_recheck_s:
            return None
        return found.recalled

    def _login_lock(self, key: bytes) -> threading.Lock:
        with self._lock:
            lock = self._login_locks.get(key)
            if lock is None:
                if len(self._login_locks) >= MEMO_MAX:
                    self._login_locks = {k: v for k, v in self._login_locks.items() if v.locked()}
                lock = self._login_locks[key] = threading.Lock()
            return lock

    def _check(self, username: str, password: str, key: bytes) -> Identity:
        if self.monitor.state is NasState.AWAKE:
            verdict, nas_role = self._ask_nas(username, password, wake=False)
            if verdict is not NasVerdict.NO_ANSWER:
                return self._settle(username, password, key, verdict, nas_role)
        stored = self.verifiers.get(username)
        matches = check_verifier(stored.verifier if stored else dummy_verifier(), password)
        if stored is not None and matches and time.time() - stored.verified_at <= self.offline_window_s:
            return self.identity(username, stored.nas_role, AuthMethod.OFFLINE)
        if self.monitor.tls_problem:
            raise LoginUnverifiable(f"cannot check your password with the NAS: it is unreachable: {self.monitor.problem}",
                                    retry_after_s=3600)
        usable = stored is not None and time.time() - stored.verified_at <= self.offline_window_s
        if self.settings.auth_wake_nas_for_unknown and not usable:
            # Nothing on the Pi can check this name's password and a person is waiting: wake the
            # NAS to ask it (the throttle bounds how often a stranger can). A name with a usable
            # verifier was checked just now (a mismatch is refused, as before: guesses at a
            # member's password never wake the NAS).
            verdict, nas_role = self._ask_nas(username, password, wake=True)
            if verdict is not NasVerdict.NO_ANSWER:
                return self._settle(username, password, key, verdict, nas_role, checked=matches and stored is not None)
            state = self.monitor.state
            if state is NasState.WAKING:
                raise LoginUnverifiable("checking your password with the NAS, which is waking up",
                                        retry_after_s=max(5, int(self.settings.nas_boot_time_s)))
            if state is NasState.UNREACHABLE:
                raise LoginUnverifiable(f"cannot check your password with the NAS: it is {self.monitor.state_words()}",
                                        retry_after_s=max(30, int(self.settings.nas_boot_time_s)))
        raise LoginRefused("cannot be verified")

    def _settle(self, username: str, password: str, key: bytes, verdict: NasVerdict, nas_role: str,
                checked: bool | None = None) -> Identity:
        """`checked`: whether the stored verifier matched, when this request checked it already."""
        if verdict is NasVerdict.REJECTED:
            stored = self.verifiers.get(username)
            # The scrypt runs for unknown names too (a dummy verifier): a refusal takes as long
            # whether or not the name has logged in through BaluPi before (once per request).
            if checked is None:
                checked = check_verifier(stored.verifier if stored else dummy_verifier(), password)
            if checked and stored is not None:
                self.forget(username)  # the password the Pi knew is no longer good (a guess drops nothing)
            raise LoginRefused("the NAS rejected the password")
        identity = self.identity(username, nas_role, AuthMethod.NAS)
        if self.offline_window_s > 0:
            if self._confirmed.get(username) == key:
                self.verifiers.confirm(username, nas_role, identity.view)
            else:
                stored = self.verifiers.get(username)
                if stored is not None and check_verifier(stored.verifier, password):
                    self.verifiers.confirm(username, nas_role, identity.view)
                else:
                    self.verifiers.save(username, make_verifier(password), nas_role, identity.view)
                self._confirmed[username] = key
        log.info("login of %r accepted by the NAS (view %r, role %s)", username, identity.view, identity.role.value)
        return identity

    def _nas_method(self) -> str:
        method = self.settings.auth_nas_method
        if method == "auto":
            return "rest" if self.client.rest_allowed() else "webdav"
        return method

    def _ask_nas(self, username: str, password: str, wake: bool) -> tuple[NasVerdict, str]:
        """Ask the NAS about these credentials: (verdict, the role it reports or 'user')."""
        credentials = (password_bytes(username), password_bytes(password))
        try:
            if self._nas_method() == "rest":
                body = json.dumps({"username": username, "password": password}).encode()
                response = self.client.request(
                    "POST", "/api/auth/login", wake=wake, url=self.client.rest_url("/api/auth/login"), data=body,
                    headers={"Content-Type": "application/json"}, timeout_s=NAS_CHECK_TIMEOUT_S, auth=credentials,
                )
            else:
                response = self.client.request(
                    "PROPFIND", "/", wake=wake, headers={"Depth": "0"}, timeout_s=NAS_CHECK_TIMEOUT_S,
                    auth=credentials, url=self.client.base_url,
                )
        except NasUnavailable as exc:
            log.info("could not ask the NAS about a login (%s): using the stored verifier", exc)
            return NasVerdict.NO_ANSWER, "user"
        with response:
            if response.status_code in (401, 403):
                return NasVerdict.REJECTED, "user"
            if response.status_code == 200 and self._nas_method() == "rest":
                try:
                    role = str(response.json()["user"]["role"])
                except (ValueError, KeyError, TypeError):
                    role = "user"
                return NasVerdict.ACCEPTED, role
            if response.status_code in (200, 207):
                return NasVerdict.ACCEPTED, "user"
        log.warning("the NAS answered %s to a login check: using the stored verifier", response.status_code)
        return NasVerdict.NO_ANSWER, "user"

    # -- tokens ---------------------------------------------------------------------------------

    def issue_token(self, identity: Identity) -> tuple[str, float]:
        stored = self.verifiers.get(identity.username)
        binding = verifier_binding(stored.verifier) if stored is not None else None
        return self.tokens.issue(identity.username, identity.role.value, binding=binding)

    def token_identity(self, token: str) -> Identity:
        """The identity of an API token; LoginRefused when it is not valid (any reason)."""
        try:
            claims = self.tokens.verify(token)
        except InvalidToken as exc:
            log.info("API token refused: %s", exc)
            raise LoginRefused("invalid token") from None
        stored = self.verifiers.get(claims.username)
        if stored is None:  # the NAS has since rejected the password (or offline logins are off)
            if self.offline_window_s > 0:
                raise LoginRefused("the token's user has no accepted login any more")
            return Identity(claims.username, Role(claims.role), self.view_of(claims.username, "user"), AuthMethod.TOKEN)
        if claims.binding is None or not hmac.compare_digest(claims.binding, verifier_binding(stored.verifier)):
            log.info("API token of %r refused: issued under a password the NAS has since replaced", claims.username)
            raise LoginRefused("the token was issued under another password")
        role = Role.ADMIN if stored.nas_role == "admin" or claims.username in self.admins else Role.USER
        return Identity(claims.username, role, stored.view, AuthMethod.TOKEN)

    # -- forgetting -----------------------------------------------------------------------------

    def forget(self, username: str) -> None:
        """The NAS rejected this user's password: drop the verifier, remembered logins, NAS credentials."""
        dropped = self.verifiers.drop(username)
        with self._lock:
            self.generation += 1
            for key in [k for k, r in self._remembered.items() if r.identity.username == username]:
                del self._remembered[key]
            self._confirmed.pop(username, None)
        self.client.forget_credentials(username)
        if dropped:
            log.warning("the NAS rejected the password of %r: its offline login is dropped", username)

    def _nas_rejected_credentials(self, username: str) -> None:
        self.forget(username)

    def enroll(self, username: str, password: str, nas_role: str = "user") -> Identity:
        """Store a verifier as if the NAS had just accepted this password (tests, set-up tools)."""
        identity = self.identity(username, nas_role, AuthMethod.NAS)
        self.verifiers.save(username, make_verifier(password), nas_role, identity.view)
        return identity
