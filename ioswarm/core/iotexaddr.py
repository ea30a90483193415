"""IoTeX ``io1`` addresses: bech32 (BIP-173) with human-readable part ``io`` over the same 20
bytes as the 0x address.

An operator on IoTeX types and reads ``io1…``; ioswarm keeps 0x internally. Decoding checks the
bech32 checksum, so a mistyped character is caught before money moves.
"""

from __future__ import annotations

from typing import Final

HRP: Final = "io"
_CHARSET: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR: Final = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_ADDRESS_BYTES: Final = 20


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << tobits) - 1
    for value in data:
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        raise ValueError("non-zero padding")
    return out


def is_io_address(value: str) -> bool:
    """Whether ``value`` looks like an io1 address (checksum not yet checked)."""
    return value[:3].lower() == HRP + "1"


def io_to_bytes(value: str) -> bytes:
    """The 20 bytes of an ``io1`` address; ValueError naming the problem when it is not one."""
    if value.lower() != value and value.upper() != value:
        raise ValueError(f"{value} mixes upper and lower case (bech32 forbids it)")
    text = value.lower()
    if not is_io_address(text):
        raise ValueError(f"{value} is not an io1 address")
    data_part = text[len(HRP) + 1 :]
    if len(data_part) != 38 or any(c not in _CHARSET for c in data_part):
        raise ValueError(f"{value} must be io1 followed by 38 bech32 characters")
    data = [_CHARSET.index(c) for c in data_part]
    if _polymod(_hrp_expand(HRP) + data) != 1:
        raise ValueError(f"{value} fails its bech32 checksum (a character is mistyped)")
    try:
        raw = bytes(_convert_bits(data[:-6], 5, 8, pad=False))
    except ValueError:
        raise ValueError(f"{value} has a malformed bech32 payload") from None
    if len(raw) != _ADDRESS_BYTES:
        raise ValueError(f"{value} does not hold a 20-byte address")
    return raw


def bytes_to_io(raw: bytes) -> str:
    """The ``io1`` spelling of a 20-byte address."""
    if len(raw) != _ADDRESS_BYTES:
        raise ValueError(f"an address is {_ADDRESS_BYTES} bytes, got {len(raw)}")
    data = _convert_bits(raw, 8, 5, pad=True)
    polymod = _polymod(_hrp_expand(HRP) + data + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return HRP + "1" + "".join(_CHARSET[d] for d in data + checksum)
