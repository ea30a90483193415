"""Typed 0x addresses: syntax and the EIP-55 mixed-case checksum.

An all-lowercase or all-uppercase address carries no checksum and is accepted as written; a
mixed-case one must match EIP-55 exactly, so a mistyped character is caught before money
moves.
"""

from __future__ import annotations

import re

from ioswarm.core.hashing import keccak256

_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")


def to_checksum(address: str) -> str:
    """The EIP-55 spelling of a syntactically valid ``0x`` address."""
    body = address[2:].lower()
    digest = keccak256(body.encode("ascii")).hex()
    return "0x" + "".join(
        ch.upper() if ch.isalpha() and int(digest[i], 16) >= 8 else ch for i, ch in enumerate(body)
    )


def address_problem(value: object) -> str | None:
    """Why ``value`` is not an address a user may type, or None when it is."""
    if not isinstance(value, str) or not _HEX40.fullmatch(value):
        return "must be a 0x-prefixed 20-byte hex address"
    body = value[2:]
    if body == body.lower() or body == body.upper():
        return None
    if value != to_checksum(value):
        # The checksum of what was typed is not offered: it would bless a mistyped address.
        return f"{value} fails its EIP-55 checksum (a character or its case is mistyped)"
    return None
