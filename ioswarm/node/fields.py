"""Parsing of node answers: every accessor raises NodeError naming the method and the field."""

from __future__ import annotations

import re
from typing import Any, Literal

from ioswarm.core.statehash import keccak256
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


def proof_state_root(header: Any, where: str) -> bytes | None:
    """The state root ``eth_getProof`` answers at this block must hang from.

    ``header`` is the block's ``eth_getBlockByNumber`` answer. None at block 0: anvil's genesis
    header carries a state root its own proofs never match (later blocks match), so genesis
    reads go unchecked.
    """
    head = Obj("eth_getBlockByNumber", header, where)
    return None if head.quantity("number") == 0 else head.fixed("stateRoot", 32)


def proof_matches(answer: Obj, state_root: bytes | None) -> bool:
    """Whether an ``eth_getProof`` answer's account proof starts at ``state_root``.

    A node can answer a read of one block with another block's state (anvil does, for the
    previous block while it mines the next); the proof's root node then hashes to another root.
    True when there is nothing to check (no root, or an empty proof).
    """
    proof = answer.raw.get("accountProof") or []
    if state_root is None or not proof:
        return True
    first = data(answer.method, f"{answer.where}.accountProof[0]", proof[0])
    return keccak256(first) == state_root
