"""Domain models shared by the coordinator and the agent (plain dataclasses, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

from ioswarm.core.execshadow import ExecEffects

EMPTY_CODE_HASH = bytes.fromhex("c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")


class Level(IntEnum):
    """Validation level; a higher level includes every check of the lower ones."""

    L1 = 1
    L2 = 2
    L3 = 3
    L4 = 4

    @classmethod
    def parse(cls, text: str) -> Level:
        return cls[text.upper()]


class Outcome(Enum):
    """How shadow mode judged one verdict; the value is its name in tallies, metrics and logs."""

    MATCHED = "matched"
    MISMATCHED = "mismatched"
    EXCLUDED = "excluded"


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """Account state as a validator sees it: at a block, or as the tx will find it."""

    address: bytes
    balance: int
    nonce: int
    code_hash: bytes = EMPTY_CODE_HASH


@dataclass(frozen=True, slots=True)
class PendingTx:
    """A transaction seen in the node's mempool, before its raw bytes are fetched."""

    tx_hash: bytes
    sender: bytes
    nonce: int
    to: bytes | None
    value: int
    gas: int
    max_fee: int  # maxFeePerGas, or gasPrice for legacy / 2930


@dataclass(frozen=True, slots=True)
class AccountState:
    """Everything an executing agent gets about one account: snapshot, code, listed slots."""

    snapshot: AccountSnapshot
    code: bytes = b""
    storage: tuple[tuple[bytes, bytes], ...] = ()  # (32-byte slot, 32-byte value)
    exists: bool = False
    """In the state trie though maybe EIP-161 empty (it holds storage); False: derive it from
    balance, nonce, code and the listed slots."""


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of validation work: a raw signed tx plus the state the level needs."""

    task_id: int
    tx_hash: bytes
    raw_tx: bytes
    level: Level
    sender: bytes
    nonce: int
    block_height: int
    block_gas_limit: int
    sender_state: AccountSnapshot | None = None
    receiver_state: AccountSnapshot | None = None
    max_cost: int = 0  # value + gas x max fee: what L2 checks the balance against
    # L3: the prefetched state, and what the execution reads (for race exclusion).
    accounts: tuple[AccountState, ...] = ()
    read_set: frozenset[tuple[bytes, bytes]] = frozenset()
    # L4: the coordinator's state-store height the task assumes (the agent's sequence barrier).
    state_height: int = 0
    # Re-verification: the landed block whose real context (and this tx's real pre-state in
    # it, in ``accounts``) the task carries; 0 for an ordinary task.
    context_block: int = 0
    # An agent that must not get this task (the one whose answer is being re-verified), and
    # the level that answer was at.
    avoid: str = ""
    reverifies: Level | None = None
    # The transaction's gas limit: an executing task's deadline grows with it.
    gas_limit: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """An agent's answer for one task (the fields shadow mode compares at L1/L2)."""

    task_id: int
    valid: bool
    reject_reason: str = ""
    sender: bytes = b""
    gas_estimate: int = 0
    latency_us: int = 0
    # L3/L4: what the execution did and which block-context values it read.
    effects: ExecEffects | None = None
    context_reads: frozenset[str] = frozenset()
    # The agent gave the task back unanswered (e.g. ``missing_state``): not an answer.
    declined: bool = False
    # The agent's error text; for ``missing_state`` it names the key that was not sent.
    detail: str = ""
    # Set by the coordinator, never by the agent: the answer arrived in the reference JSON codec,
    # whose result has no sender field, so an L1/L2 answer is not held to the sender evidence
    # (canaries check that agent's work instead; a sender it does send is still checked).
    sender_waived: bool = False


@dataclass(frozen=True, slots=True)
class IncludedTx:
    """A transaction as the chain recorded it: ground truth for shadow mode."""

    tx_hash: bytes
    sender: bytes
    nonce: int
    block_number: int
    status: int  # receipt status: 1 success, 0 reverted (still valid at L1/L2)
    gas_used: int = 0
    tx_index: int = 0
    effects: ExecEffects | None = None  # L3 truth: receipt + this tx's own state diff


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """The parts of a block header the coordinator uses."""

    number: int
    hash: bytes
    parent_hash: bytes
    timestamp: int
    gas_limit: int
    base_fee: int
    coinbase: bytes
    prev_randao: bytes = b"\x00" * 32
    gas_used: int = 0
    tx_hashes: tuple[bytes, ...] = field(default_factory=tuple)
    excess_blob_gas: int = 0
    blob_gas_used: int = 0
