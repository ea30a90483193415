"""Dishonest agents for demos and tests: each cheats in one way and counts what came back.

Every adversary runs in-process as asyncio tasks against a coordinator's gRPC port, with its
own id, its own valid token (``agent_token(secret, agent_id)``) and its own fresh wallet, so
that only the coordinator's integrity rules stand between it and a payout. Those that cheat
only in their answers run the real agent runtime with a custom ``Validator``; those that
cheat in the protocol (replays, impersonation, late answers) speak it with a raw stub.

This module is simulation code: the ``ioswarm agent`` command an operator runs cannot reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
from eth_account import Account

from ioswarm import __version__
from ioswarm.agent.levels import validator_for
from ioswarm.agent.runtime import Agent
from ioswarm.agent.validators import Validator
from ioswarm.config import AgentConfig
from ioswarm.core.models import Level
from ioswarm.core.rules import Reject
from ioswarm.core.tokens import agent_token
from ioswarm.core.validation import check_l1
from ioswarm.errors import ConfigError
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.proto import ioswarm_pb2_grpc as pb_grpc
from ioswarm.protocol import AGENT_ID_KEY, MAX_WIRE_MESSAGE_BYTES, TOKEN_KEY, Directive

__all__ = [
    "KINDS",
    "REJECT_REASONS",
    "Adversary",
    "AdversaryCounters",
    "ResultTap",
    "TappedHonestAgent",
    "TappedValidator",
    "build_adversaries",
    "parse_kinds",
]

log = logging.getLogger("ioswarm.sim.adversaries")

KINDS = (
    "lazy",
    "echo",
    "invalid",
    "random",
    "missing_state",
    "decline",
    "replayer",
    "impersonator",
    "late",
    "fake_executor",
)

# The capability each kind registers with: high enough to be handed the tasks it cheats on.
KIND_LEVELS: dict[str, Level] = {
    "lazy": Level.L2,
    "echo": Level.L3,
    "invalid": Level.L2,
    "random": Level.L2,
    "missing_state": Level.L3,
    "decline": Level.L2,
    # L1 tasks of a tx whose L2 task an honest tapped agent answers: the copy fits.
    "replayer": Level.L1,
    # The victim is an honest L1 agent; a hijacking Register keeps its level.
    "impersonator": Level.L1,
    "late": Level.L2,
    "fake_executor": Level.L3,
}

# Reasons the real L1/L2 checks give (ioswarm.core.rules); a random liar picks among them.
REJECT_REASONS: tuple[Reject, ...] = (
    Reject.EMPTY_TX,
    Reject.UNKNOWN_TX_TYPE,
    Reject.BAD_FIELD_COUNT,
    Reject.BAD_V,
    Reject.BAD_SIGNATURE,
    Reject.HIGH_S,
    Reject.WRONG_CHAIN_ID,
    Reject.INITCODE_TOO_LARGE,
    Reject.GAS_LIMIT_EXCEEDS_BLOCK,
    Reject.FEE_CAP_BELOW_TIP,
    Reject.INTRINSIC_GAS_TOO_HIGH,
    Reject.MISSING_STATE,
    Reject.SENDER_MISMATCH,
    Reject.NONCE_TOO_LOW,
    Reject.NONCE_TOO_HIGH,
    Reject.INSUFFICIENT_BALANCE,
)

SUBMIT_SPACING_SEC = 0.12  # under the coordinator's default SubmitResults rate limit
RETRY_SEC = 1.0
STOP_WAIT_SEC = 10.0
TAP_WAIT_SEC = 0.5  # how long a replayer waits for the honest answer it wants to copy
LATE_MARGIN_SEC = 0.3
IMPERSONATE_EVERY_SEC = 1.0

R = TypeVar("R")


def parse_kinds(text: str) -> list[str]:
    """``"lazy,late"`` -> ``["lazy", "late"]``; ``"all"`` -> every kind; ``"none"`` -> ``[]``."""
    text = text.strip()
    if text == "all":
        return list(KINDS)
    if text in ("none", ""):
        return []
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    for kind in kinds:
        _check_kind(kind)
    return kinds


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(
            "--adversaries", f"unknown adversary kind {kind!r}; valid kinds: {', '.join(KINDS)}"
        )


class AdversaryCounters:
    """What an adversary sent, and the gRPC status codes it got back, per call."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.status: dict[str, Counter[str]] = {}

    def got(self, call: str, code: grpc.StatusCode) -> None:
        self.status.setdefault(call, Counter())[code.name] += 1

    def refused(self, call: str) -> int:
        """Calls named ``call`` that ended in any status but OK."""
        return sum(n for code, n in self.status.get(call, Counter()).items() if code != "OK")

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": dict(sorted(self.sent.items())),
            "status": {call: dict(sorted(c.items())) for call, c in sorted(self.status.items())},
        }


class Adversary:
    """One dishonest agent. ``start()`` it inside a running loop; ``stop()`` ends it."""

    def __init__(self, kind: str, agent_id: str, level: Level, target: str, secret: str) -> None:
        self.kind = kind
        self.agent_id = agent_id
        self.level = level
        self.wallet: str = Account.create().address
        self.target = target
        self.token = agent_token(secret, agent_id)
        self.stats = AdversaryCounters()

    @property
    def counters(self) -> dict[str, Any]:
        return self.stats.as_dict()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((AGENT_ID_KEY, self.agent_id), (TOKEN_KEY, self.token))

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError


# -- answer cheats: the real runtime with a dishonest validator --------------------------------


class _CheatValidator:
    """A dishonest validator that counts what it answers."""

    level = Level.L2

    def __init__(self, stats: AdversaryCounters, rng: random.Random) -> None:
        self.stats = stats
        self.rng = rng

    def validate(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        result = self.answer(task, batch)
        self.stats.sent["answers"] += 1
        self.stats.sent[
            "declined" if result.declined else "valid" if result.valid else "invalid"
        ] += 1
        return result

    def answer(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        raise NotImplementedError


class _Lazy(_CheatValidator):
    def answer(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        return pb.TaskResult(task_id=task.task_id, valid=True)


class _Echo(_CheatValidator):
    level = Level.L3

    def answer(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        sender = bytes(task.sender.address)
        if not sender and task.accounts:
            sender = bytes(task.accounts[0].account.address)
        return pb.TaskResult(
            task_id=task.task_id,
            valid=True,
            sender=sender,
            gas_estimate=task.block_gas_limit,
            gas_used=task.block_gas_limit if task.level >= Level.L3 else 0,
            status=pb.EXEC_SUCCESS if task.level >= Level.L3 else pb.EXEC_STATUS_UNSPECIFIED,
        )


class _Invalid(_CheatValidator):
    def answer(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        return pb.TaskResult(task_id=task.task_id, valid=False, reject_reason="bad_signature")


class _Random(_CheatValidator):
    def answer(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        valid = self.rng.random() < 0.5
        return pb.TaskResult(
            task_id=task.task_id,
            valid=valid,
            reject_reason="" if valid else self.rng.choice(REJECT_REASONS),
            sender=self.rng.randbytes(20),
            gas_estimate=21_000,
        )


class _MissingState(_CheatValidator):
    level = Level.L3

    def answer(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        return pb.TaskResult(
            task_id=task.task_id,
            valid=False,
            reject_reason="missing_state",
            declined=self.rng.random() < 0.5,
        )


class _Decline(_CheatValidator):
    def answer(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        return pb.TaskResult(task_id=task.task_id, declined=True)


class _FakeExecutor(_CheatValidator):
    """Recovers the sender honestly, then claims a plain successful execution without running."""

    level = Level.L3

    def answer(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        check = check_l1(bytes(task.tx_raw), batch.chain_id)
        if not check.valid:
            return pb.TaskResult(
                task_id=task.task_id, valid=False, reject_reason=check.reject_reason
            )
        extra = self.rng.randrange(1, 40_000) if check.tx is not None and check.tx.data else 0
        return pb.TaskResult(
            task_id=task.task_id,
            valid=True,
            sender=check.sender,
            gas_estimate=check.gas_estimate,
            status=pb.EXEC_SUCCESS,
            gas_used=max(21_000, check.gas_estimate) + extra,
        )


_CHEATS: dict[str, type[_CheatValidator]] = {
    "lazy": _Lazy,
    "echo": _Echo,
    "invalid": _Invalid,
    "random": _Random,
    "missing_state": _MissingState,
    "decline": _Decline,
    "fake_executor": _FakeExecutor,
}


class _StatusCounter(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]  # no grpc stubs
    """Counts the status of every unary call the runtime makes, by method."""

    def __init__(self, stats: AdversaryCounters) -> None:
        self.stats = stats

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        client_call_details: Any,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        self.stats.got(str(method).rsplit("/", 1)[-1], await call.code())
        return call


class _CountingAgent(Agent):
    """The real runtime on a loopback channel that counts the statuses it gets back."""

    def __init__(self, config: AgentConfig, validator: Validator, stats: AdversaryCounters) -> None:
        super().__init__(config, validator)
        self._counter = _StatusCounter(stats)

    def _channel(self, link: AgentConfig | None = None) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(
            (link or self.config).coordinator,
            options=[("grpc.max_receive_message_length", MAX_WIRE_MESSAGE_BYTES)],
            interceptors=[self._counter],
        )


class _RuntimeAdversary(Adversary):
    """An adversary whose cheat is only in its answers: the real agent runtime runs it."""

    def __init__(
        self,
        kind: str,
        agent_id: str,
        target: str,
        secret: str,
        validator: _CheatValidator | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(kind, agent_id, KIND_LEVELS[kind], target, secret)
        self.validator = validator or _CHEATS[kind](self.stats, rng or random.Random())
        self._agent: _CountingAgent | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = AgentConfig(
            coordinator=self.target,
            agent_id=self.agent_id,
            api_key=self.token,
            wallet=self.wallet,
            level=self.level.name,
            tls=False,
            reconnect_max_sec=2.0,
        )
        self._agent = _CountingAgent(config, self.validator, self.stats)
        self._task = asyncio.create_task(self._agent.run(), name=f"adversary-{self.agent_id}")

    async def stop(self) -> None:
        if self._agent is None or self._task is None:
            return
        self._agent.shutdown("adversary stopped")
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT_SEC)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- the replayer's source: an honest agent whose answers are recorded -------------------------


class ResultTap:
    """Records an honest agent's answers by tx hash and its recent batches of results."""

    def __init__(self, agent_id: str = "", keep_results: int = 4096, keep_batches: int = 16):
        self.agent_id = agent_id
        self._by_tx: OrderedDict[bytes, pb.TaskResult] = OrderedDict()
        self._batches: deque[pb.BatchResult] = deque(maxlen=keep_batches)
        self._keep_results = keep_results

    def record(self, batch_id: str, tx_hash: bytes, result: pb.TaskResult) -> None:
        self._by_tx[tx_hash] = result
        while len(self._by_tx) > self._keep_results:
            self._by_tx.popitem(last=False)
        if not self._batches or self._batches[-1].batch_id != batch_id:
            self._batches.append(pb.BatchResult(agent_id=self.agent_id, batch_id=batch_id))
        self._batches[-1].results.append(result)

    def answer_for(self, tx_hash: bytes) -> pb.TaskResult | None:
        return self._by_tx.get(tx_hash)

    def recent_batches(self) -> list[pb.BatchResult]:
        return list(self._batches)


class TappedValidator:
    """Wraps an honest validator and records each of its answers in a :class:`ResultTap`."""

    def __init__(self, inner: Validator, tap: ResultTap) -> None:
        self.inner = inner
        self.tap = tap
        self.level = inner.level

    def validate(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        result = self.inner.validate(task, batch)
        self.tap.record(batch.batch_id, bytes(task.tx_hash), result)
        return result


class TappedHonestAgent:
    """An honest in-process L2 agent whose answers a :class:`ResultTap` records.

    It is the replayer's source; it does real work, so it must be paid like any honest agent.
    """

    def __init__(self, agent_id: str, port: int, secret: str, host: str = "127.0.0.1") -> None:
        self.agent_id = agent_id
        self.level = Level.L2
        self.wallet: str = Account.create().address
        self.tap = ResultTap(agent_id)
        config = AgentConfig(
            coordinator=f"{host}:{port}",
            agent_id=agent_id,
            api_key=agent_token(secret, agent_id),
            wallet=self.wallet,
            level=self.level.name,
            tls=False,
            reconnect_max_sec=2.0,
        )
        self.agent = Agent(config, TappedValidator(validator_for(Level.L2), self.tap))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.agent.run(), name=f"tapped-{self.agent_id}")

    async def stop(self) -> None:
        if self._task is None:
            return
        self.agent.shutdown("stopped")
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT_SEC)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- protocol cheats: a raw stub ---------------------------------------------------------------


class _WireAdversary(Adversary):
    """Registers, heartbeats and runs :meth:`_work` over a raw stub; reconnects on failure."""

    def __init__(self, kind: str, agent_id: str, target: str, secret: str) -> None:
        super().__init__(kind, agent_id, KIND_LEVELS[kind], target, secret)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._submit_lock = asyncio.Lock()
        self._last_submit = 0.0
        self.heartbeat_interval = 10.0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._main(), name=f"adversary-{self.agent_id}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT_SEC)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _call(self, name: str, call: Awaitable[R]) -> R | None:
        """Await one unary call, count its status under ``name``; None when it was refused."""
        try:
            result = await call
        except grpc.aio.AioRpcError as exc:
            self.stats.got(name, exc.code())
            return None
        self.stats.got(name, grpc.StatusCode.OK)
        return result

    async def _submit(self, stub: pb_grpc.IOSwarmStub, name: str, batch: pb.BatchResult) -> bool:
        """SubmitResults, spaced so that the coordinator's rate limit is not what refuses it."""
        async with self._submit_lock:
            wait = self._last_submit + SUBMIT_SPACING_SEC - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_submit = time.monotonic()
            batch.timestamp = int(time.time() * 1000)
            self.stats.sent[name] += 1
            return (
                await self._call(name, stub.SubmitResults(batch, metadata=self.metadata))
                is not None
            )

    async def _main(self) -> None:
        while not self._stopping.is_set():
            try:
                async with grpc.aio.insecure_channel(self.target) as channel:
                    await self._session(pb_grpc.IOSwarmStub(channel))
            except grpc.aio.AioRpcError as exc:
                self.stats.got("session", exc.code())
            except (OSError, ConnectionError) as exc:
                log.debug("adversary connection failed agent_id=%s error=%s", self.agent_id, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), RETRY_SEC)

    async def _session(self, stub: pb_grpc.IOSwarmStub) -> None:
        resp = await self._call(
            "Register",
            stub.Register(
                pb.RegisterRequest(
                    agent_id=self.agent_id,
                    capability=self.level.name,
                    region="adversary",
                    version=__version__,
                    wallet_address=self.wallet,
                ),
                metadata=self.metadata,
                timeout=10,
            ),
        )
        if resp is None or not resp.accepted:
            return
        self.heartbeat_interval = float(resp.heartbeat_interval_sec or 10)
        jobs = [
            asyncio.create_task(self._work(stub)),
            asyncio.create_task(self._heartbeats(stub)),
            asyncio.create_task(self._stopping.wait()),
        ]
        try:
            done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for j in jobs:
                j.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
        for j in done:
            if (exc := j.exception()) is not None:
                raise exc

    async def _heartbeats(self, stub: pb_grpc.IOSwarmStub) -> None:
        while True:
            resp = await self._call(
                "Heartbeat",
                stub.Heartbeat(
                    pb.HeartbeatRequest(agent_id=self.agent_id),
                    metadata=self.metadata,
                    timeout=10,
                ),
            )
            if resp is not None and (resp.directive != Directive.CONTINUE or not resp.alive):
                return  # re-register (or stop being useful): end this session
            await asyncio.sleep(self.heartbeat_interval)

    async def _tasks(self, stub: pb_grpc.IOSwarmStub) -> Any:
        """The task stream; its end or failure is counted under ``GetTasks``."""
        return stub.GetTasks(
            pb.GetTasksRequest(
                agent_id=self.agent_id, max_level=self.level.name, max_batch_size=32
            ),
            metadata=self.metadata,
        )

    async def _stream(
        self, stub: pb_grpc.IOSwarmStub, on_batch: Callable[[pb.TaskBatch], Awaitable[None]]
    ) -> None:
        call = await self._tasks(stub)
        try:
            async for batch in call:
                self.stats.sent["batches_received"] += 1
                await on_batch(batch)
        except grpc.aio.AioRpcError as exc:
            self.stats.got("GetTasks", exc.code())
            raise
        self.stats.got("GetTasks", grpc.StatusCode.OK)

    async def _work(self, stub: pb_grpc.IOSwarmStub) -> None:
        raise NotImplementedError


class _Replayer(_WireAdversary):
    """Copies the tapped honest agent's answers, and replays batches: the honest agent's under
    its own id (foreign task ids), its own a second time, and its own with an id twice."""

    def __init__(self, agent_id: str, target: str, secret: str, tap: ResultTap) -> None:
        super().__init__("replayer", agent_id, target, secret)
        self.tap = tap
        self._replayed: set[str] = set()

    async def _work(self, stub: pb_grpc.IOSwarmStub) -> None:
        await self._stream(stub, lambda batch: self._on_batch(stub, batch))

    async def _copied(self, batch: pb.TaskBatch) -> list[pb.TaskResult]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TAP_WAIT_SEC
        while loop.time() < deadline and any(  # noqa: ASYNC110 - polls the honest agent's tap
            self.tap.answer_for(bytes(t.tx_hash)) is None for t in batch.tasks
        ):
            await asyncio.sleep(0.05)
        out = []
        for task in batch.tasks:
            honest = self.tap.answer_for(bytes(task.tx_hash))
            result = pb.TaskResult(task_id=task.task_id, valid=True)
            if honest is not None:
                result.CopyFrom(honest)
                result.task_id = task.task_id
                self.stats.sent["copied"] += 1
            else:
                self.stats.sent["lazy"] += 1
            out.append(result)
        return out

    async def _on_batch(self, stub: pb_grpc.IOSwarmStub, batch: pb.TaskBatch) -> None:
        results = await self._copied(batch)
        own = pb.BatchResult(agent_id=self.agent_id, batch_id=batch.batch_id, results=results)
        self.stats.sent["answers"] += len(results)
        await self._submit(stub, "SubmitResults", own)
        await self._submit(stub, "replay_own", own)
        if results:
            twice = pb.BatchResult(
                agent_id=self.agent_id, batch_id=batch.batch_id, results=[results[0], results[0]]
            )
            await self._submit(stub, "replay_duplicate_id", twice)
        for honest in reversed(self.tap.recent_batches()):
            if honest.batch_id not in self._replayed and honest.results:
                self._replayed.add(honest.batch_id)
                foreign = pb.BatchResult()
                foreign.CopyFrom(honest)
                foreign.agent_id = self.agent_id
                await self._submit(stub, "replay_foreign", foreign)
                break


class _Impersonator(_WireAdversary):
    """Registered as itself, tries again and again to act as (and take the wallet of) a victim."""

    def __init__(self, agent_id: str, target: str, secret: str, victim: str) -> None:
        super().__init__("impersonator", agent_id, target, secret)
        self.victim = victim

    async def _work(self, stub: pb_grpc.IOSwarmStub) -> None:
        hijack = pb.RegisterRequest(
            agent_id=self.victim,
            capability=self.level.name,
            region="adversary",
            version=__version__,
            wallet_address=self.wallet,
        )
        two_ids = (
            (AGENT_ID_KEY, self.victim),
            (AGENT_ID_KEY, self.agent_id),
            (TOKEN_KEY, self.token),
        )
        two_tokens = (
            (AGENT_ID_KEY, self.agent_id),
            (TOKEN_KEY, agent_token("guessed-secret", self.agent_id)),
            (TOKEN_KEY, self.token),
        )
        own_token_as_victim = ((AGENT_ID_KEY, self.victim), (TOKEN_KEY, self.token))
        while True:
            self.stats.sent["attempts"] += 1
            await self._call(
                "register_two_ids", stub.Register(hijack, metadata=two_ids, timeout=10)
            )
            await self._call(
                "register_two_tokens",
                stub.Register(
                    pb.RegisterRequest(
                        agent_id=self.agent_id,
                        capability=self.level.name,
                        wallet_address=self.wallet,
                    ),
                    metadata=two_tokens,
                    timeout=10,
                ),
            )
            await self._call(
                "submit_as_victim",
                stub.SubmitResults(
                    pb.BatchResult(
                        agent_id=self.victim,
                        batch_id="impersonated",
                        results=[pb.TaskResult(task_id=1, valid=True)],
                    ),
                    metadata=self.metadata,
                    timeout=10,
                ),
            )
            await self._call(
                "heartbeat_as_victim",
                stub.Heartbeat(
                    pb.HeartbeatRequest(agent_id=self.victim), metadata=self.metadata, timeout=10
                ),
            )
            await self._call(
                "register_victim_without_its_token",
                stub.Register(hijack, metadata=own_token_as_victim, timeout=10),
            )
            await asyncio.sleep(IMPERSONATE_EVERY_SEC)


class _Late(_WireAdversary):
    """Does honest L1/L2 work but submits each answer only after the task's deadline."""

    def __init__(self, agent_id: str, target: str, secret: str, task_timeout_sec: float) -> None:
        super().__init__("late", agent_id, target, secret)
        self.delay = task_timeout_sec + LATE_MARGIN_SEC
        self.l1: Validator = validator_for(Level.L1)
        self.l2: Validator = validator_for(Level.L2)
        self._pending: set[asyncio.Task[None]] = set()

    async def _work(self, stub: pb_grpc.IOSwarmStub) -> None:
        try:
            await self._stream(stub, lambda batch: self._on_batch(stub, batch))
        finally:
            for t in self._pending:
                t.cancel()

    async def _on_batch(self, stub: pb_grpc.IOSwarmStub, batch: pb.TaskBatch) -> None:
        due = time.monotonic() + self.delay
        results = [
            (self.l2 if task.level >= Level.L2 else self.l1).validate(task, batch)
            for task in batch.tasks
        ]
        self.stats.sent["answers"] += len(results)
        late = pb.BatchResult(agent_id=self.agent_id, batch_id=batch.batch_id, results=results)
        job = asyncio.create_task(self._submit_at(stub, due, late))
        self._pending.add(job)
        job.add_done_callback(self._pending.discard)

    async def _submit_at(
        self, stub: pb_grpc.IOSwarmStub, due: float, batch: pb.BatchResult
    ) -> None:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        await self._submit(stub, "SubmitResults", batch)


def build_adversaries(
    kinds: list[str],
    port: int,
    secret: str,
    task_timeout_sec: float,
    tap: ResultTap | None,
    *,
    victim: str | None = None,
    host: str = "127.0.0.1",
    id_prefix: str = "adv",
    seed: int | None = None,
) -> list[Adversary]:
    """One adversary per entry of ``kinds`` (ids ``<prefix>-<kind>-<i>``), not started yet.

    ``replayer`` needs ``tap`` (the honest agent it copies); ``impersonator`` needs ``victim``
    (the honest agent id it tries to act as).
    """
    for kind in kinds:
        _check_kind(kind)
    rng = random.Random(seed)
    target = f"{host}:{port}"
    out: list[Adversary] = []
    for i, kind in enumerate(kinds):
        agent_id = f"{id_prefix}-{kind.replace('_', '-')}-{i}"
        if kind == "replayer":
            if tap is None:
                raise ConfigError("--adversaries", "a replayer needs a tapped honest agent")
            out.append(_Replayer(agent_id, target, secret, tap))
        elif kind == "impersonator":
            if not victim:
                raise ConfigError("--adversaries", "an impersonator needs a victim agent id")
            out.append(_Impersonator(agent_id, target, secret, victim))
        elif kind == "late":
            out.append(_Late(agent_id, target, secret, task_timeout_sec))
        else:
            out.append(
                _RuntimeAdversary(kind, agent_id, target, secret, rng=random.Random(rng.random()))
            )
    return out
