"""Predicting the next block's context (the values an executing agent's EVM sees).

The base fee follows EIP-1559 exactly from the parent; the blob base fee follows EIP-4844 with
Prague's parameters (EIP-7691); the timestamp is the parent's plus the recent block spacing;
gas limit and coinbase are assumed unchanged; prev_randao cannot be predicted (the parent's is
sent, and an execution that reads PREVRANDAO is excluded when the real one differs).

Where the node offers a pending block (the block it would seal next), :func:`predict_with_pending`
takes its number, timestamp, base fee, gas limit, coinbase and blob fields instead, once they pass
plausibility checks against the head; a pending block that fails any of them is ignored whole.
A node stamps its pending block with its own clock when it has no fixed time for it, so its
timestamp is the earliest the block can have: the prediction is the later of it and the head's
plus the spacing (a node that will seal late, or has been told the next block's time, says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ioswarm.core.execshadow import PredictedContext
from ioswarm.core.models import BlockHeader

ELASTICITY_MULTIPLIER = 2
BASE_FEE_MAX_CHANGE_DENOMINATOR = 8
MIN_BLOB_BASE_FEE = 1
# (target blob gas per block, update fraction) by fork: Cancun EIP-4844, Prague EIP-7691.
BLOB_PARAMS = {"cancun": (393_216, 3_338_477), "prague": (786_432, 5_007_716)}
BLOCKHASH_WINDOW = 256


def next_base_fee(parent_gas_used: int, parent_gas_limit: int, parent_base_fee: int) -> int:
    """EIP-1559 base fee of the child of a block."""
    target = parent_gas_limit // ELASTICITY_MULTIPLIER
    if target in (0, parent_gas_used):
        return parent_base_fee
    if parent_gas_used > target:
        delta = parent_gas_used - target
        change = max(parent_base_fee * delta // target // BASE_FEE_MAX_CHANGE_DENOMINATOR, 1)
        return parent_base_fee + change
    delta = target - parent_gas_used
    return max(
        parent_base_fee - parent_base_fee * delta // target // BASE_FEE_MAX_CHANGE_DENOMINATOR, 0
    )


def fake_exponential(factor: int, numerator: int, denominator: int) -> int:
    """EIP-4844's integer approximation of factor * e ** (numerator / denominator)."""
    i = 1
    output = 0
    accum = factor * denominator
    while accum > 0:
        output += accum
        accum = accum * numerator // (denominator * i)
        i += 1
    return output // denominator


def next_excess_blob_gas(parent_excess: int, parent_used: int, fork: str) -> int:
    target = BLOB_PARAMS.get(fork, BLOB_PARAMS["prague"])[0]
    return max(0, parent_excess + parent_used - target)


def blob_base_fee(excess_blob_gas: int, fork: str) -> int:
    fraction = BLOB_PARAMS.get(fork, BLOB_PARAMS["prague"])[1]
    return fake_exponential(MIN_BLOB_BASE_FEE, excess_blob_gas, fraction)


def context_of(header: BlockHeader, fork: str, hashes: Mapping[int, bytes]) -> PredictedContext:
    """The context a block actually had (for comparing with the prediction)."""
    return PredictedContext(
        number=header.number,
        timestamp=header.timestamp,
        gas_limit=header.gas_limit,
        base_fee=header.base_fee,
        coinbase=header.coinbase,
        prev_randao=header.prev_randao,
        blob_base_fee=blob_base_fee(header.excess_blob_gas, fork),
        block_hashes=hashes,
    )


def predict_next(
    head: BlockHeader, spacing: int, fork: str, hashes: Mapping[int, bytes]
) -> PredictedContext:
    """The context of the block after ``head``; ``hashes`` maps recent numbers to hashes."""
    number = head.number + 1
    window = {n: h for n, h in hashes.items() if number - BLOCKHASH_WINDOW <= n < number}
    return PredictedContext(
        number=number,
        timestamp=head.timestamp + max(spacing, 1),
        gas_limit=head.gas_limit,
        base_fee=next_base_fee(head.gas_used, head.gas_limit, head.base_fee),
        coinbase=head.coinbase,
        prev_randao=head.prev_randao,
        blob_base_fee=blob_base_fee(
            next_excess_blob_gas(head.excess_blob_gas, head.blob_gas_used, fork), fork
        ),
        block_hashes=window,
    )


@dataclass(frozen=True, slots=True)
class PendingBlock:
    """What a node's pending block (``eth_getBlockByNumber("pending")``) says of the next block.

    Fields some nodes leave null (geth nulls the miner of a pending block) are None; a node's
    pending prev_randao is not read at all (anvil shows the parent's there).
    """

    number: int
    parent_hash: bytes
    timestamp: int
    gas_limit: int
    base_fee: int | None
    coinbase: bytes | None
    excess_blob_gas: int | None


def pending_flaw(head: BlockHeader, pending: PendingBlock, fork: str) -> str:
    """Why ``pending`` cannot describe the block after ``head`` ("" when it can).

    Nodes without a pending block return the latest one, or one built on a block the
    coordinator has not seen yet; a base fee or blob gas excess the EIP-1559/EIP-4844 rules
    do not give from ``head`` means the node's view is not the rule the prediction relies on.
    """
    if pending.number != head.number + 1:
        return "number"
    if pending.parent_hash != head.hash:
        return "parent_hash"
    # Equal is allowed: a node stamping its pending block with its clock shows the head's own
    # second right after sealing it; the prediction never goes below head + spacing anyway.
    if pending.timestamp < head.timestamp:
        return "timestamp"
    if pending.gas_limit <= 0:
        return "gas_limit"
    if pending.base_fee is not None and pending.base_fee != next_base_fee(
        head.gas_used, head.gas_limit, head.base_fee
    ):
        return "base_fee"
    if pending.excess_blob_gas is not None and pending.excess_blob_gas != next_excess_blob_gas(
        head.excess_blob_gas, head.blob_gas_used, fork
    ):
        return "excess_blob_gas"
    return ""


def predict_with_pending(
    head: BlockHeader,
    pending: PendingBlock | None,
    spacing: int,
    fork: str,
    hashes: Mapping[int, bytes],
) -> tuple[PredictedContext, str]:
    """The context of the block after ``head`` and where it came from: ``"pending"`` when the
    node's pending block was used, else ``"head"`` or ``"head:<flaw>"`` (see
    :func:`pending_flaw`) for the prediction from the head alone."""
    predicted = predict_next(head, spacing, fork, hashes)
    if pending is None:
        return predicted, "head"
    flaw = pending_flaw(head, pending, fork)
    if flaw:
        return predicted, f"head:{flaw}"
    excess = pending.excess_blob_gas
    return (
        PredictedContext(
            number=pending.number,
            timestamp=max(pending.timestamp, predicted.timestamp),
            gas_limit=pending.gas_limit,
            base_fee=predicted.base_fee if pending.base_fee is None else pending.base_fee,
            coinbase=predicted.coinbase if pending.coinbase is None else pending.coinbase,
            prev_randao=predicted.prev_randao,
            blob_base_fee=(
                predicted.blob_base_fee if excess is None else blob_base_fee(excess, fork)
            ),
            block_hashes=predicted.block_hashes,
        ),
        "pending",
    )
