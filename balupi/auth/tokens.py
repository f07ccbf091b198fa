"""The API's tokens: JWTs signed with HS256, and the key that signs them.

A token carries `sub` (the user), `role`, `iat`, `exp`, BaluPi's issuer and audience, and `vb`, a
digest of the stored verifier it was issued under (`Authenticator` refuses it once that verifier
is replaced or dropped, and takes the role from the stored record, not from `role`); a token
is accepted only with exactly that algorithm (so `alg: none` and RS/HS confusion are refused), a
valid signature (compared in constant time), the right issuer and audience, and an `exp` in the
future.

HS256 is signed and checked here with `hmac`, `base64` and `json` (decision 132): PyJWT did the same
work through generic layers that cost a third of a token request, and importing it loaded
`cryptography` (9 MB of RSS) for algorithms BaluPi never uses. The tokens are standard compact JWTs
(RFC 7519), so tokens PyJWT issued before stay valid, and PyJWT reads ours (the tests check both).

The key comes from `BALUPI_SECRET_KEY`, or is generated once into `<data_dir>/secret.key`, created
with mode 0600 (O_EXCL and O_NOFOLLOW: a file or link placed there beforehand is never written
through); a key file others can read is warned about at start-up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
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
MAX_TOKEN_CHARS = 8192
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


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


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(segment: str) -> bytes:
    """A base64url segment without padding; strict (no other characters, no padding)."""
    if len(segment) % 4 == 1 or not _BASE64URL.fullmatch(segment):
        raise InvalidToken("DecodeError: a segment is not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("DecodeError: a segment is not base64url") from None


def _json_segment(segment: str, what: str) -> dict:
    try:
        value = json.loads(_b64decode(segment))
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken(f"DecodeError: the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidToken(f"DecodeError: the {what} is not a JSON object")
    return value


def _integer_claim(claims: dict, name: str) -> int:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) > 2**62:
        raise InvalidToken(f"DecodeError: claim {name} must be a number")
    return int(value)


_HEADER_SEGMENT = _b64encode(json.dumps({"alg": ALGORITHM, "typ": "JWT"}, separators=(",", ":")).encode())


class TokenIssuer:
    def __init__(self, key: bytes, lifetime_s: float):
        self._key = key
        self.lifetime_s = lifetime_s

    def __repr__(self) -> str:
        return f"TokenIssuer(lifetime_s={self.lifetime_s})"

    def _signature(self, signing_input: bytes) -> bytes:
        return hmac.new(self._key, signing_input, hashlib.sha256).digest()

    def issue(self, username: str, role: str, now: float | None = None, binding: str | None = None) -> tuple[str, float]:
        """A signed token for `username` and when it expires (`binding`: see `TokenClaims`)."""
        now = int(time.time() if now is None else now)
        expires = now + int(self.lifetime_s)
        claims = {"sub": username, "role": role, "iat": now, "exp": expires, "iss": ISSUER, "aud": AUDIENCE}
        if binding is not None:
            claims["vb"] = binding
        signing_input = _HEADER_SEGMENT + "." + _b64encode(json.dumps(claims, separators=(",", ":")).encode())
        token = signing_input + "." + _b64encode(self._signature(signing_input.encode("ascii")))
        return token, float(expires)

    def verify(self, token: str, now: float | None = None) -> TokenClaims:
        """The claims of a token issued with this key, or InvalidToken (the message says why).

        The signature is checked before anything in the token is believed; the header must name
        exactly HS256 (no `none`, no other algorithm, no critical extensions)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise InvalidToken("DecodeError: not a compact JWT")
        header_segment, payload_segment, signature_segment = token.split(".")
        header = _json_segment(header_segment, "header")
        if header.get("alg") != ALGORITHM or "crit" in header:
            raise InvalidToken(f"InvalidAlgorithmError: algorithm {str(header.get('alg'))[:16]!r} is not allowed")
        expected = self._signature(f"{header_segment}.{payload_segment}".encode("ascii"))
        if not hmac.compare_digest(expected, _b64decode(signature_segment)):
            raise InvalidToken("InvalidSignatureError: signature verification failed")
        claims = _json_segment(payload_segment, "payload")
        missing = [name for name in REQUIRED_CLAIMS if claims.get(name) is None]
        if missing:
            raise InvalidToken(f"MissingRequiredClaimError: token is missing the {missing[0]!r} claim")
        now = time.time() if now is None else now
        if _integer_claim(claims, "exp") <= now:
            raise InvalidToken("ExpiredSignatureError: signature has expired")
        if _integer_claim(claims, "iat") > now:
            raise InvalidToken("ImmatureSignatureError: the token is not yet valid (iat)")
        if "nbf" in claims and _integer_claim(claims, "nbf") > now:
            raise InvalidToken("ImmatureSignatureError: the token is not yet valid (nbf)")
        if claims["iss"] != ISSUER:
            raise InvalidToken("InvalidIssuerError: invalid issuer")
        audience = claims["aud"]
        if not (audience == AUDIENCE or (isinstance(audience, list) and AUDIENCE in audience)):
            raise InvalidToken("InvalidAudienceError: audience doesn't match")
        username, role = claims.get("sub"), claims.get("role")
        if not isinstance(username, str) or not username or role not in ("user", "admin"):
            raise InvalidToken("sub or role missing or malformed")
        binding = claims.get("vb")
        return TokenClaims(username, role, float(claims["iat"]), float(claims["exp"]),
                           binding if isinstance(binding, str) else None)
