"""The coordinator: wires node, scheduler, registry, shadow book, agent gateway and views, and
owns the loops (lifecycle). Agent RPC behaviour is in :mod:`ioswarm.coordinator.gateway`, the
JSON views in :mod:`ioswarm.api.views`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry

from ioswarm.api.views import SwarmViews
from ioswarm.config import CoordinatorConfig
from ioswarm.coordinator.chainwatch import BlockWatcher, Head, MempoolPoller
from ioswarm.coordinator.comparisons import ComparisonCounter
from ioswarm.coordinator.dispatcher import Dispatcher
from ioswarm.coordinator.gateway import AgentGateway, Totals
from ioswarm.coordinator.integrity import IntegrityDesk
from ioswarm.coordinator.metrics import CoordinatorMetrics, TableCollector
from ioswarm.coordinator.prefetch import StatePrefetcher
from ioswarm.coordinator.reverify import Reverifier
from ioswarm.coordinator.supervisor import LoopSupervisor, RestartPolicy
from ioswarm.coordinator.taskmaker import ContextPredictor, TaskFactory
from ioswarm.core.mempool import Planned
from ioswarm.core.models import (
    AccountSnapshot,
    BlockHeader,
    IncludedTx,
    Level,
    PendingTx,
    Task,
)
from ioswarm.core.registry import AgentRegistry, WalletChange
from ioswarm.core.retention import DepartedAgents, TableSize, sweep_agents
from ioswarm.core.scheduling import Scheduler
from ioswarm.core.shadow import ShadowBook
from ioswarm.errors import ConfigError, NodeError
from ioswarm.node.adapter import JsonRpcNode, NodeClient
from ioswarm.node.canarytruth import CanaryTruthReader
from ioswarm.node.execution import ExecutionReader, TxDiff
from ioswarm.node.ws import ws_url_for
from ioswarm.rewards.epochs import EpochManager
from ioswarm.state.sync import StateSync

log = logging.getLogger("ioswarm.coordinator")


class Coordinator:
    """One coordinator beside one node. ``start``/``stop`` or ``async with``."""

    def __init__(
        self,
        config: CoordinatorConfig,
        node: NodeClient,
        registry: CollectorRegistry | None = None,
        execution: ExecutionReader | None = None,
        epochs: EpochManager | None = None,
        state_sync: StateSync | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        canary_rng: random.Random | None = None,
        restart_policy: RestartPolicy | None = None,
    ) -> None:
        """``canary_rng`` draws canary keys and picks which tasks get a canary; it defaults to
        one seeded from the OS (agents must not be able to guess either). ``restart_policy``
        says how often a crashed loop is restarted before the coordinator fails."""
        self.config = config
        self.node = node
        self.metrics = CoordinatorMetrics(registry or CollectorRegistry())
        started_at = wall_clock()
        self.chain_id = config.chain_id
        self.task_level = Level.parse(config.task_level)
        self.registry = AgentRegistry(
            config.max_agents, config.heartbeat_interval_sec, config.heartbeat_miss_limit
        )
        self.scheduler = Scheduler(
            task_timeout=config.task_timeout_ms / 1000,
            max_inflight_per_agent=config.max_inflight_per_agent,
            queue_size=config.retry_queue_size,
            max_attempts=config.max_task_attempts,
            max_agents=config.max_agents,
            timeout_per_gas=config.task_timeout_per_mgas_ms / 1000 / 1_000_000,
        )
        self.integrity = IntegrityDesk(
            config.canary_pct,
            config.decline_max_pct,
            self.scheduler,
            self.metrics,
            canary_rng or random.Random(secrets.randbits(256)),
        )
        self.head = Head()
        self.contexts = ContextPredictor(config.evm_fork, lambda: self.chain_id, self.head, node)
        self.dispatcher = Dispatcher(
            self.scheduler,
            self.metrics,
            clock,
            wall_clock,
            config.max_batch_size,
            lambda: self.chain_id,
            context=self.contexts.for_height,
            extra=self.integrity.canary_for,
            on_dropped=self.integrity.dropped,
            block_context=self.contexts.for_block,
        )
        self.shadow = ShadowBook(config.shadow_expiry_blocks, max_tracked=config.max_tracked_txs)
        self.departed = DepartedAgents(config.agent_retention_blocks, config.max_agents)
        self.totals = Totals()
        self.execution = execution
        self.epochs = epochs
        self.prefetcher = StatePrefetcher(execution) if execution is not None else None
        self.state_sync = state_sync
        self.tasks = TaskFactory(
            self.prefetcher,
            self._receiver_state,
            state_height=lambda: state_sync.height if state_sync is not None else None,
            seen_at=lambda tx_hash: self.poller.seen_at(tx_hash),  # noqa: PLW0108 (made below)
            clock=clock,
        )
        interval = config.poll_interval_ms / 1000
        self.watcher = BlockWatcher(
            node,
            self.head,
            self._on_block,
            interval / 2,
            self._node_error,
            truth=execution,
            wants_effects=lambda: self.task_level >= Level.L3 and self.config.shadow_mode,
            state_sink=self._on_block_state if state_sync is not None else None,
        )
        self.poller = _mempool_poller(self, interval, clock, wall_clock)
        self.comparisons = ComparisonCounter(self.metrics, self.integrity, self.registry, epochs)
        self.gateway = AgentGateway(
            config,
            lambda: self.chain_id,
            self.registry,
            self.scheduler,
            self.dispatcher,
            self.integrity,
            self.shadow,
            self.comparisons,
            self.metrics,
            self.totals,
            self.head,
            epochs,
            state_sync,
            clock,
        )
        self._stop = asyncio.Event()
        self.loops = LoopSupervisor(
            restart_policy,
            on_restart=lambda name: self.metrics.loop_restarts.labels(loop=name).inc(),
        )
        # Factories, not coroutines: a crashed loop is restarted with a fresh one.
        self.loops.add("dispatcher", self.dispatcher.run)
        self.loops.add("blocks", lambda: self.watcher.run(self._stop))
        self.loops.add("mempool", lambda: self.poller.run(self._stop))
        if self.poller.push is not None:
            self.loops.add("mempool-push", lambda: self.poller.run_push(self._stop))
        self.loops.add("evictor", self._evict_loop)
        self.reverifier = _reverifier(self)
        if self.reverifier is not None:
            self.loops.add("reverify", self.reverifier.run)
        if epochs is not None:
            self.loops.add("settler", epochs.run)
        for name in self.loops.states():
            self.metrics.loop_restarts.labels(loop=name)  # exported as 0 from the start
        self.metrics.watch_loops(self.loops.states)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.metrics.registry.register(TableCollector(self.tables, self._asyncio_tasks))
        self.views = SwarmViews(
            config,
            lambda: self.chain_id,
            self.task_level,
            self.registry,
            self.scheduler,
            self.dispatcher,
            self.integrity,
            self.shadow,
            self.totals,
            self.head,
            self.poller,
            self.loops,
            epochs,
            state_sync,
            clock,
            wall_clock,
            started_at,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def check_node(self) -> None:
        """Verify the node's chain id against the config (0 accepts the node's)."""
        node_chain = await self.node.chain_id()
        if self.config.chain_id and node_chain != self.config.chain_id:
            raise ConfigError(
                "chainId",
                f"node at {self.config.node_rpc_url} is on chain {node_chain}, "
                f"config expects {self.config.chain_id}",
            )
        self.chain_id = node_chain
        reader = None
        if self.execution is not None and self.task_level >= Level.L3:
            reader = CanaryTruthReader(self.execution.transport)
        self.integrity.start(
            node_chain,
            self._predicted_base_fee,
            reader,
            context=lambda height: ctx[1] if (ctx := self.contexts.for_height(height)) else None,
        )

    async def start(self) -> None:
        """Check the node, then start every loop. The node may go away later; loops wait it out."""
        await self.check_node()
        if self.task_level >= Level.L3 and self.execution is not None:
            await learn_execution_context(self.node, self.execution, self.contexts, self.chain_id)
        if self.state_sync is not None:
            # Before the watcher runs: the store is bootstrapped at a height it then follows.
            self.state_sync.chain_id = self.chain_id
            await self.state_sync.start()
        self._stop.clear()
        self._loop = asyncio.get_running_loop()
        with contextlib.suppress(NodeError):
            # Know the head before serving, so status and gauges never show "no block yet".
            await self.watcher.step()
            self.metrics.head_block.set(self.head.number)
        self.loops.start()
        log.info(
            "coordinator started chain_id=%d task_level=%s shadow=%s",
            self.chain_id,
            self.task_level.name,
            self.config.shadow_mode,
        )

    async def stop(self) -> None:
        """Stop the loops; open streams end so agents reconnect to the next coordinator."""
        self._stop.set()
        self.dispatcher.stop()
        await self.loops.stop()
        await self.integrity.stop()
        if self.epochs is not None:
            # After the watcher stopped: the last tallies are saved and the ledger closed.
            await self.epochs.stop()
        if self.state_sync is not None:
            await self.state_sync.close()

    async def wait(self) -> None:
        """Return once stopped; raise :class:`~ioswarm.coordinator.supervisor.LoopFailed` as
        soon as a loop crashed more often than the restart policy allows."""
        await self.loops.wait()

    async def __aenter__(self) -> Coordinator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _evict_loop(self) -> None:
        interval = max(0.5, self.config.heartbeat_interval_sec / 2)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
            gone = self.gateway.evict_stale()
            if gone:
                self._agents_left(gone)

    # -- memory -------------------------------------------------------------------------------

    def _agents_left(self, agent_ids: list[str]) -> None:
        """Evicted agents keep their history for agentRetentionBlocks (at most maxAgents of
        them): one that comes back within it finds its counts, conduct and throttle."""
        height = max(self.head.number, 0)
        for agent_id in agent_ids:
            self.departed.depart(agent_id, height)
        self._retire_agents(height)

    def _retire_agents(self, height: int) -> None:
        """Drop per-agent entries of agents neither registered nor retained."""
        self.departed.expire(height)
        registered = self.registry.agent_ids()
        for agent_id in registered:
            self.departed.returned(agent_id)
        sweep_agents(
            (self.shadow, self.integrity, self.comparisons, self.gateway.admission),
            [*registered, *self.departed.agent_ids()],
        )

    def tables(self) -> dict[str, TableSize]:
        """Every long-lived in-memory table: name -> (entries, bound), for ``/metrics``."""
        max_agents = self.config.max_agents
        out: dict[str, TableSize] = {
            "registry_agents": TableSize(len(self.registry), max_agents),
            **self.departed.tables(),
            **self.scheduler.tables(),
            **self.dispatcher.tables(),
            **self.shadow.tables(max_agents),
            **self.integrity.tables(max_agents),
            **self.comparisons.tables(max_agents),
            **self.gateway.admission.tables(max_agents),
            **self.poller.tables(),
            **self.contexts.tables(),
        }
        if self.prefetcher is not None:
            out.update(self.prefetcher.tables())
        if self.reverifier is not None:
            out.update(self.reverifier.tables())
        if self.state_sync is not None:
            out.update(self.state_sync.broadcaster.tables(max_agents))
        return out

    def _asyncio_tasks(self) -> int:
        loop = self._loop
        if loop is None or loop.is_closed():
            return 0
        return len(asyncio.all_tasks(loop))

    def _receiver_state(self, address: bytes) -> AccountSnapshot | None:
        return self.poller.cached_state(address)

    def _node_error(self, loop: str) -> None:
        self.metrics.node_errors.labels(loop=loop).inc()

    # -- tasks --------------------------------------------------------------------------------

    def _dispatch_levels(self) -> set[Level]:
        """One task per level (L1..taskLevel) at which some connected agent can work."""
        levels = set()
        for rec in self.registry.all():
            if self.dispatcher.has_stream(rec.agent_id):
                levels.add(min(rec.level, self.task_level))
        return levels

    async def _make_tasks(
        self, items: list[tuple[Planned | PendingTx, bytes]], header: BlockHeader
    ) -> int:
        levels = self._dispatch_levels()
        if not levels:
            return 0
        made = 0
        built: list[Task] = []
        if max(levels) >= Level.L3:
            await self.contexts.read_pending()
        for task in await self.tasks.build(items, header, levels):
            if self.dispatcher.submit(task):
                made += 1
                self.integrity.on_task(task, self.tasks.next_id)
                built.append(task)
        self.integrity.prepare_executed(built, self.head.number)
        self.totals.tasks_created += made
        return made

    def _predicted_base_fee(self, height: int) -> int:
        ctx = self.contexts.for_height(height)
        return ctx[1].base_fee if ctx is not None else 0

    async def _on_block_state(self, header: BlockHeader, traces: list[TxDiff]) -> None:
        if self.state_sync is not None:
            await self.state_sync.on_block(header, traces)

    def _on_block(self, header: BlockHeader, included: list[IncludedTx]) -> None:
        self.totals.blocks_seen += 1
        self.metrics.head_block.set(header.number)
        actual = self.contexts.on_block(header)
        if self.epochs is not None:
            # Before this block's comparisons, so they count in the epoch the block belongs to.
            counting = self.epochs.open_epoch
            self.epochs.on_block(header.number)
            if 0 <= counting < self.epochs.open_epoch:
                _log_wallet_changes(self.registry.apply_pending_wallets(), self.epochs.open_epoch)
        self.poller.included(header.number, included)
        if self.config.shadow_mode:
            for c in self.shadow.on_block(header.number, included, actual):
                self.comparisons.count(c)
            if self.reverifier is not None:
                self.reverifier.notify()
            self.shadow.expire(header.number)
            self.metrics.shadow_pending.set(self.shadow.pending)
        self._retire_agents(header.number)
        log.debug("block number=%d txs=%d", header.number, len(included))


def _log_wallet_changes(changes: Iterable[WalletChange], epoch: int) -> None:
    for change in changes:
        log.info(
            "wallet changed agent_id=%s old=%s new=%s epoch=%d",
            change.agent_id,
            change.old,
            change.new,
            epoch,
        )


def _reverifier(c: Coordinator) -> Reverifier | None:
    """The re-verifier, when the node can trace transactions and shadow mode is on."""
    if c.execution is None or not c.config.shadow_mode:
        return None
    cfg = c.config
    return Reverifier(
        c.shadow,
        c.execution,
        c.scheduler,
        c.tasks.next_id,
        lambda number: c.contexts.for_block(number) is not None,
        c.dispatcher.submit,
        c.dispatcher.withdraw,
        lambda result: c.metrics.reverify.labels(result=result).inc(),
        give_up_sec=2 * cfg.max_task_attempts * cfg.task_timeout_ms / 1000,
    )


__all__ = ["Coordinator", "NodeError"]


def _mempool_poller(
    c: Coordinator,
    interval: float,
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
) -> MempoolPoller:
    """The mempool loop's poller, pushed to over WebSocket when the node is a JSON-RPC node and
    ``nodeWsUrl`` is not ``off`` (the poll then fills in what a dropped connection missed)."""
    config = c.config
    poller = MempoolPoller(
        c.node,
        c.head,
        c._make_tasks,
        needs_state=lambda: max(c._dispatch_levels(), default=Level.L1) >= Level.L2,
        # L2 tasks may carry the state of the block before a new head while it is read (L3's
        # prefetch and execution context follow the head the round hands them).
        early_state=lambda: max(c._dispatch_levels(), default=Level.L1) == Level.L2,
        has_agents=lambda: c.dispatcher.stream_count() > 0,
        on_replaced=c.shadow.note_replaced,
        interval=interval,
        sync_max_lag_sec=config.sync_max_lag_sec,
        wall_clock=wall_clock,
        on_error=c._node_error,
        on_syncing=lambda s: c.metrics.node_syncing.set(1 if s else 0),
        max_tracked=config.max_tracked_txs,
        gap_fill_interval=config.mempool_gap_fill_ms / 1000,
        clock=clock,
    )
    if config.node_ws_url != "off" and isinstance(c.node, JsonRpcNode):
        poller.attach_push(config.node_ws_url or ws_url_for(config.node_rpc_url))
    c.metrics.mempool.figures = poller.figures
    return poller


async def learn_execution_context(
    node: NodeClient, execution: ExecutionReader, contexts: ContextPredictor, chain_id: int
) -> None:
    """What executing tasks need from the node once, at start: the last 256 block hashes
    (BLOCKHASH can ask for any of them) and how its EVM counts absent accounts."""
    latest = await node.block_number()
    numbers = range(max(0, latest - 255), latest + 1)
    contexts.remember(await execution.block_hashes(numbers))
    contexts.absent_accounts_exist = await execution.absent_accounts_exist(chain_id)
