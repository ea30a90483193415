"""The agent runtime: one process, one event loop, one link per coordinator it serves.

Each coordinator named in the config gets its own :class:`~ioswarm.agent.link.CoordinatorLink`
(stream, submit budget, heartbeat, reconnect backoff, level state and payouts of its own); the
validator is shared. The links are supervised: a link that dies of an unexpected error is
logged with its traceback and restarted after a pause; a permanent failure (credentials or
registration refused, TLS that cannot work) or a shutdown directive ends only that link. The
agent ends when :meth:`Agent.shutdown` is called or every link has ended; if every link ended
on a permanent failure, ``run()`` raises the first one, so a lone misconfigured agent still
stops with the reason, as it always has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import reduce
from pathlib import Path

import grpc
import grpc.aio

from ioswarm.agent.link import AgentStats, CoordinatorLink, SessionTask
from ioswarm.agent.validators import Validator
from ioswarm.config import AgentConfig
from ioswarm.core.execution import ENGINE_ERROR
from ioswarm.errors import ConfigError, IoswarmError
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import MAX_WIRE_MESSAGE_BYTES

__all__ = ["Agent", "AgentStats", "SessionTask"]

log = logging.getLogger("ioswarm.agent")

RESTART_PAUSE_SEC = 1.0  # before restarting a link that died of an unexpected error


class Agent:
    """One agent process's runtime. ``run()`` until ``shutdown()`` or every link has ended."""

    def __init__(
        self, config: AgentConfig, validator: Validator, follower: SessionTask | None = None
    ) -> None:
        """``follower`` (L4 only) follows one coordinator's state diffs: it needs exactly one
        coordinator."""
        self.config = config
        self.validator = validator
        self.follower = follower
        self._stopping = asyncio.Event()
        self._own = AgentStats()  # counted here, not per link: validator errors
        self._error_kinds: set[str] = set()
        self.exit_reason = ""
        links = config.links()
        if follower is not None and len(links) > 1:
            raise ConfigError("--level", "an L4 agent follows exactly one coordinator")
        self.links = [
            CoordinatorLink(link, validator, self._answer, self._channel, self._stopping, follower)
            for link in links
        ]

    @property
    def stats(self) -> AgentStats:
        """Counters summed over every link."""
        return reduce(lambda a, b: a + b, (link.stats for link in self.links), self._own)

    def _channel(self, link: AgentConfig | None = None) -> grpc.aio.Channel:
        """A channel to ``link``'s coordinator (the first one when None)."""
        link = link if link is not None else self.links[0].config
        options = [
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.max_receive_message_length", MAX_WIRE_MESSAGE_BYTES),
        ]
        if not link.tls:
            return grpc.aio.insecure_channel(link.coordinator, options=options)
        root = None
        if link.ca_cert:
            try:
                root = Path(link.ca_cert).read_bytes()
            except OSError as exc:
                raise ConfigError(
                    "--ca-cert", f"cannot read {link.ca_cert}: {exc.strerror}"
                ) from exc
            if b"-----BEGIN CERTIFICATE-----" not in root:
                raise ConfigError("--ca-cert", f"{link.ca_cert} holds no PEM certificate")
        creds = grpc.ssl_channel_credentials(root_certificates=root)
        return grpc.aio.secure_channel(link.coordinator, creds, options=options)

    def shutdown(self, reason: str = "requested") -> None:
        """Stop every link after its current step; pending results are flushed where the link
        is up."""
        if not self._stopping.is_set():
            self.exit_reason = reason
            log.info("agent stopping agent_id=%s reason=%s", self.config.agent_id, reason)
        self._stopping.set()

    async def run(self) -> None:
        """Serve every coordinator until shut down or every link has ended.

        Raises the first link's :class:`IoswarmError` when every link ended on a permanent
        failure.
        """
        if len(self.links) > 1:
            log.info(
                "serving coordinators agent_id=%s count=%d coordinators=%s",
                self.config.agent_id,
                len(self.links),
                ",".join(link.coordinator for link in self.links),
            )
        outcomes = await asyncio.gather(*(self._supervise(link) for link in self.links))
        if self._stopping.is_set():
            return
        failures = [o for o in outcomes if o is not None]
        if failures and len(failures) == len(outcomes):
            self.exit_reason = str(failures[0])
            self._stopping.set()
            raise failures[0]
        self.exit_reason = self.exit_reason or "coordinator directive"
        self._stopping.set()

    async def _supervise(self, link: CoordinatorLink) -> IoswarmError | None:
        """Run one link until it ends; restart it when it dies of an unexpected error.
        Returns the permanent failure that ended it, or None."""
        while True:
            try:
                await link.run()
                return None
            except IoswarmError as exc:
                # Alone, the link's end is the agent's; beside others, only that coordinator's.
                log.error(
                    "agent stopping agent_id=%s coordinator=%s kind=%s reason=%s"
                    if len(self.links) == 1
                    else "coordinator given up agent_id=%s coordinator=%s kind=%s reason=%s",
                    self.config.agent_id,
                    link.coordinator,
                    link.failure.kind.value if link.failure else "error",
                    link.failure.reason if link.failure else exc,
                )
                return exc
            except Exception:  # a bug in one link must not take the others down
                log.exception(
                    "link failed; restarting agent_id=%s coordinator=%s",
                    self.config.agent_id,
                    link.coordinator,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), RESTART_PAUSE_SEC)
            if self._stopping.is_set():
                return None

    def _answer(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        """The validator's answer; a validator that raises declines the task instead (logged
        with its traceback the first time per kind, counted), and the agent serves on."""
        try:
            return self.validator.validate(task, batch)
        except Exception as exc:  # one bad task must never stop the agent
            kind = type(exc).__name__
            self._own.validator_errors += 1
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
