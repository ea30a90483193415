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

from collections.abc import Iterable
from dataclasses import dataclass

from ioswarm.core.models import AccountSnapshot, PendingTx


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
