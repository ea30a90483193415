"""Regression tests for each class of state-test failure the engine used to have (issue 11)."""

from __future__ import annotations

import dataclasses

import pytest
import rlp
from eth_account import Account
from eth_hash.auto import keccak
from eth_keys.datatypes import PrivateKey

from ioswarm.agent import evm
from ioswarm.agent.evmprecompiles import (
    MODEXP_ADDRESS,
    POINT_EVALUATION_ADDRESS,
    modexp,
    modexp_output,
    point_evaluation,
)
from ioswarm.agent.executing import execution_result
from ioswarm.agent.l3 import L3Validator
from ioswarm.coordinator.wire import effects_from_pb
from ioswarm.core.execution import AccountInput, BlockInput
from ioswarm.core.models import AccountSnapshot
from ioswarm.core.validation import check_l2
from tests.unit.test_evm_engine import (
    ALICE,
    BLOCK,
    CHAIN_ID,
    COINBASE,
    ETHER,
    GWEI,
    KEY,
    SENDER,
    TIP,
    TOKEN,
    _batch,
    _task,
    asm,
    change,
    created_address,
    empty,
    initcode,
    run,
    sender,
    sign,
)

CANCUN = dataclasses.replace(BLOCK, fork="cancun")


def blob_tx(blobs: int, *, blob_fee_cap: int = 10, value: int = 0) -> bytes:
    """A type-3 tx from SENDER to ALICE carrying ``blobs`` versioned hashes (block form)."""
    hashes = [b"\x01" + bytes([i]) * 31 for i in range(blobs)]
    fields = [CHAIN_ID, 0, TIP, 10 * GWEI, 21_000, ALICE, value, b"", [], blob_fee_cap, hashes]
    signature = PrivateKey(KEY).sign_msg_hash(keccak(b"\x03" + rlp.encode(fields)))
    return b"\x03" + rlp.encode([*fields, signature.v, signature.r, signature.s])


# --- blob rules: count, versioned hash, fee cap vs blob base fee -----------------------------


@pytest.mark.parametrize(
    ("block", "blobs", "valid"),
    [(CANCUN, 6, True), (CANCUN, 7, False), (BLOCK, 9, True), (BLOCK, 10, False)],
)
def test_blob_count_is_capped_per_fork(block: BlockInput, blobs: int, valid: bool) -> None:
    """At most 6 blobs in a Cancun block and 9 in Prague (EIP-7691); more is a rejection."""
    result = run(blob_tx(blobs), sender(10 * ETHER), empty(ALICE), empty(COINBASE), block=block)
    assert result.valid is valid
    if not valid:
        assert result.reject_reason == "too_many_blobs"


def test_blob_fee_cap_below_the_blob_base_fee_is_rejected() -> None:
    """A max fee per blob gas under the block's blob base fee cannot be included."""
    block = dataclasses.replace(BLOCK, blob_base_fee=11)
    result = run(blob_tx(1, blob_fee_cap=10), sender(), empty(ALICE), empty(COINBASE), block=block)
    assert result.reject_reason == "blob_fee_cap_below_base_fee"


def test_a_blob_hash_of_another_version_is_rejected_at_l3() -> None:
    """A versioned hash that does not start with 0x01 is refused before any execution."""
    fields = [CHAIN_ID, 0, TIP, 10 * GWEI, 21_000, ALICE, 0, b"", [], 10, [b"\x02" * 32]]
    signature = PrivateKey(KEY).sign_msg_hash(keccak(b"\x03" + rlp.encode(fields)))
    raw = b"\x03" + rlp.encode([*fields, signature.v, signature.r, signature.s])
    task = _task(raw, sender(), empty(ALICE))
    answer = L3Validator().validate(task, _batch(task))
    assert (answer.valid, answer.declined) == (False, False)
    assert answer.reject_reason == "bad_field:blob_versioned_hashes"


def test_blob_tx_that_cannot_pay_its_value_is_answered_by_a_serving_agent() -> None:
    """The task that raised InsufficientFunds out of the engine is now a rejection, and the
    same validator answers the next task normally."""
    validator = L3Validator()
    broke = sender(ETHER + 21_000 * 10 * GWEI + 131_072 * 10 - 1)
    task = _task(blob_tx(1, value=ETHER), broke, empty(ALICE), empty(COINBASE))
    answer = validator.validate(task, _batch(task))
    assert (answer.valid, answer.declined, answer.reject_reason) == (
        False,
        False,
        "insufficient_balance",
    )
    nxt = _task(sign(ALICE, value=5, gas=21_000), sender(), empty(ALICE), empty(COINBASE))
    assert validator.validate(nxt, _batch(nxt)).valid


# --- EIP-3860: the initcode word cost is part of the intrinsic gas ------------------------------


def test_creation_gas_limit_must_cover_the_initcode_words() -> None:
    """L2 and L3 both reject a creation whose gas covers the data and the create cost but not
    2 gas per initcode word; one more word's worth makes it valid at both."""
    code = initcode(asm("PUSH0", "PUSH0", "RETURN"))
    zeros = code.count(0)
    data_gas = 4 * zeros + 16 * (len(code) - zeros)
    words = (len(code) + 31) // 32
    short = 21_000 + 32_000 + data_gas + 2 * words - 1
    account = AccountSnapshot(address=SENDER, balance=ETHER, nonce=0, code_hash=b"")
    raw = sign(None, data=code, gas=short)
    assert check_l2(raw, CHAIN_ID, account, BLOCK.gas_limit).reject_reason == (
        "intrinsic_gas_too_high"
    )
    assert run(raw, sender(), empty(COINBASE)).reject_reason == "intrinsic_gas_too_high"
    enough = sign(None, data=code, gas=short + 1 + 10_000)
    assert check_l2(enough, CHAIN_ID, account, BLOCK.gas_limit).valid
    assert run(enough, sender(), empty(COINBASE), empty(created_address(SENDER, 0))).valid


# --- EIP-7702: cleared delegations, and existence through storage -------------------------------


def _authority() -> tuple[object, bytes]:
    authority = Account.from_key(b"\x07" * 32)
    return authority, bytes.fromhex(authority.address[2:])


def test_a_cleared_delegation_is_reported_apart_from_unchanged_code() -> None:
    """Delegating to the zero address resets the code: code_cleared, on the wire as well."""
    authority, address = _authority()
    auth = authority.sign_authorization(  # type: ignore[attr-defined]
        {"chainId": CHAIN_ID, "address": b"\x00" * 20, "nonce": 1}
    )
    delegated = AccountInput(address, balance=1, nonce=1, code=b"\xef\x01\x00" + TOKEN)
    result = run(
        sign(ALICE, type=4, authorizationList=[auth]),
        sender(),
        empty(ALICE),
        empty(COINBASE),
        delegated,
        AccountInput(TOKEN, nonce=1, code=b"\x00"),
    )
    assert result.valid, result
    cleared = change(result, address)
    assert (cleared.created_code, cleared.code_cleared, cleared.nonce_after) == (b"", True, 2)
    wire = execution_result(1, result)
    sent = next(a for a in wire.account_changes if a.address == address)
    assert sent.code_cleared and not sent.created_code
    assert effects_from_pb(wire, COINBASE).code == {address: b""}  # what the shadow compares
    assert not change(result, SENDER).code_cleared  # the sender's code did not change


def test_an_authority_with_only_storage_exists_and_earns_the_refund() -> None:
    """EIP-7702 refunds an authorization whose authority exists; storage alone makes it exist
    (nonce 0, no balance, no code), so the refund lowers the gas used."""
    authority, address = _authority()
    auth = authority.sign_authorization(  # type: ignore[attr-defined]
        {"chainId": CHAIN_ID, "address": TOKEN, "nonce": 0}
    )
    raw = sign(ALICE, type=4, authorizationList=[auth])
    common = (sender(), empty(ALICE), empty(COINBASE))
    absent = run(raw, *common, AccountInput(address))
    with_storage = run(
        raw, *common, AccountInput(address, storage={b"\x00" * 32: b"\x00" * 31 + b"\x01"})
    )
    flagged = run(raw, *common, AccountInput(address, exists=True))
    assert absent.valid and with_storage.valid and flagged.valid
    assert with_storage.gas_used < absent.gas_used
    assert flagged.gas_used == with_storage.gas_used


def test_a_touched_empty_account_that_existed_is_reported_deleted() -> None:
    """EIP-161 clears an existing empty account a call touches; only ``deleted`` can say so."""
    result = run(
        sign(ALICE, gas=21_000), sender(), AccountInput(ALICE, exists=True), empty(COINBASE)
    )
    assert result.valid
    gone = change(result, ALICE)
    assert gone.deleted and (gone.balance_after, gone.nonce_after) == (0, 0)
    assert next(
        a for a in execution_result(1, result).account_changes if a.address == ALICE
    ).deleted
    untouched = run(sign(ALICE, gas=21_000), sender(), empty(ALICE), empty(COINBASE))
    assert all(c.address != ALICE for c in untouched.account_changes)


# --- EIP-7610: no contract is created over non-empty storage -----------------------------------


@pytest.mark.parametrize(
    "target",
    [
        AccountInput(created_address(SENDER, 0), storage={b"\x00" * 32: b"\x00" * 31 + b"\x07"}),
        AccountInput(created_address(SENDER, 0), has_storage=True),
    ],
)
def test_a_create_over_non_empty_storage_collides(target: AccountInput) -> None:
    """The creation fails (all gas spent, no code, storage untouched) instead of wiping it."""
    code = initcode(asm("PUSH0", "PUSH0", "RETURN"))
    result = run(sign(None, data=code, gas=200_000), sender(), empty(COINBASE), target)
    assert result.valid and result.status == "halt"
    assert result.gas_used == 200_000
    assert result.storage_changes == ()
    assert all(c.address != target.address for c in result.account_changes)


# --- MODEXP output per EIP-198, point evaluation setup loaded once ------------------------------


def _modexp_input(base: bytes, exponent: bytes, modulus: bytes) -> bytes:
    lengths = b"".join(len(p).to_bytes(32, "big") for p in (base, exponent, modulus))
    return lengths + base + exponent + modulus


@pytest.mark.parametrize(
    ("data", "output"),
    [
        (_modexp_input(b"", b"", b"\x02"), b"\x01"),  # 0 ** 0 % 2 == 1: py-evm answered 0
        (_modexp_input(b"", b"\x01", b"\x05"), b"\x00"),
        (_modexp_input(b"\x03", b"\x02", b"\x00\x05"), b"\x00\x04"),
        (_modexp_input(b"\x03", b"\x02", b"\x00"), b"\x00"),  # modulus 0
        (_modexp_input(b"\x03", b"\x02", b""), b""),
        ((0).to_bytes(64, "big") + (1).to_bytes(32, "big") + b"\x07", b"\x01"),  # no base
    ],
    ids=["zero-pow-zero", "empty-base", "padded", "modulus-0", "no-modulus", "short-header"],
)
def test_modexp_output_follows_eip198(data: bytes, output: bytes) -> None:
    """base ** exp % mod, empty base or exponent read as 0, padded to the modulus length."""
    assert modexp_output(data) == output


def test_the_engine_runs_its_own_modexp_and_point_evaluation() -> None:
    """Both forks' precompile tables hold the replacements, at the fork's addresses."""
    for computation in (evm._CancunComputation, evm._PragueComputation):
        table = computation.get_precompiles()
        assert table[MODEXP_ADDRESS] is modexp
        assert table[POINT_EVALUATION_ADDRESS] is point_evaluation
