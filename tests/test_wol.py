"""Tests for balupi.nas.wol: MAC parsing, magic packet bytes, and a real UDP send on loopback."""

from __future__ import annotations

import socket

import pytest

from balupi.nas import wol

MAC = bytes.fromhex("0a1b2c3d4e5f")


@pytest.mark.parametrize(
    "text",
    [
        "0a:1b:2c:3d:4e:5f",
        "0A:1B:2C:3D:4E:5F",
        "0a-1b-2c-3d-4e-5f",
        "0A-1b-2C-3d-4E-5f",
        "0a1b.2c3d.4e5f",
        "0A1B.2C3D.4E5F",
        "0a1b2c3d4e5f",
        "0A1B2C3D4E5F",
        "  0a:1b:2c:3d:4e:5f\n",
    ],
)
def test_parse_mac_accepts_common_forms(text):
    assert wol.parse_mac(text) == MAC


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "0a:1b:2c:3d:4e",  # too short
        "0a:1b:2c:3d:4e:5f:60",  # too long
        "0a1b2c3d4e5",  # 11 digits
        "0a1b2c3d4e5f0",  # 13 digits
        "0a:1b:2c:3d:4e:5g",  # non-hex
        "zz:zz:zz:zz:zz:zz",
        "0a:1b-2c:3d:4e:5f",  # mixed separators
        "0a.1b.2c.3d.4e.5f",  # dots only in the 3 x 4 form
        "0a1b:2c3d:4e5f",
        "a:b:c:d:e:f",  # single digits
        "0a 1b 2c 3d 4e 5f",
        "0a:1b:2c:3d:4e:5f:",
        "٠a:1b:2c:3d:4e:5f",  # Arabic-Indic zero is not a hex digit
    ],
)
def test_parse_mac_rejects_bad_input(text):
    with pytest.raises(ValueError, match="MAC address"):
        wol.parse_mac(text)


def test_parse_mac_rejects_non_strings():
    with pytest.raises(ValueError):
        wol.parse_mac(None)  # type: ignore[arg-type]


def test_format_mac_round_trip():
    assert wol.format_mac(MAC) == "0a:1b:2c:3d:4e:5f"
    assert wol.parse_mac(wol.format_mac(MAC)) == MAC
    with pytest.raises(ValueError):
        wol.format_mac(b"\x01\x02")


def test_magic_packet_exact_bytes():
    packet = wol.magic_packet("0a:1b:2c:3d:4e:5f")
    assert len(packet) == 102 == wol.MAGIC_PACKET_LENGTH_BYTES
    assert packet == bytes([0xFF] * 6) + bytes.fromhex("0a1b2c3d4e5f") * 16
    assert packet[:12].hex() == "ffffffffffff0a1b2c3d4e5f"
    assert wol.magic_packet(MAC) == packet  # bytes accepted too


def test_magic_packet_with_secureon_password():
    packet = wol.magic_packet(MAC, password=b"\x01\x02\x03\x04")
    assert len(packet) == 106 and packet.endswith(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError):
        wol.magic_packet(MAC, password=b"\x01\x02\x03")


def test_parse_magic_packet_accepts_valid_packets():
    packet = wol.magic_packet(MAC)
    assert wol.parse_magic_packet(packet) == MAC
    assert wol.parse_magic_packet(bytearray(packet)) == MAC
    assert wol.parse_magic_packet(packet + b"pass") == MAC
    assert wol.parse_magic_packet(packet + b"secret") == MAC


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff" * 6,
        wol.magic_packet(MAC)[:-1],  # truncated
        wol.magic_packet(MAC) + b"x",  # 1 extra byte is no password
        wol.magic_packet(MAC) + b"12345",  # 5 extra bytes neither
        wol.magic_packet(MAC) + b"1234567",
        b"\xfe" + wol.magic_packet(MAC)[1:],  # broken sync stream
        wol.magic_packet(MAC)[:50] + b"\x00" + wol.magic_packet(MAC)[51:],  # one repeat differs
        b"\x00" * 102,
    ],
)
def test_parse_magic_packet_rejects_other_data(data):
    assert wol.parse_magic_packet(data) is None


def test_is_broadcast_address():
    assert wol.is_broadcast_address("255.255.255.255")
    assert not wol.is_broadcast_address("127.0.0.1")
    assert not wol.is_broadcast_address("::1")
    assert not wol.is_broadcast_address("localhost")


def _free_udp_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock


def test_send_magic_packet_is_received_byte_identical():
    with _free_udp_socket() as receiver:
        port = receiver.getsockname()[1]
        sent = wol.send_magic_packet("0A-1B-2C-3D-4E-5F", "127.0.0.1", port)
        data, _sender = receiver.recvfrom(2048)
    assert sent == 102
    assert data == wol.magic_packet(MAC)
    assert wol.parse_magic_packet(data) == MAC


def test_send_to_unicast_does_not_set_so_broadcast(monkeypatch):
    options = []

    class RecordingSocket(socket.socket):
        def setsockopt(self, level, option, value, *args):
            options.append((level, option, value))
            return super().setsockopt(level, option, value, *args)

    monkeypatch.setattr(wol, "_udp_socket", lambda family: RecordingSocket(family, socket.SOCK_DGRAM))
    with _free_udp_socket() as receiver:
        port = receiver.getsockname()[1]
        assert wol.send_magic_packet(MAC, "127.0.0.1", port) == 102
        assert receiver.recvfrom(2048)[0] == wol.magic_packet(MAC)
    assert (socket.SOL_SOCKET, socket.SO_BROADCAST, 1) not in options


def test_send_rejects_bad_arguments():
    with pytest.raises(ValueError):
        wol.send_magic_packet("not-a-mac", "127.0.0.1", 9)
    with pytest.raises(ValueError):
        wol.send_magic_packet(MAC, "127.0.0.1", 0)


def test_send_to_broadcast_sets_so_broadcast_without_touching_the_network(monkeypatch):
    """A fake socket records what would happen; nothing is sent anywhere."""
    calls = []

    class FakeSocket:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def setsockopt(self, level, option, value):
            calls.append(("setsockopt", level, option, value))

        def sendto(self, data, address):
            calls.append(("sendto", len(data), address))
            return len(data)

    monkeypatch.setattr(wol, "_udp_socket", lambda family: FakeSocket())
    assert wol.send_magic_packet(MAC, "255.255.255.255", 9) == 102
    assert calls == [
        ("setsockopt", socket.SOL_SOCKET, socket.SO_BROADCAST, 1),
        ("sendto", 102, ("255.255.255.255", 9)),
    ]
