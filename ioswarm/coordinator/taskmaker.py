"""From ready mempool transactions to tasks: one per level, L3 state prefetched in one round."""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from ioswarm.coordinator.chainwatch import Head
from ioswarm.coordinator.prefetch import Prefetched, StatePrefetcher
from ioswarm.core.blockctx import (
    BLOCKHASH_WINDOW,
    PendingBlock,
    context_of,
    predict_with_pending,
)
from ioswarm.core.execshadow import PredictedContext
from ioswarm.core.mempool import Planned, max_cost
from ioswarm.core.models import AccountSnapshot, BlockHeader, Level, PendingTx, Task
from ioswarm.core.retention import TableSize
from ioswarm.core.tx import decode_tx
from ioswarm.errors import MethodNotSupported, NodeError, ValidationError
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import context_to_pb

log = logging.getLogger("ioswarm.tasks")


RECENT_HEADERS = 64
L4_MAX_LAG_BLOCKS = 2


class PendingBlockSource(Protocol):
    """The one node read the predictor makes (see :class:`~ioswarm.node.adapter.NodeClient`)."""

    async def pending_block(self) -> PendingBlock | None: ...


class ContextPredictor:
    """Keeps recent block hashes and spacing; predicts the next block's context, from the
    node's pending block where it offers a plausible one (see :mod:`ioswarm.core.blockctx`)."""

    def __init__(
        self,
        fork: str,
        chain_id: Callable[[], int],
        head: Head,
        node: PendingBlockSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``node`` offers the pending block; :meth:`read_pending` reads it at most once per
        head, and once more per block spacing while the next block is late."""
        self.fork = fork
        self.absent_accounts_exist = False
        """Whether the node's EVM counts absent accounts as existing (set at start, see
        ``ExecutionReader.absent_accounts_exist``); batches say so to agents."""
        self._node = node
        self._clock = clock
        self._pending: dict[int, PendingBlock | None] = {}
        self._pending_read_at = 0.0
        self.sources: Counter[str] = Counter()
        self._chain_id = chain_id
        self._tip = head
        self._hashes: dict[int, bytes] = {}
        self._spacing = 1
        self._head: BlockHeader | None = None
        self._cached: tuple[pb.BlockContext, PredictedContext] | None = None
        self._headers: dict[int, BlockHeader] = {}
        self._by_height: dict[int, tuple[pb.BlockContext, PredictedContext]] = {}

    def _to_pb(self, ctx: PredictedContext) -> pb.BlockContext:
        return context_to_pb(
            ctx, self._chain_id(), self.fork, absent_accounts_exist=self.absent_accounts_exist
        )

    def remember(self, hashes: dict[int, bytes]) -> None:
        self._hashes.update(hashes)

    def on_block(self, header: BlockHeader) -> PredictedContext:
        """Record a landed block; returns its real context for shadow comparison."""
        self._hashes[header.number] = header.hash
        if self._head is not None and header.number == self._head.number + 1:
            self._spacing = max(1, header.timestamp - self._head.timestamp)
        for n in [n for n in self._hashes if n < header.number - BLOCKHASH_WINDOW]:
            del self._hashes[n]
        self._head = header
        self._cached = None
        self._keep(header)
        return context_of(header, self.fork, {})

    def _keep(self, header: BlockHeader) -> None:
        self._headers[header.number] = header
        for n in [n for n in self._headers if n < header.number - RECENT_HEADERS]:
            del self._headers[n]
            self._by_height.pop(n, None)
            self._pending.pop(n, None)

    def set_head(self, header: BlockHeader) -> None:
        if self._head is None or header.number >= self._head.number:
            self._head = header
            self._hashes[header.number] = header.hash
            self._cached = None
            self._keep(header)

    def for_height(self, height: int) -> tuple[pb.BlockContext, PredictedContext] | None:
        """The context predicted for the block after ``height``: the block a task prepared
        against the state at ``height`` is expected to land in."""
        cached = self._by_height.get(height)
        if cached is not None:
            return cached
        header = self._headers.get(height)
        if header is None:
            return self.current()
        predicted, source = predict_with_pending(
            header, self._pending.get(height), self._spacing, self.fork, self._hashes
        )
        if source not in self.sources:  # each kind once: a node's pending support shows here
            log.info("block context predicted height=%d source=%s", height + 1, source)
        self.sources[source] += 1
        cached = (self._to_pb(predicted), predicted)
        self._by_height[height] = cached
        return cached

    async def read_pending(self) -> None:
        """Read the node's pending block if the head moved since the last read, or the next
        block is a spacing overdue. A node that fails the read leaves the prediction to the
        head alone; the watcher and poller report an unreachable node, not this."""
        now = self._tip.latest
        if now is not None and (self._head is None or now.number > self._head.number):
            self.set_head(now)
        head = self._head
        if self._node is None or head is None:
            return
        clock = self._clock()
        if head.number in self._pending and clock - self._pending_read_at < self._spacing:
            return
        self._pending_read_at = clock
        try:
            block = await self._node.pending_block()
        except MethodNotSupported:
            log.info("node offers no pending block; predicting block context from the head")
            self._node = None
            return
        except NodeError as exc:
            log.debug("pending block unavailable head=%d error=%s", head.number, exc)
            block = None
        self._pending[head.number] = block
        self._by_height.pop(head.number, None)
        self._cached = None

    def for_block(self, number: int) -> tuple[pb.BlockContext, PredictedContext] | None:
        """The real context of landed block ``number`` (None once it is no longer kept), with
        the hashes of the blocks before it that BLOCKHASH may read."""
        header = self._headers.get(number)
        if header is None:
            return None
        window = {n: h for n, h in self._hashes.items() if number - BLOCKHASH_WINDOW <= n < number}
        actual = context_of(header, self.fork, window)
        return self._to_pb(actual), actual

    def tables(self) -> dict[str, TableSize]:
        """Sizes and bounds of the recent-block tables (256 hashes for BLOCKHASH, a few
        headers for per-height predictions; the tip may run a few blocks ahead of both)."""
        return {
            "context_block_hashes": TableSize(len(self._hashes), BLOCKHASH_WINDOW + RECENT_HEADERS),
            "context_headers": TableSize(len(self._headers), 2 * RECENT_HEADERS),
            "context_predictions": TableSize(len(self._by_height), 2 * RECENT_HEADERS),
        }

    def current(self) -> tuple[pb.BlockContext, PredictedContext] | None:
        """The predicted context of the block after the head (cached until the head moves)."""
        now = self._tip.latest
        if now is not None and (self._head is None or now.number > self._head.number):
            self.set_head(now)
        if self._head is None:
            return None
        if self._cached is None:
            self._cached = self.for_height(self._head.number)
        return self._cached


class TaskFactory:
    """Makes the tasks of one poll round (task ids are unique for the coordinator's life)."""

    def __init__(
        self,
        prefetcher: StatePrefetcher | None,
        receiver_state: Callable[[bytes], AccountSnapshot | None],
        state_height: Callable[[], int | None] = lambda: None,
        seen_at: Callable[[bytes], float] = lambda tx_hash: 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``state_height`` is the L4 state store's height (None while L4 sync is not ready:
        L4 agents then get L3 tasks, which they can also execute). ``seen_at`` says when a tx
        was first seen in the mempool, on ``clock`` (which stamps when a task is queued)."""
        self._seen_at = seen_at
        self._clock = clock
        self._prefetcher = prefetcher
        self._state_height = state_height
        self._receiver_state = receiver_state
        self._ids = itertools.count(1)
        self.l3_fallbacks = 0

    def next_id(self) -> int:
        """A fresh task id from the same sequence real tasks use (canaries take theirs here,
        so ids tell nothing)."""
        return next(self._ids)

    async def build(
        self,
        items: list[tuple[Planned | PendingTx, bytes]],
        header: BlockHeader,
        levels: set[Level],
    ) -> list[Task]:
        """Tasks for every item at every level; L3 falls back to L2 where prefetch fails."""
        prefetched: dict[bytes, Prefetched | None] = {}
        if any(lv >= Level.L3 for lv in levels):
            prefetched = await self._prefetch(items, header)
        tasks = []
        queued_at = self._clock()
        for item, raw in items:
            tx = item.tx if isinstance(item, Planned) else item
            sender_state = item.sender_state if isinstance(item, Planned) else None
            receiver = self._receiver_state(tx.to) if tx.to is not None else None
            wanted = set()
            state_height = self._l4_height(header) if Level.L4 in levels else None
            for asked in levels:
                level = Level.L3 if asked == Level.L4 and state_height is None else asked
                if level >= Level.L3 and prefetched.get(tx.tx_hash) is None:
                    self.l3_fallbacks += 1
                    wanted.add(Level.L2)
                else:
                    wanted.add(level)
            for level in sorted(wanted):
                state = prefetched.get(tx.tx_hash) if level >= Level.L3 else None
                # L4 executes on the agent's own store at state_height: no state to ship, but
                # the read set still serves race exclusion in the shadow comparison.
                l4 = level == Level.L4
                tasks.append(
                    Task(
                        task_id=next(self._ids),
                        tx_hash=tx.tx_hash,
                        raw_tx=raw,
                        level=level,
                        sender=tx.sender,
                        nonce=tx.nonce,
                        block_height=header.number,
                        block_gas_limit=header.gas_limit,
                        sender_state=sender_state if level >= Level.L2 else None,
                        receiver_state=receiver if level >= Level.L2 else None,
                        max_cost=max_cost(tx),
                        accounts=state.accounts if state and not l4 else (),
                        read_set=state.read_set if state else frozenset(),
                        state_height=state_height if l4 and state_height is not None else 0,
                        gas_limit=tx.gas,
                        seen_at=self._seen_at(tx.tx_hash),
                        queued_at=queued_at,
                    )
                )
        return tasks

    def _l4_height(self, header: BlockHeader) -> int | None:
        """The state height L4 tasks of this round assume: the block they were prepared at.

        The coordinator's store reaches it moments later (after the block's trace), and an
        agent's sequence barrier waits for that diff; a store further behind means L3 tasks.
        """
        synced = self._state_height()
        if synced is None or synced < header.number - L4_MAX_LAG_BLOCKS:
            return None
        return header.number

    async def _prefetch(
        self, items: list[tuple[Planned | PendingTx, bytes]], header: BlockHeader
    ) -> dict[bytes, Prefetched | None]:
        if self._prefetcher is None or not self._prefetcher.supported:
            return {}
        batch = []
        for item, raw in items:
            if not isinstance(item, Planned):
                continue
            try:
                decoded = decode_tx(raw)
            except ValidationError:
                continue  # the agents will reject it; no state to prepare
            batch.append((decoded, item.tx.sender, item.sender_state))
        if not batch:
            return {}
        started = time.perf_counter()
        states = await self._prefetcher.prefetch(batch, header.number, header.coinbase)
        self._prefetcher.stats.seconds += time.perf_counter() - started
        return {decoded.tx_hash: st for (decoded, _, _), st in zip(batch, states, strict=True)}
