"""MAC addresses as people write them (the NAS's, for Wake-on-LAN): parsed once here, so that the
settings check a value the same way `balupi.nas.wol` uses it."""

from __future__ import annotations

import re

MAC_LENGTH_BYTES = 6

_HEX = "[0-9a-fA-F]"
_MAC_PATTERNS = (
    # aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff (one separator used throughout)
    re.compile(rf"{_HEX}{{2}}([:-]){_HEX}{{2}}(?:\1{_HEX}{{2}}){{4}}"),
    # aabb.ccdd.eeff (Cisco style)
    re.compile(rf"{_HEX}{{4}}\.{_HEX}{{4}}\.{_HEX}{{4}}"),
    # aabbccddeeff
    re.compile(rf"{_HEX}{{12}}"),
)
_ACCEPTED_FORMS = "aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff"


def parse_mac(text: str) -> bytes:
    """Parse a MAC address into its 6 bytes.

    Accepts ``aa:bb:cc:dd:ee:ff``, ``AA-BB-CC-DD-EE-FF``, ``aabb.ccdd.eeff`` and ``aabbccddeeff``
    (any letter case, surrounding whitespace ignored). Raises ValueError on anything else.
    """
    if not isinstance(text, str):
        raise ValueError(f"MAC address must be a string, got {type(text).__name__}")
    candidate = text.strip()
    if not candidate:
        raise ValueError(f"empty MAC address (expected {_ACCEPTED_FORMS})")
    for pattern in _MAC_PATTERNS:
        if pattern.fullmatch(candidate):
            return bytes.fromhex(re.sub(r"[:.\-]", "", candidate))
    raise ValueError(f"invalid MAC address {text!r} (expected {_ACCEPTED_FORMS})")
