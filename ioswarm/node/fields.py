"""Parsing of node answers: every accessor raises NodeError naming the method and the field."""

from __future__ import annotations

import re
from typing import Any, Literal

from ioswarm.errors import NodeError

BlockTag = Literal["latest", "pending", "earliest", "safe", "finalized"]
BlockId = int | BlockTag

_HEX_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")
_HEX_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")


class Obj:
    """A JSON object from one node answer; accessors raise NodeError naming method and field."""

    __slots__ = ("method", "raw", "where")

    def __init__(self, method: str, raw: Any, where: str = "result") -> None:
        if not isinstance(raw, dict):
            raise NodeError(method, f"{where}: expected an object, got {show(raw)}")
        self.method = method
        self.raw: dict[str, Any] = raw
        self.where = where

    def _get(self, key: str) -> Any:
        if key not in self.raw or self.raw[key] is None:
            raise NodeError(self.method, f"field {self.where}.{key} is missing")
        return self.raw[key]

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def quantity(self, key: str) -> int:
        return quantity(self.method, f"{self.where}.{key}", self._get(key))

    def data(self, key: str) -> bytes:
        return data(self.method, f"{self.where}.{key}", self._get(key))

    def fixed(self, key: str, size: int) -> bytes:
        return fixed(self.method, f"{self.where}.{key}", self._get(key), size)

    def opt_fixed(self, key: str, size: int) -> bytes | None:
        return self.fixed(key, size) if self.has(key) else None

    def items(self, key: str) -> list[Any]:
        value = self._get(key)
        if not isinstance(value, list):
            raise NodeError(self.method, f"field {self.where}.{key}: expected a list")
        return value

    def child(self, key: str) -> Obj:
        return Obj(self.method, self._get(key), f"{self.where}.{key}")


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def quantity(method: str, where: str, value: Any) -> int:
    if not isinstance(value, str) or not _HEX_QUANTITY.fullmatch(value):
        raise NodeError(method, f"field {where}: expected a hex quantity, got {show(value)}")
    return int(value, 16)


def data(method: str, where: str, value: Any) -> bytes:
    if not isinstance(value, str) or not _HEX_DATA.fullmatch(value):
        raise NodeError(method, f"field {where}: expected hex bytes, got {show(value)}")
    return bytes.fromhex(value[2:])


def fixed(method: str, where: str, value: Any, size: int) -> bytes:
    out = data(method, where, value)
    if len(out) != size:
        raise NodeError(method, f"field {where}: expected {size} bytes, got {len(out)}")
    return out


def hexstr(data: bytes) -> str:
    return "0x" + data.hex()


def block_param(number: BlockId) -> str:
    """The JSON-RPC block parameter for a number or tag."""
    if isinstance(number, int):
        if number < 0:
            raise ValueError(f"block number must be >= 0, got {number}")
        return hex(number)
    return number
