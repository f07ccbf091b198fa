"""The plug's side of KLAP v2: the two handshakes, sessions, and the AES-128-CBC request cipher.

A Tapo plug on newer firmware accepts plain HTTP POSTs on three paths below ``/app``.
Everything is keyed on an *auth hash* derived from the cloud account the plug was
set up with; for "login version 2" it is ``sha256(sha1(username) + sha1(password))``
(32 bytes).  The password itself never travels.

1. ``POST /app/handshake1``: the body is a random 16-byte *client seed*.  The plug
   answers ``200`` with 48 bytes: its own random 16-byte *server seed*, followed by
   ``sha256(client_seed + server_seed + auth_hash)``.  That second part proves to the
   client that the plug knows the same account; the client compares it with its own
   computation and gives up with an authentication error when it does not match
   (there is no "wrong password" status code: the plug always says 200 here).  The
   plug also sets a session cookie ``TP_SESSIONID`` and a ``TIMEOUT`` cookie (the
   session lifetime in seconds), both in a single ``Set-Cookie`` header.
2. ``POST /app/handshake2`` with the session cookie: the body is
   ``sha256(server_seed + client_seed + auth_hash)``, proving to the plug that the
   client knows the account too.  ``200`` and an empty body when it matches.
3. ``POST /app/request?seq=N`` with the session cookie: the body is a 32-byte
   signature followed by an AES-128-CBC ciphertext of a JSON request.  Both sides
   derive the key material from ``client_seed + server_seed + auth_hash``: the AES key
   is the first 16 bytes of ``sha256("lsk" + material)``, the IV is the first 12
   bytes of ``sha256("iv" + material)`` followed by the 4-byte big-endian signed
   sequence number ``N`` (the client starts from the last 4 bytes of that same hash
   and increments for every request), and the signature is
   ``sha256(sha256("ldk" + material)[:28] + N + ciphertext)``.  The answer is
   encrypted the same way with the same ``N``.  An unknown or expired session gets
   ``403``, which makes python-kasa redo the handshake.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from kasa.transports.klaptransport import KlapTransportV2

__all__ = ["HttpAnswer", "KlapCipher", "KlapSessions"]

HttpAnswer = tuple[int, list[tuple[str, str]], bytes]
"""Status, extra headers and body of one answer on the plug's HTTP port."""


class KlapCipher:
    """Server half of a KLAP session: AES-128-CBC keyed from both seeds + auth hash."""

    def __init__(self, client_seed: bytes, server_seed: bytes, auth_hash: bytes) -> None:
        material = client_seed + server_seed + auth_hash
        self._key = hashlib.sha256(b"lsk" + material).digest()[:16]
        self._iv_prefix = hashlib.sha256(b"iv" + material).digest()[:12]
        self._sig_key = hashlib.sha256(b"ldk" + material).digest()[:28]

    def _cipher(self, seq: int) -> Cipher:
        iv = self._iv_prefix + struct.pack(">l", seq)
        return Cipher(algorithms.AES(self._key), modes.CBC(iv))

    def _signature(self, seq: int, ciphertext: bytes) -> bytes:
        return hashlib.sha256(self._sig_key + struct.pack(">l", seq) + ciphertext).digest()

    def decrypt(self, seq: int, body: bytes) -> bytes:
        signature, ciphertext = body[:32], body[32:]
        if not ciphertext or not secrets.compare_digest(signature, self._signature(seq, ciphertext)):
            raise ValueError("bad KLAP signature")
        decryptor = self._cipher(seq).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()

    def encrypt(self, seq: int, plaintext: bytes) -> bytes:
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        encryptor = self._cipher(seq).encryptor()
        ciphertext = encryptor.update(padded) + encryptor.finalize()
        return self._signature(seq, ciphertext) + ciphertext


@dataclass
class _Session:
    client_seed: bytes
    server_seed: bytes
    auth_hash: bytes
    expires_monotonic_s: float
    cipher: KlapCipher | None = None  # set once handshake2 succeeded


class KlapSessions:
    """The sessions of one plug: handshakes in, a cipher per established session out. Thread-safe."""

    def __init__(self, auth_hash: bytes, timeout_s: int) -> None:
        self.auth_hash = auth_hash
        self.timeout_s = timeout_s
        #: While True, handshake1 proves a different account: clients fail authentication.
        self.refuse_password = False
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def answer(
        self,
        path: str,
        query: dict[str, list[str]],
        session_id: str | None,
        body: bytes,
        *,
        dispatch: Callable[[bytes], bytes],
        count: Callable[[str], None],
    ) -> HttpAnswer:
        """The answer to one POST below ``/app``: a handshake, or a request ``dispatch`` decides.

        ``dispatch`` turns the decrypted JSON request into the JSON answer (bytes to bytes);
        ``count`` is told of every handshake.
        """
        if path == "/app/handshake1":
            count("handshake1")
            return self.handshake1(body)
        if path == "/app/handshake2":
            count("handshake2")
            return self.handshake2(session_id, body)
        if path != "/app/request":
            return 404, [], b""
        cipher = self.cipher_for(session_id)
        if cipher is None:
            return 403, [], b""
        try:
            seq = int(query["seq"][0])
            plaintext = cipher.decrypt(seq, body)
        except (KeyError, ValueError, struct.error):
            return 400, [], b""
        return 200, [], cipher.encrypt(seq, dispatch(plaintext))

    def clear(self) -> None:
        """Forget every session (clients must handshake again)."""
        with self._lock:
            self._sessions.clear()

    def handshake1(self, client_seed: bytes) -> HttpAnswer:
        if len(client_seed) != 16:
            return 400, [], b""
        server_seed = secrets.token_bytes(16)
        # A plug set up with another account proves a hash the client cannot match.
        auth_hash = secrets.token_bytes(32) if self.refuse_password else self.auth_hash
        now_mono = time.monotonic()
        session_id = secrets.token_hex(16).upper()
        with self._lock:
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires_monotonic_s > now_mono}
            self._sessions[session_id] = _Session(client_seed, server_seed, auth_hash, now_mono + self.timeout_s)
        proof = KlapTransportV2.handshake1_seed_auth_hash(client_seed, server_seed, auth_hash)
        cookie = f"TP_SESSIONID={session_id};TIMEOUT={self.timeout_s}"
        return 200, [("Set-Cookie", cookie)], server_seed + proof

    def handshake2(self, session_id: str | None, body: bytes) -> HttpAnswer:
        with self._lock:
            session = self._sessions.get(session_id or "")
            if session is None or session.expires_monotonic_s <= time.monotonic():
                return 403, [], b""
            expected = KlapTransportV2.handshake2_seed_auth_hash(
                session.client_seed, session.server_seed, session.auth_hash
            )
            if not secrets.compare_digest(body, expected):
                del self._sessions[session_id or ""]
                return 403, [], b""
            session.cipher = KlapCipher(session.client_seed, session.server_seed, session.auth_hash)
        return 200, [], b""

    def cipher_for(self, session_id: str | None) -> KlapCipher | None:
        """The cipher of an established, unexpired session; None means: answer 403."""
        with self._lock:
            session = self._sessions.get(session_id or "")
            if session is None or session.cipher is None or session.expires_monotonic_s <= time.monotonic():
                return None
            return session.cipher
