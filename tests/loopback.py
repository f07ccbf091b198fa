"""The loopback-only rule, enforced: no test opens a socket to anything but 127.0.0.0/8, ::1 or localhost.

(0.0.0.0 and :: count as this host too: Linux connects them to itself, and cheroot does so to
wake its own accept() at shutdown when it listens on every interface.)

`install()` wraps `socket.socket.connect`, `connect_ex`, `sendto`, `sendmsg` and
`socket.create_connection`. A call aimed at another address is refused before anything leaves the
machine (`NonLoopbackAddress`, a `PermissionError`, so code under test sees an ordinary network
error) and is recorded; the test suite fails every test that recorded one (see `conftest.py`),
even when the code under test swallowed the error.

Self-contained on purpose: `tests/guard_site/sitecustomize.py` loads this file into subprocesses
(`balupi serve` started by a test) so the rule holds there too.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from typing import Any, Callable

ALLOWED_HOST_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class NonLoopbackAddress(PermissionError):
    """A test tried to reach an address outside the loopback network."""


_lock = threading.Lock()
_violations: list[str] = []
_installed = False


def is_loopback(host: Any) -> bool:
    """True for 127.0.0.0/8, ::1 (also IPv4-mapped), 0.0.0.0, :: and the loopback host names."""
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host.lower() in ALLOWED_HOST_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # any other host name: refused without resolving it
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return ip.is_loopback or ip.is_unspecified


def take_violations() -> list[str]:
    """The violations recorded since the last call, and forget them."""
    with _lock:
        found = list(_violations)
        _violations.clear()
    return found


def multicast_on_loopback(sock: Any, host: Any) -> bool:
    """An IPv4 multicast datagram (mDNS: 224.0.0.251) from a socket whose multicast interface is
    the loopback one: it goes out on `lo` and nowhere else (DNS-SD tests on loopback)."""
    try:
        if sock is None or sock.family != socket.AF_INET or not ipaddress.ip_address(str(host)).is_multicast:
            return False
        interface = sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4)
        return ipaddress.ip_address(socket.inet_ntoa(interface)).is_loopback
    except (OSError, ValueError):
        return False


def _check(family: int, address: Any, what: str, sock: Any = None) -> None:
    if family not in INET_FAMILIES:
        return  # AF_UNIX and friends never leave the machine
    host = address[0] if isinstance(address, tuple) and address else address
    if not is_loopback(host) and not multicast_on_loopback(sock, host):
        message = f"{what} to non-loopback address {address!r}"
        with _lock:
            _violations.append(message)
        if _on_violation is not None:
            _on_violation(message)
        raise NonLoopbackAddress(f"loopback-only test guard refused {message}")


_on_violation: Callable[[str], None] | None = None


def install(on_violation: Callable[[str], None] | None = None) -> None:
    """Wrap the socket calls (once per process)."""
    global _installed, _on_violation
    _on_violation = on_violation
    if _installed:
        return
    _installed = True
    cls = socket.socket
    original_connect, original_connect_ex = cls.connect, cls.connect_ex
    original_sendto, original_sendmsg = cls.sendto, cls.sendmsg
    original_create_connection = socket.create_connection

    def connect(self, address):
        _check(self.family, address, "connect")
        return original_connect(self, address)

    def connect_ex(self, address):
        _check(self.family, address, "connect_ex")
        return original_connect_ex(self, address)

    def sendto(self, data, *args):
        if args:
            _check(self.family, args[-1], "sendto", self)
        return original_sendto(self, data, *args)

    def sendmsg(self, buffers, *args):
        if len(args) >= 3 and args[2] is not None:
            _check(self.family, args[2], "sendmsg", self)
        return original_sendmsg(self, buffers, *args)

    def create_connection(address, *args, **kwargs):
        _check(socket.AF_INET, address, "create_connection")
        return original_create_connection(address, *args, **kwargs)

    cls.connect, cls.connect_ex, cls.sendto, cls.sendmsg = connect, connect_ex, sendto, sendmsg
    socket.create_connection = create_connection


def report_to_stderr(message: str) -> None:
    """For subprocesses: say it loudly on stderr, where the test checks."""
    print(f"LOOPBACK GUARD: refused {message}", file=sys.stderr, flush=True)
