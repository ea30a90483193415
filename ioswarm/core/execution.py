"""Inputs and outputs of executing one transaction on provided state (L3), as plain data.

An EVM engine (``ioswarm.agent.evm``) turns an :class:`AccountInput` per touched account and a
:class:`BlockInput` into an :class:`Execution`. Nothing here knows the EVM implementation, so the
coordinator can build inputs and compare outputs without importing it.

Conventions, chosen so two executions of the same transaction compare equal field by field:

- addresses are 20 bytes, storage slots and values 32 bytes big-endian, amounts plain ints;
- an account that does not exist on chain is given as an empty account (balance 0, nonce 0, no
  code) and a slot that is zero on chain as an explicit zero; anything not given at all is
  *missing*, and an execution that needs it is rejected with ``missing_state`` instead of
  reading zero;
- every list in an :class:`Execution` is sorted (logs keep execution order) and holds only
  what changed: an account that was touched but ended equal to its input is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple, TypeAlias

from ioswarm.core.rules import Reject

__all__ = [
    "CONTEXT_READS",
    "DEFAULT_FORK",
    "ENGINE_ERROR",
    "MISSING_STATE",
    "AccountChange",
    "AccountInput",
    "BlockInput",
    "ExecStatusName",
    "Execution",
    "LogRecord",
    "MissingKey",
    "StorageChange",
]

DEFAULT_FORK: Final = "prague"
MISSING_STATE: Final = Reject.MISSING_STATE
ENGINE_ERROR: Final = "engine_error"
"""The engine failed in a way it does not know as a rule: declared, never an answer."""
STATE_HEIGHT_UNAVAILABLE: Final = "state_height_unavailable"
"""An L4 decline: the agent's own state is not at the height the task assumes."""

# Block-context values an execution can observe through opcodes. CHAINID is left out: it cannot
# differ between the block an agent assumed and the block the transaction lands in.
CONTEXT_READS: Final = frozenset(
    {
        "BASEFEE",
        "BLOBBASEFEE",
        "BLOCKHASH",
        "COINBASE",
        "GASLIMIT",
        "NUMBER",
        "PREVRANDAO",
        "TIMESTAMP",
    }
)

ExecStatusName: TypeAlias = Literal["success", "revert", "halt"]


@dataclass(frozen=True, slots=True)
class AccountInput:
    """One account exactly as the execution may see it."""

    address: bytes
    balance: int = 0
    nonce: int = 0
    code: bytes = b""
    storage: Mapping[bytes, bytes] = field(default_factory=dict)
    """32-byte slot -> 32-byte value; only the listed slots may be read."""
    has_storage: bool = False
    """The account holds non-zero storage, whether or not a slot of it is listed (EIP-7610:
    creating a contract over non-empty storage fails)."""
    exists: bool | None = None
    """Whether the account is in the state trie; None derives it (non-empty, or it holds
    storage). An account with storage but no balance, nonce or code exists (EIP-7702 refund)."""

    @property
    def is_empty(self) -> bool:
        """EIP-161 empty: no balance, nonce or code (an absent account is empty too)."""
        return not (self.balance or self.nonce or self.code)

    @property
    def in_trie(self) -> bool:
        """Whether the account exists: as given, else non-empty or holding storage."""
        if self.exists is not None:
            return self.exists
        return not self.is_empty or self.holds_storage

    @property
    def holds_storage(self) -> bool:
        """Whether any storage of the account is known to be non-zero."""
        return self.has_storage or any(any(v) for v in self.storage.values())


@dataclass(frozen=True, slots=True)
class BlockInput:
    """The block the transaction is executed in (predicted by the coordinator)."""

    number: int
    timestamp: int
    gas_limit: int
    base_fee: int
    coinbase: bytes
    prev_randao: bytes = b"\x00" * 32
    chain_id: int = 1
    fork: str = DEFAULT_FORK
    block_hashes: Mapping[int, bytes] = field(default_factory=dict)
    """Hashes of recent blocks by number, for BLOCKHASH; a number in range but absent is missing."""
    blob_base_fee: int = 1
    absent_accounts_exist: bool = False
    """The chain counts an account it has no record of as existing (every EIP-7702 authority
    earns the existing-account refund), as anvil does; EIP-7702 itself does not."""


class LogRecord(NamedTuple):
    """One emitted log."""

    address: bytes
    topics: tuple[bytes, ...]
    data: bytes


class StorageChange(NamedTuple):
    """A slot whose value differs after the transaction."""

    address: bytes
    slot: bytes
    old: bytes
    new: bytes


class AccountChange(NamedTuple):
    """An account whose balance, nonce, code or existence differs after the transaction."""

    address: bytes
    balance_before: int
    balance_after: int
    nonce_before: int
    nonce_after: int
    created_code: bytes
    """The account's code after the transaction when it changed (CREATE, EIP-7702), else b''."""
    code_cleared: bool = False
    """The account had code and has none after (an EIP-7702 delegation reset to the zero
    address): told apart from unchanged code, which ``created_code == b''`` also means."""
    deleted: bool = False
    """The account existed before and does not after: EIP-161 cleared it as touched and empty
    (balance, nonce and code may all be unchanged zeros, so only this field says it)."""


class MissingKey(NamedTuple):
    """State the execution needed but was not given: an account, a slot, or a block hash."""

    kind: Literal["account", "storage", "block_hash"]
    address: bytes = b""
    slot: bytes = b""
    number: int = 0

    def __str__(self) -> str:
        if self.kind == "account":
            return f"account 0x{self.address.hex()}"
        if self.kind == "storage":
            return f"storage 0x{self.address.hex()} slot 0x{self.slot.hex()}"
        return f"block_hash {self.number}"


@dataclass(frozen=True, slots=True)
class Execution:
    """The outcome of executing one transaction.

    ``valid`` is False when the transaction could not be included at all (``reject_reason``
    says why, ``missing_state`` when the input was incomplete); a transaction that reverts or
    halts is valid and has ``status`` "revert" or "halt".
    """

    valid: bool
    reject_reason: str = ""
    status: ExecStatusName | None = None
    gas_used: int = 0
    return_data: bytes = b""
    logs: tuple[LogRecord, ...] = ()
    storage_changes: tuple[StorageChange, ...] = ()
    account_changes: tuple[AccountChange, ...] = ()
    context_reads: tuple[str, ...] = ()
    """Sorted names from CONTEXT_READS that the executed code read."""
    missing: tuple[MissingKey, ...] = ()
    error: str = ""
    """Why the execution reverted or halted (the VM's error name), or the rejection detail."""
    coinbase_fee: int = 0
    """Priority fee credited to the coinbase; known even when the coinbase was not given."""

    @property
    def is_missing_state(self) -> bool:
        """Whether the execution stopped because the input lacked something it needed."""
        return self.reject_reason == MISSING_STATE

    @property
    def declined(self) -> bool:
        """Not an answer: the input lacked something, or the engine itself failed."""
        return self.reject_reason in (MISSING_STATE, ENGINE_ERROR)
