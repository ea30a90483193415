"""The provided-state account database and transient storage under the L3/L4 engine.

Execution may read exactly what the task (or the agent's own store) provides: anything else
raises internally and is reported as ``missing_state``, never read as zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NoReturn

from eth.abc import (
    AccountDatabaseAPI,
    TransientStorageAPI,
)
from eth.constants import BLANK_ROOT_HASH, EMPTY_SHA3
from eth.typing import JournalDBCheckpoint
from eth_hash.auto import keccak
from eth_typing import Hash32

from ioswarm.core.execution import (
    AccountInput,
    MissingKey,
)

_ABSENT: Final = object()


class MissingStateRead(Exception):
    """Raised inside the VM on a read of state that was not provided.

    Deliberately not a py-evm ``VMError``: those are swallowed into a failed call frame, while
    this one must abort the whole execution.
    """


class TxRejected(Exception):
    """The transaction cannot be included; ``args[0]`` is the short reject reason."""


# --- state -------------------------------------------------------------------------------------


class ProvidedStateDB(AccountDatabaseAPI):
    """py-evm's account database over exactly the provided accounts and slots.

    Writes are journaled as (table, key, previous value) so that call frames revert exactly.
    Storage slots are keyed by (address, slot as int); values are ints, as py-evm uses them.
    """

    def __init__(
        self,
        accounts: Mapping[bytes, AccountInput],
        coinbase: bytes,
        precompiles: frozenset[bytes],
        absent_accounts_exist: bool = False,
    ) -> None:
        # A chain whose EVM counts every account as existing (see BlockInput); post-Spurious
        # Dragon only the EIP-7702 refund asks about existence apart from emptiness.
        self._absent_accounts_exist = absent_accounts_exist
        self._has_storage: set[bytes] = set()  # accounts known to hold storage (EIP-7610)
        # Consulted again on a miss: a plain dict then adds nothing, while a lazy mapping over
        # a full local state (L4) answers from its store.
        self._accounts = accounts
        self._balance: dict[bytes, int] = {}
        self._nonce: dict[bytes, int] = {}
        self._code: dict[bytes, bytes] = {}
        self._exists: dict[bytes, bool] = {}
        self._storage: dict[tuple[bytes, int], int] = {}
        for address, account in accounts.items():
            self._balance[address] = account.balance
            self._nonce[address] = account.nonce
            self._code[address] = account.code
            self._exists[address] = account.in_trie
            if account.has_storage:
                self._has_storage.add(address)
            for slot, value in account.storage.items():
                self._storage[address, int.from_bytes(slot, "big")] = int.from_bytes(value, "big")
        self._original: dict[tuple[bytes, int], int] = dict(self._storage)
        self._wiped: dict[bytes, bool] = {}  # storage cleared by CREATE or SELFDESTRUCT
        self._warm: dict[object, bool] = {}  # EIP-2929 accessed addresses and slots
        self._log: list[tuple[dict[Any, Any], Any, Any]] = []
        self._checkpoints: dict[int, int] = {}
        self._next_checkpoint = 0
        self._coinbase = coinbase
        self._precompiles = precompiles
        self.dirty_accounts: set[bytes] = set()
        self.dirty_slots: set[tuple[bytes, int]] = set()
        self.placeholders: set[bytes] = set()
        self.missing: list[MissingKey] = []
        self.finalizing = False

    # -- reads of what was not provided --

    def _absent(self, address: bytes) -> None:
        """Handle a read of an account that was not provided: a placeholder, or missing."""
        loaded = self._accounts.get(address)
        if loaded is not None:
            # A cache fill of the value before the transaction, not a write: never journaled.
            self._balance[address] = loaded.balance
            self._nonce[address] = loaded.nonce
            self._code[address] = loaded.code
            self._exists[address] = loaded.in_trie
            if loaded.has_storage:
                self._has_storage.add(address)
            return
        if self.finalizing and (address == self._coinbase or address in self._precompiles):
            # Fee credit and EIP-161 clearing after execution; see the module docstring.
            self._balance[address] = 0
            self._nonce[address] = 0
            self._code[address] = b""
            self._exists[address] = False
            self.placeholders.add(address)
            return
        self.miss(MissingKey("account", address=bytes(address)))

    def miss(self, key: MissingKey) -> NoReturn:
        """Record ``key`` as missing and abort the execution."""
        self.missing.append(key)
        raise MissingStateRead(str(key))

    def _put(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        self._log.append((table, key, table.get(key, _ABSENT)))
        table[key] = value

    def _touch_write(self, address: bytes) -> None:
        if address not in self._balance:
            self._absent(address)
        if not self._exists[address]:
            self._put(self._exists, address, True)
        self.dirty_accounts.add(address)

    # -- root (never computed: the trie is not modelled) --

    @property
    def state_root(self) -> Hash32:
        return BLANK_ROOT_HASH

    @state_root.setter
    def state_root(self, value: Hash32) -> None:
        pass  # py-evm restores the root on revert; the journal already restored the data

    def has_root(self, state_root: bytes) -> bool:
        return False

    def make_state_root(self) -> Hash32:
        raise NotImplementedError("provided state has no trie")

    def persist(self) -> Any:
        raise NotImplementedError("provided state is never persisted")

    # -- storage --

    def get_storage(self, address: bytes, slot: int, from_journal: bool = True) -> int:
        key = (address, slot)
        if from_journal:
            value = self._storage.get(key)
            if value is not None:
                return value
            if address in self._wiped:
                return 0
        else:
            # The value before the transaction, for EIP-2200 gas; a created contract starts empty.
            if address in self._wiped:
                return 0
            value = self._original.get(key)
            if value is not None:
                return value
        loaded = self._load_slot(address, slot)
        if loaded is not None:
            self._original[key] = loaded
            if key not in self._storage:
                self._storage[key] = loaded
            return self._storage[key] if from_journal else loaded
        self.miss(MissingKey("storage", bytes(address), slot.to_bytes(32, "big")))

    def _load_slot(self, address: bytes, slot: int) -> int | None:
        """A slot not copied at construction, if the accounts mapping can answer it."""
        account = self._accounts.get(address)
        if account is None:
            return None
        raw = account.storage.get(slot.to_bytes(32, "big"))
        return None if raw is None else int.from_bytes(raw, "big")

    def set_storage(self, address: bytes, slot: int, value: int) -> None:
        key = (address, slot)
        self._put(self._storage, key, value)
        self.dirty_slots.add(key)

    def delete_storage(self, address: bytes) -> None:
        for key in [k for k, v in self._storage.items() if v and k[0] == address]:
            self._put(self._storage, key, 0)
            self.dirty_slots.add(key)
        if address not in self._wiped:
            self._put(self._wiped, address, True)

    def is_storage_warm(self, address: bytes, slot: int) -> bool:
        return (address, slot) in self._warm

    def mark_storage_warm(self, address: bytes, slot: int) -> None:
        key = (address, slot)
        if key not in self._warm:
            self._put(self._warm, key, True)

    # -- balance, nonce, code --

    def get_balance(self, address: bytes) -> int:
        if address not in self._balance:
            self._absent(address)
        return self._balance[address]

    def set_balance(self, address: bytes, balance: int) -> None:
        self._touch_write(address)
        self._put(self._balance, address, balance)

    def get_nonce(self, address: bytes) -> int:
        if address not in self._nonce:
            self._absent(address)
        return self._nonce[address]

    def set_nonce(self, address: bytes, nonce: int) -> None:
        self._touch_write(address)
        self._put(self._nonce, address, nonce)

    def increment_nonce(self, address: bytes) -> None:
        self.set_nonce(address, self.get_nonce(address) + 1)

    def get_code(self, address: bytes) -> bytes:
        code = self._code.get(address)
        if code is not None:
            return code
        if address in self._precompiles:
            return b""  # precompiles have no code, whatever their account holds
        self._absent(address)
        return self._code[address]

    def set_code(self, address: bytes, code: bytes) -> None:
        self._touch_write(address)
        self._put(self._code, address, code)

    def get_code_hash(self, address: bytes) -> Hash32:
        code = self.get_code(address)
        return Hash32(keccak(code)) if code else EMPTY_SHA3

    def delete_code(self, address: bytes) -> None:
        self.set_code(address, b"")

    # -- accounts --

    def account_has_code_or_nonce(self, address: bytes) -> bool:
        """The create-collision test: py-evm asks it before every CREATE, CREATE2 and creation
        transaction. EIP-7610 adds non-empty storage to nonce and code."""
        return (
            self.get_nonce(address) != 0
            or self.get_code(address) != b""
            or self._holds_storage(address)
        )

    def _holds_storage(self, address: bytes) -> bool:
        if address in self._has_storage and address not in self._wiped:
            return True
        return any(value for (owner, _), value in self._storage.items() if owner == address)

    def delete_account(self, address: bytes) -> None:
        self.delete_storage(address)
        self._touch_write(address)
        self._put(self._balance, address, 0)
        self._put(self._nonce, address, 0)
        self._put(self._code, address, b"")
        self._put(self._exists, address, False)

    def account_exists(self, address: bytes) -> bool:
        if address not in self._exists:
            self._absent(address)
        return self._exists[address] or self._absent_accounts_exist

    def touch_account(self, address: bytes) -> None:
        if address not in self._exists and address in self._precompiles:
            # A call to a precompile touches it; for an account not in the input that changes
            # nothing observable (EIP-161 clears it again if empty), so it is not a read.
            return
        self._touch_write(address)

    def account_is_empty(self, address: bytes) -> bool:
        return (
            self.get_balance(address) == 0
            and self.get_nonce(address) == 0
            and self.get_code(address) == b""
        )

    def is_address_warm(self, address: bytes) -> bool:
        return address in self._warm

    def mark_address_warm(self, address: bytes) -> None:
        if address not in self._warm:
            self._put(self._warm, address, True)

    # -- journal --

    def record(self) -> JournalDBCheckpoint:
        self._next_checkpoint += 1
        checkpoint = JournalDBCheckpoint(self._next_checkpoint)
        self._checkpoints[checkpoint] = len(self._log)
        return checkpoint

    def discard(self, checkpoint: int) -> None:
        size = self._checkpoints.pop(checkpoint)
        log = self._log
        while len(log) > size:
            table, key, previous = log.pop()
            if previous is _ABSENT:
                del table[key]
            else:
                table[key] = previous

    def commit(self, checkpoint: int) -> None:
        # Entries stay in the log so that an enclosing checkpoint can still undo them.
        self._checkpoints.pop(checkpoint, None)

    def lock_changes(self) -> None:
        self._warm.clear()

    # -- results --

    def post_account(self, address: bytes) -> tuple[int, int, bytes]:
        """Balance, nonce and code of ``address`` now."""
        return self._balance[address], self._nonce[address], self._code[address]

    def post_exists(self, address: bytes) -> bool:
        """Whether ``address`` exists now (EIP-161 clearing and SELFDESTRUCT remove it)."""
        return self._exists[address]

    def post_slot(self, key: tuple[bytes, int]) -> int:
        """Current value of a slot that was written."""
        return self._storage.get(key, 0)

    def original_slot(self, key: tuple[bytes, int]) -> int:
        """Value before the transaction (zero for a slot first seen in a created contract)."""
        return self._original.get(key, 0)


# --- py-evm classes with the ioswarm hooks --------------------------------------------------------


class JournaledTransientStorage(TransientStorageAPI):
    """EIP-1153 transient storage with an undo log keyed by the account DB's checkpoints.

    py-evm's own TransientStorage keeps a JournalDB whose ``clear()`` leaves old checkpoint ids
    behind, so the next transaction's snapshot collides with them ("Tried to record with an
    existing checkpoint"). This one starts clean on ``clear()``.
    """

    def __init__(self) -> None:
        self._data: dict[tuple[bytes, int], bytes] = {}
        self._log: list[tuple[tuple[bytes, int], bytes | None]] = []
        self._marks: dict[int, int] = {}

    def get_transient_storage(self, address: bytes, slot: int) -> bytes:
        return self._data.get((address, slot), b"")

    def set_transient_storage(self, address: bytes, slot: int, value: bytes) -> None:
        key = (address, slot)
        self._log.append((key, self._data.get(key)))
        self._data[key] = value

    def record(self, checkpoint: int) -> None:
        self._marks[checkpoint] = len(self._log)

    def commit(self, checkpoint: int) -> None:
        self._marks.pop(checkpoint, None)

    def discard(self, checkpoint: int) -> None:
        size = self._marks.pop(checkpoint, len(self._log))
        while len(self._log) > size:
            key, previous = self._log.pop()
            if previous is None:
                self._data.pop(key, None)
            else:
                self._data[key] = previous

    def clear(self) -> None:
        self._data.clear()
        self._log.clear()
        self._marks.clear()
