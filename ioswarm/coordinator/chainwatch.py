"""The two loops that read the node: the mempool poller and the block watcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ioswarm.coordinator.senderstates import SenderStates
from ioswarm.core.execshadow import effects_from_diff
from ioswarm.core.mempool import PendingPool, Planned, plan_dispatch
from ioswarm.core.models import AccountSnapshot, BlockHeader, IncludedTx, PendingTx
from ioswarm.core.retention import TableSize
from ioswarm.core.syncguard import node_is_syncing
from ioswarm.errors import NodeError, NodeUnreachable
from ioswarm.node.adapter import NodeClient
from ioswarm.node.execution import ExecutionReader, TxDiff
from ioswarm.node.rpc import CallStats, counting_calls
from ioswarm.node.ws import PendingTxStream

log = logging.getLogger("ioswarm.chain")

MAX_CATCHUP_BLOCKS = 64
HEAD_CHECK_SEC = 0.025  # how stale the mempool rounds' view of the node's newest block may be
ERROR_BACKOFF_MAX_SEC = 10.0


@dataclass
class Head:
    """The newest block the watcher has fully processed (``header``) and the newest it has seen
    (``tip``). Shadow bookkeeping follows ``header``; new work is prepared against ``tip``, so a
    slow block trace never makes the poller read state one block late."""

    header: BlockHeader | None = None
    tip: BlockHeader | None = None

    @property
    def number(self) -> int:
        return self.header.number if self.header else -1

    @property
    def latest(self) -> BlockHeader | None:
        if self.tip is not None and (self.header is None or self.tip.number > self.header.number):
            return self.tip
        return self.header


class ErrorBackoff:
    """Capped exponential sleep after consecutive node errors."""

    def __init__(self, base: float, cap: float = ERROR_BACKOFF_MAX_SEC) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def ok(self) -> None:
        self.failures = 0

    def failed(self) -> float:
        self.failures += 1
        return float(min(self.cap, self.base * (2 ** min(self.failures - 1, 10))))


async def retry_node_errors(
    loop: str,
    what: str,
    step: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    interval: float,
    backoff: ErrorBackoff,
    on_error: Callable[[str], None],
    wake: asyncio.Event | None = None,
) -> None:
    """Run ``step`` every ``interval`` until ``stop``; after a node error, wait ``backoff``.
    A set ``wake`` starts the next step at once (not during an error backoff).

    The one retrying loop of the node readers. A node going away is expected and waited out
    here; any other exception is a bug and leaves the loop, so the loop supervisor logs it,
    counts it and restarts the loop (or gives up on it).
    """
    while not stop.is_set():
        try:
            await step()
            backoff.ok()
            delay = interval
        except NodeError as exc:
            on_error(loop)
            delay = backoff.failed()
            # Unreachable was logged once by the transport; any other node error is news.
            level = logging.DEBUG if isinstance(exc, NodeUnreachable) else logging.WARNING
            log.log(level, "%s node error=%s retry_in=%.1fs", what, exc, delay)
        except Exception:
            on_error(loop)
            raise
        if wake is not None and delay == interval:
            await _first_of(stop, wake, delay)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


async def _first_of(stop: asyncio.Event, wake: asyncio.Event, within: float) -> None:
    """Wait until ``stop`` or ``wake`` is set, or ``within`` seconds passed."""
    if stop.is_set() or wake.is_set():
        return
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


class BlockWatcher:
    """Follows the chain head; hands every new block and its truth to ``on_block``."""

    def __init__(
        self,
        node: NodeClient,
        head: Head,
        on_block: Callable[[BlockHeader, list[IncludedTx]], None],
        interval: float,
        on_error: Callable[[str], None],
        truth: ExecutionReader | None = None,
        wants_effects: Callable[[], bool] = lambda: False,
        state_sink: Callable[[BlockHeader, list[TxDiff]], Awaitable[None]] | None = None,
    ) -> None:
        """``state_sink`` (L4 state sync) gets every block's traces in block order, before
        ``on_block``; the traces are read once for it and for shadow mode."""
        self._node = node
        self._state_sink = state_sink
        self.head = head
        self._on_block = on_block
        self._truth = truth
        self._wants_effects = wants_effects
        self._interval = interval
        self._on_error = on_error
        self._backoff = ErrorBackoff(interval)

    async def run(self, stop: asyncio.Event) -> None:
        """Step until ``stop``; node errors are retried here, anything else ends the loop."""
        await retry_node_errors(
            "blocks",
            "block watcher",
            self.step,
            stop,
            self._interval,
            self._backoff,
            self._on_error,
        )

    async def step(self) -> None:
        """Process every block between the last one seen and the node's latest (bounded)."""
        latest = await self._node.block_number()
        if self.head.header is None:
            self.head.header = await self._node.get_block(latest, full=False)
            log.info("following chain from block=%d", latest)
            return
        if self.head.tip is None or latest > self.head.tip.number:
            self.head.tip = await self._node.get_block(latest, full=False)
        if latest < self.head.number:
            # The node was reset or reorganised below our head: follow the new chain from here.
            log.warning(
                "chain went backwards head=%d node_latest=%d; re-anchoring",
                self.head.number,
                latest,
            )
            self.head.header = self.head.tip = await self._node.get_block(latest, full=False)
            return
        first = self.head.number + 1
        for number in range(first, min(latest, first + MAX_CATCHUP_BLOCKS - 1) + 1):
            block = await self._node.get_block(number, full=True)
            receipts = {r.tx_hash: r for r in await self._node.block_receipts(number)}
            diffs: dict[bytes, TxDiff] = {}
            wants_effects = self._wants_effects()
            if (
                self._truth is not None
                and (wants_effects or self._state_sink is not None)
                and block.txs
            ):
                hashes = [tx.hash for tx in block.txs]
                diffs = {d.tx_hash: d for d in await self._truth.block_diffs(number, hashes)}
            if self._state_sink is not None and self._truth is not None:
                await self._state_sink(block.header, [diffs[tx.hash] for tx in block.txs])
            included = []
            for index, tx in enumerate(block.txs):
                r = receipts.get(tx.hash)
                if r is None:
                    raise NodeError("eth_getBlockReceipts", f"block {number} lacks a receipt")
                d = diffs.get(tx.hash) if wants_effects else None
                effects = None
                if d is not None:
                    effects = effects_from_diff(
                        r.status == 1, r.gas_used, r.logs, d.pre, d.post, block.header.coinbase
                    )
                included.append(
                    IncludedTx(
                        tx_hash=tx.hash,
                        sender=tx.sender,
                        nonce=tx.nonce,
                        block_number=number,
                        status=r.status,
                        gas_used=r.gas_used,
                        tx_index=index,
                        effects=effects,
                    )
                )
            self.head.header = block.header
            self._on_block(block.header, included)


class MempoolPoller:
    """Turns each new pending transaction into tasks exactly once, as soon as it is seen.

    Transactions arrive pushed by the node (:class:`~ioswarm.node.ws.PendingTxStream`, when
    attached and connected) and from a full ``txpool_content`` listing, read every round while
    no push is live and every ``gap_fill_interval`` while one is (it fills what a dropped
    connection missed). A round takes what arrived, reads the state of the senders it needs in
    one batch pinned to the head block (or, L2 only, takes the freshest state read and reads
    beside: :mod:`~ioswarm.coordinator.senderstates`), and hands the ready txs to
    ``make_tasks``; txs behind a nonce gap wait in the pool for a later round. What it
    remembers is a
    :class:`~ioswarm.core.mempool.PendingPool` (``maxTrackedTxs`` bounds each table).
    """

    def __init__(
        self,
        node: NodeClient,
        head: Head,
        make_tasks: Callable[
            [list[tuple[Planned | PendingTx, bytes]], BlockHeader], Awaitable[int]
        ],
        needs_state: Callable[[], bool],
        has_agents: Callable[[], bool],
        on_replaced: Callable[[bytes], None],
        interval: float,
        sync_max_lag_sec: int,
        wall_clock: Callable[[], float],
        on_error: Callable[[str], None],
        on_syncing: Callable[[bool], None],
        max_tracked: int = 100_000,
        gap_fill_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        early_state: Callable[[], bool] = lambda: False,
    ) -> None:
        """``clock`` stamps when each tx was first seen (the scheduler's clock: the latency
        metrics subtract the two). While ``early_state()`` holds, rounds never wait for a state
        read: they plan on the freshest cached block and read beside (see
        :mod:`~ioswarm.coordinator.senderstates`); else each round reads at the newest head."""
        self._node = node
        self.max_tracked = max_tracked
        self._head = head
        self._make_tasks = make_tasks
        self._needs_state = needs_state
        self._early_state = early_state
        self._has_agents = has_agents
        self._interval = interval
        self._gap_fill = gap_fill_interval if gap_fill_interval is not None else interval
        self._max_lag = sync_max_lag_sec
        self._wall = wall_clock
        self._clock = clock
        self._on_error = on_error
        self._on_syncing = on_syncing
        self._backoff = ErrorBackoff(interval)
        self.pool = PendingPool(max_tracked, on_replaced)
        self._pushed: list[tuple[PendingTx, bytes | None, float]] = []
        self._pushed_hashes: list[bytes] = []
        self.wake = asyncio.Event()
        self.push: PendingTxStream | None = None
        self._listed_at = -float("inf")
        # Node reads running beside the rounds ("gap-fill" listing, "raws" of unpushed txs).
        self._side: dict[str, asyncio.Task[None]] = {}
        self._latest = -1
        self._latest_at = -float("inf")
        self._listed_connects = -1
        self.states = SenderStates(node, max_tracked, self._newest_head, self.wake.set)
        self.node_calls = CallStats()
        self.seen = {"push": 0, "poll": 0}
        self.syncing = False
        self.polls = 0
        self.listings = 0
        self.stale_skipped = 0
        self.tip_refreshes = 0

    # -- push ----------------------------------------------------------------------------------

    def attach_push(self, url: str) -> PendingTxStream:
        """Take pending txs pushed over a WebSocket at ``url`` (run :meth:`run_push`)."""
        self.push = PendingTxStream(url, self._on_pushed, self._on_pushed_hashes)
        return self.push

    @property
    def push_live(self) -> bool:
        return self.push is not None and self.push.live

    @property
    def gap_filled(self) -> bool:
        """Whether the pool was listed since the push (re)connected."""
        return self.push is not None and self._listed_connects == self.push.connects

    def _on_pushed(self, txs: list[tuple[PendingTx, bytes | None]]) -> None:
        if len(self._pushed) < self.max_tracked:
            now = self._clock()  # seen when it arrived, not when a round takes it in
            self._pushed.extend((tx, raw, now) for tx, raw in txs)
        self.wake.set()

    def _on_pushed_hashes(self, hashes: list[bytes]) -> None:
        if len(self._pushed_hashes) < self.max_tracked:
            self._pushed_hashes.extend(hashes)
        self.wake.set()

    async def run_push(self, stop: asyncio.Event) -> None:
        """Keep the push subscription open until ``stop`` (the stream reconnects itself)."""
        if self.push is not None:
            await self.push.run(stop)
        else:
            await stop.wait()

    # -- rounds --------------------------------------------------------------------------------

    def forget(self, tx_hashes: list[bytes]) -> None:
        """Included transactions left the pool."""
        now = self._clock()
        for h in tx_hashes:
            self.pool.drop(h, now)

    def included(self, block: int, txs: list[IncludedTx]) -> None:
        """The block watcher processed ``block``: its txs left the pool, and rounds planning
        on an older block's state count them (:meth:`SenderStates.on_mined`)."""
        self.states.on_mined(block, txs, self.pool.get)
        self.forget([tx.tx_hash for tx in txs])

    def was_dispatched(self, tx_hash: bytes) -> bool:
        return self.pool.was_dispatched(tx_hash)

    def seen_at(self, tx_hash: bytes) -> float:
        """When ``tx_hash`` was first seen (``clock`` time), 0.0 when it is not known."""
        return self.pool.seen_at(tx_hash) or 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Run rounds until ``stop``, one as soon as a push arrives and at least every
        interval; node errors are retried here, anything else ends the loop. Every node
        request a round makes is counted in :attr:`node_calls`."""
        try:
            with counting_calls(self.node_calls):
                await retry_node_errors(
                    "mempool",
                    "mempool poller",
                    self.poll,
                    stop,
                    self._interval,
                    self._backoff,
                    self._on_error,
                    wake=self.wake,
                )
        finally:
            side, self._side = self._side, {}
            for task in side.values():
                task.cancel()
            await asyncio.gather(*side.values(), return_exceptions=True)
            await self.states.close()

    async def poll(self) -> None:
        """One round, its result dropped (the shape :func:`retry_node_errors` steps)."""
        await self.step()

    async def step(self) -> int:
        """One round; returns the number of tasks created."""
        self.wake.clear()
        await self._take_pushed()
        header = self._head.latest
        if header is None:
            return 0
        syncing = node_is_syncing(header.timestamp, self._wall(), self._max_lag)
        if syncing != self.syncing:
            self.syncing = syncing
            self._on_syncing(syncing)
            if syncing:
                log.warning(
                    "node is behind wall clock, pausing mempool polling head=%d lag=%.0fs",
                    header.number,
                    self._wall() - header.timestamp,
                )
            else:
                log.info("node caught up, mempool polling resumed head=%d", header.number)
        if syncing or not self._has_agents():
            return 0
        self.polls += 1
        for name, task in list(self._side.items()):
            if task.done():
                del self._side[name]
                task.result()  # its node error (retried) or its bug (the loop ends)
        if self._listing_due():
            if not self.push_live:
                await self._list()  # the poll is the only source: list before dispatching
            elif "gap-fill" not in self._side:
                # Beside pushes, a listing (slow on a big pool) must not hold them back.
                self._listed_at = self._clock()
                self._side["gap-fill"] = asyncio.create_task(self._list())
        return await self._dispatch(header)

    async def _list(self) -> None:
        asked = self._clock()
        connects = self.push.connects if self.push is not None else 0
        listed = await self._node.pending_transactions()
        new = self.pool.absorb_listing(listed, asked, self._clock())
        for tx in listed:
            if self.pool.wants_raw(tx.tx_hash):
                raw = self._node.listed_raw(tx.tx_hash)  # rebuilt from the listing: no fetch
                if raw is not None:
                    self.pool.raw[tx.tx_hash] = raw
        self.seen["poll"] += new
        self._listed_at = asked
        self._listed_connects = connects
        self.listings += 1
        if new:
            self.wake.set()  # dispatch what it found without waiting for the next round

    def _listing_due(self) -> bool:
        if not self.push_live or self.push is None:
            return True
        if self.push.connects != self._listed_connects:
            return True  # (re)connected: list once to fill the gap
        return self._clock() - self._listed_at >= self._gap_fill

    async def _take_pushed(self) -> None:
        now = self._clock()
        pushed, self._pushed = self._pushed, []
        hashes, self._pushed_hashes = self._pushed_hashes, []
        for tx, raw, arrived in pushed:
            if self.pool.add(tx, arrived):
                self.seen["push"] += 1
            if raw is not None and self.pool.wants_raw(tx.tx_hash):
                # Rebuilt from the push: no fetch, also for a tx a listing found first.
                self.pool.raw[tx.tx_hash] = raw
        if hashes:
            for tx in await self._node.pending_by_hash(hashes):
                self.seen["push"] += self.pool.add(tx, now)

    async def _dispatch(self, header: BlockHeader) -> int:
        waiting = self.pool.waiting()
        if not waiting:
            return 0
        need_raw = [tx.tx_hash for tx in waiting if tx.tx_hash not in self.pool.raw]
        if need_raw and not self.push_live:
            await self._read_raws(need_raw)  # polling only: every tx needs its bytes read
        elif need_raw and "raws" not in self._side:
            # Bytes not pushed (hash-only pushes, listed txs) are read beside the round: a slow
            # answer must not hold back the txs whose bytes came with their push.
            self._side["raws"] = asyncio.create_task(self._read_raws(need_raw))
        waiting = [tx for tx in waiting if tx.tx_hash in self.pool.raw]
        if not waiting:
            return 0
        states: dict[bytes, AccountSnapshot] = {}
        needs_state = self._needs_state()
        senders = [tx.sender for tx in waiting]
        if needs_state and self._early_state():
            # At a new head, senders with txs still pending (dispatched or not) or just
            # included are read too: their next txs then find their state read already.
            known, states = self.states.known(
                header, senders, lambda: [*self.pool.senders(), *self.states.mined_senders()]
            )
            if known is None:
                return 0  # nothing read yet: the read beside wakes the next round
            header = known
        elif needs_state:
            # The node's head is asked beside the state reads (most are cached): when the block
            # watcher has not caught up, a pushed tx may already be in the newer block, and its
            # sender's nonce there is what tells.
            newest, states = await asyncio.gather(
                self._newest_head(header), self.states.at(header, senders)
            )
            if newest.hash != header.hash:
                header = newest
                states = await self.states.at(header, senders)
        waiting = [tx for tx in waiting if tx.tx_hash in self.pool.raw]
        ready: list[Planned | PendingTx]
        if needs_state:
            senders_set = {t.sender for t in waiting}
            used = [tx for tx in waiting if self.states.slot_used(tx)]
            if used:
                self.pool.dispatched(tx.tx_hash for tx in used)  # never becomes a task
                self.stale_skipped += len(used)
                waiting = [tx for tx in waiting if not self.states.slot_used(tx)]
            # A slot's included tx is the predecessor that counts (none, a nonce gap, when the
            # pool never saw it), not the pool's tx it beat.
            pool_chains = self.pool.chains(senders_set)
            chains = [t for t in pool_chains if not self.states.slot_used(t)]
            chains += self.states.mined_since(senders_set)
            plan = plan_dispatch(waiting, chains, states)
            self.stale_skipped += len(plan.stale)
            self.pool.dispatched(tx.tx_hash for tx in plan.stale)  # never becomes a task
            ready = list(plan.ready)
        else:
            ready = list(waiting)
        if not ready:
            return 0
        hashes = [(r.tx if isinstance(r, Planned) else r).tx_hash for r in ready]
        items = [(item, self.pool.raw[h]) for item, h in zip(ready, hashes, strict=True)]
        created = await self._make_tasks(items, header)
        self.pool.dispatched(hashes)
        return created

    async def _newest_head(self, header: BlockHeader) -> BlockHeader:
        """The node's newest block when it is newer than ``header`` (it becomes the shared
        tip), else ``header``. The number is asked at most every ``HEAD_CHECK_SEC`` (rounds
        come many a second under load; a block comes every second or more)."""
        now = self._clock()
        if now - self._latest_at >= HEAD_CHECK_SEC:
            self._latest = await self._node.block_number()
            self._latest_at = now
        if self._latest <= header.number:
            return header
        tip = self._head.tip
        if tip is not None and tip.number == self._latest:
            return tip
        newer = await self._node.get_block(self._latest)
        if self._head.tip is None or newer.number > self._head.tip.number:
            self._head.tip = newer
        self.tip_refreshes += 1
        return newer

    async def _read_raws(self, hashes: list[bytes]) -> None:
        raws = await self._node.raw_transactions(hashes)
        now = self._clock()
        for h in hashes:
            if not self.pool.wants_raw(h):
                continue  # dispatched or gone meanwhile, or its push brought the bytes
            if h in raws:
                self.pool.raw[h] = raws[h]
            else:
                self.pool.drop(h, now)  # left the mempool before its bytes were read
        self.wake.set()

    def cached_state(self, address: bytes) -> AccountSnapshot | None:
        return self.states.get(address)

    def figures(self) -> dict[str, Any]:
        """What ``MempoolCollector`` exports: txs seen by source, listings, node cost."""
        return {
            "seen": dict(self.seen),
            "listings": self.listings,
            "requests": self.node_calls.requests,
            "seconds": self.node_calls.seconds,
            "push_live": self.push_live,
        }

    def tables(self) -> dict[str, TableSize]:
        """Sizes and bounds of what the poller remembers."""
        return {
            **self.pool.tables(),
            "mempool_state_cache": TableSize(len(self.states.states), self.max_tracked),
            "mempool_mined_since": TableSize(self.states.mined_count, self.max_tracked),
        }
