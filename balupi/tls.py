"""HTTPS for BaluPi's own server: cheroot's built-in SSL adapter, with the handshake moved to the
worker thread (`balupi.limits.GuardedConnection` performs it under the request-head deadline).

cheroot's `BuiltinSSLAdapter.wrap` handshakes on the single thread that accepts connections, with
the full socket timeout: one client that connects and sends nothing stalls every new connection.
`LazyHandshakeAdapter.wrap` only wraps. TLS 1.2 is the oldest version accepted.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cheroot.ssl.builtin import BuiltinSSLAdapter

from balupi.errors import ConfigError


class LazyHandshakeAdapter(BuiltinSSLAdapter):
    def __init__(self, certificate: str, private_key: str):
        super().__init__(certificate, private_key)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2

    def wrap(self, sock):
        tls = self.context.wrap_socket(sock, do_handshake_on_connect=False, server_side=True)
        return tls, {"wsgi.url_scheme": "https", "HTTPS": "on"}


def server_adapter(cert: Path, key: Path) -> LazyHandshakeAdapter:
    try:
        return LazyHandshakeAdapter(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"BALUPI_TLS_CERT/BALUPI_TLS_KEY: cannot use {cert} and {key}: {exc}") from None
