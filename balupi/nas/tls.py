"""Checking the NAS's HTTPS certificate: by a CA file, or by a pinned SHA-256 fingerprint.

A NAS on a home LAN usually has a self-signed certificate. BaluPi never turns certificate checks
off for it; instead either `BALUPI_NAS_CA_FILE` names the CA (or the self-signed certificate
itself), or `BALUPI_NAS_CERT_SHA256` pins the certificate: then the chain and host name are not
checked, but the certificate must be exactly that one (urllib3's `assert_fingerprint`).
"""

from __future__ import annotations

import hashlib
import socket
import ssl

import requests
from requests.adapters import HTTPAdapter

from balupi.settings import Settings


def normalize_fingerprint(value: str) -> str:
    return value.replace(":", "").strip().lower()


class PinnedCertAdapter(HTTPAdapter):
    """An HTTPAdapter that accepts exactly one server certificate, by its SHA-256 fingerprint."""

    def __init__(self, sha256: str, **kwargs):
        self.fingerprint = normalize_fingerprint(sha256)
        super().__init__(**kwargs)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params.get("scheme") == "https":
            # A context of our own (never requests' shared default one, which urllib3 would change).
            for key in ("ssl_context", "ca_certs", "ca_cert_dir"):
                pool_kwargs.pop(key, None)
            pool_kwargs["cert_reqs"] = "CERT_NONE"
            pool_kwargs["assert_fingerprint"] = self.fingerprint
        return host_params, pool_kwargs

    def cert_verify(self, conn, url, verify, cert):
        super().cert_verify(conn, url, False, cert)
        if url.lower().startswith("https"):
            conn.cert_reqs = "CERT_NONE"  # the chain is replaced by the pin, which is always checked
            conn.assert_fingerprint = self.fingerprint


def configure_session(session: requests.Session, settings: Settings, **adapter_kwargs) -> None:
    """Mount adapters that check the NAS's certificate as configured."""
    session.mount("http://", HTTPAdapter(**adapter_kwargs))
    if settings.nas_cert_sha256:
        session.mount("https://", PinnedCertAdapter(settings.nas_cert_sha256, **adapter_kwargs))
    else:
        session.mount("https://", HTTPAdapter(**adapter_kwargs))
        if settings.nas_ca_file:
            session.verify = str(settings.nas_ca_file)


def format_fingerprint(hex_digest: str) -> str:
    """AB:CD:... as browsers and `openssl x509 -fingerprint -sha256` show it."""
    digest = normalize_fingerprint(hex_digest).upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def peer_fingerprint(host: str, port: int, timeout_s: float) -> str | None:
    """The SHA-256 fingerprint (hex) of the certificate the server at host:port presents, unchecked;
    None when no TLS handshake could be made."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return hashlib.sha256(der).hexdigest() if der else None


def certificate_problem(host: str, port: int, settings: Settings, timeout_s: float) -> str | None:
    """Why the NAS's certificate at host:port is not trusted as configured (CA file, pin or the
    system's CAs), naming its fingerprint; None when it is trusted or no handshake could be tried
    (a closed port is not a certificate problem)."""
    if settings.nas_cert_sha256:
        found = peer_fingerprint(host, port, timeout_s)
        if found is None or found == normalize_fingerprint(settings.nas_cert_sha256):
            return None
        return (f"certificate not trusted (fingerprint {format_fingerprint(found)}, "
                f"pinned {format_fingerprint(settings.nas_cert_sha256)})")
    context = ssl.create_default_context(cafile=str(settings.nas_ca_file) if settings.nas_ca_file else None)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            with context.wrap_socket(raw, server_hostname=host):
                return None
    except ssl.SSLCertVerificationError as exc:
        found = peer_fingerprint(host, port, timeout_s)
        shown = format_fingerprint(found) if found else "unknown"
        return f"certificate not trusted (fingerprint {shown}): {exc.verify_message or exc.reason}"
    except ssl.SSLError as exc:
        return f"TLS handshake failed: {exc.reason or exc}"
    except OSError:
        return None
