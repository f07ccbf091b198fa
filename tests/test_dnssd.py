"""Issue 15, item 6: the share and the dashboard announced by DNS-SD, browsed on loopback.

BaluPi listens on 127.0.0.1, so it announces on the loopback interface only; the browser (setup's
`browse`, python-zeroconf) listens there too. Multicast works on Linux's `lo`; the loopback guard
lets a multicast datagram through only when its socket's multicast interface is loopback."""

from __future__ import annotations

import time

from zeroconf import IPVersion, Zeroconf

from balupi.firstrun import browse


def test_the_share_and_the_dashboard_are_announced_and_found(running_server, settings_factory):
    name = f"BaluPi-test-{time.monotonic_ns() % 10**8}"
    server = running_server(settings_factory(dnssd_enabled=True, dnssd_name=name))
    assert server.announcer.registered.wait(15)

    found = [f for f in browse(timeout_s=3.0, interfaces=["127.0.0.1"]) if f["name"].startswith(name)]
    assert found == [{"name": name, "address": "127.0.0.1", "port": server.port,
                      "url": f"http://127.0.0.1:{server.port}/dav/"}]
    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        info = zc.get_service_info("_http._tcp.local.", f"{name}._http._tcp.local.", timeout=3000)
    finally:
        zc.close()
    assert info is not None and info.port == server.port and info.properties == {b"path": b"/"}

    server.stop()  # says goodbye: browsers drop it
    assert not [f for f in browse(timeout_s=2.0, interfaces=["127.0.0.1"]) if f["name"].startswith(name)]


def test_nothing_is_announced_when_turned_off(running_server, settings_factory):
    server = running_server(settings_factory(dnssd_enabled=False))
    assert server.announcer is None
