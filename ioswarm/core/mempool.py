"""Which pending transactions are ready to validate, and the sender state each will find.

A sender often has several transactions pending at once (nonces n, n+1, ...). Checking
n+1 against the account state at the head block would always fail on its nonce, so L2
tasks carry the state the transaction will find when it executes after its pending
predecessors: nonce = head nonce + number of predecessors, balance = head balance minus the
predecessors' maximum cost (value + gas x max fee), the same bound a node's txpool applies.
A transaction behind a nonce gap is not ready; it is planned again on a later poll, once the
gap is filled.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ioswarm.core.models import AccountSnapshot, PendingTx
from ioswarm.core.retention import TableSize


def max_cost(tx: PendingTx) -> int:
    """The most this transaction can take from its sender: value + gas limit x max fee."""
    return tx.value + tx.gas * tx.max_fee


@dataclass(frozen=True, slots=True)
class Planned:
    """A transaction ready for dispatch with the sender state it will execute on."""

    tx: PendingTx
    sender_state: AccountSnapshot


@dataclass(frozen=True, slots=True)
class Plan:
    ready: list[Planned]
    held: list[PendingTx]  # behind a nonce gap
    stale: list[PendingTx]  # nonce already used at the head block


def plan_dispatch(
    candidates: Iterable[PendingTx],
    pending: Iterable[PendingTx],
    head_state: dict[bytes, AccountSnapshot],
) -> Plan:
    """Split ``candidates`` into ready / held / stale, given all ``pending`` txs and head state.

    ``head_state`` must hold every candidate's sender; a candidate whose sender is missing is
    held (its state could not be read this round).
    """
    by_sender: dict[bytes, dict[int, PendingTx]] = {}
    for tx in pending:
        by_sender.setdefault(tx.sender, {})[tx.nonce] = tx
    ready: list[Planned] = []
    held: list[PendingTx] = []
    stale: list[PendingTx] = []
    for tx in candidates:
        head = head_state.get(tx.sender)
        if head is None:
            held.append(tx)
            continue
        if tx.nonce < head.nonce:
            stale.append(tx)
            continue
        spent = 0
        chain = by_sender.get(tx.sender, {})
        gap = False
        for n in range(head.nonce, tx.nonce):
            pred = chain.get(n)
            if pred is None:
                gap = True
                break
            spent += max_cost(pred)
        if gap:
            held.append(tx)
            continue
        state = AccountSnapshot(
            address=tx.sender,
            balance=max(0, head.balance - spent),
            nonce=tx.nonce,
            code_hash=head.code_hash,
        )
        ready.append(Planned(tx, state))
    return Plan(ready, held, stale)


class PendingPool:
    """What the coordinator knows of the node's mempool, fed by pushes and by listings.

    Each transaction is taken in once, when first seen (its first-seen time kept for the
    latency metrics), waits until it is dispatched, and is forgotten when it leaves the pool:
    included (:meth:`drop`), replaced by another tx in its (sender, nonce) slot, or no longer
    listed by a full listing asked for after it was seen. A tx that left is not taken in again
    from a push or from a listing older than its leaving. Every table is bounded by
    ``max_tracked`` (the oldest go first).
    """

    def __init__(self, max_tracked: int, on_replaced: Callable[[bytes], None]) -> None:
        self.max_tracked = max_tracked
        self._on_replaced = on_replaced
        self._txs: dict[bytes, PendingTx] = {}  # insertion order: first seen first
        self._seen: dict[bytes, float] = {}
        self._slots: dict[tuple[bytes, int], bytes] = {}
        self._by_sender: dict[bytes, dict[int, PendingTx]] = {}
        self._waiting: dict[bytes, None] = {}
        self._dispatched: OrderedDict[bytes, None] = OrderedDict()
        self._gone: OrderedDict[bytes, float] = OrderedDict()
        self.raw: dict[bytes, bytes] = {}

    def __len__(self) -> int:
        return len(self._txs)

    def add(self, tx: PendingTx, now: float, listed_at: float | None = None) -> bool:
        """Take in ``tx`` seen at ``now`` (``listed_at``: when the listing that shows it was
        asked for; None for a push). Returns whether it was new."""
        h = tx.tx_hash
        if h in self._txs:
            return False
        gone = self._gone.get(h)
        if gone is not None:
            if listed_at is None or gone >= listed_at:
                return False
            del self._gone[h]  # listed again after it left (a reorg): a new life
        key = (tx.sender, tx.nonce)
        old = self._slots.get(key)
        if old is not None and old != h:
            self._on_replaced(old)
            self.drop(old, now)
        self._slots[key] = h
        self._txs[h] = tx
        self._seen[h] = now
        self._by_sender.setdefault(tx.sender, {})[tx.nonce] = tx
        self._waiting[h] = None
        while len(self._txs) > self.max_tracked:
            self.drop(next(iter(self._txs)), now)
        while len(self._slots) > self.max_tracked:
            del self._slots[next(iter(self._slots))]
        return True

    def drop(self, tx_hash: bytes, now: float) -> None:
        """``tx_hash`` left the pool (included, replaced, evicted); its slot owner stays
        known until a listing shows the slot empty, so a late replacement is still seen."""
        self._gone[tx_hash] = now  # also when unknown: an included tx is never taken in
        while len(self._gone) > self.max_tracked:
            self._gone.popitem(last=False)
        tx = self._txs.pop(tx_hash, None)
        if tx is None:
            return
        self._seen.pop(tx_hash, None)
        self._waiting.pop(tx_hash, None)
        self._dispatched.pop(tx_hash, None)
        self.raw.pop(tx_hash, None)
        chain = self._by_sender.get(tx.sender)
        if chain is not None and chain.get(tx.nonce) is tx:
            del chain[tx.nonce]
            if not chain:
                del self._by_sender[tx.sender]

    def absorb_listing(self, listed: Iterable[PendingTx], asked_at: float, now: float) -> int:
        """A full listing asked for at ``asked_at``: take in what is new, drop what it no longer
        shows (unless seen after it was asked for); returns how many were new."""
        new = 0
        live: set[bytes] = set()
        slots: set[tuple[bytes, int]] = set()
        for tx in listed:
            live.add(tx.tx_hash)
            slots.add((tx.sender, tx.nonce))
            new += self.add(tx, now, listed_at=asked_at)
        for h in [h for h, t in self._seen.items() if t < asked_at and h not in live]:
            self.drop(h, now)
        slots.update((tx.sender, tx.nonce) for tx in self._txs.values())
        if len(slots) != len(self._slots):
            self._slots = {k: v for k, v in self._slots.items() if k in slots}
        while len(self._slots) > self.max_tracked:
            del self._slots[next(iter(self._slots))]
        return new

    def get(self, tx_hash: bytes) -> PendingTx | None:
        return self._txs.get(tx_hash)

    def wants_raw(self, tx_hash: bytes) -> bool:
        """Whether ``tx_hash`` waits for dispatch without its signed bytes."""
        return tx_hash in self._waiting and tx_hash not in self.raw

    def waiting(self) -> list[PendingTx]:
        """Txs not dispatched yet (new, or held behind a nonce gap), first seen first."""
        return [self._txs[h] for h in self._waiting]

    def chains(self, senders: Iterable[bytes]) -> list[PendingTx]:
        """Every known pending tx of these senders (the predecessors :func:`plan_dispatch`
        charges a tx's balance with)."""
        return [tx for s in senders for tx in self._by_sender.get(s, {}).values()]

    def senders(self) -> list[bytes]:
        """Senders with a tx in the pool."""
        return list(self._by_sender)

    def dispatched(self, hashes: Iterable[bytes]) -> None:
        """These txs became tasks (or can never become one: stale nonce)."""
        for h in hashes:
            if h in self._waiting:
                del self._waiting[h]
                self._dispatched[h] = None
                self.raw.pop(h, None)

    def was_dispatched(self, tx_hash: bytes) -> bool:
        return tx_hash in self._dispatched

    def seen_at(self, tx_hash: bytes) -> float | None:
        return self._seen.get(tx_hash)

    def tables(self) -> dict[str, TableSize]:
        bound = self.max_tracked
        return {
            "mempool_pool": TableSize(len(self._txs), bound),
            "mempool_dispatched": TableSize(len(self._dispatched), bound),
            "mempool_slot_owners": TableSize(len(self._slots), bound),
            "mempool_gone": TableSize(len(self._gone), bound),
        }
