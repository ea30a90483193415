"""Fold one block's per-transaction state diffs into one ordered list of flat-state writes.

The writes use exactly the layout of the L4 state store (``ioswarm.state.store``)::

    Account   key address (20)             value nonce u64 BE | balance 32 BE | code hash (32)
    Code      key code hash (32)           value code
    Storage   key address (20) | slot (32) value 32 bytes; a slot that became zero is a DELETE

Input is what the prestate tracer reports in diff mode, transaction by transaction: ``pre``
holds the touched accounts as they were, ``post`` only the fields that changed, a storage slot
in ``pre`` but not in ``post`` was cleared, and an account only in ``pre`` was deleted.
Accounts left empty (nonce 0, balance 0, no code) do not exist (EIP-161) and become DELETEs.

Each transaction's ``pre`` is checked against the state the earlier writes produced; a
disagreement means the store no longer follows the chain (:class:`StateDivergence`).

The result holds one write per key, in (Account, Code, Storage) then key order, and only
writes that change the state: the same block always folds to the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from ioswarm.core.execshadow import AccountDiff
from ioswarm.core.models import EMPTY_CODE_HASH
from ioswarm.core.statehash import keccak256

ACCOUNT = "Account"
CODE = "Code"
STORAGE = "Storage"
PUT = 0
DELETE = 1
ZERO_WORD = bytes(32)
_NS_ORDER = {ACCOUNT: 0, CODE: 1, STORAGE: 2}


class StateDivergence(Exception):
    """A trace's prestate disagrees with the folded state: the store left the chain."""


class StateWrite(NamedTuple):
    """One write of a block diff (satisfies ``ioswarm.state.store.DiffEntry``)."""

    op: int
    namespace: str
    key: bytes
    value: bytes


class FlatAccount(NamedTuple):
    """An Account value, decoded."""

    nonce: int
    balance: int
    code_hash: bytes

    def encode(self) -> bytes:
        """The Account value bytes."""
        return self.nonce.to_bytes(8, "big") + self.balance.to_bytes(32, "big") + self.code_hash

    @classmethod
    def decode(cls, value: bytes) -> FlatAccount:
        """Parse an Account value."""
        return cls(int.from_bytes(value[:8], "big"), int.from_bytes(value[8:40], "big"), value[40:])

    @property
    def empty(self) -> bool:
        """True for an account EIP-161 treats as absent."""
        return self.nonce == 0 and self.balance == 0 and self.code_hash == EMPTY_CODE_HASH


class TxPrestate(NamedTuple):
    """One transaction's diff-mode trace: ``pre`` and ``post`` by address."""

    pre: Mapping[bytes, AccountDiff]
    post: Mapping[bytes, AccountDiff]


class StateReader(NamedTuple):
    """How the fold reads the state before the block (the store's current values)."""

    account: Callable[[bytes], bytes | None]  # raw Account value or None
    storage: Callable[[bytes, bytes], bytes]  # (address, slot) -> 32 bytes (zero when unset)
    slots: Callable[[bytes], Iterable[bytes]]  # every stored slot of an address
    code: Callable[[bytes], bytes | None]  # code by hash or None


def _word(value: bytes) -> bytes:
    return value.rjust(32, b"\x00")[-32:]


class BlockFold:
    """The running state of one block's fold; feed transactions in block order."""

    def __init__(self, base: StateReader) -> None:
        self._base = base
        self._accounts: dict[bytes, FlatAccount | None] = {}
        self._storage: dict[tuple[bytes, bytes], bytes] = {}
        self._code: dict[bytes, bytes] = {}
        self._wiped: set[bytes] = set()  # deleted accounts: their stored slots are gone

    def account(self, address: bytes) -> FlatAccount | None:
        """The account as the writes so far left it."""
        if address in self._accounts:
            return self._accounts[address]
        raw = self._base.account(address)
        return None if raw is None else FlatAccount.decode(raw)

    def storage(self, address: bytes, slot: bytes) -> bytes:
        """A slot as the writes so far left it."""
        key = (address, slot)
        if key in self._storage:
            return self._storage[key]
        if address in self._wiped:
            return ZERO_WORD
        return self._base.storage(address, slot)

    def add_tx(self, pre: Mapping[bytes, AccountDiff], post: Mapping[bytes, AccountDiff]) -> None:
        """Apply one transaction's trace on top of the earlier ones."""
        for address in sorted(set(pre) | set(post)):
            before = pre.get(address)
            after = post.get(address)
            current = self.account(address)
            if before is not None:
                self._check_pre(address, before, current)
            if after is None:
                if before is not None:
                    self._delete_account(address)
                continue
            base = current or FlatAccount(0, 0, EMPTY_CODE_HASH)
            code_hash = base.code_hash
            if after.code is not None:
                code_hash = keccak256(after.code) if after.code else EMPTY_CODE_HASH
                if after.code:
                    self._code[code_hash] = after.code
            new = FlatAccount(
                after.nonce if after.nonce is not None else base.nonce,
                after.balance if after.balance is not None else base.balance,
                code_hash,
            )
            self._accounts[address] = new
            if before is not None:
                for slot in before.storage:
                    if slot not in after.storage:
                        self._storage[(address, _word(slot))] = ZERO_WORD
            for slot, value in after.storage.items():
                self._storage[(address, _word(slot))] = _word(value)

    def set_storage(self, address: bytes, slot: bytes, value: bytes) -> None:
        """A write outside any transaction (system calls such as EIP-2935/4788)."""
        self._storage[(address, _word(slot))] = _word(value)

    def _check_pre(self, address: bytes, before: AccountDiff, current: FlatAccount | None) -> None:
        have = current or FlatAccount(0, 0, EMPTY_CODE_HASH)
        if before.balance is not None and before.balance != have.balance:
            raise StateDivergence(
                f"account 0x{address.hex()}: trace says balance {before.balance}, "
                f"state has {have.balance}"
            )
        if before.nonce is not None and before.nonce != have.nonce:
            raise StateDivergence(
                f"account 0x{address.hex()}: trace says nonce {before.nonce}, "
                f"state has {have.nonce}"
            )
        for slot, value in before.storage.items():
            got = self.storage(address, _word(slot))
            if got != _word(value):
                raise StateDivergence(
                    f"slot 0x{address.hex()}/0x{_word(slot).hex()}: trace says "
                    f"0x{_word(value).hex()}, state has 0x{got.hex()}"
                )

    def _delete_account(self, address: bytes) -> None:
        self._accounts[address] = None
        for key in [k for k in self._storage if k[0] == address]:
            self._storage[key] = ZERO_WORD
        self._wiped.add(address)

    def writes(self) -> list[StateWrite]:
        """The block's writes: final value per key, no-ops left out, in canonical order."""
        out: list[StateWrite] = []
        base = self._base
        for address, folded in self._accounts.items():
            acct = None if folded is None or folded.empty else folded
            old = base.account(address)
            if acct is None:
                if old is not None:
                    out.append(StateWrite(DELETE, ACCOUNT, address, b""))
            elif acct.encode() != old:
                out.append(StateWrite(PUT, ACCOUNT, address, acct.encode()))
        for code_hash, code in self._code.items():
            if base.code(code_hash) is None:
                out.append(StateWrite(PUT, CODE, code_hash, code))
        storage = dict(self._storage)
        for address in self._wiped:
            for slot in base.slots(address):
                storage.setdefault((address, slot), ZERO_WORD)
        for (address, slot), value in storage.items():
            old = base.storage(address, slot)
            if value == old:
                continue
            key = address + slot
            if value == ZERO_WORD:
                out.append(StateWrite(DELETE, STORAGE, key, b""))
            else:
                out.append(StateWrite(PUT, STORAGE, key, value))
        out.sort(key=lambda w: (_NS_ORDER[w.namespace], w.key))
        return out


HISTORY_STORAGE_ADDRESS = bytes.fromhex("0000f90827f1c53a10cb7a02335b175320002935")
HISTORY_SERVE_WINDOW = 8191
BEACON_ROOTS_ADDRESS = bytes.fromhex("000f3df6d732807ef1319fb7b8bb8522d0beac02")
BEACON_ROOTS_BUFFER = 8191


def history_write(number: int, parent_hash: bytes) -> tuple[bytes, bytes, bytes]:
    """EIP-2935's system write at the start of block ``number``: (address, slot, value)."""
    slot = ((number - 1) % HISTORY_SERVE_WINDOW).to_bytes(32, "big")
    return HISTORY_STORAGE_ADDRESS, slot, parent_hash


def beacon_root_slots(timestamp: int) -> tuple[bytes, bytes]:
    """The two slots EIP-4788's system call writes for a block with ``timestamp``."""
    index = timestamp % BEACON_ROOTS_BUFFER
    return index.to_bytes(32, "big"), (index + BEACON_ROOTS_BUFFER).to_bytes(32, "big")


def fold_block(
    base: StateReader,
    txs: Sequence[TxPrestate],
    system: Iterable[tuple[bytes, bytes, bytes]] = (),
) -> list[StateWrite]:
    """Fold a block's traces (in block order) into its writes; see the module docstring.

    ``system`` holds the (address, slot, value) writes the block's system calls make before
    its first transaction; traces do not show them.
    """
    fold = BlockFold(base)
    for address, slot, value in system:
        fold.set_storage(address, slot, value)
    for tx in txs:
        fold.add_tx(tx.pre, tx.post)
    return fold.writes()
