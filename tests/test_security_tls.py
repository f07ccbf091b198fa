"""Issue 6, point 9: HTTPS with cheroot's built-in SSL adapter (BALUPI_TLS_CERT/KEY), a silent
client that never finishes its handshake stalls nobody, and the NAS's self-signed certificate is
verified by a CA file or a pinned SHA-256 fingerprint, never by turning verification off.
"""

from __future__ import annotations

import logging
import socket
import threading

import pytest
import requests
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from balupi.app import BaluPi
from balupi.errors import ConfigError, NasUnavailable
from balupi.nas.tls import PinnedCertAdapter
from balupi.settings import load_settings
from tests.authkit import cert_sha256, self_signed_cert
from tests.helpers import free_port


@pytest.fixture
def cert(tmp_path):
    return self_signed_cert(tmp_path / "tls")


@pytest.fixture
def tls_server(running_server, settings_factory, cert):
    cert_path, key_path = cert
    return running_server(settings_factory(tls_cert=cert_path, tls_key=key_path))


def test_balupi_serves_https_with_the_configured_certificate(tls_server, cert):
    assert tls_server.url.startswith("https://")
    with requests.Session() as s:
        s.trust_env = False
        response = s.get(tls_server.url + "/api/health", verify=str(cert[0]), timeout=10)
        dav = s.request("PROPFIND", tls_server.url + "/dav/", headers={"Depth": "0"}, verify=str(cert[0]), timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert dav.status_code == 207


def test_plain_http_to_the_https_port_gets_no_answer_from_the_app(tls_server):
    with requests.Session() as s:
        s.trust_env = False
        try:
            response = s.get(tls_server.url.replace("https://", "http://") + "/api/health", timeout=10)
        except requests.ConnectionError:
            return
    assert response.status_code != 200


def test_a_client_that_never_finishes_its_handshake_stalls_nobody(tls_server, cert):
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=30) as silent:
        silent.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        with requests.Session() as s:
            s.trust_env = False
            # cheroot's own adapter would hold its accepting thread for the 60 s socket timeout here
            response = s.get(tls_server.url + "/api/health", verify=str(cert[0]), timeout=15)
    assert response.status_code == 200


def test_tls_needs_both_certificate_and_key(tmp_path, cert):
    with pytest.raises(ConfigError, match="BALUPI_TLS_CERT/BALUPI_TLS_KEY"):
        load_settings(env={}, cwd=tmp_path, overrides={"tls_cert": str(cert[0]), "data_dir": str(tmp_path / "d")})
    with pytest.raises(ConfigError, match="tls_key: cannot read"):
        load_settings(env={}, cwd=tmp_path, overrides={"tls_cert": str(cert[0]), "tls_key": str(tmp_path / "none"),
                                                       "data_dir": str(tmp_path / "d")})


def test_a_certificate_that_is_not_one_is_a_config_error(settings_factory, tmp_path, running_server):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="BALUPI_TLS_CERT/BALUPI_TLS_KEY"):
        running_server(settings_factory(tls_cert=bad, tls_key=bad))


def test_a_private_key_others_can_read_is_warned_about(settings_factory, cert, caplog):
    cert[1].chmod(0o644)
    with caplog.at_level(logging.WARNING):
        settings_factory(tls_cert=cert[0], tls_key=cert[1])
    assert any("TLS private key" in r.getMessage() and "chmod 600" in r.getMessage() for r in caplog.records)


# -- the NAS's certificate -------------------------------------------------------------------------


@pytest.fixture
def https_nas(cert):
    """A stand-in for the NAS's HTTPS WebDAV: any request gets 200 'ok'."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server = wsgi.Server(("127.0.0.1", free_port()), app, numthreads=2)
    server.ssl_adapter = BuiltinSSLAdapter(str(cert[0]), str(cert[1]))
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.bind_addr[1]}/dav/"
    server.stop()


def nas_client(settings_factory, url: str, **overrides):
    app = BaluPi(settings_factory(nas_webdav_url=url, nas_probe_enabled=True, **overrides))
    app.nas.probe()  # a TCP connect: the port answers, so the NAS counts as awake
    return app


def test_the_nas_certificate_is_verified_with_the_configured_ca_file(settings_factory, https_nas, cert):
    app = nas_client(settings_factory, https_nas, nas_ca_file=cert[0])
    try:
        assert app.nas_client.request("GET", "/x", wake=False).status_code == 200
        assert app.nas_client.session.verify == str(cert[0])
    finally:
        app.stop()


def test_a_self_signed_nas_without_ca_or_pin_is_refused(settings_factory, https_nas):
    app = nas_client(settings_factory, https_nas)
    try:
        with pytest.raises(NasUnavailable):
            app.nas_client.request("GET", "/x", wake=False)
        assert app.nas_client.session.verify is True
    finally:
        app.stop()


def test_the_nas_certificate_can_be_pinned_by_its_fingerprint(settings_factory, https_nas, cert):
    fingerprint = cert_sha256(cert[0])
    pinned = ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()  # as browsers show it
    app = nas_client(settings_factory, https_nas, nas_cert_sha256=pinned)
    try:
        assert app.nas_client.request("GET", "/x", wake=False).status_code == 200
        assert isinstance(app.nas_client.session.get_adapter(https_nas), PinnedCertAdapter)
    finally:
        app.stop()
    with requests.Session() as s:  # the pin changed nothing for anyone else in the process
        s.trust_env = False
        with pytest.raises(requests.exceptions.SSLError):
            s.get(https_nas, timeout=10)


def test_a_wrong_pin_is_refused(settings_factory, https_nas):
    app = nas_client(settings_factory, https_nas, nas_cert_sha256="00" * 32)
    try:
        with pytest.raises(NasUnavailable):
            app.nas_client.request("GET", "/x", wake=False)
    finally:
        app.stop()


def test_a_malformed_pin_is_a_config_error(settings_factory):
    with pytest.raises(ConfigError, match="SHA-256"):
        settings_factory(nas_cert_sha256="abc")
