"""Predicting the next block's context from the node's pending block, or from the head alone."""

from __future__ import annotations

import dataclasses

import pytest

from ioswarm.coordinator.chainwatch import Head
from ioswarm.coordinator.taskmaker import ContextPredictor
from ioswarm.core.blockctx import (
    PendingBlock,
    blob_base_fee,
    next_base_fee,
    next_excess_blob_gas,
    pending_flaw,
    predict_next,
    predict_with_pending,
)
from ioswarm.core.models import BlockHeader
from ioswarm.errors import MethodNotSupported, NodeError

FORK = "prague"
HEAD = BlockHeader(
    number=100,
    hash=b"\x11" * 32,
    parent_hash=b"\x10" * 32,
    timestamp=1_000,
    gas_limit=30_000_000,
    base_fee=1_000_000_000,
    coinbase=b"\xcc" * 20,
    prev_randao=b"\x77" * 32,
    gas_used=21_000_000,
    excess_blob_gas=1_000_000,
    blob_gas_used=262_144,
)
SPACING = 2


def next_of(head: BlockHeader, **changes: object) -> PendingBlock:
    """The pending block an honest node shows on top of ``head``, with ``changes``."""
    block = PendingBlock(
        number=head.number + 1,
        parent_hash=head.hash,
        timestamp=head.timestamp + 12,
        gas_limit=head.gas_limit + 1024,
        base_fee=next_base_fee(head.gas_used, head.gas_limit, head.base_fee),
        coinbase=b"\xdd" * 20,
        excess_blob_gas=next_excess_blob_gas(head.excess_blob_gas, head.blob_gas_used, FORK),
    )
    return dataclasses.replace(block, **changes)  # type: ignore[arg-type]


def test_no_pending_block_predicts_from_the_head() -> None:
    """Without a pending block the prediction is the head-only one, and says so."""
    predicted, source = predict_with_pending(HEAD, None, SPACING, FORK, {})
    assert source == "head"
    assert predicted == predict_next(HEAD, SPACING, FORK, {})


def test_a_plausible_pending_block_gives_its_values() -> None:
    """Number, timestamp, gas limit, base fee, coinbase and blob base fee come from a pending
    block that passes every check; prev_randao stays the head's (no node knows it)."""
    pending = next_of(HEAD)
    predicted, source = predict_with_pending(HEAD, pending, SPACING, FORK, {99: b"\x99" * 32})
    assert source == "pending"
    assert predicted.number == 101
    assert predicted.timestamp == 1_012
    assert predicted.gas_limit == HEAD.gas_limit + 1024
    assert predicted.base_fee == next_base_fee(HEAD.gas_used, HEAD.gas_limit, HEAD.base_fee)
    assert predicted.base_fee > HEAD.base_fee  # the head was above target
    assert predicted.coinbase == b"\xdd" * 20
    assert predicted.blob_base_fee == blob_base_fee(pending.excess_blob_gas or 0, FORK)
    assert predicted.prev_randao == HEAD.prev_randao
    assert predicted.block_hashes == {99: b"\x99" * 32}


def test_a_wall_clock_pending_timestamp_is_a_lower_bound() -> None:
    """A pending block stamped with the node's clock just after the head (anvil in interval
    mode, geth) does not pull the prediction below the head's time plus the spacing."""
    for stamp in (HEAD.timestamp, HEAD.timestamp + 1):
        predicted, source = predict_with_pending(
            HEAD, next_of(HEAD, timestamp=stamp), SPACING, FORK, {}
        )
        assert source == "pending"
        assert predicted.timestamp == HEAD.timestamp + SPACING


def test_null_fields_fall_back_to_the_head_prediction() -> None:
    """A pending block with a null miner, base fee or blob excess keeps the head's estimate of
    that field and still supplies the rest."""
    pending = next_of(HEAD, coinbase=None, base_fee=None, excess_blob_gas=None)
    predicted, source = predict_with_pending(HEAD, pending, SPACING, FORK, {})
    head_only = predict_next(HEAD, SPACING, FORK, {})
    assert source == "pending"
    assert predicted.coinbase == HEAD.coinbase
    assert predicted.base_fee == head_only.base_fee
    assert predicted.blob_base_fee == head_only.blob_base_fee
    assert predicted.timestamp == 1_012


@pytest.mark.parametrize(
    ("changes", "flaw"),
    [
        ({"number": HEAD.number}, "number"),  # the node answered with its latest block
        ({"number": HEAD.number + 2}, "number"),  # built on a block not seen yet
        ({"parent_hash": b"\x22" * 32}, "parent_hash"),  # another branch
        ({"timestamp": HEAD.timestamp - 5}, "timestamp"),
        ({"gas_limit": 0}, "gas_limit"),
        ({"base_fee": 7}, "base_fee"),  # not EIP-1559 from the head
        ({"excess_blob_gas": 5}, "excess_blob_gas"),
    ],
)
def test_an_implausible_pending_block_is_ignored_whole(
    changes: dict[str, object], flaw: str
) -> None:
    """A pending block that is not the head's child by number, parent, time, gas limit or the
    fee rules is dropped entirely: the prediction is the head-only one, tagged with the flaw."""
    pending = next_of(HEAD, **changes)
    assert pending_flaw(HEAD, pending, FORK) == flaw
    predicted, source = predict_with_pending(HEAD, pending, SPACING, FORK, {})
    assert source == f"head:{flaw}"
    assert predicted == predict_next(HEAD, SPACING, FORK, {})


def test_a_pending_block_on_a_pre_london_head_needs_no_base_fee() -> None:
    """A chain without EIP-1559 (base fee 0, none in the pending block) still passes."""
    head = dataclasses.replace(HEAD, base_fee=0, gas_used=0)
    pending = next_of(head, base_fee=None)
    assert pending_flaw(head, pending, FORK) == ""
    predicted, _ = predict_with_pending(head, pending, SPACING, FORK, {})
    assert predicted.base_fee == 0


class CountingNode:
    """A pending-block source that counts reads and can fail on cue (a real node cannot be
    made to refuse the pending block at will)."""

    def __init__(self) -> None:
        self.block: PendingBlock | None = None
        self.reads = 0
        self.fail = False

    async def pending_block(self) -> PendingBlock | None:
        self.reads += 1
        if self.fail:
            raise NodeError("eth_getBlockByNumber", "pending not supported")
        return self.block


async def test_the_pending_block_is_read_once_per_head_and_again_only_when_late() -> None:
    """One read per head; a second only after a block spacing has passed on the same head; a
    failed read leaves the head-only prediction."""
    clock = [0.0]
    node = CountingNode()
    head = Head(header=HEAD)
    contexts = ContextPredictor(FORK, lambda: 1, head, node, clock=lambda: clock[0])
    node.block = next_of(HEAD)
    for _ in range(3):
        await contexts.read_pending()
    assert node.reads == 1
    first = contexts.for_height(HEAD.number)
    assert first is not None and first[1].timestamp == HEAD.timestamp + 12
    clock[0] = 5.0  # the next block is late: read again, and the new answer is used
    node.block = next_of(HEAD, timestamp=HEAD.timestamp + 30)
    await contexts.read_pending()
    assert node.reads == 2
    late = contexts.for_height(HEAD.number)
    assert late is not None and late[1].timestamp == HEAD.timestamp + 30
    child = dataclasses.replace(HEAD, number=101, hash=b"\x12" * 32, timestamp=1_030)
    contexts.on_block(child)  # as the watcher does: spacing becomes 30
    head.header = child
    node.fail = True
    await contexts.read_pending()
    assert node.reads == 3
    fallback = contexts.for_height(child.number)
    assert fallback is not None and fallback[1] == predict_next(
        child, 30, FORK, fallback[1].block_hashes
    )
    assert contexts.sources == {"pending": 2, "head": 1}


async def test_a_node_without_the_method_is_not_asked_again() -> None:
    """A node that lacks the method is asked once, then never again."""

    class NoMethod(CountingNode):
        async def pending_block(self) -> PendingBlock | None:
            self.reads += 1
            raise MethodNotSupported("eth_getBlockByNumber", "method not found")

    node = NoMethod()
    head = Head(header=HEAD)
    contexts = ContextPredictor(FORK, lambda: 1, head, node, clock=lambda: 0.0)
    await contexts.read_pending()
    head.tip = dataclasses.replace(HEAD, number=101, hash=b"\x12" * 32, timestamp=1_002)
    await contexts.read_pending()
    assert node.reads == 1
    predicted = contexts.for_height(101)
    assert predicted is not None and predicted[1].number == 102
