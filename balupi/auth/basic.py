"""Parsing `Authorization` headers: `Basic` credentials and `Bearer` tokens.

Header values arrive as WSGI strings (latin-1 over the raw bytes). The decoded Basic credentials
keep the client's exact bytes (UTF-8, with surrogateescape for anything else), so the NAS and the
verifier see what the client typed, whatever charset it used.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

MAX_USERNAME_CHARS = 256
MAX_PASSWORD_CHARS = 1024


@dataclass(frozen=True)
class BasicCredentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never the password, not even in a traceback
        return f"BasicCredentials(username={self.username!r}, password=***)"


def split_authorization(value: str | None) -> tuple[str, str]:
    """('basic' | 'bearer' | other scheme in lower case | '', the rest)."""
    if not value:
        return "", ""
    scheme, _, rest = value.strip().partition(" ")
    return scheme.lower(), rest.strip()


def valid_username(name: str) -> bool:
    return 0 < len(name) <= MAX_USERNAME_CHARS and not any(ord(c) < 32 or ord(c) == 127 for c in name)


def parse_basic(token: str) -> BasicCredentials | None:
    """The credentials of a Basic `token` (the part after 'Basic '), or None when malformed."""
    try:
        raw = base64.b64decode(token.encode("latin-1"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    text = raw.decode("utf-8", "surrogateescape")
    if ":" not in text:
        return None
    username, password = text.split(":", 1)
    if not valid_username(username) or len(password) > MAX_PASSWORD_CHARS or "\x00" in password:
        return None
    return BasicCredentials(username, password)
