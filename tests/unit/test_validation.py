"""The L1 and L2 validation rules (ioswarm.core.validation)."""

from __future__ import annotations

from typing import Any

import pytest
import rlp
from eth_account import Account
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from ioswarm.core.models import EMPTY_CODE_HASH, AccountSnapshot, Verdict
from ioswarm.core.tx import SECP256K1_N, decode_tx, floor_data_gas, intrinsic_gas
from ioswarm.core.validation import Check, check_l1, check_l2

KEY = bytes.fromhex("8da4ef21b864d2cc526dbdb2a120bd2874c36c9d0a1fb7f8c63d7f7a8b41de8f")
SENDER = bytes.fromhex(Account.from_key(KEY).address[2:])
OTHER = bytes.fromhex("0bad" * 10)
TO = bytes.fromhex("70" * 20)
CHAIN_ID = 31337
BLOCK_GAS = 30_000_000
GWEI = 10**9


def signed(kind: str = "dynamic_fee", **overrides: Any) -> bytes:
    """A signed transaction from SENDER with nonce 5 and 21000 gas unless overridden."""
    tx: dict[str, Any] = {
        "chainId": CHAIN_ID,
        "nonce": 5,
        "to": to_checksum_address(TO),
        "value": 1_000,
        "gas": 21_000,
        "data": b"",
    }
    if kind == "pre155":
        del tx["chainId"]
        tx["gasPrice"] = 2 * GWEI
    elif kind == "legacy":
        tx["gasPrice"] = 2 * GWEI
    elif kind == "access_list":
        tx.update(type=1, gasPrice=2 * GWEI, accessList=[])
    else:
        tx.update(maxFeePerGas=3 * GWEI, maxPriorityFeePerGas=GWEI, accessList=[])
        if kind == "dynamic_fee":
            tx["type"] = 2
        elif kind == "blob":
            tx.update(type=3, maxFeePerBlobGas=11, blobVersionedHashes=[b"\x01" * 32] * 2)
        elif kind == "set_code":
            auth = {"chainId": CHAIN_ID, "address": to_checksum_address(OTHER), "nonce": 6}
            tx.update(type=4, authorizationList=[Account.sign_authorization(auth, KEY)])
            tx["gas"] = 46_000
        else:
            raise AssertionError(kind)
    tx.update(overrides)
    tx = {k: v for k, v in tx.items() if v is not None}
    return bytes(Account.sign_transaction(tx, KEY).raw_transaction)


def state(nonce: int = 5, balance: int = 10**18, **kw: Any) -> AccountSnapshot:
    return AccountSnapshot(address=kw.pop("address", SENDER), balance=balance, nonce=nonce, **kw)


def cost_of(raw: bytes) -> int:
    """value + gas limit x max fee (+ blob gas x blob fee cap): what the balance must cover."""
    tx = decode_tx(raw)
    return tx.value + tx.gas_limit * tx.max_fee + tx.blob_gas * (tx.max_fee_per_blob_gas or 0)


def l2(raw: bytes, sender_state: AccountSnapshot | None = None, block_gas: int = BLOCK_GAS) -> str:
    """The L2 reject reason ('' when valid), with a matching, funded sender by default."""
    check = check_l2(raw, CHAIN_ID, state() if sender_state is None else sender_state, block_gas)
    assert check.valid == (check.reject_reason == "")
    return check.reject_reason


KINDS = ["pre155", "legacy", "access_list", "dynamic_fee", "blob", "set_code"]


# --- L1 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_l1_accepts_every_type(kind: str) -> None:
    """A correctly signed transaction of any type passes L1 with its sender and intrinsic gas."""
    raw = signed(kind)
    check = check_l1(raw, CHAIN_ID)
    assert check == Check(
        valid=True,
        sender=SENDER,
        gas_estimate=intrinsic_gas(decode_tx(raw)),
        tx=decode_tx(raw),
    )


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "pre155"])
def test_l1_rejects_wrong_chain_id(kind: str) -> None:
    """A replay-protected transaction for another chain is rejected as wrong_chain_id."""
    check = check_l1(signed(kind), CHAIN_ID + 1)
    assert (check.valid, check.reject_reason, check.sender) == (False, "wrong_chain_id", b"")
    assert check.tx is not None


def test_l1_accepts_pre155_on_any_chain() -> None:
    """A pre-EIP-155 transaction has no chain id and is valid on every chain."""
    raw = signed("pre155")
    for chain_id in (1, CHAIN_ID, 4689):
        assert check_l1(raw, chain_id).sender == SENDER


def test_l1_rejects_high_s() -> None:
    """The high-s twin of a valid signature fails L1 with high_s."""
    raw = signed()
    tx = decode_tx(raw)
    fields = rlp.decode(raw[1:])
    fields[-3] = b"" if tx.y_parity else b"\x01"
    fields[-1] = (SECP256K1_N - tx.s).to_bytes(32, "big")
    check = check_l1(b"\x02" + rlp.encode(fields), CHAIN_ID)
    assert (check.valid, check.reject_reason) == (False, "high_s")


def test_l1_rejects_garbage_without_tx() -> None:
    """Undecodable bytes fail L1 with the decoder's reason and no transaction."""
    check = check_l1(b"\x02\xc0", CHAIN_ID)
    assert check == Check(valid=False, reject_reason="bad_field_count")


def test_l1_rejects_bad_signature() -> None:
    """A zero r fails L1 as bad_signature."""
    fields = rlp.decode(signed()[1:])
    fields[-2] = b""
    assert check_l1(b"\x02" + rlp.encode(fields), CHAIN_ID).reject_reason == "bad_signature"


def test_tampered_transaction_recovers_another_sender() -> None:
    """Changing a signed field keeps L1 valid but recovers a different sender, which L2 catches."""
    fields = rlp.decode(signed()[1:])
    fields[6] = b"\x07"  # value
    raw = b"\x02" + rlp.encode(fields)
    first = check_l1(raw, CHAIN_ID)
    assert first.valid and first.sender != SENDER
    assert l2(raw) == "sender_mismatch"


def test_check_becomes_verdict() -> None:
    """A Check maps onto the Verdict an agent reports."""
    check = check_l1(signed(), CHAIN_ID)
    assert check.verdict(task_id=7, latency_us=12) == Verdict(
        task_id=7, valid=True, sender=SENDER, gas_estimate=21_000, latency_us=12
    )
    bad = check_l1(b"", CHAIN_ID).verdict(task_id=8)
    assert (bad.valid, bad.reject_reason, bad.sender) == (False, "empty_tx", b"")


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_l1_and_l2_never_raise(raw: bytes) -> None:
    """Arbitrary bytes produce a rejecting Check, never an exception."""
    assert not check_l1(raw, CHAIN_ID).valid or raw
    check_l2(raw, CHAIN_ID, state(), BLOCK_GAS)


# --- L2 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_l2_accepts_every_type(kind: str) -> None:
    """A funded sender with the right nonce passes L2 with any transaction type."""
    raw = signed(kind)
    check = check_l2(raw, CHAIN_ID, state(), BLOCK_GAS)
    assert check.valid and check.sender == SENDER and check.tx == decode_tx(raw)


def test_l2_runs_l1_first() -> None:
    """L2 reports L1 failures unchanged."""
    assert l2(signed(chainId=1)) == "wrong_chain_id"


def test_l2_missing_state() -> None:
    """Without the sender's account snapshot L2 cannot decide and rejects as missing_state."""
    check = check_l2(signed(), CHAIN_ID, None, BLOCK_GAS)
    assert (check.valid, check.reject_reason, check.sender) == (False, "missing_state", SENDER)


def test_l2_sender_mismatch() -> None:
    """A snapshot of another account than the recovered sender is rejected."""
    assert l2(signed(), state(address=OTHER)) == "sender_mismatch"


@pytest.mark.parametrize(
    ("account_nonce", "expected"), [(4, "nonce_too_high"), (5, ""), (6, "nonce_too_low")]
)
def test_l2_nonce_must_equal_account_nonce(account_nonce: int, expected: str) -> None:
    """Only the account's current nonce passes; lower is too low, higher too high."""
    assert l2(signed(nonce=5), state(nonce=account_nonce)) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_l2_balance_boundary(kind: str) -> None:
    """The balance must cover value + gas limit x max fee (+ blob gas): one wei less fails."""
    raw = signed(kind)
    cost = cost_of(raw)
    assert l2(raw, state(balance=cost)) == ""
    assert l2(raw, state(balance=cost - 1)) == "insufficient_balance"


def test_l2_blob_gas_counts_toward_cost() -> None:
    """For a blob transaction the blob fee cap times blob gas is part of the cost."""
    raw = signed("blob")
    without_blobs = cost_of(raw) - 2 * 131_072 * 11
    assert l2(raw, state(balance=without_blobs)) == "insufficient_balance"


def test_l2_legacy_cost_uses_gas_price() -> None:
    """For a legacy transaction the cost is value + gas limit x gas price."""
    raw = signed("legacy")
    assert cost_of(raw) == 1_000 + 21_000 * 2 * GWEI
    assert l2(raw, state(balance=1_000 + 21_000 * 2 * GWEI - 1)) == "insufficient_balance"


ACCESS = [{"address": to_checksum_address(TO), "storageKeys": ["0x" + "00" * 32]}]


@pytest.mark.parametrize(
    ("kind", "extra"),
    [("dynamic_fee", {"accessList": ACCESS}), ("set_code", {}), ("legacy", {"to": None})],
)
def test_l2_intrinsic_gas_boundary(kind: str, extra: dict[str, Any]) -> None:
    """A gas limit one below the intrinsic gas fails; exactly the intrinsic gas passes."""
    data = b"\x00\x01" * 8
    tx = decode_tx(signed(kind, data=data, **extra))
    intrinsic = intrinsic_gas(tx)
    assert intrinsic > floor_data_gas(tx)  # so the floor does not decide
    assert l2(signed(kind, data=data, gas=intrinsic, **extra)) == ""
    assert l2(signed(kind, data=data, gas=intrinsic - 1, **extra)) == "intrinsic_gas_too_high"


def test_l2_floor_data_gas_boundary() -> None:
    """With heavy calldata the EIP-7623 floor, not the intrinsic gas, sets the minimum gas limit."""
    data = b"\x01" * 1_000
    floor = floor_data_gas(decode_tx(signed(data=data)))
    assert floor == 61_000 > intrinsic_gas(decode_tx(signed(data=data)))
    assert l2(signed(data=data, gas=floor)) == ""
    assert l2(signed(data=data, gas=floor - 1)) == "intrinsic_gas_too_high"


def test_l2_gas_limit_within_block() -> None:
    """A gas limit above the block gas limit fails; equal to it passes."""
    raw = signed(gas=50_000)
    assert l2(raw, block_gas=50_000) == ""
    assert l2(raw, block_gas=49_999) == "gas_limit_exceeds_block"


def test_l2_fee_cap_below_tip() -> None:
    """A priority fee above the fee cap fails; equal passes."""
    assert l2(signed(maxFeePerGas=GWEI, maxPriorityFeePerGas=GWEI)) == ""
    assert l2(signed(maxFeePerGas=GWEI, maxPriorityFeePerGas=GWEI + 1)) == "fee_cap_below_tip"


def test_l2_initcode_size_limit() -> None:
    """A creation with initcode above 49152 bytes fails (EIP-3860); at the limit it passes."""
    gas = 15_000_000
    assert l2(signed(to=None, data=b"\x01" * 49_152, gas=gas)) == ""
    assert l2(signed(to=None, data=b"\x01" * 49_153, gas=gas)) == "initcode_too_large"


def test_l2_accepts_sender_with_code() -> None:
    """A sender with code passes: a code hash cannot tell an EIP-7702 delegation from a contract."""
    assert l2(signed(), state(code_hash=b"\x11" * 32)) == ""
    assert l2(signed(), state(code_hash=EMPTY_CODE_HASH)) == ""


def test_l2_stateless_rules_come_before_state_rules() -> None:
    """Rules that need no state come first, so the reason does not depend on the snapshot."""
    raw = signed(gas=20_000)
    assert check_l2(raw, CHAIN_ID, None, BLOCK_GAS).reject_reason == "intrinsic_gas_too_high"
    assert l2(raw, state(nonce=0, balance=0)) == "intrinsic_gas_too_high"
