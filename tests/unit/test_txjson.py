"""Signed bytes rebuilt from a node's JSON transaction equal the signed bytes, or are refused."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account

from ioswarm.node.txjson import raw_from_json

KEY = "0x" + "42" * 32
TO = "0x" + "77" * 20


def signed(kind: int) -> tuple[dict[str, Any], bytes, bytes]:
    tx: dict[str, Any] = {"chainId": 31337, "nonce": 5, "to": TO, "value": 9, "gas": 30_000}
    tx["data"] = b"\x01\x02"
    if kind == 2:
        tx.update(type=2, maxFeePerGas=3 * 10**9, maxPriorityFeePerGas=10**9)
    else:
        tx["gasPrice"] = 2 * 10**9
    if kind == 1:
        tx.update(type=1, accessList=[{"address": TO, "storageKeys": ["0x" + "01" * 32]}])
    s = Account.sign_transaction(tx, KEY)
    as_json: dict[str, Any] = {
        "hash": "0x" + bytes(s.hash).hex(),
        "nonce": hex(5),
        "to": TO,
        "value": hex(9),
        "gas": hex(30_000),
        "input": "0x0102",
        "r": hex(s.r),
        "s": hex(s.s),
        "v": hex(s.v),
    }
    if kind:
        as_json.update(type=hex(kind), chainId=hex(31337), yParity=hex(s.v))
        as_json["accessList"] = tx.get("accessList", [])
    if kind == 2:
        as_json.update(maxFeePerGas=hex(3 * 10**9), maxPriorityFeePerGas=hex(10**9))
    else:
        as_json["gasPrice"] = hex(2 * 10**9)
    return as_json, bytes(s.raw_transaction), bytes(s.hash)


@pytest.mark.parametrize("kind", [0, 1, 2], ids=["legacy", "eip2930", "eip1559"])
def test_rebuilt_bytes_are_the_signed_bytes(kind: int) -> None:
    obj, raw, tx_hash = signed(kind)
    assert raw_from_json(obj, tx_hash) == raw


def test_a_field_that_does_not_match_the_hash_gives_none() -> None:
    obj, _, tx_hash = signed(2)
    obj["value"] = hex(10)  # a node (or a proxy) misreporting one field
    assert raw_from_json(obj, tx_hash) is None


def test_unknown_types_and_missing_fields_give_none() -> None:
    obj, _, tx_hash = signed(2)
    assert raw_from_json({**obj, "type": "0x4"}, tx_hash) is None
    del obj["r"]
    assert raw_from_json(obj, tx_hash) is None
    assert raw_from_json("0x12", tx_hash) is None
