"""The coordinator: wires node, scheduler, registry, shadow book and servers, and owns the loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from ioswarm.config import CoordinatorConfig
from ioswarm.coordinator.admission import SubmissionGate
from ioswarm.coordinator.chainwatch import BlockWatcher, Head, MempoolPoller
from ioswarm.coordinator.dispatcher import AgentStream, Dispatcher
from ioswarm.coordinator.integrity import IntegrityDesk
from ioswarm.coordinator.metrics import CoordinatorMetrics
from ioswarm.coordinator.prefetch import StatePrefetcher
from ioswarm.coordinator.supervisor import LoopSupervisor, RestartPolicy
from ioswarm.coordinator.taskmaker import ContextPredictor, TaskFactory
from ioswarm.coordinator.wire import level_from_pb, verdict_from_pb
from ioswarm.core.evidence import INCOMPLETE
from ioswarm.core.execshadow import PredictedContext
from ioswarm.core.execution import MISSING_STATE, STATE_HEIGHT_UNAVAILABLE
from ioswarm.core.mempool import Planned
from ioswarm.core.models import (
    AccountSnapshot,
    BlockHeader,
    IncludedTx,
    Level,
    PendingTx,
    Task,
    Verdict,
)
from ioswarm.core.registry import AgentRecord, AgentRegistry, RegistryFull
from ioswarm.core.scheduling import Completion, Scheduler
from ioswarm.core.shadow import Comparison, Outcome, ShadowBook
from ioswarm.errors import ConfigError, NodeError, RequestRefused
from ioswarm.node.adapter import NodeClient
from ioswarm.node.canarytruth import CanaryTruthReader
from ioswarm.node.execution import ExecutionReader, TxDiff
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.rewards.epochs import EpochManager
from ioswarm.state.sync import StateSync

log = logging.getLogger("ioswarm.coordinator")

DIRECTIVE_SHUTDOWN = "shutdown"
DIRECTIVE_REREGISTER = "reregister"
MISMATCH_WARNINGS_PER_AGENT = 20


@dataclass
class Totals:
    """Running totals the API and the demo report read."""

    tasks_created: int = 0
    results_accepted: int = 0
    results_late: int = 0
    results_declined: int = 0
    canary_results: int = 0  # accepted results for canary tasks (also in results_accepted)
    blocks_seen: int = 0


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
        self._clock = clock
        self._wall = wall_clock
        self.started_at = wall_clock()
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
        )
        self.integrity = IntegrityDesk(
            config.canary_pct,
            config.decline_max_pct,
            self.scheduler,
            self.metrics,
            canary_rng or random.Random(secrets.randbits(256)),
        )
        self.dispatcher = Dispatcher(
            self.scheduler,
            self.metrics,
            clock,
            wall_clock,
            config.max_batch_size,
            lambda: self.chain_id,
            context=self._current_context,
            extra=self.integrity.canary_for,
        )
        self.shadow = ShadowBook(config.shadow_expiry_blocks)
        self._mismatch_logs: dict[str, int] = {}
        self.head = Head()
        self.totals = Totals()
        self.admission = SubmissionGate(
            config.submit_rate_per_sec,
            config.submit_burst,
            config.max_inflight_per_agent,
            self.scheduler.classify,
            clock,
        )
        self._level_metrics: dict[Level, tuple[Any, Any, Any]] = {}
        self.execution = execution
        self.epochs = epochs
        self.prefetcher = StatePrefetcher(execution) if execution is not None else None
        self.contexts = ContextPredictor(
            config.evm_fork, lambda: self.chain_id, lambda: self.head.latest
        )
        self.state_sync = state_sync
        self.tasks = TaskFactory(
            self.prefetcher,
            self._receiver_state,
            state_height=lambda: state_sync.height if state_sync is not None else None,
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
        self.poller = MempoolPoller(
            node,
            self.head,
            self._make_tasks,
            needs_state=lambda: max(self._dispatch_levels(), default=Level.L1) >= Level.L2,
            has_agents=lambda: self.dispatcher.stream_count() > 0,
            on_replaced=self.shadow.note_replaced,
            interval=interval,
            sync_max_lag_sec=config.sync_max_lag_sec,
            wall_clock=wall_clock,
            on_error=self._node_error,
            on_syncing=lambda s: self.metrics.node_syncing.set(1 if s else 0),
        )
        self._update_agent_gauge()  # every level shows 0 before the first registration
        self._stop = asyncio.Event()
        self.loops = LoopSupervisor(
            restart_policy,
            on_restart=lambda name: self.metrics.loop_restarts.labels(loop=name).inc(),
        )
        # Factories, not coroutines: a crashed loop is restarted with a fresh one.
        self.loops.add("dispatcher", self.dispatcher.run)
        self.loops.add("blocks", lambda: self.watcher.run(self._stop))
        self.loops.add("mempool", lambda: self.poller.run(self._stop))
        self.loops.add("evictor", self._evict_loop)
        if epochs is not None:
            self.loops.add("settler", epochs.run)
        for name in self.loops.states():
            self.metrics.loop_restarts.labels(loop=name)  # exported as 0 from the start

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
            # BLOCKHASH can ask for any of the last 256 blocks: learn them once at start.
            latest = await self.node.block_number()
            numbers = range(max(0, latest - 255), latest + 1)
            self.contexts.remember(await self.execution.block_hashes(numbers))
        if self.state_sync is not None:
            # Before the watcher runs: the store is bootstrapped at a height it then follows.
            self.state_sync.chain_id = self.chain_id
            await self.state_sync.start()
        self._stop.clear()
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
            self.evict_stale()

    def evict_stale(self) -> list[str]:
        """Remove agents that missed heartbeatMissLimit heartbeats; their tasks move on."""
        gone = self.registry.stale(self._clock())
        for agent_id in gone:
            self.registry.remove(agent_id)
            self.dispatcher.disconnect(agent_id)
            self.admission.forget(agent_id)
            self.metrics.evictions.inc()
            log.warning("agent evicted agent_id=%s reason=missed_heartbeats", agent_id)
        if gone:
            self._update_agent_gauge()
        return gone

    def _current_context(self, height: int) -> tuple[pb.BlockContext, PredictedContext] | None:
        return self.contexts.for_height(height)

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
                for change in self.registry.apply_pending_wallets():
                    log.info(
                        "wallet changed agent_id=%s old=%s new=%s epoch=%d",
                        change.agent_id,
                        change.old,
                        change.new,
                        self.epochs.open_epoch,
                    )
        self.poller.forget([tx.tx_hash for tx in included])
        if self.config.shadow_mode:
            for c in self.shadow.on_block(header.number, included, actual):
                self._count(c)
            self.shadow.expire(header.number)
            self.metrics.shadow_pending.set(self.shadow.pending)
        log.debug("block number=%d txs=%d", header.number, len(included))

    def _count(self, c: Comparison, canary: bool = False) -> None:
        level = c.level.name
        if self.epochs is not None:
            rec = self.registry.get(c.agent_id)
            self.epochs.on_comparison(
                c.agent_id,
                rec.wallet if rec else "",
                c.outcome.value,
                canary=canary,
                detail=c.detail,
            )
        if canary:
            self.metrics.canary_verdicts.labels(level=level, outcome=c.outcome.value).inc()
            if c.outcome is Outcome.MISMATCHED:
                self.integrity.flag(c.agent_id, "canary_failed", f"task_id={c.task_id} {c.note}")
            return
        self.metrics.shadow.labels(level=level, outcome=c.outcome.value).inc()
        if c.outcome is Outcome.EXCLUDED:
            self.metrics.shadow_excluded.labels(level=level, reason=c.detail).inc()
        elif c.detail == INCOMPLETE:
            self.integrity.flag(
                c.agent_id, INCOMPLETE, f"task_id={c.task_id} level={level} missing={c.note}"
            )
        elif c.outcome is Outcome.MISMATCHED:
            # Each mismatch of an honest agent is worth a line (it points at a bug); a cheater
            # makes thousands, so past a few per agent they go to DEBUG, with one line saying so.
            seen = self._mismatch_logs.get(c.agent_id, 0) + 1
            self._mismatch_logs[c.agent_id] = seen
            level_no = logging.WARNING if seen <= MISMATCH_WARNINGS_PER_AGENT else logging.DEBUG
            log.log(
                level_no,
                "shadow mismatch agent_id=%s task_id=%d level=%s field=%s %s",
                c.agent_id,
                c.task_id,
                level,
                c.detail,
                c.note,
            )
            if seen == MISMATCH_WARNINGS_PER_AGENT:
                log.warning(
                    "agent has %d shadow mismatches agent_id=%s; further ones are logged at DEBUG",
                    seen,
                    c.agent_id,
                )

    # -- RPC behaviour (the servicer maps these to gRPC) --------------------------------------

    def register(self, req: pb.RegisterRequest) -> pb.RegisterResponse:
        level = level_from_pb(req.capability)
        if level is None:
            raise RequestRefused("INVALID_ARGUMENT", f"unknown capability level {req.capability}")
        if len(req.wallet_address) > 64 or len(req.region) > 64 or len(req.version) > 64:
            raise RequestRefused(
                "INVALID_ARGUMENT", "wallet_address, region, version: 64 chars max"
            )
        known = self.registry.get(req.agent_id)
        asked = (known.wallet, known.pending_wallet) if known is not None else None
        try:
            rec = self.registry.register(
                req.agent_id,
                level,
                req.wallet_address,
                req.region,
                req.version,
                self._clock(),
                # The ledger pays the wallet registered when the work was done: a new wallet
                # counts from the next epoch (at once when rewards are off).
                defer_wallet=self.epochs is not None,
            )
        except RegistryFull as exc:
            raise RequestRefused("RESOURCE_EXHAUSTED", str(exc)) from exc
        if asked is not None and req.wallet_address not in asked:
            epochs = self.epochs
            effective = (
                epochs.current_epoch() + 1 if epochs is not None else self._epoch_stats(0.0)[0]
            )
            log.warning(
                "wallet change requested agent_id=%s old=%s new=%s effective_epoch=%d",
                rec.agent_id,
                asked[0],
                req.wallet_address,
                effective,
            )
        if self.dispatcher.has_stream(req.agent_id):
            self.scheduler.add_agent(req.agent_id, level)
        self._update_agent_gauge()
        log.info(
            "agent registered agent_id=%s level=%s region=%s version=%s",
            rec.agent_id,
            level.name,
            rec.region,
            rec.version,
        )
        return pb.RegisterResponse(
            accepted=True,
            heartbeat_interval_sec=self.config.heartbeat_interval_sec,
            chain_id=self.chain_id,
        )

    def _result_metrics(self, level: Level) -> tuple[Any, Any, Any]:
        """Accepted-results counter and latency histograms of a level; ``labels()`` is looked
        up once per level, not three times per result."""
        children = self._level_metrics.get(level)
        if children is None:
            name = level.name
            children = (
                self.metrics.results.labels(level=name, disposition="accepted"),
                self.metrics.task_latency.labels(level=name),
                self.metrics.agent_latency.labels(level=name),
            )
            self._level_metrics[level] = children
        return children

    def _update_agent_gauge(self) -> None:
        for level, count in self.registry.by_level().items():
            self.metrics.agents.labels(level=level).set(count)

    def open_stream(self, agent_id: str, req: pb.GetTasksRequest) -> AgentStream:
        rec = self.registry.get(agent_id)
        if rec is None:
            raise RequestRefused(
                "FAILED_PRECONDITION", "agent is not registered; call Register first"
            )
        level = rec.level
        if req.max_level:
            asked = level_from_pb(req.max_level)
            if asked is None:
                raise RequestRefused("INVALID_ARGUMENT", f"unknown max_level {req.max_level}")
            level = min(level, asked)
        self.registry.touch(agent_id, self._clock())
        stream = self.dispatcher.open_stream(agent_id, level)
        self.integrity.reconnected(agent_id)
        return stream

    def close_stream(self, stream: AgentStream) -> None:
        self.dispatcher.close_stream(stream)

    def heartbeat(self, agent_id: str, req: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        rec = self.registry.touch(agent_id, self._clock())
        if rec is None:
            return pb.HeartbeatResponse(alive=False, directive=DIRECTIVE_REREGISTER)
        rec.tasks_processed = req.tasks_processed
        rec.tasks_pending = req.tasks_pending
        if req.state_height and req.state_hash and self.state_sync is not None:
            self._check_agent_state(rec, req.state_height, bytes(req.state_hash))
        resp = pb.HeartbeatResponse(alive=True, directive=rec.directive)
        if self.epochs is not None and (notice := self.epochs.payout_notice(agent_id)):
            resp.payout.CopyFrom(pb.PayoutInfo(**notice.proto_fields()))
        return resp

    def _check_agent_state(self, rec: AgentRecord, height: int, agent_hash: bytes) -> None:
        """Compare an L4 agent's reported state hash with ours at the same height."""
        assert self.state_sync is not None
        ours = self.state_sync.hash_at(height)
        if ours is None:  # pruned, not reached yet, or rebuilding: nothing to compare with
            rec.state.height = height
            return
        equal = ours == agent_hash
        first = rec.state.checked == 0
        if rec.state.record(height, equal):
            if equal and first:
                # Its state is verified: declines from before (while it bootstrapped) are
                # forgiven, and a throttle they caused is lifted.
                self.integrity.forgive(rec.agent_id, self.registry.agent_ids)
            self.metrics.l4_state_checks.labels("equal" if equal else "different").inc()
            if not equal:
                log.warning(
                    "L4 state differs agent_id=%s height=%d agent=%s coordinator=%s",
                    rec.agent_id,
                    height,
                    agent_hash.hex(),
                    ours.hex(),
                )

    def request_shutdown(self, agent_id: str) -> bool:
        """Tell an agent (in its next heartbeat) to shut down."""
        rec = self.registry.get(agent_id)
        if rec is None:
            return False
        rec.directive = DIRECTIVE_SHUTDOWN
        return True

    def submit(self, agent_id: str, batch: pb.BatchResult) -> pb.SubmitResponse:
        """Take a batch of results, all or nothing on any refusal (each refusal is counted
        against the agent)."""
        try:
            return self._submit(agent_id, batch)
        except RequestRefused as exc:
            if exc.status != "RESOURCE_EXHAUSTED":  # a rate limit is not misconduct
                self.integrity.book.note_refused(agent_id, exc.status)
            raise

    def note_refused(self, agent_id: str, status: str) -> None:
        """A call of an authenticated agent was refused (e.g. a body id not its own)."""
        if agent_id in self.registry:
            self.integrity.book.note_refused(agent_id, status)

    def _submit(self, agent_id: str, batch: pb.BatchResult) -> pb.SubmitResponse:
        if agent_id not in self.registry:
            raise RequestRefused("FAILED_PRECONDITION", "agent is not registered")
        ids, kinds = self.admission.admit(agent_id, batch.results)
        accepted = 0
        agent_rec = self.registry.get(agent_id)
        wallet = agent_rec.wallet if agent_rec else ""
        per_level: dict[Level, int] = {}
        finish = self.dispatcher.finish
        integrity = self.integrity.book
        agents = self.registry.agent_ids
        for r, task_id, kind in zip(batch.results, ids, kinds, strict=True):
            if kind is Completion.LATE:
                self.totals.results_late += 1
                integrity.note_late(agent_id)
                self.metrics.results.labels(level="any", disposition="late").inc()
                continue
            if r.declined:
                self._decline(agent_id, task_id, r)
                continue
            self.integrity.answered(agent_id, False, agents)
            done = finish(agent_id, task_id)
            if done is None:
                continue
            task, elapsed, predicted = done
            accepted += 1
            if self.epochs is not None:
                self.epochs.on_result(agent_id, wallet)
            per_level[task.level] = per_level.get(task.level, 0) + 1
            _, task_latency, agent_latency = self._result_metrics(task.level)
            task_latency.observe(elapsed)
            agent_latency.observe(r.latency_us / 1e6)
            coinbase = predicted.coinbase if predicted is not None else b""
            if integrity.is_canary(task_id):
                self.totals.canary_results += 1
                verdict = verdict_from_pb(r, task.level, coinbase)
                c = integrity.judge_canary(agent_id, task, verdict)
                if c is not None:
                    self._count(c, canary=True)
            elif self.config.shadow_mode:
                verdict = verdict_from_pb(r, task.level, coinbase)
                c = self.shadow.record(agent_id, task, verdict, predicted)
                if c is not None:
                    self._count(c)
        for level, count in per_level.items():
            self._result_metrics(level)[0].inc(count)
        self.totals.results_accepted += accepted
        rec = self.registry.touch(agent_id, self._clock())
        if rec is not None:
            rec.results_accepted += accepted
        self.metrics.shadow_pending.set(self.shadow.pending)
        return pb.SubmitResponse(accepted=True, accepted_count=accepted)

    def _decline(self, agent_id: str, task_id: int, r: pb.TaskResult) -> None:
        """Not an answer (e.g. the agent's state is not at the task's height): the task goes
        to another agent and the decline earns nothing. A claim of missing state is checked
        against what was sent and what the chain touched, like any verdict."""
        self.totals.results_declined += 1
        self.metrics.results.labels(level="any", disposition="declined").inc()
        task = self.scheduler.task(task_id)
        rec = self.registry.get(agent_id)
        # An L4 agent whose state hash the coordinator has verified (and never found different)
        # declines a height honestly: tasks waited past it. Excused from the throttle; still
        # earns nothing.
        excused = (
            r.reject_reason == STATE_HEIGHT_UNAVAILABLE
            and rec is not None
            and rec.state.checked > 0
            and rec.state.mismatched == 0
        )
        self.integrity.answered(agent_id, True, self.registry.agent_ids, excused)
        if (
            task is not None
            and task.level >= Level.L3
            and r.reject_reason == MISSING_STATE
            and self.config.shadow_mode
            and not self.integrity.book.is_canary(task_id)
        ):
            claim = Verdict(
                task_id,
                valid=False,
                reject_reason=MISSING_STATE,
                sender=bytes(r.sender),
                declined=True,
                detail=r.exec_error[:200],
            )
            c = self.shadow.record(agent_id, task, claim, self.dispatcher.predicted(task_id))
            if c is not None:
                self._count(c)
        self.dispatcher.release(agent_id, task_id)

    # -- views for the HTTP API and reports ---------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The reference /api/stats document."""
        total = self.shadow.totals()
        epoch, epoch_tasks, epoch_accuracy = self._epoch_stats(total.accuracy)
        return {
            "active_agents": len(self.registry),
            "agents_by_level": self.registry.by_level(),
            "tasks_dispatched": self.dispatcher.dispatched_total,
            "tasks_received": self.totals.results_accepted,
            "shadow_accuracy": round(total.accuracy * 100, 4),
            "shadow_compared": total.compared,
            "shadow_matched": total.matched,
            "current_epoch": epoch,
            "epoch_tasks": epoch_tasks,
            "epoch_accuracy": round(epoch_accuracy * 100, 4),
            "task_level": self.task_level.name,
            "uptime": _uptime(self._wall() - self.started_at),
            "updated_at": _iso(self._wall()),
        }

    def _epoch_stats(self, overall_accuracy: float) -> tuple[int, int, float]:
        """(epoch, tasks in it, accuracy in it); without an epoch manager, all-time figures."""
        if self.epochs is not None:
            return self.epochs.current_epoch_stats()
        epoch = max(self.head.number, 0) // self.config.reward.epoch_blocks
        return epoch, self.totals.results_accepted, overall_accuracy

    def epoch_view(self) -> dict[str, Any]:
        if self.epochs is None:
            return {"enabled": False}
        return self.epochs.epoch_view()

    def rewards_view(self, agent_id: str) -> dict[str, Any]:
        if self.epochs is None:
            return {"agent_id": agent_id, "history": [], "enabled": False}
        return self.epochs.rewards_view(agent_id)

    def status(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "head_block": self.head.number,
            "node_syncing": self.poller.syncing,
            "task_level": self.task_level.name,
            "shadow_mode": self.config.shadow_mode,
            "agents": len(self.registry),
            "streams": self.dispatcher.stream_count(),
            "queue_depth": self.scheduler.queued,
            "open_tasks": self.scheduler.open_tasks,
            "tasks_created": self.totals.tasks_created,
            "tasks_dispatched": self.dispatcher.dispatched_total,
            "tasks_reassigned": self.dispatcher.reassigned_total,
            "tasks_dropped": self.dispatcher.dropped_total,
            "results_accepted": self.totals.results_accepted,
            "results_late": self.totals.results_late,
            "results_declined": self.totals.results_declined,
            "canary_results": self.totals.canary_results,
            "blocks_seen": self.totals.blocks_seen,
            "uptime_sec": round(self._wall() - self.started_at, 1),
            **self._l4_status(),
        }

    def _l4_status(self) -> dict[str, Any]:
        sync = self.state_sync
        if sync is None:
            return {}
        return {
            "l4_state_height": sync.height,
            "l4_diff_subscribers": sync.broadcaster.subscriber_count,
            "l4_subscribers_dropped": sync.broadcaster.dropped_total,
            "l4_rebootstraps": sync.rebootstraps,
        }

    def agents(self) -> list[dict[str, Any]]:
        now = self._clock()
        out = []
        for rec in sorted(self.registry.all(), key=lambda r: r.agent_id):
            counts = self.shadow.by_agent.get(rec.agent_id)
            out.append(
                {
                    "agent_id": rec.agent_id,
                    "level": rec.level.name,
                    "wallet": rec.wallet,
                    "pending_wallet": rec.pending_wallet,
                    "region": rec.region,
                    "version": rec.version,
                    "connected": self.dispatcher.has_stream(rec.agent_id),
                    "last_heartbeat_sec_ago": round(now - rec.last_seen, 1),
                    "inflight": self.scheduler.inflight(rec.agent_id),
                    "tasks_assigned": self.scheduler.assigned_total(rec.agent_id),
                    "results_accepted": rec.results_accepted,
                    "shadow": counts.as_dict() if counts else None,
                    "l4_state": rec.state.as_dict() if rec.level >= Level.L4 else None,
                }
            )
        for row in out:
            row.update(self.conduct_view(str(row["agent_id"])))
        return out

    def conduct_view(self, agent_id: str) -> dict[str, Any]:
        """Canaries, refusals, declines and throttle of one agent, and whether (and why not)
        it earns in the open epoch."""
        standing = self.epochs.standing(agent_id) if self.epochs is not None else None
        return self.integrity.view(agent_id, self.shadow.by_agent.get(agent_id), standing)

    def leaderboard(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for rec in self.registry.all():
            c = self.shadow.by_agent.get(rec.agent_id)
            rows.append(
                {
                    "agent_id": rec.agent_id,
                    "level": rec.level.name,
                    "results": rec.results_accepted,
                    "matched": c.matched if c else 0,
                    "accuracy_pct": round((c.accuracy if c else 1.0) * 100, 4),
                }
            )
        rows.sort(key=lambda r: (-int(r["matched"]), r["agent_id"]))
        for rank, row in enumerate(rows, 1):
            row["rank"] = rank
        return rows

    def shadow_view(self) -> dict[str, Any]:
        return {
            "enabled": self.config.shadow_mode,
            "pending": self.shadow.pending,
            "expired": self.shadow.expired,
            "levels": {lv.name: c.as_dict() for lv, c in sorted(self.shadow.by_level.items())},
            "total": self.shadow.totals().as_dict(),
        }

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(ok, detail): ok while every loop runs; detail has each loop's state and restarts,
        and whether settlement is halted (shown, not fatal: validation goes on)."""
        loops_ok = self.loops.healthy
        settler = self.epochs.settler if self.epochs is not None else None
        return loops_ok, {
            "loops_running": loops_ok,
            "loops": self.loops.states(),
            "head_block": self.head.number,
            "node_syncing": self.poller.syncing,
            # Settlement halted on a foreign chain is shown, not fatal: validation goes on.
            "settlement_halted": settler.halt_reason if settler else None,
            "settlement_halt_detail": settler.halted if settler else None,
        }


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{(s % 3600) // 60}m{s % 60}s"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


__all__ = ["Coordinator", "NodeError"]
