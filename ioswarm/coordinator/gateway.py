"""What agents can do: register, open a task stream, heartbeat, submit results.

The gRPC servicer maps each RPC onto an :class:`AgentGateway` method; refusals are
:class:`~ioswarm.errors.RequestRefused` with the status the servicer answers with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ioswarm.config import CoordinatorConfig
from ioswarm.coordinator.admission import SubmissionGate
from ioswarm.coordinator.chainwatch import Head
from ioswarm.coordinator.comparisons import ComparisonCounter
from ioswarm.coordinator.dispatcher import AgentStream, Dispatcher
from ioswarm.coordinator.integrity import IntegrityDesk
from ioswarm.coordinator.metrics import CoordinatorMetrics, HistogramBatch, TaskStages
from ioswarm.coordinator.wire import level_from_pb, verdict_from_pb
from ioswarm.core.address import canonical_address
from ioswarm.core.execution import MISSING_STATE, STATE_HEIGHT_UNAVAILABLE
from ioswarm.core.iotexaddr import is_io_address
from ioswarm.core.models import Level, Verdict
from ioswarm.core.refjson import JSON_LEVELS, Codec
from ioswarm.core.registry import AgentRecord, AgentRegistry, RegistryFull
from ioswarm.core.scheduling import Completion, Scheduler
from ioswarm.core.shadow import ShadowBook
from ioswarm.errors import RequestRefused
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import Directive
from ioswarm.rewards.epochs import EpochManager
from ioswarm.state.sync import StateSync

log = logging.getLogger("ioswarm.coordinator")


@dataclass
class Totals:
    """Running totals the API and the demo report read."""

    tasks_created: int = 0
    results_accepted: int = 0
    results_late: int = 0
    results_declined: int = 0
    canary_results: int = 0  # accepted results for canary tasks (also in results_accepted)
    blocks_seen: int = 0
    latency_sum_sec: float = 0.0  # dispatch-to-result time of accepted results, summed


class AgentGateway:
    """Agent-facing behaviour of one coordinator: registration, streams, heartbeats (with the
    L4 state-hash check), eviction, and results behind the :class:`SubmissionGate`."""

    def __init__(
        self,
        config: CoordinatorConfig,
        chain_id: Callable[[], int],
        registry: AgentRegistry,
        scheduler: Scheduler,
        dispatcher: Dispatcher,
        integrity: IntegrityDesk,
        shadow: ShadowBook,
        comparisons: ComparisonCounter,
        metrics: CoordinatorMetrics,
        totals: Totals,
        head: Head,
        epochs: EpochManager | None,
        state_sync: StateSync | None,
        clock: Callable[[], float],
    ) -> None:
        """``chain_id`` is read at each registration: it is the node's once the coordinator
        checked it."""
        self._config = config
        self._chain_id = chain_id
        self._registry = registry
        self._scheduler = scheduler
        self._dispatcher = dispatcher
        self._integrity = integrity
        self._shadow = shadow
        self._comparisons = comparisons
        self._metrics = metrics
        self._totals = totals
        self._head = head
        self._epochs = epochs
        self._state_sync = state_sync
        self._clock = clock
        self._stages = TaskStages(metrics.task_stage)
        self.admission = SubmissionGate(
            config.submit_rate_per_sec,
            config.submit_burst,
            config.max_inflight_per_agent,
            scheduler.classify,
            clock,
        )
        self._level_metrics: dict[Level, tuple[Any, HistogramBatch, HistogramBatch]] = {}
        self._update_agent_gauge()  # every level shows 0 before the first registration

    def register(
        self, req: pb.RegisterRequest, codec: Codec = Codec.PROTOBUF
    ) -> pb.RegisterResponse:
        """Add or update an agent; a new wallet counts from the next epoch.

        ``codec`` is the one the coordinator saw the call in; it becomes the agent's (see
        :meth:`check_codec`). The reference JSON codec is served at L1 and L2 only.
        """
        level, wallet = _registration(req, codec)
        known = self._registry.get(req.agent_id)
        if (
            known is not None
            and known.codec is not codec
            and self._dispatcher.has_stream(req.agent_id)
        ):
            raise RequestRefused(
                "FAILED_PRECONDITION",
                f"agent registered in the {known.codec} codec and its task stream is open; "
                f"close it before registering in {codec}",
            )
        asked = (known.wallet, known.pending_wallet) if known is not None else None
        try:
            rec = self._registry.register(
                req.agent_id,
                level,
                wallet,
                req.region,
                req.version,
                self._clock(),
                # The ledger pays the wallet registered when the work was done: a new wallet
                # counts from the next epoch (at once when rewards are off).
                defer_wallet=self._epochs is not None,
            )
        except RegistryFull as exc:
            raise RequestRefused("RESOURCE_EXHAUSTED", str(exc)) from exc
        if asked is not None and wallet not in asked:
            epochs = self._epochs
            effective = (
                epochs.current_epoch() + 1
                if epochs is not None
                else max(self._head.number, 0) // self._config.reward.epoch_blocks
            )
            log.warning(
                "wallet change requested agent_id=%s old=%s new=%s effective_epoch=%d",
                rec.agent_id,
                asked[0],
                wallet,
                effective,
            )
        rec.codec = codec
        if self._dispatcher.has_stream(req.agent_id):
            self._scheduler.add_agent(req.agent_id, level)
        self._update_agent_gauge()
        log.info(
            "agent registered agent_id=%s level=%s region=%s version=%s codec=%s",
            rec.agent_id,
            level.name,
            rec.region,
            rec.version,
            codec,
        )
        return pb.RegisterResponse(
            accepted=True,
            heartbeat_interval_sec=self._config.heartbeat_interval_sec,
            chain_id=self._chain_id(),
        )

    def check_codec(self, agent_id: str, codec: Codec) -> None:
        """Refuse a call in another codec than the one the agent registered in: the codec is
        fixed while the agent is registered, so that an answer's evidence rule (the JSON
        waiver) follows from how the coordinator itself received the agent's calls."""
        rec = self._registry.get(agent_id)
        if rec is not None and rec.codec is not codec:
            raise RequestRefused(
                "FAILED_PRECONDITION",
                f"agent registered in the {rec.codec} codec; a call in {codec} is refused "
                "(the codec is fixed at registration: register again to change it)",
            )

    def _result_metrics(self, level: Level) -> tuple[Any, HistogramBatch, HistogramBatch]:
        """Accepted-results counter and latency histograms of a level; ``labels()`` is looked
        up once per level, not three times per result, and the histograms are written once
        per submitted batch (``submit`` flushes them)."""
        children = self._level_metrics.get(level)
        if children is None:
            name = level.name
            children = (
                self._metrics.results.labels(level=name, disposition="accepted"),
                HistogramBatch(self._metrics.task_latency.labels(level=name)),
                HistogramBatch(self._metrics.agent_latency.labels(level=name)),
            )
            self._level_metrics[level] = children
        return children

    def _update_agent_gauge(self) -> None:
        for level, count in self._registry.by_level().items():
            self._metrics.agents.labels(level=level).set(count)

    def evict_stale(self) -> list[str]:
        """Remove agents that missed heartbeatMissLimit heartbeats; their tasks move on."""
        gone = self._registry.stale(self._clock())
        for agent_id in gone:
            self._registry.remove(agent_id)
            self._dispatcher.disconnect(agent_id)
            self.admission.forget(agent_id)
            self._metrics.evictions.inc()
            log.warning("agent evicted agent_id=%s reason=missed_heartbeats", agent_id)
        if gone:
            self._update_agent_gauge()
        return gone

    def open_stream(self, agent_id: str, req: pb.GetTasksRequest) -> AgentStream:
        """The task stream of a registered agent, at its level or the lower one it asks for."""
        rec = self._registry.get(agent_id)
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
        self._registry.touch(agent_id, self._clock())
        stream = self._dispatcher.open_stream(agent_id, level)
        self._integrity.reconnected(agent_id)
        return stream

    def close_stream(self, stream: AgentStream) -> None:
        """The agent's stream ended; its open tasks go back to the queue."""
        self._dispatcher.close_stream(stream)

    def heartbeat(self, agent_id: str, req: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        """Mark the agent alive, check its L4 state hash, hand it a directive and payout."""
        rec = self._registry.touch(agent_id, self._clock())
        if rec is None:
            return pb.HeartbeatResponse(alive=False, directive=Directive.REREGISTER)
        rec.tasks_processed = req.tasks_processed
        rec.tasks_pending = req.tasks_pending
        rec.info["cpu_usage"], rec.info["mem_usage"] = req.cpu_usage, req.mem_usage
        if req.state_height and req.state_hash and self._state_sync is not None:
            self._check_agent_state(rec, req.state_height, bytes(req.state_hash))
        resp = pb.HeartbeatResponse(alive=True, directive=rec.directive)
        if self._epochs is not None and (notice := self._epochs.payout_notice(agent_id)):
            resp.payout.CopyFrom(pb.PayoutInfo(**notice.proto_fields()))
        return resp

    def _check_agent_state(self, rec: AgentRecord, height: int, agent_hash: bytes) -> None:
        """Compare an L4 agent's reported state hash with ours at the same height."""
        assert self._state_sync is not None
        ours = self._state_sync.hash_at(height)
        if ours is None:  # pruned, not reached yet, or rebuilding: nothing to compare with
            rec.state.height = height
            return
        equal = ours == agent_hash
        first = rec.state.checked == 0
        if rec.state.record(height, equal):
            if equal and first:
                # Its state is verified: declines from before (while it bootstrapped) are
                # forgiven, and a throttle they caused is lifted.
                self._integrity.forgive(rec.agent_id, self._registry.agent_ids)
            self._metrics.l4_state_checks.labels("equal" if equal else "different").inc()
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
        rec = self._registry.get(agent_id)
        if rec is None:
            return False
        rec.directive = Directive.SHUTDOWN
        return True

    def submit(
        self, agent_id: str, batch: pb.BatchResult, codec: Codec = Codec.PROTOBUF
    ) -> pb.SubmitResponse:
        """Take a batch of results, all or nothing on any refusal (each refusal is counted
        against the agent). ``codec`` is the one the coordinator received the batch in: L1/L2
        answers received in JSON are not held to the sender evidence (ioswarm.core.evidence)."""
        try:
            return self._submit(agent_id, batch, codec is Codec.JSON)
        except RequestRefused as exc:
            if exc.status != "RESOURCE_EXHAUSTED":  # a rate limit is not misconduct
                # Only registered agents get a record: a departed id must not grow the book.
                self.note_refused(agent_id, exc.status)
            raise
        finally:
            for _, task_latency, agent_latency in self._level_metrics.values():
                task_latency.flush()
                agent_latency.flush()
            self._stages.flush()

    def note_refused(self, agent_id: str, status: str) -> None:
        """A call of an authenticated agent was refused (e.g. a body id not its own)."""
        if agent_id in self._registry:
            self._integrity.book.note_refused(agent_id, status)

    def _submit(self, agent_id: str, batch: pb.BatchResult, waived: bool) -> pb.SubmitResponse:
        if agent_id not in self._registry:
            raise RequestRefused("FAILED_PRECONDITION", "agent is not registered")
        ids, kinds = self.admission.admit(agent_id, batch.results)
        accepted = 0
        latency_sec = 0.0
        agent_rec = self._registry.get(agent_id)
        wallet = agent_rec.wallet if agent_rec else ""
        per_level: dict[Level, int] = {}
        finish = self._dispatcher.finish
        integrity = self._integrity.book
        agents = self._registry.agent_ids
        totals = self._totals
        now = self._clock()
        for r, task_id, kind in zip(batch.results, ids, kinds, strict=True):
            if kind is Completion.LATE or kind is Completion.FORGOTTEN:
                # Too late to count: answered elsewhere, timed out, or finished so long ago
                # that it is no longer remembered (its id is never reused: it earns nothing).
                totals.results_late += 1
                integrity.note_late(agent_id)
                self._metrics.results.labels(level="any", disposition=kind.value).inc()
                continue
            if r.declined:
                self._decline(agent_id, task_id, r)
                continue
            self._integrity.answered(agent_id, False, agents)
            done = finish(agent_id, task_id)
            if done is None:
                continue
            task, elapsed, predicted = done
            accepted += 1
            if self._epochs is not None:
                self._epochs.on_result(agent_id, wallet)
            per_level[task.level] = per_level.get(task.level, 0) + 1
            _, task_latency, agent_latency = self._result_metrics(task.level)
            task_latency.observe(elapsed)
            if not integrity.is_canary(task_id):  # a canary was never seen in the mempool
                self._stages.observe(task, elapsed, now)
            totals.latency_sum_sec += elapsed
            latency_sec += elapsed
            agent_latency.observe(r.latency_us / 1e6)
            coinbase = predicted.coinbase if predicted is not None else b""
            if integrity.is_canary(task_id):
                totals.canary_results += 1
                verdict = verdict_from_pb(r, task.level, coinbase, waived)
                c = integrity.judge_canary(agent_id, task, verdict)
                if c is not None:
                    self._comparisons.count(c, canary=True)
            elif self._config.shadow_mode:
                verdict = verdict_from_pb(r, task.level, coinbase, waived)
                c = self._shadow.record(agent_id, task, verdict, predicted)
                if c is not None:
                    self._comparisons.count(c)
        for level, count in per_level.items():
            self._result_metrics(level)[0].inc(count)
        totals.results_accepted += accepted
        rec = self._registry.touch(agent_id, self._clock())
        if rec is not None:
            rec.results_accepted += accepted
            rec.latency_sum_sec += latency_sec
        self._metrics.shadow_pending.set(self._shadow.pending)
        return pb.SubmitResponse(accepted=True, accepted_count=accepted)

    def _decline(self, agent_id: str, task_id: int, r: pb.TaskResult) -> None:
        """Not an answer (e.g. the agent's state is not at the task's height): the task goes
        to another agent and the decline earns nothing. A claim of missing state is checked
        against what was sent and what the chain touched, like any verdict."""
        self._totals.results_declined += 1
        self._metrics.results.labels(level="any", disposition="declined").inc()
        task = self._scheduler.task(task_id)
        rec = self._registry.get(agent_id)
        # An L4 agent whose state hash the coordinator has verified (and never found different)
        # declines a height honestly: tasks waited past it. Excused from the throttle; still
        # earns nothing.
        excused = (
            r.reject_reason == STATE_HEIGHT_UNAVAILABLE
            and rec is not None
            and rec.state.checked > 0
            and rec.state.mismatched == 0
        )
        self._integrity.answered(agent_id, True, self._registry.agent_ids, excused)
        if (
            task is not None
            and task.level >= Level.L3
            and r.reject_reason == MISSING_STATE
            and self._config.shadow_mode
            and not self._integrity.book.is_canary(task_id)
        ):
            claim = Verdict(
                task_id,
                valid=False,
                reject_reason=MISSING_STATE,
                sender=bytes(r.sender),
                declined=True,
                detail=r.exec_error[:200],
            )
            c = self._shadow.record(agent_id, task, claim, self._dispatcher.predicted(task_id))
            if c is not None:
                self._comparisons.count(c)
        self._dispatcher.release(agent_id, task_id)


def _registration(req: pb.RegisterRequest, codec: Codec) -> tuple[Level, str]:
    """The level and wallet a registration asks for, or the refusal naming what is wrong."""
    level = level_from_pb(req.capability)
    if level is None:
        raise RequestRefused("INVALID_ARGUMENT", f"unknown capability level {req.capability}")
    if codec is Codec.JSON and level not in JSON_LEVELS:
        raise RequestRefused(
            "FAILED_PRECONDITION",
            f"capability {level.name} is not served in the reference JSON codec, only L1 and "
            "L2: the reference's L3/L4 tasks carry IoTeX-native state (evm_tx, "
            "contract_code, storage_slots) that an EVM node cannot provide; register at L1 "
            "or L2, or run the ioswarm agent (protobuf) for L3/L4",
        )
    if len(req.wallet_address) > 64 or len(req.region) > 64 or len(req.version) > 64:
        raise RequestRefused("INVALID_ARGUMENT", "wallet_address, region, version: 64 chars max")
    return level, _wallet_of(req)


def _wallet_of(req: pb.RegisterRequest) -> str:
    """The wallet a registration names, an io1 one as its 0x form (the reference's agents
    may give either); an io1 that fails its checksum is refused rather than left unpayable."""
    wallet = req.wallet_address
    if not is_io_address(wallet):
        return wallet
    try:
        return canonical_address(wallet)
    except ValueError as exc:
        raise RequestRefused("INVALID_ARGUMENT", f"wallet_address: {exc}") from exc
