"""The API's tokens: JWTs signed with HS256, and the key that signs them.

A token carries `sub` (the user), `role`, `iat`, `exp`, BaluPi's issuer and audience, and `vb`, a
digest of the stored verifier it was issued under (`Authenticator` refuses it once that verifier
is replaced or dropped, and takes the role from the stored record, not from `role`); a token
is accepted only with exactly that algorithm (so `alg: none` and RS/HS confusion are refused), a
valid signature, the right issuer and audience, and an `exp` in the future.

The key comes from `BALUPI_SECRET_KEY`, or is generated once into `<data_dir>/secret.key`, created
with mode 0600 (O_EXCL and O_NOFOLLOW: a file or link placed there beforehand is never written
through); a key file others can read is warned about at start-up.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path


from balupi.errors import ConfigError, InvalidToken
from balupi.log import register_secret
from balupi.settings import Settings, warn_if_readable_by_others

log = logging.getLogger("balupi.auth")

ALGORITHM = "HS256"
ISSUER = "balupi"
AUDIENCE = "balupi-api"
KEY_FILENAME = "secret.key"
KEY_BYTES = 32
REQUIRED_CLAIMS = ("exp", "iat", "sub", "iss", "aud")


@dataclass(frozen=True)
class TokenClaims:
    username: str
    role: str
    issued_at: float
    expires_at: float
    binding: str | None = None  # `vb`: which stored verifier the token was issued under


def load_signing_key(settings: Settings) -> bytes:
    """The configured secret key, or the generated one in the data directory (created if missing)."""
    if settings.secret_key:
        key = settings.secret_key.encode("utf-8")
        if len(key) < 16:
            raise ConfigError("BALUPI_SECRET_KEY: too short; use at least 32 random characters")
        register_secret(settings.secret_key)
        return key
    path = Path(settings.data_dir) / KEY_FILENAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        text = _read_key_file(path)
    else:
        text = secrets.token_hex(KEY_BYTES)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        log.info("generated the API token signing key in %s", path)
    register_secret(text)
    return text.encode("ascii")


def _read_key_file(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(f"BALUPI_SECRET_KEY: cannot read the key file {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd) as f:
        text = f.read().strip()
    if len(text) < 32:
        raise ConfigError(f"BALUPI_SECRET_KEY: the key file {path} is damaged (too short); delete it to make a new one")
    warn_if_readable_by_others(path, "API token key file")
    return text


def _jwt():
    """pyjwt, imported on first use: it loads `cryptography` (about 9 MB of RSS) for algorithms
    BaluPi never uses; a Pi whose API is never called with a token should not pay for it."""
    import jwt

    return jwt


class TokenIssuer:
    def __init__(self, key: bytes, lifetime_s: float):
        self._key = key
        self.lifetime_s = lifetime_s

    def __repr__(self) -> str:
        return f"TokenIssuer(lifetime_s={self.lifetime_s})"

    def issue(self, username: str, role: str, now: float | None = None, binding: str | None = None) -> tuple[str, float]:
        """A signed token for `username` and when it expires (`binding`: see `TokenClaims`)."""
        now = int(time.time() if now is None else now)
        expires = now + int(self.lifetime_s)
        claims = {"sub": username, "role": role, "iat": now, "exp": expires, "iss": ISSUER, "aud": AUDIENCE}
        if binding is not None:
            claims["vb"] = binding
        jwt = _jwt()
        return jwt.encode(claims, self._key, algorithm=ALGORITHM), float(expires)

    def verify(self, token: str) -> TokenClaims:
        jwt = _jwt()
        try:
            claims = jwt.decode(
                token, self._key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"{type(exc).__name__}: {exc}") from None
        username, role = claims.get("sub"), claims.get("role")
        if not isinstance(username, str) or not username or role not in ("user", "admin"):
            raise InvalidToken("sub or role missing or malformed")
        binding = claims.get("vb")
        return TokenClaims(username, role, float(claims["iat"]), float(claims["exp"]),
                           binding if isinstance(binding, str) else None)
