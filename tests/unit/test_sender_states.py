"""Planning on the previous block's state while the read at a new head is held: a tx whose
nonce an included tx the coordinator never saw used is stale, the tx after it waits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from ioswarm.coordinator.chainwatch import Head, MempoolPoller
from ioswarm.core.mempool import Planned
from ioswarm.core.models import AccountSnapshot, BlockHeader, IncludedTx, PendingTx

A = b"\x0a" * 20


def block(number: int) -> BlockHeader:
    return BlockHeader(
        number, bytes([number]) * 32, bytes([number - 1]) * 32, 10**10, 30_000_000, 7, b"\x00" * 20
    )


def tx(i: int, nonce: int) -> PendingTx:
    return PendingTx(i.to_bytes(32, "big"), A, nonce, b"\x0b" * 20, 1, 21_000, 10**9)


class Node:
    """The node calls of a round, from a mempool and nonces the test sets (a stand-in: a real
    node cannot be made to hold one read while it answers the others); the state read at
    ``slow`` waits for ``gate``."""

    def __init__(self) -> None:
        self.pending: list[PendingTx] = []
        self.latest = 1
        self.nonce = {1: 5, 2: 6}
        self.slow = 2
        self.gate = asyncio.Event()

    async def pending_transactions(self) -> list[PendingTx]:
        return list(self.pending)

    def listed_raw(self, tx_hash: bytes) -> bytes:
        return b"raw"

    async def block_number(self) -> int:
        return self.latest

    async def get_block(self, number: int) -> BlockHeader:
        return block(number)

    async def accounts(
        self, addresses: Iterable[bytes], number: int, block_hash: bytes, code: bool
    ) -> dict[bytes, AccountSnapshot]:
        assert block_hash == block(number).hash  # pinned to the block it names
        if number == self.slow:
            await self.gate.wait()
        return {a: AccountSnapshot(a, 10**18, self.nonce[number], b"") for a in addresses}


async def test_an_unseen_included_tx_makes_its_slot_stale_and_the_next_wait() -> None:
    node = Node()
    made: list[tuple[Planned, int]] = []

    async def make_tasks(items: list[tuple[Planned | PendingTx, bytes]], at: BlockHeader) -> int:
        made.extend((item, at.number) for item, _ in items if isinstance(item, Planned))
        return len(items)

    head = Head(block(1), block(1))
    poller = MempoolPoller(
        node,  # type: ignore[arg-type]
        head,
        make_tasks,
        needs_state=lambda: True,
        has_agents=lambda: True,
        on_replaced=lambda tx_hash: None,
        interval=1.0,
        sync_max_lag_sec=0,
        wall_clock=lambda: 10.0**10,
        on_error=lambda loop: None,
        on_syncing=lambda syncing: None,
        early_state=lambda: True,
    )
    try:
        node.pending = [tx(1, 5)]
        await poller.step()
        await poller.states.settle()
        assert await poller.step() == 1 and made[-1][0].sender_state.nonce == 5
        # Block 2 holds tx 1 and tx 2 (nonce 6), which the coordinator never saw; a late
        # copy of nonce 6 (tx 3) and the next tx (nonce 7) are seen while block 2 is read.
        node.latest = 2
        head.tip = block(2)
        poller.included(
            2, [IncludedTx(tx(1, 5).tx_hash, A, 5, 2, 1), IncludedTx(tx(2, 6).tx_hash, A, 6, 2, 1)]
        )
        node.pending = [tx(3, 6), tx(4, 7)]
        await poller.states.settle()  # the last round's read (nothing was missing) is over
        stale = poller.stale_skipped
        assert await poller.step() == 0
        assert poller.stale_skipped == stale + 1  # tx 3: its nonce was used in block 2
        assert not poller.was_dispatched(tx(4, 7).tx_hash)  # waits: nonce 6 unknown at block 1
        assert poller.states.header == block(1)  # the read at block 2 is still held
        node.nonce[2] = 7
        node.gate.set()
        await poller.states.settle()
        assert await poller.step() == 1
        planned, at = made[-1]
        assert planned.tx == tx(4, 7) and at == 2 and planned.sender_state.nonce == 7
    finally:
        await poller.states.close()
