"""L2 tasks for txs seen while the sender state is re-read at a new head do not wait for it.

A real anvil mining on demand, the real block watcher and mempool poller; only the node's state
read is held (a gate in front of the client's ``accounts``) to stand for a node slow to answer
while it mines. The tasks made meanwhile must carry a state the chain agrees with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest
from eth_account import Account

from ioswarm.coordinator.chainwatch import BlockWatcher, Head, MempoolPoller
from ioswarm.core.mempool import Planned
from ioswarm.core.models import AccountSnapshot, BlockHeader, IncludedTx, PendingTx
from ioswarm.node import JsonRpcNode
from ioswarm.node.adapter import BlockId
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.test_pending_context import send_transfers

pytestmark = pytest.mark.integration


class GatedStateNode:
    """The real node client, whose state reads wait until ``gate`` is set."""

    def __init__(self, node: JsonRpcNode) -> None:
        self._node = node
        self.gate = asyncio.Event()
        self.gate.set()
        self.asked: list[int] = []  # block numbers of the state reads begun
        self.answered: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)

    async def accounts(
        self,
        addresses: Iterable[bytes],
        block_number: BlockId,
        block_hash: bytes | None = None,
        code: bool = True,
    ) -> dict[bytes, AccountSnapshot]:
        assert isinstance(block_number, int)
        self.asked.append(block_number)
        await self.gate.wait()
        out = await self._node.accounts(addresses, block_number, block_hash, code)
        self.answered.append(block_number)
        return out


async def test_new_txs_become_tasks_while_the_state_read_at_a_new_head_waits(
    anvil_manual: AnvilProcess,
) -> None:
    key_a, key_b = anvil_manual.private_keys[0], anvil_manual.private_keys[2]
    a = bytes.fromhex(Account.from_key(key_a).address[2:])
    b = bytes.fromhex(Account.from_key(key_b).address[2:])
    async with JsonRpcNode(anvil_manual.url) as real:
        node = GatedStateNode(real)
        start = await real.get_block("latest")
        head = Head(header=start, tip=start)
        made: list[tuple[Planned, BlockHeader]] = []

        async def make_tasks(
            items: list[tuple[Planned | PendingTx, bytes]], at: BlockHeader
        ) -> int:
            for item, _ in items:
                assert isinstance(item, Planned)
                made.append((item, at))
            return len(items)

        poller = MempoolPoller(
            node,  # type: ignore[arg-type]
            head,
            make_tasks,
            needs_state=lambda: True,
            has_agents=lambda: True,
            on_replaced=lambda tx_hash: None,
            interval=1.0,
            sync_max_lag_sec=10**9,
            wall_clock=lambda: float(start.timestamp),
            on_error=lambda loop: None,
            on_syncing=lambda syncing: None,
            early_state=lambda: True,
        )

        def on_block(header: BlockHeader, included: list[IncludedTx]) -> None:
            poller.included(header.number, included)

        watcher = BlockWatcher(real, head, on_block, 1.0, lambda loop: None)
        try:
            # Warm: the first state read is waited for (nothing is known before it).
            await send_transfers(real, key_a, 0, 1)
            await send_transfers(real, key_b, 0, 1)
            assert await poller.step() == 0
            await poller.states.settle()
            assert await poller.step() == 2
            first = next(p for p, _ in made if p.tx.sender == a)
            assert {(p.sender_state.nonce, at.number) for p, at in made} == {(0, start.number)}

            # The txs are included (the watcher sees them) with B's tx 1, which the pool never
            # knew (sent and mined between two rounds).
            await send_transfers(real, key_b, 1, 1)
            await anvil_manual.mine(1)
            await watcher.step()
            assert head.number == start.number + 1
            node.gate.clear()  # the node is slow to answer state reads from here on

            await send_transfers(real, key_a, 1, 1)
            await send_transfers(real, key_b, 2, 1)
            created = await poller.step()
            # Before the read at the new head answered: A's tx 1 is a task, planned on the
            # block before, past A's tx 0 included since; B's tx 2 waits (the pool never saw
            # B's tx 1, so B's nonce is not known without the read).
            assert created == 1
            await eventually(
                lambda: start.number + 1 in node.asked, what="the read at the new head"
            )
            assert start.number + 1 not in node.answered
            early, at_early = made[-1]
            assert early.tx.sender == a and at_early.number == start.number
            assert early.sender_state.nonce == 1

            node.gate.set()
            await poller.states.settle()
            assert await poller.step() == 1  # B's tx 2, now on the new head's state
            late, at_late = made[-1]
            assert late.tx.sender == b and at_late.number == start.number + 1
            assert late.sender_state.nonce == 2

            # The early task's state is one the chain agrees with: A's nonce at the new head,
            # and a balance no higher than A's there (its predecessor's most cost taken off).
            truth = await real.accounts([a], start.number + 1, code=False)
            assert early.sender_state.nonce == truth[a].nonce
            assert early.sender_state.balance <= truth[a].balance
            assert early.sender_state.balance >= truth[a].balance - first.tx.gas * first.tx.max_fee
        finally:
            await poller.states.close()
