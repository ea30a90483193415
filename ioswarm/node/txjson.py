"""A signed transaction's bytes rebuilt from a node's JSON transaction object.

A node that pushes full pending transactions sends every field of the signed transaction, so
its raw bytes need not be asked for again: they are re-encoded here (legacy, EIP-2930 and
EIP-1559 envelopes) and kept only when they hash to the transaction's hash. Anything else
(other types, a missing or odd field) gives None, and the bytes are fetched from the node.
"""

from __future__ import annotations

from typing import Any

import rlp
from eth_hash.auto import keccak


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj[key]
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(key)
    return int(value, 16)


def _data(obj: dict[str, Any], key: str) -> bytes:
    value = obj[key]
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(key)
    return bytes.fromhex(value[2:])


def _access_list(obj: dict[str, Any]) -> list[list[Any]]:
    entries = obj.get("accessList") or []
    return [
        [_data(e, "address"), [bytes.fromhex(k[2:]) for k in e.get("storageKeys") or []]]
        for e in entries
    ]


def _fields(obj: dict[str, Any]) -> tuple[int, list[Any]]:
    kind = _int(obj, "type") if "type" in obj else 0
    to = _data(obj, "to") if obj.get("to") else b""
    common = [_int(obj, "gas"), to, _int(obj, "value"), _data(obj, "input")]
    sig = [_int(obj, "r"), _int(obj, "s")]
    if kind == 0:
        return 0, [_int(obj, "nonce"), _int(obj, "gasPrice"), *common, _int(obj, "v"), *sig]
    parity = _int(obj, "yParity") if "yParity" in obj else _int(obj, "v")
    head = [_int(obj, "chainId"), _int(obj, "nonce")]
    if kind == 1:
        fee = [_int(obj, "gasPrice")]
    elif kind == 2:
        fee = [_int(obj, "maxPriorityFeePerGas"), _int(obj, "maxFeePerGas")]
    else:
        raise ValueError("type")
    return kind, [*head, *fee, *common, _access_list(obj), parity, *sig]


def raw_from_json(obj: Any, tx_hash: bytes) -> bytes | None:
    """The signed bytes of ``obj`` if they can be rebuilt and hash to ``tx_hash``, else None."""
    if not isinstance(obj, dict):
        return None
    try:
        kind, fields = _fields(obj)
    except (KeyError, ValueError, TypeError, AttributeError):
        return None
    body = rlp.encode(fields)
    raw = body if kind == 0 else bytes([kind]) + body
    return raw if bytes(keccak(raw)) == tx_hash else None
