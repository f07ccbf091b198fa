"""Salted scrypt verifiers of passwords the NAS accepted, kept so logins work while it sleeps.

A verifier is `scrypt$<n>$<r>$<p>$<salt>$<hash>` (base64 salt and hash): the cost parameters
travel with it, so they can be raised later without invalidating stored rows. scrypt is memory-hard
(16 MiB at n=2^14, r=8), which makes guessing a stolen database expensive even on GPUs; the
password itself is never stored, logged or sent anywhere but to the NAS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass

from balupi.db import Database

OWNS = ("auth_verifiers",)

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
MAX_MEMORY_BYTES = 64 << 20


def password_bytes(password: str) -> bytes:
    """The bytes the client sent (headers are decoded with surrogateescape, so they round-trip)."""
    return password.encode("utf-8", "surrogateescape")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password_bytes(password), salt=salt, n=n, r=r, p=p, maxmem=MAX_MEMORY_BYTES, dklen=HASH_BYTES)


def make_verifier(password: str) -> str:
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(digest)}"


def check_verifier(verifier: str, password: str) -> bool:
    """Whether `password` matches `verifier` (constant-time comparison; False for a malformed one)."""
    try:
        scheme, n, r, p, salt, digest = verifier.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def verifier_binding(verifier: str) -> str:
    """A short digest of a verifier, for tokens: changes whenever the verifier (its salt) does."""
    return hashlib.sha256(verifier.encode("ascii", "replace")).hexdigest()[:24]


_dummy: str | None = None


def dummy_verifier() -> str:
    """A verifier of a random password: checked for unknown users, so they take as long as known ones."""
    global _dummy
    if _dummy is None:
        _dummy = make_verifier(secrets.token_urlsafe(16))
    return _dummy


@dataclass(frozen=True)
class StoredLogin:
    username: str
    verifier: str
    nas_role: str
    view: str
    verified_at: float  # when the NAS last accepted this password
    created_at: float


class VerifierStore:
    """Rows of `auth_verifiers`."""

    def __init__(self, db: Database):
        self.db = db

    def get(self, username: str) -> StoredLogin | None:
        row = self.db.query_one(
            "SELECT username, verifier, nas_role, view, verified_at, created_at FROM auth_verifiers WHERE username = ?",
            (username,),
        )
        return StoredLogin(*row) if row is not None else None

    def save(self, username: str, verifier: str, nas_role: str, view: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self.db.write() as d:
            d.execute(
                "INSERT INTO auth_verifiers (username, verifier, nas_role, view, verified_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (username) DO UPDATE SET verifier = excluded.verifier,"
                " nas_role = excluded.nas_role, view = excluded.view, verified_at = excluded.verified_at,"
                " created_at = excluded.created_at",
                (username, verifier, nas_role, view, now, now),
            )

    def confirm(self, username: str, nas_role: str, view: str, now: float | None = None) -> None:
        """The NAS accepted the password the stored verifier was made from, again."""
        now = time.time() if now is None else now
        with self.db.write() as d:
            d.execute(
                "UPDATE auth_verifiers SET verified_at = ?, nas_role = ?, view = ? WHERE username = ?",
                (now, nas_role, view, username),
            )

    def drop(self, username: str) -> bool:
        with self.db.write() as d:
            return d.execute("DELETE FROM auth_verifiers WHERE username = ?", (username,)).rowcount > 0

    def usernames(self) -> list[str]:
        return [r[0] for r in self.db.query("SELECT username FROM auth_verifiers ORDER BY username")]
