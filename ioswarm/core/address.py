"""Typed addresses: 0x syntax with the EIP-55 mixed-case checksum, and IoTeX io1 (bech32).

An all-lowercase or all-uppercase 0x address carries no checksum and is accepted as written; a
mixed-case one must match EIP-55 exactly, so a mistyped character is caught before money
moves. An io1 address names the same 20 bytes; its bech32 checksum is always checked.
ioswarm keeps addresses as 0x internally: :func:`canonical_address` turns either spelling into
the EIP-55 0x form.
"""

from __future__ import annotations

import re

from ioswarm.core.hashing import keccak256
from ioswarm.core.iotexaddr import bytes_to_io, io_to_bytes, is_io_address

_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")


def to_checksum(address: str) -> str:
    """The EIP-55 spelling of a syntactically valid ``0x`` address."""
    body = address[2:].lower()
    digest = keccak256(body.encode("ascii")).hex()
    return "0x" + "".join(
        ch.upper() if ch.isalpha() and int(digest[i], 16) >= 8 else ch for i, ch in enumerate(body)
    )


def address_problem(value: object) -> str | None:
    """Why ``value`` is not an address a user may type (0x or io1), or None when it is."""
    if isinstance(value, str) and is_io_address(value):
        try:
            io_to_bytes(value)
        except ValueError as exc:
            return str(exc)
        return None
    if not isinstance(value, str) or not _HEX40.fullmatch(value):
        return "must be a 0x-prefixed 20-byte hex address or an io1 address"
    body = value[2:]
    if body == body.lower() or body == body.upper():
        return None
    if value != to_checksum(value):
        # The checksum of what was typed is not offered: it would bless a mistyped address.
        return f"{value} fails its EIP-55 checksum (a character or its case is mistyped)"
    return None


def canonical_address(value: str) -> str:
    """The EIP-55 0x form of a user-typed 0x or io1 address; ValueError naming the problem."""
    if problem := address_problem(value):
        raise ValueError(problem)
    if is_io_address(value):
        return to_checksum("0x" + io_to_bytes(value).hex())
    return to_checksum(value)


def to_io(address: str) -> str:
    """The io1 spelling of a 0x (or io1) address."""
    return bytes_to_io(bytes.fromhex(canonical_address(address)[2:]))
