"""Folding one block's per-tx prestate diffs into the state store's writes."""

from __future__ import annotations

import pytest

from ioswarm.core.execshadow import AccountDiff
from ioswarm.core.models import EMPTY_CODE_HASH
from ioswarm.core.statefold import (
    ACCOUNT,
    CODE,
    DELETE,
    PUT,
    STORAGE,
    FlatAccount,
    StateDivergence,
    StateReader,
    StateWrite,
    TxPrestate,
    fold_block,
    history_write,
)
from ioswarm.core.statehash import keccak256

A = b"\xaa" * 20
B = b"\xbb" * 20
C = b"\xcc" * 20


def word(n: int) -> bytes:
    return n.to_bytes(32, "big")


def acct(nonce: int, balance: int, code_hash: bytes = EMPTY_CODE_HASH) -> bytes:
    return FlatAccount(nonce, balance, code_hash).encode()


def reader(accounts: dict[bytes, bytes], storage: dict[tuple[bytes, bytes], bytes]) -> StateReader:
    return StateReader(
        account=accounts.get,
        storage=lambda a, s: storage.get((a, s), bytes(32)),
        slots=lambda a: [s for (x, s) in storage if x == a],
        code=lambda h: None,
    )


def test_same_slot_written_by_several_txs_keeps_the_final_value() -> None:
    """Three txs writing one slot fold into one write of the last value; a cleared slot deletes."""
    base = reader({A: acct(1, 100)}, {(A, word(1)): word(5), (A, word(2)): word(9)})
    txs = [
        TxPrestate(
            {A: AccountDiff(balance=100, nonce=1, storage={word(1): word(5), word(2): word(9)})},
            {A: AccountDiff(balance=90, nonce=2, storage={word(1): word(6)})},
        ),
        TxPrestate(
            {A: AccountDiff(balance=90, nonce=2, storage={word(1): word(6)})},
            {A: AccountDiff(nonce=3, storage={word(1): word(7)})},
        ),
        TxPrestate(
            {A: AccountDiff(balance=90, nonce=3, storage={word(1): word(7)})},
            {A: AccountDiff(balance=80, storage={word(1): word(8)})},
        ),
    ]
    assert fold_block(base, txs) == [
        StateWrite(PUT, ACCOUNT, A, acct(3, 80)),
        StateWrite(PUT, STORAGE, A + word(1), word(8)),
        StateWrite(DELETE, STORAGE, A + word(2), b""),
    ]


def test_slot_written_back_to_its_old_value_writes_nothing() -> None:
    """A slot changed and restored within the block is no write at all."""
    base = reader({A: acct(0, 1)}, {(A, word(1)): word(5)})
    txs = [
        TxPrestate(
            {A: AccountDiff(storage={word(1): word(5)})},
            {A: AccountDiff(storage={word(1): word(6)})},
        ),
        TxPrestate(
            {A: AccountDiff(storage={word(1): word(6)})},
            {A: AccountDiff(storage={word(1): word(5)})},
        ),
    ]
    assert fold_block(base, txs) == []


def test_created_contract_puts_account_and_code_and_deleted_account_loses_storage() -> None:
    """A created contract adds Account and Code; an account only in pre loses its slots."""
    code = b"\x60\x00"
    base = reader({B: acct(1, 5)}, {(B, word(3)): word(4)})
    txs = [
        TxPrestate(
            {B: AccountDiff(balance=5, nonce=1, storage={})},
            {C: AccountDiff(nonce=1, code=code, storage={word(0): word(1)})},
        )
    ]
    assert fold_block(base, txs) == [
        StateWrite(DELETE, ACCOUNT, B, b""),
        StateWrite(PUT, ACCOUNT, C, acct(1, 0, keccak256(code))),
        StateWrite(PUT, CODE, keccak256(code), code),
        StateWrite(DELETE, STORAGE, B + word(3), b""),
        StateWrite(PUT, STORAGE, C + word(0), word(1)),
    ]


def test_account_left_empty_is_deleted() -> None:
    """An account emptied to nonce 0, balance 0 and no code no longer exists (EIP-161)."""
    base = reader({A: acct(0, 7)}, {})
    txs = [TxPrestate({A: AccountDiff(balance=7, nonce=0)}, {A: AccountDiff(balance=0)})]
    assert fold_block(base, txs) == [StateWrite(DELETE, ACCOUNT, A, b"")]


def test_prestate_disagreeing_with_the_store_is_a_divergence() -> None:
    """A trace whose prestate does not match the folded state raises StateDivergence."""
    base = reader({A: acct(1, 100)}, {})
    txs = [TxPrestate({A: AccountDiff(balance=99, nonce=1)}, {A: AccountDiff(balance=98)})]
    with pytest.raises(StateDivergence):
        fold_block(base, txs)


def test_system_write_precedes_transactions() -> None:
    """The EIP-2935 history write lands in the slot of the parent block."""
    address, slot, value = history_write(10, b"\x11" * 32)
    base = reader({address: acct(0, 0, b"\x22" * 32)}, {})
    assert slot == word(9)
    assert fold_block(base, [], [(address, slot, value)]) == [
        StateWrite(PUT, STORAGE, address + slot, value)
    ]
