"""What a transaction touches beyond its simulation, account existence on the wire, and the
shadow compare of cleared delegations and deleted accounts."""

from __future__ import annotations

import dataclasses

import pytest
from eth_account import Account

from ioswarm.coordinator.wire import effects_from_pb
from ioswarm.core.execshadow import AccountDiff, effects_from_diff, first_difference
from ioswarm.core.execution import AccountInput
from ioswarm.core.models import EMPTY_CODE_HASH, AccountSnapshot, AccountState
from ioswarm.core.touchset import (
    EMPTY_TRIE_ROOT,
    authority_of,
    created_address,
    delegation_target,
    delegations,
    exists_in_trie,
    maybe_cleared,
    sign_authorization,
    tx_touches,
)
from ioswarm.core.tx import SECP256K1_N, Authorization, decode_tx
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import account_input, account_state_to_pb, block_input, context_to_pb
from tests.unit.test_evm_engine import (
    ALICE,
    BLOCK,
    CHAIN_ID,
    COINBASE,
    SENDER,
    TOKEN,
    empty,
    run,
    sender,
    sign,
)
from tests.unit.test_execshadow import ctx

AUTHORITY_KEY = b"\x07" * 32
AUTHORITY = bytes.fromhex(Account.from_key(AUTHORITY_KEY).address[2:])
TARGET = b"\x0d" * 20


def signed(target: bytes, nonce: int = 0, chain_id: int = CHAIN_ID) -> object:
    return Account.sign_authorization(
        {"chainId": chain_id, "address": target, "nonce": nonce}, AUTHORITY_KEY
    )


def test_authority_is_recovered_as_the_signer() -> None:
    """An authorization signed here or by eth-account recovers to the signing key's address;
    a high-s or out-of-range signature recovers to nothing (clients skip it)."""
    mine = sign_authorization(AUTHORITY_KEY, CHAIN_ID, TARGET, 3)
    assert authority_of(mine) == AUTHORITY
    theirs = decode_tx(sign(ALICE, type=4, authorizationList=[signed(TARGET, 3)]))
    assert theirs.authorization_list[0] == mine
    assert authority_of(theirs.authorization_list[0]) == AUTHORITY
    high_s = dataclasses.replace(mine, s=SECP256K1_N - mine.s, y_parity=mine.y_parity ^ 1)
    assert authority_of(high_s) is None
    assert authority_of(dataclasses.replace(mine, r=0)) is None
    assert authority_of(dataclasses.replace(mine, y_parity=2)) is None


def test_tx_touches_authorities_targets_and_the_created_address() -> None:
    """A set-code tx touches sender, recipient, each authority and each non-zero target; a
    clearing authorization adds no target; a creation touches the address it deploys to."""
    raw = sign(
        ALICE,
        type=4,
        authorizationList=[signed(TARGET, 0), signed(b"\x00" * 20, 1)],
        accessList=[{"address": "0x" + TOKEN.hex(), "storageKeys": []}],
    )
    assert tx_touches(decode_tx(raw), SENDER) == {SENDER, ALICE, AUTHORITY, TARGET, TOKEN}
    creation = decode_tx(sign(None, nonce=5, data=b"\x00"))
    assert tx_touches(creation, SENDER) == {SENDER, created_address(SENDER, 5)}


def test_a_forged_authorization_touches_no_authority() -> None:
    """An attacker's tuple with an invalid signature names nobody to prefetch."""
    forged = Authorization(CHAIN_ID, TARGET, 0, 0, SECP256K1_N + 1, 1)
    tx = dataclasses.replace(decode_tx(sign(ALICE)), authorization_list=(forged,))
    assert tx_touches(tx, SENDER) == {SENDER, ALICE}


def test_delegation_targets_are_read_from_designator_code() -> None:
    """Only a 23-byte 0xef0100 designator delegates; known targets are not asked again."""
    designator = b"\xef\x01\x00" + TARGET
    assert delegation_target(designator) == TARGET
    assert delegation_target(designator + b"\x00") is None
    assert delegation_target(b"\x60\x00") is None
    codes = {AUTHORITY: designator, TOKEN: b"\x60\x00"}
    assert delegations(codes) == {TARGET}
    assert delegations(codes, known=[TARGET]) == set()


@pytest.mark.parametrize(
    ("fields", "exists"),
    [
        ((0, 0, EMPTY_CODE_HASH, EMPTY_TRIE_ROOT), False),
        ((0, 0, b"\x00" * 32, b""), False),
        ((1, 0, EMPTY_CODE_HASH, EMPTY_TRIE_ROOT), True),
        ((0, 1, EMPTY_CODE_HASH, EMPTY_TRIE_ROOT), True),
        ((0, 0, b"\x11" * 32, EMPTY_TRIE_ROOT), True),
        ((0, 0, EMPTY_CODE_HASH, b"\x22" * 32), True),
    ],
)
def test_existence_follows_eip161_and_storage(
    fields: tuple[int, int, bytes, bytes], exists: bool
) -> None:
    """Balance, nonce, code or a storage root other than the empty trie's make an account exist."""
    assert exists_in_trie(*fields, EMPTY_CODE_HASH) is exists


def test_the_exists_bit_crosses_the_wire() -> None:
    """An existing empty account (storage only) arrives as existing and holding storage; an
    account sent without the bit derives existence as before."""
    snap = AccountSnapshot(AUTHORITY, 0, 0)
    wire = account_state_to_pb(AccountState(snap, exists=True))
    assert wire.exists
    got = account_input(AUTHORITY, wire.account, wire)
    assert got is not None and got.in_trie and got.has_storage and got.is_empty
    plain = account_state_to_pb(AccountState(snap))
    absent = account_input(AUTHORITY, plain.account, plain)
    assert absent is not None and not absent.in_trie
    funded = account_state_to_pb(AccountState(AccountSnapshot(AUTHORITY, 5, 0)))
    assert account_input(AUTHORITY, funded.account, funded).in_trie  # type: ignore[union-attr]


def test_block_context_says_whether_absent_accounts_exist() -> None:
    """The batch's context carries the node's counting of absent accounts to the engine."""
    on = context_to_pb(ctx(), CHAIN_ID, "prague", absent_accounts_exist=True)
    assert block_input(on).absent_accounts_exist
    assert not block_input(context_to_pb(ctx(), CHAIN_ID, "prague")).absent_accounts_exist


def test_an_absent_authority_earns_the_refund_only_where_the_chain_says_absent_accounts_exist() -> (
    None
):
    """EIP-7702 refunds only an existing authority; on a chain whose EVM counts every account
    as existing (anvil), a fresh authority earns it too, and the gas follows the chain."""
    raw = sign(ALICE, type=4, authorizationList=[signed(TOKEN)])
    accounts = (sender(), empty(ALICE), empty(COINBASE), AccountInput(AUTHORITY))
    spec = run(raw, *accounts)
    lenient = run(raw, *accounts, block=dataclasses.replace(BLOCK, absent_accounts_exist=True))
    existing = run(raw, sender(), empty(ALICE), empty(COINBASE), AccountInput(AUTHORITY, 1))
    assert spec.valid and lenient.valid and existing.valid
    assert spec.gas_used - lenient.gas_used == min(12_500, spec.gas_used // 5)
    assert lenient.gas_used == existing.gas_used
    # Nothing else changes: the same accounts change the same way.
    assert [c.address for c in lenient.account_changes] == [c.address for c in spec.account_changes]


def test_a_cleared_delegation_is_told_apart_from_unchanged_code_in_a_trace() -> None:
    """A diff trace omits empty code: a delegated account that changed without code after may
    have been cleared (and is then checked at the block); other code is not a candidate."""
    designator = b"\xef\x01\x00" + TARGET
    pre = {AUTHORITY: AccountDiff(nonce=1, code=designator), TOKEN: AccountDiff(code=b"\x60")}
    post = {AUTHORITY: AccountDiff(nonce=2), TOKEN: AccountDiff(storage={b"\x00" * 32: b"\x01"})}
    assert maybe_cleared(pre, post) == {AUTHORITY}
    redelegated = {AUTHORITY: AccountDiff(nonce=2, code=b"\xef\x01\x00" + TOKEN)}
    assert maybe_cleared(pre, redelegated) == set()
    cleared = effects_from_diff(
        True, 1, [], pre, {**post, AUTHORITY: AccountDiff(nonce=2, code=b"")}, COINBASE
    )
    assert cleared.code == {AUTHORITY: b""}


def test_a_deleted_account_is_compared_and_a_false_deletion_is_caught() -> None:
    """An account only in the trace's pre was deleted (EIP-161 clears an existing empty account,
    one holding only storage); an agent that says otherwise, or claims a deletion the chain did
    not make, mismatches on ``deleted``."""
    pre = {SENDER: AccountDiff(balance=100, nonce=1), ALICE: AccountDiff(balance=0)}
    post = {SENDER: AccountDiff(balance=90, nonce=2)}
    truth = effects_from_diff(True, 21_000, [], pre, post, COINBASE)
    assert truth.deleted == {ALICE}
    result = pb.TaskResult(
        valid=True,
        status=pb.EXEC_SUCCESS,
        gas_used=21_000,
        account_changes=[
            pb.AccountChange(
                address=SENDER,
                balance_before=(100).to_bytes(1, "big"),
                balance_after=(90).to_bytes(1, "big"),
                nonce_before=1,
                nonce_after=2,
            ),
            pb.AccountChange(address=ALICE, deleted=True),
        ],
    )
    honest = effects_from_pb(result, COINBASE)
    assert first_difference(honest, truth) is None
    silent = dataclasses.replace(honest, deleted=frozenset())
    assert first_difference(silent, truth) == "deleted"
    liar = dataclasses.replace(honest, deleted=frozenset({ALICE, TOKEN}))
    assert first_difference(liar, truth) == "deleted"
