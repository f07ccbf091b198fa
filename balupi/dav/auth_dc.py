"""WsgiDAV's domain controller interface, backed by BaluPi's NAS-checked logins.

`NasDomainController` implements `wsgidav.dc.base_dc.BaseDomainController` for WsgiDAV's
`HTTPAuthenticator`: Basic only (no Digest: the NAS must see the password to check it), one realm
(`REALM`). Every request under /dav/ has already passed `DavGuard` (balupi.dav.guard), which runs
the same `Authenticator` in front of the fast lane and puts the `Identity` into the environ; the
controller then only tells WsgiDAV who it is (`require_authentication` returns False and sets
`wsgidav.auth.user_name` and roles). Should a request reach WsgiDAV without it, the controller asks
for and checks credentials itself, with the same verdicts.
"""

from __future__ import annotations

from wsgidav.dc.base_dc import BaseDomainController

from balupi.auth.service import IDENTITY_KEY, Authenticator, Identity, LoginRefused, LoginThrottled, LoginUnverifiable

REALM = "BaluPi"
AUTHENTICATOR_CONFIG_KEY = "balupi_authenticator"  # where build_dav_app puts the Authenticator


def set_wsgidav_identity(environ: dict, identity: Identity) -> None:
    environ[IDENTITY_KEY] = identity
    environ["wsgidav.auth.user_name"] = identity.username
    environ["wsgidav.auth.roles"] = ("admin",) if identity.is_admin else ("editor",)
    environ["wsgidav.auth.permissions"] = ()


class NasDomainController(BaseDomainController):
    def __init__(self, wsgidav_app, config):
        super().__init__(wsgidav_app, config)
        self.authenticator: Authenticator = config[AUTHENTICATOR_CONFIG_KEY]

    def __str__(self) -> str:
        return "NasDomainController()"

    def get_domain_realm(self, path_info, environ):
        return REALM

    def require_authentication(self, realm, environ):
        if environ is None:  # WsgiDAV asks at start-up whether the share is anonymous
            return not self.authenticator.open_mode
        identity = environ.get(IDENTITY_KEY)
        if identity is not None:
            set_wsgidav_identity(environ, identity)
            return False
        if self.authenticator.open_mode:  # (the guard in front has decided already; this is a fallback)
            try:
                set_wsgidav_identity(environ, self.authenticator.anonymous(environ.get("REMOTE_ADDR", "")))
            except Exception:
                return True
            return False
        return True

    def basic_auth_user(self, realm, user_name, password, environ):
        try:
            identity = self.authenticator.login(user_name, password, environ.get("REMOTE_ADDR", ""))
        except (LoginRefused, LoginThrottled, LoginUnverifiable):
            return False
        set_wsgidav_identity(environ, identity)
        return True

    def supports_http_digest_auth(self):
        return False
