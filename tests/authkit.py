"""Helpers for the authentication and security tests: sessions per user, a stack with several NAS
users, restarting BaluPi on the same data, a self-signed certificate, raw HTTP.

Not fixtures: plain functions the test_auth_* and test_security_* files share.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from pathlib import Path

import requests

from tests.davkit import stack_with
from tests.stack import Stack

# NAS users of the multi-user stack, beside alice (admin, whose root is the whole storage):
BOB, BOB_PASSWORD = "bob", "bob-pw"  # role "user": his root is <storage>/home/bob
CAROL, CAROL_PASSWORD = "carol", "carol-pw"  # role "user": <storage>/home/carol
USERS = {BOB: (BOB_PASSWORD, "user"), CAROL: (CAROL_PASSWORD, "user")}


def session(user: str | None = None, password: str | None = None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    if user is not None:
        s.auth = (user, password or "")
    return s


def multi_user_stack(stack_factory, tmp_path: Path, files: dict[str, bytes] | None = None, **overrides) -> Stack:
    """A stack whose NAS has alice, bob and carol, holding `files` before BaluPi starts (prefetch off)."""
    return stack_with(stack_factory, tmp_path, files or {}, nas_kwargs={"users": dict(USERS)}, **overrides)


def restart(stack: Stack, running_server) -> Stack:
    """Stop BaluPi and start it again on the same settings, data and cache (the NAS stays as it is):
    everything held only in memory (remembered logins, throttle, NAS credentials) is gone."""
    settings = stack.app.settings
    stack.server.stop()
    return Stack(stack.nas, running_server(settings), stack.http)


def api(stack: Stack, method: str, path: str, auth=None, **kwargs) -> requests.Response:
    with session() as s:
        return s.request(method, stack.server.url + "/api" + path, auth=auth, timeout=30, **kwargs)


def dav(stack: Stack, method: str, path: str, auth=None, **kwargs) -> requests.Response:
    with session() as s:
        return s.request(method, stack.url(path), auth=auth, timeout=30, **kwargs)


def from_address(source: str, method: str, url: str, auth: tuple[str, str] | None = None,
                 headers: dict | None = None, body: bytes | None = None):
    """A request sent from another loopback address (127.0.0.2, ...): another client to BaluPi."""
    import urllib3

    headers = dict(headers or {})
    if auth is not None:
        headers.update(urllib3.make_headers(basic_auth=f"{auth[0]}:{auth[1]}"))
    with urllib3.PoolManager(source_address=(source, 0), retries=False, timeout=30) as pool:
        return pool.request(method, url, headers=headers, body=body)


def raw_request(port: int, data: bytes, timeout_s: float = 30.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    return reply


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0


def self_signed_cert(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files, key mode 0600), made with `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def cert_sha256(cert_path: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex()
