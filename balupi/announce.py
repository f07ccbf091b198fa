"""DNS-SD (mDNS) announcement with python-zeroconf, so file managers find "BaluPi" by themselves:
`_webdav._tcp` (`_webdavs._tcp` with TLS) with `path=/dav/` for the share (GNOME Files, macOS
Finder, Android file managers browse for it), and `_http._tcp` with `path=/` for the dashboard.

On the interfaces BaluPi listens on: every interface for 0.0.0.0 (the Pi's own non-loopback IPv4
addresses are announced), only that one for a specific address (127.0.0.1 in tests: nothing leaves
the machine). Registration probes the name first (about 2 s), so it runs on a thread of its own and
never delays start-up; a name already taken on the network gets a number ("BaluPi (2)").
Turned off with `dnssd_enabled = false`.
"""

from __future__ import annotations

import logging
import socket
import threading

log = logging.getLogger("balupi.dnssd")


def announced_addresses(host: str) -> list[str]:
    """The IPv4 addresses to announce for a server listening on `host`."""
    if host not in ("0.0.0.0", "", "::"):
        return [host] if ":" not in host else []
    import psutil

    out = []
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family == socket.AF_INET and not a.address.startswith("127.") and a.address not in out:
                out.append(a.address)
    return out


class Announcer:
    def __init__(self, name: str, host: str, port: int, tls: bool):
        self.name, self.host, self.port, self.tls = name, host, port, tls
        self.zeroconf = None
        self.infos: list = []
        self.registered = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._register, name="balupi-dnssd", daemon=True)
        self._thread.start()

    def _register(self) -> None:
        from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

        addresses = announced_addresses(self.host)
        if not addresses:
            log.info("DNS-SD: no IPv4 address to announce for %s", self.host)
            return
        interfaces = InterfaceChoice.All if self.host in ("0.0.0.0", "", "::") else [self.host]
        hostname = socket.gethostname().split(".")[0] or "balupi"
        packed = [socket.inet_aton(a) for a in addresses]
        dav_type = "_webdavs._tcp.local." if self.tls else "_webdav._tcp.local."
        try:
            with self._lock:
                if self._closed:
                    return
                self.zeroconf = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
            self.infos = [
                ServiceInfo(dav_type, f"{self.name}.{dav_type}", addresses=packed, port=self.port,
                            properties={"path": "/dav/"}, server=f"{hostname}.local."),
                ServiceInfo("_http._tcp.local.", f"{self.name}._http._tcp.local.", addresses=packed, port=self.port,
                            properties={"path": "/"}, server=f"{hostname}.local."),
            ]
            for info in self.infos:
                self.zeroconf.register_service(info, allow_name_change=True)
        except Exception as exc:  # no multicast on this network, a closing zeroconf: the share still works
            log.warning("DNS-SD: could not announce the share: %s", exc)
            return
        self.registered.set()
        log.info("DNS-SD: announced %r (WebDAV at /dav/, dashboard at /) on %s port %d", self.name,
                 ", ".join(addresses), self.port)

    def stop(self) -> None:
        with self._lock:
            self._closed = True
            zc = self.zeroconf
        if zc is None:
            return
        try:
            zc.unregister_all_services()
        except Exception:
            pass
        zc.close()
        if self._thread is not None:
            self._thread.join(5)
