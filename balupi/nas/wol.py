"""Wake-on-LAN: MAC address parsing, magic packets, and sending them over UDP.

A magic packet is 6 bytes of 0xFF followed by the target MAC address repeated 16 times
(102 bytes), optionally followed by a 4- or 6-byte SecureOn password. NICs look for that
pattern anywhere in a frame; we send it as the payload of one UDP datagram (port 9 or 7 by
convention, configurable here) to a broadcast address on the NAS's LAN.

`SO_BROADCAST` is set only when the destination is a broadcast address (255.255.255.255 or the
broadcast address of a local IPv4 interface), so a packet sent to a unicast address (e.g. the
simulated NAS on 127.0.0.1) never needs broadcast permission.
"""

from __future__ import annotations

import ipaddress
import socket

from balupi.macaddr import MAC_LENGTH_BYTES, parse_mac

__all__ = [
    "MAC_LENGTH_BYTES",
    "MAGIC_PACKET_LENGTH_BYTES",
    "format_mac",
    "is_broadcast_address",
    "magic_packet",
    "parse_mac",
    "parse_magic_packet",
    "send_magic_packet",
]

MAGIC_PACKET_LENGTH_BYTES = 6 + 16 * MAC_LENGTH_BYTES  # 102
SECUREON_PASSWORD_LENGTHS_BYTES = (4, 6)

_SYNC = b"\xff" * 6


def format_mac(mac: bytes) -> str:
    """Format 6 bytes as ``aa:bb:cc:dd:ee:ff``."""
    mac = bytes(mac)
    if len(mac) != MAC_LENGTH_BYTES:
        raise ValueError(f"a MAC address has {MAC_LENGTH_BYTES} bytes, got {len(mac)}")
    return ":".join(f"{b:02x}" for b in mac)


def _mac_bytes(mac: str | bytes | bytearray) -> bytes:
    if isinstance(mac, (bytes, bytearray)):
        if len(mac) != MAC_LENGTH_BYTES:
            raise ValueError(f"a MAC address has {MAC_LENGTH_BYTES} bytes, got {len(mac)}")
        return bytes(mac)
    return parse_mac(mac)


def magic_packet(mac: str | bytes, password: bytes | None = None) -> bytes:
    """Build the magic packet for `mac`: 6 x 0xFF + 16 x MAC (102 bytes).

    `password` (a 4- or 6-byte SecureOn password) is appended when given.
    """
    packet = _SYNC + _mac_bytes(mac) * 16
    if password is not None:
        if len(password) not in SECUREON_PASSWORD_LENGTHS_BYTES:
            raise ValueError(f"a SecureOn password has 4 or 6 bytes, got {len(password)}")
        packet += bytes(password)
    return packet


def parse_magic_packet(data: bytes) -> bytes | None:
    """Return the target MAC (6 bytes) if `data` is exactly one magic packet, else None.

    A trailing 4- or 6-byte SecureOn password is accepted (and ignored).
    """
    data = bytes(data)
    extra_bytes = len(data) - MAGIC_PACKET_LENGTH_BYTES
    if extra_bytes != 0 and extra_bytes not in SECUREON_PASSWORD_LENGTHS_BYTES:
        return None
    if data[:6] != _SYNC:
        return None
    mac = data[6:12]
    if data[6:MAGIC_PACKET_LENGTH_BYTES] != mac * 16:
        return None
    return mac


def _local_broadcast_addresses() -> set[str]:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a declared dependency
        return set()
    found = set()
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and address.broadcast:
                found.add(address.broadcast)
    return found


def is_broadcast_address(address: str) -> bool:
    """True for 255.255.255.255 and for the broadcast address of a local IPv4 interface."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # a host name: unicast
    if ip.version != 4:
        return False  # IPv6 has no broadcast
    if ip == ipaddress.IPv4Address("255.255.255.255"):
        return True
    return str(ip) in _local_broadcast_addresses()


def _udp_socket(family: int) -> socket.socket:
    """Create the UDP socket (a seam for tests)."""
    return socket.socket(family, socket.SOCK_DGRAM)


def send_magic_packet(
    mac: str | bytes, address: str, port: int, *, password: bytes | None = None
) -> int:
    """Send one magic packet for `mac` to `address`:`port` over UDP; return the bytes sent.

    SO_BROADCAST is set only when `address` is a broadcast address. Should the kernel still
    refuse the send as a broadcast (EACCES, e.g. a broadcast route psutil did not report), the
    send is retried once with SO_BROADCAST.
    """
    packet = magic_packet(mac, password)
    if not 0 < int(port) < 65536:
        raise ValueError(f"invalid UDP port {port!r}")
    infos = socket.getaddrinfo(address, int(port), 0, socket.SOCK_DGRAM)
    family, _type, _proto, _canon, sockaddr = infos[0]
    broadcast = is_broadcast_address(sockaddr[0])
    with _udp_socket(family) as sock:
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:
            return sock.sendto(packet, sockaddr)
        except PermissionError:
            if broadcast or family != socket.AF_INET:
                raise
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            return sock.sendto(packet, sockaddr)
