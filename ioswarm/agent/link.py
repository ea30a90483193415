"""One agent's link to one coordinator: register, stream tasks, answer, submit, heartbeat.

A connection attempt runs three tasks (task stream, result submitter, heartbeat) and ends when
any of them fails; :meth:`CoordinatorLink.run` reconnects with capped exponential backoff and
jitter. A ``shutdown`` directive ends the link cleanly. A permanent failure
(:mod:`ioswarm.core.linkfailure`: credentials refused, registration refused, TLS that cannot
work with the trusted CA) ends ``run()`` with an error naming the reason instead of retrying.

Results go back as soon as they are ready, within the submit budget
(:mod:`ioswarm.core.submitbudget`); when the budget is spent they wait and go together.
Every log line names the coordinator: one agent process may hold links to several.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import NoReturn, Protocol

import grpc
import grpc.aio

from ioswarm import __version__
from ioswarm.agent.validators import GatedValidator, Validator
from ioswarm.config import AgentConfig
from ioswarm.core.linkfailure import FailureKind, PermanentFailure, permanent_failure
from ioswarm.core.submitbudget import SubmitBudget
from ioswarm.errors import AuthError, ConfigError, ProtocolError
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.proto import ioswarm_pb2_grpc as pb_grpc
from ioswarm.protocol import Directive, auth_metadata

log = logging.getLogger("ioswarm.agent")

YIELD_EVERY_TASKS = 16  # tasks answered between two turns of the event loop
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


@dataclass
class AgentStats:
    """Counters of one link (or, summed, of a whole agent)."""

    connects: int = 0
    batches: int = 0
    tasks: int = 0
    submitted: int = 0
    submit_calls: int = 0
    submit_refusals: int = 0
    validator_errors: int = 0
    connect_failures: int = 0

    def __add__(self, other: AgentStats) -> AgentStats:
        return AgentStats(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )


class SessionTask(Protocol):
    """Work that runs alongside each connection on its stub (the L4 state follower)."""

    async def run(self, stub: pb_grpc.IOSwarmStub) -> None: ...

    @property
    def height(self) -> int:
        """Height of the local state, reported in heartbeats (0 before bootstrap)."""
        ...

    @property
    def state_hash(self) -> bytes:
        """State hash at :attr:`height`, reported in heartbeats for the coordinator to check."""
        ...


Answer = Callable[[pb.TaskPackage, pb.TaskBatch], pb.TaskResult]
ChannelFactory = Callable[[AgentConfig], grpc.aio.Channel]


class LinkEnded(Exception):
    """The coordinator told this agent to shut down: the link ends, on purpose."""


class CoordinatorLink:
    """The agent's work with one coordinator. ``run()`` until ``stopping`` is set, a shutdown
    directive, or a permanent failure (raised)."""

    def __init__(
        self,
        config: AgentConfig,
        validator: Validator,
        answer: Answer,
        channel: ChannelFactory,
        stopping: asyncio.Event,
        follower: SessionTask | None = None,
    ) -> None:
        """``config`` names one coordinator and its key; ``answer`` validates one task (the
        agent's, shared by its links); ``stopping`` is the agent's shutdown event."""
        self.config = config
        self.validator = validator
        self.follower = follower
        self.stats = AgentStats()
        self.budget = SubmitBudget()
        self._answer = answer
        self._channel = channel
        self._stopping = stopping
        self._results: list[pb.TaskResult] = []
        self._results_ready = asyncio.Event()
        self._last_batch_id = ""
        self.heartbeat_interval = 10.0
        self.connected = False
        self.failure: PermanentFailure | None = None
        self._registering = False

    @property
    def coordinator(self) -> str:
        return self.config.coordinator

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return auth_metadata(self.config.agent_id, self.config.api_key)

    async def run(self) -> None:
        """Connect and work until the agent stops; reconnect with capped exponential backoff.

        Returns on shutdown or a shutdown directive (:class:`LinkEnded` is not raised out).
        Raises :class:`AuthError`, :class:`ConfigError` (``--ca-cert``) or
        :class:`ProtocolError` on a permanent failure, after logging it.
        """
        failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await self._session()
            except LinkEnded:
                return
            except grpc.aio.AioRpcError as exc:
                detail = exc.details() or ""
                failure = permanent_failure(exc.code().name, detail, registering=self._registering)
                if failure is not None:
                    self._stop_for(failure)
                log.warning(
                    "connection lost agent_id=%s coordinator=%s status=%s detail=%s",
                    self.config.agent_id,
                    self.coordinator,
                    exc.code().name,
                    detail,
                )
            except (OSError, ConnectionError) as exc:
                log.warning(
                    "connection failed agent_id=%s coordinator=%s error=%s",
                    self.config.agent_id,
                    self.coordinator,
                    exc,
                )
            finally:
                self.connected = False
            if self._stopping.is_set():
                return
            self.stats.connect_failures += 1
            failures = 1 if time.monotonic() - started > 30 else failures + 1
            delay = min(self.config.reconnect_max_sec, 0.5 * 2 ** min(failures - 1, 8))
            delay *= random.uniform(0.8, 1.2)
            log.info(
                "reconnecting agent_id=%s coordinator=%s in=%.1fs",
                self.config.agent_id,
                self.coordinator,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def _stop_for(self, failure: PermanentFailure) -> NoReturn:
        """Give this coordinator up: retrying cannot help. Raises the error naming why (the
        agent logs it, and :attr:`failure` keeps it)."""
        self.failure = failure
        if failure.kind is FailureKind.TLS:
            raise ConfigError("--ca-cert", failure.reason)
        if failure.kind is FailureKind.CREDENTIALS:
            raise AuthError(failure.reason)
        raise ProtocolError(failure.reason)

    async def _session(self) -> None:
        async with self._channel(self.config) as channel:
            stub = pb_grpc.IOSwarmStub(channel)
            self._registering = True
            resp = await stub.Register(
                pb.RegisterRequest(
                    agent_id=self.config.agent_id,
                    capability=self.validator.level.name,
                    region=self.config.region,
                    version=__version__,
                    wallet_address=self.config.wallet,
                ),
                metadata=self._metadata,
                timeout=10,
            )
            if not resp.accepted:
                self._stop_for(
                    PermanentFailure(
                        FailureKind.REGISTRATION,
                        f"the coordinator refused registration: {resp.reason or 'no reason given'}",
                    )
                )
            self._registering = False
            self.heartbeat_interval = float(resp.heartbeat_interval_sec or 10)
            self.stats.connects += 1
            self.connected = True
            log.info(
                "registered agent_id=%s level=%s coordinator=%s chain_id=%d",
                self.config.agent_id,
                self.validator.level.name,
                self.coordinator,
                resp.chain_id,
            )
            jobs = [
                asyncio.create_task(self._stream(stub)),
                asyncio.create_task(self._submitter(stub)),
                asyncio.create_task(self._heartbeats(stub)),
                asyncio.create_task(self._stopping.wait()),
            ]
            if self.follower is not None:
                jobs.append(asyncio.create_task(self.follower.run(stub)))
            try:
                done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for j in jobs:
                    j.cancel()
                await asyncio.gather(*jobs, return_exceptions=True)
            if self._results:
                await self._flush(stub, final=True)
            for j in done:
                exc = j.exception()
                if exc is not None:
                    raise exc

    async def _stream(self, stub: pb_grpc.IOSwarmStub) -> None:
        call = stub.GetTasks(
            pb.GetTasksRequest(
                agent_id=self.config.agent_id,
                max_level=self.validator.level.name,
                max_batch_size=self.config.max_batch_size,
            ),
            metadata=self._metadata,
        )
        gate = self.validator if isinstance(self.validator, GatedValidator) else None
        async for batch in call:
            self.stats.batches += 1
            self._last_batch_id = batch.batch_id
            for i, task in enumerate(batch.tasks):
                if gate is not None:
                    await gate.ready(task)  # L4 sequence barrier: bounded wait for the state
                elif i and i % YIELD_EVERY_TASKS == 0:
                    # A huge batch from one coordinator must not starve the agent's other
                    # links (their heartbeats and submits) for its whole length.
                    await asyncio.sleep(0)
                self._results.append(self._answer(task, batch))
            self.stats.tasks += len(batch.tasks)
            self._results_ready.set()
            await asyncio.sleep(0)  # let submit and heartbeat run between batches
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            "task stream ended",
        )

    async def _submitter(self, stub: pb_grpc.IOSwarmStub) -> None:
        """Send results as soon as they are ready while the budget has a token; otherwise
        wait for one, and everything ready by then goes in that call. One call at a time:
        results that come in while a call is under way go in the next."""
        while True:
            await self._results_ready.wait()
            await self._take_budget()
            await self._flush(stub)

    async def _take_budget(self) -> None:
        """Wait for a submit token; results that come in meanwhile go in the same call."""
        wait = self.budget.wait(time.monotonic())
        while wait > 0:
            await asyncio.sleep(wait)
            wait = self.budget.wait(time.monotonic())

    async def _flush(self, stub: pb_grpc.IOSwarmStub, final: bool = False) -> None:
        self._results_ready.clear()
        while self._results:
            chunk = self._results[: self.config.max_batch_size * 4]
            try:
                self.stats.submit_calls += 1
                await stub.SubmitResults(
                    pb.BatchResult(
                        agent_id=self.config.agent_id,
                        batch_id=self._last_batch_id,
                        results=_latest_per_task(chunk),
                        timestamp=int(time.time() * 1000),
                    ),
                    metadata=self._metadata,
                    timeout=10,
                )
                self.stats.submitted += len(chunk)
                del self._results[: len(chunk)]
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and not final:
                    self.stats.submit_refusals += 1
                    await asyncio.sleep(self.budget.refused(exc.details() or "", time.monotonic()))
                    await self._take_budget()
                    continue
                if exc.code() in RETRYABLE and not final:
                    raise
                # Refused outright (unknown / foreign ids after a coordinator restart): drop.
                self.stats.submit_refusals += 1
                log.warning(
                    "results dropped agent_id=%s coordinator=%s count=%d status=%s detail=%s",
                    self.config.agent_id,
                    self.coordinator,
                    len(chunk),
                    exc.code().name,
                    exc.details(),
                )
                del self._results[: len(chunk)]
                if final:
                    break
            if self._results and not final:
                await self._take_budget()  # a next chunk waits for its own token like any call
        self._results_ready.clear()

    async def _heartbeats(self, stub: pb_grpc.IOSwarmStub) -> None:
        while True:
            request = pb.HeartbeatRequest(
                agent_id=self.config.agent_id,
                tasks_processed=self.stats.tasks & 0xFFFFFFFF,
                tasks_pending=len(self._results),
            )
            if self.follower is not None:  # read together: no await between them
                request.state_height = self.follower.height
                request.state_hash = self.follower.state_hash
            resp = await stub.Heartbeat(request, metadata=self._metadata, timeout=10)
            if resp.directive == Directive.SHUTDOWN:
                log.info(
                    "link stopping agent_id=%s coordinator=%s reason=coordinator directive",
                    self.config.agent_id,
                    self.coordinator,
                )
                raise LinkEnded()
            if resp.directive == Directive.REREGISTER or not resp.alive:
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(),
                    "coordinator asked to register again",
                )
            self.note_payout(resp)
            await asyncio.sleep(self.heartbeat_interval)

    def note_payout(self, resp: pb.HeartbeatResponse) -> None:
        """Log a payout notice; epoch 0 is an epoch like any other."""
        if not resp.HasField("payout"):
            return
        p = resp.payout
        from ioswarm.core.rewards import iotx_text  # noqa: PLC0415 - reward math loads on a payout

        # amount_wei is exact; the float is for display only when the wei string is missing.
        amount = iotx_text(int(p.amount_wei)) if p.amount_wei.isdigit() else f"{p.amount_iotx:g}"
        log.info(
            "payout agent_id=%s coordinator=%s epoch=%d amount_iotx=%s rank=%d/%d tx=%s",
            self.config.agent_id,
            self.coordinator,
            p.epoch,
            amount,
            p.rank,
            p.total_agents,
            p.tx_hash or "-",
        )


def _latest_per_task(results: list[pb.TaskResult]) -> list[pb.TaskResult]:
    """One result per task id, the latest: a task that timed out here and came back holds two,
    and the coordinator refuses a batch naming a task twice."""
    latest = {r.task_id: r for r in results}
    if len(latest) == len(results):
        return results
    return list(latest.values())
