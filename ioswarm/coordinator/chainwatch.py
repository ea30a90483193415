"""The two loops that read the node: the mempool poller and the block watcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ioswarm.core.execshadow import effects_from_diff
from ioswarm.core.mempool import Planned, plan_dispatch
from ioswarm.core.models import AccountSnapshot, BlockHeader, IncludedTx, PendingTx
from ioswarm.core.retention import TableSize
from ioswarm.core.syncguard import node_is_syncing
from ioswarm.errors import NodeError, NodeUnreachable
from ioswarm.node.adapter import NodeClient
from ioswarm.node.execution import ExecutionReader, TxDiff

log = logging.getLogger("ioswarm.chain")

MAX_CATCHUP_BLOCKS = 64
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
) -> None:
    """Run ``step`` every ``interval`` until ``stop``; after a node error, wait ``backoff``.

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
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


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
    """Reads pending transactions and turns each new one into tasks exactly once.

    What it remembers follows the mempool: a dispatched hash and a (sender, nonce) slot's
    owner are kept while the node still lists the transaction (a tx that left the mempool,
    included or dropped, is not dispatched again unless the node lists it again), and never
    more than ``max_tracked`` of each (``maxTrackedTxs``; the oldest go first).
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
    ) -> None:
        self._node = node
        self.max_tracked = max_tracked
        self._head = head
        self._make_tasks = make_tasks
        self._needs_state = needs_state
        self._has_agents = has_agents
        self._on_replaced = on_replaced
        self._interval = interval
        self._max_lag = sync_max_lag_sec
        self._wall = wall_clock
        self._on_error = on_error
        self._on_syncing = on_syncing
        self._backoff = ErrorBackoff(interval)
        self._dispatched: OrderedDict[bytes, None] = OrderedDict()
        self._slot_owner: dict[tuple[bytes, int], bytes] = {}
        self._state_cache: dict[bytes, AccountSnapshot] = {}
        self._state_cache_block = -1
        self.syncing = False
        self.polls = 0
        self.stale_skipped = 0
        self.tip_refreshes = 0

    def forget(self, tx_hashes: list[bytes]) -> None:
        """Included transactions need no memory of having been dispatched."""
        for h in tx_hashes:
            self._dispatched.pop(h, None)

    def was_dispatched(self, tx_hash: bytes) -> bool:
        return tx_hash in self._dispatched

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``; node errors are retried here, anything else ends the loop."""
        await retry_node_errors(
            "mempool",
            "mempool poller",
            self.poll,
            stop,
            self._interval,
            self._backoff,
            self._on_error,
        )

    async def poll(self) -> None:
        """One poll, its result dropped (the shape :func:`retry_node_errors` steps)."""
        await self.step()

    async def step(self) -> int:
        """One poll; returns the number of tasks created."""
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
        pending = await self._node.pending_transactions()
        self._note_replacements(pending)
        self._keep_listed(pending)
        new = [tx for tx in pending if tx.tx_hash not in self._dispatched]
        if not new:
            return 0
        ready: list[Planned | PendingTx]
        if self._needs_state():
            header = await self._newest_head(header)
            states = await self._head_states(new, header.number)
            plan = plan_dispatch(new, pending, states)
            self.stale_skipped += len(plan.stale)
            ready = list(plan.ready)
        else:
            ready = list(new)
        if not ready:
            return 0
        hashes = [(r.tx if isinstance(r, Planned) else r).tx_hash for r in ready]
        raws = await self._node.raw_transactions(hashes)
        # A tx that left the mempool between the two calls has no raw bytes: skip it.
        items = [(item, raws[h]) for item, h in zip(ready, hashes, strict=True) if h in raws]
        created = await self._make_tasks(items, header)
        for h in hashes:
            if h in raws:
                self._dispatched[h] = None
        while len(self._dispatched) > self.max_tracked:
            self._dispatched.popitem(last=False)
        return created

    async def _newest_head(self, header: BlockHeader) -> BlockHeader:
        """The node's latest block, read now: the watcher notices a new block up to half a
        poll late, and state read for new work in that window would be a block old (the tx
        lands after a block that already changed what it reads). One cheap call per poll with
        new transactions; the watcher still processes the block in its own step."""
        latest = await self._node.block_number()
        if latest > header.number:
            tip = await self._node.get_block(latest, full=False)
            if self._head.tip is None or tip.number > self._head.tip.number:
                self._head.tip = tip
            self.tip_refreshes += 1
            return tip
        return header

    def _keep_listed(self, pending: list[PendingTx]) -> None:
        """Forget dispatched hashes the node no longer lists (included, replaced, evicted)."""
        if not self._dispatched:
            return
        listed = {tx.tx_hash for tx in pending}
        for h in [h for h in self._dispatched if h not in listed]:
            del self._dispatched[h]

    def _note_replacements(self, pending: list[PendingTx]) -> None:
        for tx in pending:
            key = (tx.sender, tx.nonce)
            old = self._slot_owner.get(key)
            if old is not None and old != tx.tx_hash:
                self._on_replaced(old)
            self._slot_owner[key] = tx.tx_hash
        # After the comparison: a replacement usually pushes its predecessor out of the pool
        # in the same poll that shows it, so the old owner must be known until then.
        live = {(tx.sender, tx.nonce) for tx in pending}
        if len(live) != len(self._slot_owner):
            self._slot_owner = {k: v for k, v in self._slot_owner.items() if k in live}
        while len(self._slot_owner) > self.max_tracked:
            del self._slot_owner[next(iter(self._slot_owner))]

    async def _head_states(self, txs: list[PendingTx], block: int) -> dict[bytes, AccountSnapshot]:
        """Sender and receiver state at the head block; cached until the head moves."""
        if block != self._state_cache_block:
            self._state_cache = {}
            self._state_cache_block = block
        wanted = {tx.sender for tx in txs} | {tx.to for tx in txs if tx.to is not None}
        missing = [a for a in wanted if a not in self._state_cache]
        if len(self._state_cache) + len(missing) > self.max_tracked:
            self._state_cache = {}  # a huge mempool within one block: start over
            missing = list(wanted)
        if missing:
            self._state_cache.update(await self._node.accounts(missing, block))
        return self._state_cache

    def cached_state(self, address: bytes) -> AccountSnapshot | None:
        return self._state_cache.get(address)

    def tables(self) -> dict[str, TableSize]:
        """Sizes and bounds of what the poller remembers."""
        bound = self.max_tracked
        return {
            "mempool_dispatched": TableSize(len(self._dispatched), bound),
            "mempool_slot_owners": TableSize(len(self._slot_owner), bound),
            "mempool_state_cache": TableSize(len(self._state_cache), bound),
        }
