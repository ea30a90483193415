"""Shadow comparison for executing levels (L3/L4): an agent's execution against the chain's.

Truth for one landed transaction is its receipt (status, gas used, logs) and its own state diff
(the prestate tracer in diff mode). Both sides are reduced to an :class:`ExecEffects` and
compared field by field; the first differing field names the mismatch.

A difference that the race between dispatch and inclusion explains is excluded, with reason:

- ``read_write_race``: a transaction that ran after the state was prefetched and before this
  one (in an earlier block, or earlier in the same block) wrote an account field or storage slot
  this one read;
- ``block_context``: the execution read a block-context value (TIMESTAMP, COINBASE, ...) that
  the real block has different from the predicted one;
- ``missing_state``: the agent reported that the coordinator did not send state the execution
  needed (a prefetch bug, never the agent's fault, and never counted as a match).

Balances are compared as changes, not values: the sender's starting balance is an estimate
when it has pending predecessors, but what this transaction moves is not. The fee credit to the
block's coinbase is compared as an amount, not by address: the agent credits the predicted
coinbase, the chain the real one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Keys of a state write-set: (address, b"balance" | b"nonce" | b"code") or (address, slot).
StateKey = tuple[bytes, bytes]
ACCOUNT_FIELDS = (b"balance", b"nonce", b"code")
FIELD_ORDER = (
    "status",
    "gas_used",
    "logs",
    "storage",
    "balance",
    "nonce",
    "code",
    "deleted",
    "coinbase_fee",
)


@dataclass(frozen=True, slots=True)
class Log:
    address: bytes
    topics: tuple[bytes, ...]
    data: bytes


@dataclass(frozen=True)
class ExecEffects:
    """What executing a transaction did, in a form both sides can produce."""

    success: bool
    gas_used: int
    logs: tuple[Log, ...]
    storage: Mapping[tuple[bytes, bytes], bytes]  # (address, slot) -> new 32-byte value
    # address -> balance change (coinbase excluded). A change, not the value after: a pending
    # predecessor of the same sender moves the starting balance but not what this tx moves.
    balances: Mapping[bytes, int]
    nonces: Mapping[bytes, int]  # address -> nonce after (changed only)
    # address -> code after, for changed code only; b"" when an EIP-7702 delegation was cleared
    code: Mapping[bytes, bytes]
    coinbase_fee: int  # what the coinbase gained
    writes: frozenset[StateKey] = field(default_factory=frozenset)
    # Accounts that existed before and not after (EIP-161 clearing, SELFDESTRUCT of an account
    # created earlier in the block); one created and destroyed within the tx is in neither.
    deleted: frozenset[bytes] = field(default_factory=frozenset)


@dataclass(frozen=True)
class AccountDiff:
    """One account's part of a prestate-tracer diff (absent fields are unchanged)."""

    balance: int | None = None
    nonce: int | None = None
    code: bytes | None = None
    storage: Mapping[bytes, bytes] = field(default_factory=dict)


def _word(value: bytes) -> bytes:
    return value.rjust(32, b"\x00")[-32:]


ZERO_WORD = b"\x00" * 32


def effects_from_diff(
    success: bool,
    gas_used: int,
    logs: Iterable[Log],
    pre: Mapping[bytes, AccountDiff],
    post: Mapping[bytes, AccountDiff],
    coinbase: bytes,
) -> ExecEffects:
    """Reduce a diff-mode prestate trace of one transaction to its effects.

    In diff mode ``post`` holds only fields that changed; a storage slot present in ``pre`` but
    not in ``post`` for an account that changed was cleared to zero.
    """
    storage: dict[tuple[bytes, bytes], bytes] = {}
    balances: dict[bytes, int] = {}
    nonces: dict[bytes, int] = {}
    code: dict[bytes, bytes] = {}
    writes: set[StateKey] = set()
    deleted: set[bytes] = set()
    coinbase_fee = 0
    for addr in set(pre) | set(post):
        before = pre.get(addr, AccountDiff())
        after = post.get(addr)
        if after is None:
            # Only in pre: the account was read, or self-destructed/emptied. Geth-style tracers
            # list a deleted account only in pre.
            if addr in post:
                continue
            if before.balance and addr != coinbase:
                balances[addr] = -before.balance
            if addr != coinbase:
                deleted.add(addr)
            continue
        if after.balance is not None:
            if addr == coinbase:
                coinbase_fee = after.balance - (before.balance or 0)
            elif after.balance != (before.balance or 0):
                balances[addr] = after.balance - (before.balance or 0)
            writes.add((addr, b"balance"))
        if after.nonce is not None:
            nonces[addr] = after.nonce
            writes.add((addr, b"nonce"))
        if after.code is not None and (after.code or before.code):
            # Empty code after non-empty code is an EIP-7702 delegation cleared; empty code
            # where there was none is no change.
            code[addr] = after.code
            writes.add((addr, b"code"))
        for slot in set(before.storage) | set(after.storage):
            old = _word(before.storage.get(slot, ZERO_WORD))
            new = _word(after.storage.get(slot, ZERO_WORD))
            if old != new:
                storage[(addr, _word(slot))] = new
                writes.add((addr, _word(slot)))
    return ExecEffects(
        success=success,
        gas_used=gas_used,
        logs=tuple(logs),
        storage=storage,
        balances=balances,
        nonces=nonces,
        code=code,
        coinbase_fee=coinbase_fee,
        writes=frozenset(writes),
        deleted=frozenset(deleted),
    )


def first_difference(claim: ExecEffects, truth: ExecEffects) -> str | None:
    """The first field (in FIELD_ORDER) where the claim differs from the truth, or None."""
    if claim.success != truth.success:
        return "status"
    if claim.gas_used != truth.gas_used:
        return "gas_used"
    if claim.logs != truth.logs:
        return "logs"
    if dict(claim.storage) != dict(truth.storage):
        return "storage"
    if dict(claim.balances) != dict(truth.balances):
        return "balance"
    if dict(claim.nonces) != dict(truth.nonces):
        return "nonce"
    if dict(claim.code) != dict(truth.code):  # b"" is a cleared delegation on both sides
        return "code"
    if claim.deleted != truth.deleted:
        return "deleted"
    if claim.coinbase_fee != truth.coinbase_fee:
        return "coinbase_fee"
    return None


def describe_difference(field_name: str, claim: ExecEffects, truth: ExecEffects) -> str:
    """Both sides of one differing field, short enough for a log line."""
    if field_name == "status":
        return f"agent success={claim.success} chain success={truth.success}"
    if field_name == "gas_used":
        return f"agent gas_used={claim.gas_used} chain gas_used={truth.gas_used}"
    if field_name == "coinbase_fee":
        return f"agent coinbase_fee={claim.coinbase_fee} chain coinbase_fee={truth.coinbase_fee}"
    if field_name == "logs":
        return f"agent logs={len(claim.logs)} chain logs={len(truth.logs)}"
    if field_name == "deleted":
        agent, chain = sorted(claim.deleted), sorted(truth.deleted)
        return f"deleted: agent {[a.hex() for a in agent]} chain {[a.hex() for a in chain]}"
    sides: dict[str, tuple[Mapping[Any, Any], Mapping[Any, Any]]] = {
        "storage": (claim.storage, truth.storage),
        "balance": (claim.balances, truth.balances),
        "nonce": (claim.nonces, truth.nonces),
        "code": (claim.code, truth.code),
    }
    mine, theirs = sides.get(field_name, ({}, {}))
    keys = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))
    first = keys[0] if keys else None
    shown = (
        "/".join(p.hex() for p in first)
        if isinstance(first, tuple)
        else (first.hex() if isinstance(first, bytes) else "-")
    )
    return f"{field_name}: {len(keys)} keys differ, first {shown}"


@dataclass(frozen=True)
class PredictedContext:
    """The block context a batch was executed under, as the coordinator predicted it."""

    number: int
    timestamp: int
    gas_limit: int
    base_fee: int
    coinbase: bytes
    prev_randao: bytes
    blob_base_fee: int
    block_hashes: Mapping[int, bytes] = field(default_factory=dict)

    def differing(self, actual: PredictedContext) -> frozenset[str]:
        """Names (as opcodes) of the values the real block has different."""
        out = set()
        if self.number != actual.number:
            out.update({"NUMBER", "BLOCKHASH"})
        if self.timestamp != actual.timestamp:
            out.add("TIMESTAMP")
        if self.gas_limit != actual.gas_limit:
            out.add("GASLIMIT")
        if self.base_fee != actual.base_fee:
            out.add("BASEFEE")
        if self.coinbase != actual.coinbase:
            out.add("COINBASE")
        if self.prev_randao != actual.prev_randao:
            out.add("PREVRANDAO")
        if self.blob_base_fee != actual.blob_base_fee:
            out.add("BLOBBASEFEE")
        return frozenset(out)


def judge_execution(
    claim: ExecEffects,
    context_reads: frozenset[str],
    truth: ExecEffects,
    predicted: PredictedContext,
    actual: PredictedContext,
    read_set: frozenset[StateKey],
    written_before: frozenset[StateKey],
) -> tuple[str, str]:
    """("matched", "") | ("mismatched", field) | ("excluded", reason) for one execution.

    A field difference is excluded only when a race explains it; identical results are matched
    even when a race happened (the race did not matter).
    """
    diff = first_difference(claim, truth)
    if diff is None:
        return "matched", ""
    if read_set & written_before:
        return "excluded", "read_write_race"
    if context_reads & predicted.differing(actual):
        return "excluded", "block_context"
    if diff in ("coinbase_fee", "balance") and "BASEFEE" in predicted.differing(actual):
        # The effective gas price depends on the real base fee: the sender pays and the coinbase
        # earns per the real block, so those amounts follow the prediction only when it was right.
        return "excluded", "block_context"
    return "mismatched", diff
