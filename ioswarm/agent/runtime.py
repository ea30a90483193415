"""The agent runtime: register, stream tasks, validate, submit, heartbeat, reconnect.

One connection attempt runs three tasks (task stream, result submitter, heartbeat) and ends
when any of them fails; the outer loop reconnects with capped exponential backoff and
jitter. A ``shutdown`` directive or ``shutdown()`` ends the agent cleanly. A permanent failure
(:mod:`ioswarm.core.linkfailure`: credentials refused, registration refused, TLS that cannot
work with the trusted CA) ends ``run()`` with an error naming the reason instead of retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol

import grpc
import grpc.aio

from ioswarm import __version__
from ioswarm.agent.validators import GatedValidator, Validator
from ioswarm.config import AgentConfig
from ioswarm.core.execution import ENGINE_ERROR
from ioswarm.core.linkfailure import FailureKind, PermanentFailure, permanent_failure
from ioswarm.errors import AuthError, ConfigError, ProtocolError
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.proto import ioswarm_pb2_grpc as pb_grpc
from ioswarm.protocol import MAX_WIRE_MESSAGE_BYTES, Directive, auth_metadata

log = logging.getLogger("ioswarm.agent")

SUBMIT_INTERVAL_SEC = 0.12  # below the coordinator's default 10 submits/s per agent
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


@dataclass
class AgentStats:
    connects: int = 0
    batches: int = 0
    tasks: int = 0
    submitted: int = 0
    submit_refusals: int = 0
    validator_errors: int = 0
    connect_failures: int = 0


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


class _Stop(Exception):
    """Ends the current connection on purpose (shutdown directive)."""


class Agent:
    """One agent process's runtime. ``run()`` until ``shutdown()`` or a shutdown directive."""

    def __init__(
        self, config: AgentConfig, validator: Validator, follower: SessionTask | None = None
    ) -> None:
        self.config = config
        self.validator = validator
        self.follower = follower
        self.stats = AgentStats()
        self._stopping = asyncio.Event()
        self._results: list[pb.TaskResult] = []
        self._error_kinds: set[str] = set()
        self._results_ready = asyncio.Event()
        self._last_batch_id = ""
        self.heartbeat_interval = 10.0
        self.exit_reason = ""
        self._registering = False

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return auth_metadata(self.config.agent_id, self.config.api_key)

    def _channel(self) -> grpc.aio.Channel:
        options = [
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.max_receive_message_length", MAX_WIRE_MESSAGE_BYTES),
        ]
        if not self.config.tls:
            return grpc.aio.insecure_channel(self.config.coordinator, options=options)
        root = None
        if self.config.ca_cert:
            try:
                root = Path(self.config.ca_cert).read_bytes()
            except OSError as exc:
                raise ConfigError(
                    "--ca-cert", f"cannot read {self.config.ca_cert}: {exc.strerror}"
                ) from exc
            if b"-----BEGIN CERTIFICATE-----" not in root:
                raise ConfigError("--ca-cert", f"{self.config.ca_cert} holds no PEM certificate")
        creds = grpc.ssl_channel_credentials(root_certificates=root)
        return grpc.aio.secure_channel(self.config.coordinator, creds, options=options)

    def shutdown(self, reason: str = "requested") -> None:
        """Stop after the current step; pending results are flushed if the link is up."""
        if not self._stopping.is_set():
            self.exit_reason = reason
            log.info("agent stopping agent_id=%s reason=%s", self.config.agent_id, reason)
        self._stopping.set()

    async def run(self) -> None:
        """Connect and work until shut down; reconnect with capped exponential backoff.

        Raises :class:`AuthError`, :class:`ConfigError` (``--ca-cert``) or
        :class:`ProtocolError` on a permanent failure, after logging it.
        """
        failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await self._session()
            except _Stop:
                break
            except grpc.aio.AioRpcError as exc:
                detail = exc.details() or ""
                failure = permanent_failure(exc.code().name, detail, registering=self._registering)
                if failure is not None:
                    self._stop_for(failure)
                log.warning(
                    "connection lost agent_id=%s status=%s detail=%s",
                    self.config.agent_id,
                    exc.code().name,
                    detail,
                )
            except (OSError, ConnectionError) as exc:
                log.warning("connection failed agent_id=%s error=%s", self.config.agent_id, exc)
            if self._stopping.is_set():
                break
            self.stats.connect_failures += 1
            failures = 1 if time.monotonic() - started > 30 else failures + 1
            delay = min(self.config.reconnect_max_sec, 0.5 * 2 ** min(failures - 1, 8))
            delay *= random.uniform(0.8, 1.2)
            log.info("reconnecting agent_id=%s in=%.1fs", self.config.agent_id, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def _stop_for(self, failure: PermanentFailure) -> NoReturn:
        """Stop for good: retrying cannot help. Raises the error the CLI prints in one line."""
        self.exit_reason = failure.reason
        self._stopping.set()
        log.error(
            "agent stopping agent_id=%s kind=%s reason=%s",
            self.config.agent_id,
            failure.kind.value,
            failure.reason,
        )
        if failure.kind is FailureKind.TLS:
            raise ConfigError("--ca-cert", failure.reason)
        if failure.kind is FailureKind.CREDENTIALS:
            raise AuthError(failure.reason)
        raise ProtocolError(failure.reason)

    async def _session(self) -> None:
        async with self._channel() as channel:
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
            log.info(
                "registered agent_id=%s level=%s coordinator=%s chain_id=%d",
                self.config.agent_id,
                self.validator.level.name,
                self.config.coordinator,
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
            for task in batch.tasks:
                if gate is not None:
                    await gate.ready(task)  # L4 sequence barrier: bounded wait for the state
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

    def _answer(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        """The validator's answer; a validator that raises declines the task instead (logged
        with its traceback the first time per kind, counted), and the agent serves on."""
        try:
            return self.validator.validate(task, batch)
        except Exception as exc:  # one bad task must never stop the agent
            kind = type(exc).__name__
            self.stats.validator_errors += 1
            if kind not in self._error_kinds:
                self._error_kinds.add(kind)
                log.exception(
                    "validator failed; task declined agent_id=%s task_id=%d",
                    self.config.agent_id,
                    task.task_id,
                )
            return pb.TaskResult(
                task_id=task.task_id,
                valid=False,
                declined=True,
                reject_reason=ENGINE_ERROR,
                exec_error=kind,
            )

    async def _submitter(self, stub: pb_grpc.IOSwarmStub) -> None:
        while True:
            await self._results_ready.wait()
            # Coalesce: one SubmitResults per interval keeps under the coordinator's rate limit.
            await asyncio.sleep(SUBMIT_INTERVAL_SEC)
            await self._flush(stub)

    async def _flush(self, stub: pb_grpc.IOSwarmStub, final: bool = False) -> None:
        while self._results:
            chunk = self._results[: self.config.max_batch_size * 4]
            try:
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
                    await asyncio.sleep(SUBMIT_INTERVAL_SEC * 2)
                    continue
                if exc.code() in RETRYABLE and not final:
                    raise
                # Refused outright (unknown / foreign ids after a coordinator restart): drop.
                self.stats.submit_refusals += 1
                log.warning(
                    "results dropped agent_id=%s count=%d status=%s detail=%s",
                    self.config.agent_id,
                    len(chunk),
                    exc.code().name,
                    exc.details(),
                )
                del self._results[: len(chunk)]
                if final:
                    break
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
                self.shutdown("coordinator directive")
                raise _Stop()
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
            "payout agent_id=%s epoch=%d amount_iotx=%s rank=%d/%d tx=%s",
            self.config.agent_id,
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
