"""Executed canaries: a valid variant of a real L3/L4 task, with the node's trace as its truth.

The mint signs a valid variant from a throwaway key and fabricates its sender's nonce and
balance; the node traces that call on the state the template's batch was prefetched at (the
block before the context's), under exactly the context the batch carries. The task ships the
state the trace says the call touches, so nothing else runs in between and the truth is exact:
no race exclusion applies. Anything the node cannot answer exactly gives no canary.
"""

from __future__ import annotations

from dataclasses import replace

from ioswarm.coordinator.canaries import Canary, CanaryMint
from ioswarm.core.canary import EXECUTED, CanaryTruth, ExecutedCanaryTruth
from ioswarm.core.execshadow import PredictedContext
from ioswarm.core.models import EMPTY_CODE_HASH, AccountSnapshot, Level, Task
from ioswarm.core.tx import decode_tx
from ioswarm.node.canarytruth import CanaryTruthReader

__all__ = ["executed_canary"]


async def executed_canary(
    mint: CanaryMint,
    reader: CanaryTruthReader,
    template: Task,
    task_id: int,
    context: PredictedContext,
    base_fee: int,
) -> Canary | None:
    """An executed canary shaped like the L3/L4 ``template``, for a batch carrying ``context``.

    At L4 the agent executes on its own state at the template's height, which its verified
    state hash says is the node's state there, overlaid with the task's sender snapshot (the
    throwaway key's fabricated nonce and balance): what the node traced.

    ``base_fee`` is the one ``context`` carries (the mint refuses fee caps below it). None when
    the mint or the node cannot give one (see ``reader.refused`` for the node's reasons).
    """
    if template.level < Level.L3 or context.number < 1:
        return None
    variant = mint.executable(template, base_fee=base_fee)
    if variant is None:
        return None
    truth = await reader.executed(
        variant.raw_tx,
        variant.sender,
        variant.balance,
        variant.nonce,
        context.number - 1,
        context,
    )
    if truth is None:
        return None
    tx = decode_tx(variant.raw_tx)
    state = AccountSnapshot(variant.sender, variant.balance, variant.nonce, EMPTY_CODE_HASH)
    receiver = None
    if template.receiver_state is not None and tx.to is not None:
        receiver = next((a.snapshot for a in truth.accounts if a.snapshot.address == tx.to), None)
    task = replace(
        template,
        task_id=task_id,
        tx_hash=tx.tx_hash,
        raw_tx=variant.raw_tx,
        sender=variant.sender,
        nonce=variant.nonce,
        sender_state=state,
        receiver_state=receiver,
        max_cost=tx.max_cost,
        # L4 executes on the agent's own state at the task's height (the state the node
        # traced), with the sender's nonce and balance from ``sender_state``: no state shipped.
        accounts=truth.accounts if template.level == Level.L3 else (),
        read_set=truth.read_set,
    )
    return Canary(
        kind=EXECUTED,
        task=task,
        truth=CanaryTruth(valid=True, reject_reason="", sender=variant.sender),
        executed=ExecutedCanaryTruth(variant.sender, truth.effects),
    )
