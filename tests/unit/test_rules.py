"""One name per rule (ioswarm.core.rules): L2 and the executing precheck agree on every rule."""

from __future__ import annotations

import pytest

from ioswarm.agent import evm
from ioswarm.core.models import AccountSnapshot
from ioswarm.core.rules import (
    Reject,
    TxTerms,
    bad_field,
    blob_reject,
    sender_code_reject,
    state_reject,
    stateless_reject,
)
from ioswarm.core.validation import check_l2
from tests.unit.test_evm_engine import (
    ALICE,
    BASE_FEE,
    BLOCK,
    CHAIN_ID,
    COINBASE,
    ETHER,
    TIP,
    empty,
    run,
    sender,
    sign,
)

# One invalid transaction per rule the two levels share, with the sender's (balance, nonce).
SHARED: list[tuple[bytes, tuple[int, int], Reject]] = [
    (sign(ALICE, chainId=CHAIN_ID + 1), (ETHER, 0), Reject.WRONG_CHAIN_ID),
    (
        sign(None, data=b"\x01" * 49_153, gas=3_000_000),
        (ETHER, 0),
        Reject.INITCODE_TOO_LARGE,
    ),
    (sign(ALICE, gas=BLOCK.gas_limit + 1), (10**30, 0), Reject.GAS_LIMIT_EXCEEDS_BLOCK),
    (
        sign(ALICE, maxFeePerGas=TIP, maxPriorityFeePerGas=TIP + 1),
        (ETHER, 0),
        Reject.FEE_CAP_BELOW_TIP,
    ),
    (sign(ALICE, gas=20_999), (ETHER, 0), Reject.INTRINSIC_GAS_TOO_HIGH),
    (sign(ALICE, data=b"\x01" * 100, gas=22_000), (ETHER, 0), Reject.INTRINSIC_GAS_TOO_HIGH),
    (sign(ALICE, nonce=1), (ETHER, 2), Reject.NONCE_TOO_LOW),
    (sign(ALICE, nonce=3), (ETHER, 2), Reject.NONCE_TOO_HIGH),
    (sign(ALICE, value=ETHER), (ETHER, 0), Reject.INSUFFICIENT_BALANCE),
    # Stateless rules come before state rules at both levels.
    (sign(ALICE, nonce=9, gas=20_000), (0, 0), Reject.INTRINSIC_GAS_TOO_HIGH),
]


@pytest.mark.parametrize(("raw", "account", "reason"), SHARED, ids=[c[2] for c in SHARED])
def test_l2_and_the_l3_precheck_name_a_rule_alike(
    raw: bytes, account: tuple[int, int], reason: Reject
) -> None:
    """check_l2 and the executing engine give the same reason for the same invalid tx."""
    balance, nonce = account
    l2 = check_l2(raw, CHAIN_ID, AccountSnapshot(b"", balance, nonce), BLOCK.gas_limit)
    l3 = run(raw, sender(balance=balance, nonce=nonce), empty(ALICE), empty(COINBASE))
    assert (l2.reject_reason, l3.reject_reason) == (reason, reason)
    assert not l2.valid and not l3.valid


def test_base_fee_is_a_rule_of_its_own_only_where_the_base_fee_is_known() -> None:
    """L2 tasks carry no base fee; executing agents name a fee cap under it apart from a tip."""
    raw = sign(ALICE, maxFeePerGas=BASE_FEE - 1, maxPriorityFeePerGas=1)
    assert check_l2(raw, CHAIN_ID, AccountSnapshot(b"", ETHER, 0), BLOCK.gas_limit).valid
    assert run(raw, sender(), empty(ALICE)).reject_reason == Reject.FEE_CAP_BELOW_BASE_FEE


def test_shared_rules_are_pure_and_ordered() -> None:
    """The rule functions read only the numbers given and stop at the first rule broken."""
    terms = TxTerms(
        creates=False,
        data_size=0,
        gas_limit=21_000,
        nonce=4,
        value=5,
        fee_cap=10,
        tip_cap=11,
        blob_fee_cap=7,
    )
    assert terms.max_cost == 5 + 21_000 * 10 + 7
    assert stateless_reject(terms, required_gas=21_001, block_gas_limit=21_000) == (
        Reject.FEE_CAP_BELOW_TIP
    )
    legacy = TxTerms(False, 0, 21_000, 4, 5, fee_cap=10, tip_cap=None)
    assert stateless_reject(legacy, required_gas=21_000, block_gas_limit=21_000) is None
    assert stateless_reject(legacy, required_gas=21_000, block_gas_limit=21_000, base_fee=11) == (
        Reject.FEE_CAP_BELOW_BASE_FEE
    )
    assert state_reject(legacy, nonce=4, balance=legacy.max_cost) is None
    assert state_reject(legacy, nonce=4, balance=legacy.max_cost - 1) == (
        Reject.INSUFFICIENT_BALANCE
    )
    assert state_reject(legacy, nonce=5, balance=0) == Reject.NONCE_TOO_LOW
    assert sender_code_reject(b"") is None
    assert sender_code_reject(b"\xef\x01\x00" + b"\x11" * 20) is None  # EIP-7702 delegation
    assert sender_code_reject(b"\x00") == Reject.SENDER_NOT_EOA


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("Invalid transaction nonce: Expected 2, but got 1", Reject.NONCE_TOO_LOW),
        ("Invalid transaction nonce: Expected 2, but got 3", Reject.NONCE_TOO_HIGH),
        ("Nonce must be less than 2**64 - 1, got 18446744073709551615", Reject.NONCE_MAX),
        ("Sender 0x00 cannot afford txn gas 1 with account balance 0", Reject.INSUFFICIENT_BALANCE),
        ("Sender has insufficient funds for blob fee.", Reject.INSUFFICIENT_BALANCE),
        (
            "Blob transaction must pay at least the current blob base fee.",
            Reject.BLOB_FEE_CAP_BELOW_BASE_FEE,
        ),
        (
            "Sender's max fee per gas (1) is lower than block's base fee per gas (2)",
            Reject.FEE_CAP_BELOW_BASE_FEE,
        ),
        ("something py-evm says that no rule names", Reject.INVALID_TX),
    ],
)
def test_pyevm_messages_map_to_the_shared_names(message: str, reason: Reject) -> None:
    """A py-evm refusal is reported under the one name of its rule, never as free text."""
    assert evm._reason_from_pyevm(message) is reason


def test_every_name_is_its_wire_string() -> None:
    """Reject values are the strings verdicts carry; no two rules share one."""
    assert Reject.NONCE_TOO_LOW == "nonce_too_low"
    assert len({r.value for r in Reject}) == len(Reject)
    assert bad_field("nonce") == "bad_field:nonce"
    assert not {"nonce_mismatch", "fee_cap", "intrinsic_gas"} & {r.value for r in Reject}


@pytest.mark.parametrize(
    ("blobs", "fee_cap", "max_blobs", "blob_base_fee", "reason"),
    [
        (6, 1, 6, 1, None),
        (7, 1, 6, 1, Reject.TOO_MANY_BLOBS),
        (7, 1, None, 1, None),  # L2: no block, no limit known
        (1, 9, 6, 10, Reject.BLOB_FEE_CAP_BELOW_BASE_FEE),
        (1, 9, 6, None, None),
        (10, 0, 9, 10, Reject.TOO_MANY_BLOBS),  # the count is checked first
    ],
)
def test_blob_rules_need_the_block_and_check_count_before_fee(
    blobs: int,
    fee_cap: int,
    max_blobs: int | None,
    blob_base_fee: int | None,
    reason: Reject | None,
) -> None:
    """At most the fork's blobs per block, and a blob fee cap at least the blob base fee."""
    assert blob_reject(blobs, fee_cap, max_blobs=max_blobs, blob_base_fee=blob_base_fee) == reason
