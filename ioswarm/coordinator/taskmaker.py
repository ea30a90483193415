"""From ready mempool transactions to tasks: one per level, L3 state prefetched in one round."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable

from ioswarm.coordinator.prefetch import Prefetched, StatePrefetcher
from ioswarm.coordinator.wire import context_to_pb
from ioswarm.core.blockctx import BLOCKHASH_WINDOW, context_of, predict_next
from ioswarm.core.execshadow import PredictedContext
from ioswarm.core.mempool import Planned, max_cost
from ioswarm.core.models import AccountSnapshot, BlockHeader, Level, PendingTx, Task
from ioswarm.core.tx import decode_tx
from ioswarm.errors import ValidationError
from ioswarm.proto import ioswarm_pb2 as pb

log = logging.getLogger("ioswarm.tasks")


class ContextPredictor:
    """Keeps recent block hashes and spacing; predicts the next block's context."""

    def __init__(
        self, fork: str, chain_id: Callable[[], int], head: Callable[[], BlockHeader | None]
    ) -> None:
        self.fork = fork
        self._chain_id = chain_id
        self._head_now = head
        self._hashes: dict[int, bytes] = {}
        self._spacing = 1
        self._head: BlockHeader | None = None
        self._cached: tuple[pb.BlockContext, PredictedContext] | None = None

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
        return context_of(header, self.fork, {})

    def set_head(self, header: BlockHeader) -> None:
        if self._head is None or header.number >= self._head.number:
            self._head = header
            self._hashes[header.number] = header.hash
            self._cached = None

    def current(self) -> tuple[pb.BlockContext, PredictedContext] | None:
        """The predicted context of the block after the head (cached until the head moves)."""
        now = self._head_now()
        if now is not None and (self._head is None or now.number > self._head.number):
            self.set_head(now)
        if self._head is None:
            return None
        if self._cached is None:
            predicted = predict_next(self._head, self._spacing, self.fork, self._hashes)
            self._cached = (context_to_pb(predicted, self._chain_id(), self.fork), predicted)
        return self._cached


class TaskFactory:
    """Makes the tasks of one poll round (task ids are unique for the coordinator's life)."""

    def __init__(
        self,
        prefetcher: StatePrefetcher | None,
        receiver_state: Callable[[bytes], AccountSnapshot | None],
    ) -> None:
        self._prefetcher = prefetcher
        self._receiver_state = receiver_state
        self._ids = itertools.count(1)
        self.l3_fallbacks = 0

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
        for item, raw in items:
            tx = item.tx if isinstance(item, Planned) else item
            sender_state = item.sender_state if isinstance(item, Planned) else None
            receiver = self._receiver_state(tx.to) if tx.to is not None else None
            wanted = set()
            for level in levels:
                if level >= Level.L3 and prefetched.get(tx.tx_hash) is None:
                    self.l3_fallbacks += 1
                    wanted.add(Level.L2)
                else:
                    wanted.add(level)
            for level in sorted(wanted):
                state = prefetched.get(tx.tx_hash) if level >= Level.L3 else None
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
                        accounts=state.accounts if state else (),
                        read_set=state.read_set if state else frozenset(),
                    )
                )
        return tasks

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
