"""A live probe of a coordinator's state-diff stream, as an L4 agent sees it (``ioswarm l4test``).

The probe registers as an L4 agent, opens ``StreamStateDiffs`` and checks every link of the
chain it is sent (:mod:`ioswarm.core.diffchain`): the first diff anchors the chain, each of the
next ``blocks`` must follow the one before. Without a state it checks that the hashes chain.
Given a replay follower (the L4 agent's :class:`~ioswarm.agent.l4sync.StateFollower` on a
directory of its own), it first brings that state to the coordinator's (a snapshot), streams
from the next height, and also applies every diff, so each diff's entries must produce its
post-state hash.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import grpc.aio

from ioswarm.core.diffchain import BrokenLink, DiffChainCheck, DiffLink
from ioswarm.core.models import Level
from ioswarm.errors import IoswarmError, ProtocolError
from ioswarm.proto import ioswarm_pb2 as pb

PROBE_VERSION = "l4test"


class ProbeStub(Protocol):
    """The two RPCs the probe uses; ``ioswarm_pb2_grpc.IOSwarmStub`` satisfies it."""

    @property
    def Register(self) -> Any: ...  # noqa: N802 - gRPC method name

    @property
    def StreamStateDiffs(self) -> Any: ...  # noqa: N802 - gRPC method name

    @property
    def DownloadSnapshot(self) -> Any: ...  # noqa: N802 - gRPC method name


class ReplayState(Protocol):
    """A local state the probe replays diffs on; ``StateFollower`` satisfies it."""

    @property
    def height(self) -> int: ...

    @property
    def state_hash(self) -> bytes: ...

    async def bootstrap(self, stub: Any) -> None: ...

    def apply(self, diff: pb.StateDiff) -> bool: ...


@dataclass(frozen=True)
class ProbeVerdict:
    """What the probe found: PASS with the blocks checked and the final state hash, or FAIL
    naming the first broken link, the refusal or the timeout."""

    passed: bool
    blocks: int
    height: int | None
    state_hash: bytes
    reason: str = ""
    broken: BrokenLink | None = None
    replayed: bool = False

    def line(self) -> str:
        """The one-line verdict printed to the operator."""
        at = f" height={self.height}" if self.height is not None else ""
        if self.passed:
            how = " state=replayed" if self.replayed else ""
            return f"PASS blocks={self.blocks}{at} state_hash=0x{self.state_hash.hex()}{how}"
        return f"FAIL blocks={self.blocks}{at} reason={self.reason}"


def diff_link(diff: pb.StateDiff) -> DiffLink:
    """The chain facts one streamed diff carries."""
    parent = b""
    if diff.HasField("block_context"):
        for entry in diff.block_context.recent_block_hashes:
            if entry.number == diff.height - 1:
                parent = bytes(entry.hash)
    return DiffLink(
        height=diff.height,
        prev_state_hash=bytes(diff.prev_state_hash),
        post_state_hash=bytes(diff.post_state_hash),
        block_hash=bytes(diff.block_hash),
        parent_hash=parent,
    )


class DiffStreamProbe:
    """One probe run against one coordinator."""

    def __init__(
        self,
        stub: ProbeStub,
        *,
        agent_id: str,
        wallet: str,
        metadata: tuple[tuple[str, str], ...],
        blocks: int,
        timeout: float,
        from_height: int = 0,
        replay: ReplayState | None = None,
    ) -> None:
        self._stub = stub
        self.agent_id = agent_id
        self.wallet = wallet
        self.metadata = metadata
        self.blocks = blocks
        self.timeout = timeout
        self.from_height = from_height
        self.replay = replay
        self.chain = DiffChainCheck()

    def _verdict(
        self,
        passed: bool,
        reason: str = "",
        broken: BrokenLink | None = None,
        counted: int | None = None,
    ) -> ProbeVerdict:
        return ProbeVerdict(
            passed,
            self.chain.checked if counted is None else counted,
            self.chain.height,
            self.chain.state_hash,
            reason,
            broken,
            self.replay is not None,
        )

    async def run(self) -> ProbeVerdict:
        """Register, stream and check until ``blocks`` links held, one broke, or time ran out."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._run()
        except TimeoutError:
            return self._verdict(
                False,
                f"timeout after {self.timeout:g}s with {self.chain.checked} of {self.blocks} "
                "blocks checked",
            )
        except grpc.aio.AioRpcError as exc:
            return self._verdict(False, f"{exc.code().name}: {exc.details()}")
        except IoswarmError as exc:  # the replay state's snapshot could not be loaded
            return self._verdict(False, f"local state: {exc}")

    async def _run(self) -> ProbeVerdict:
        answer = await self._stub.Register(
            pb.RegisterRequest(
                agent_id=self.agent_id,
                capability=Level.L4.name,
                version=PROBE_VERSION,
                wallet_address=self.wallet,
            ),
            metadata=self.metadata,
        )
        if not answer.accepted:
            return self._verdict(False, f"register refused: {answer.reason}")
        from_height = self.from_height
        if self.replay is not None:
            await self.replay.bootstrap(self._stub)
            from_height = self.replay.height + 1
            self.chain = DiffChainCheck(self.replay.height, self.replay.state_hash)
        call = self._stub.StreamStateDiffs(
            pb.StreamStateDiffsRequest(agent_id=self.agent_id, from_height=from_height),
            metadata=self.metadata,
        )
        try:
            async for diff in call:
                broken = self.chain.feed(diff_link(diff))
                if broken is not None:
                    return self._verdict(
                        False, f"broken link at height {broken.height}: {broken}", broken
                    )
                if self.replay is not None and (problem := self._replay(diff)):
                    return self._verdict(False, problem, counted=self.chain.checked - 1)
                if self.chain.checked >= self.blocks:
                    return self._verdict(True)
        finally:
            call.cancel()
        return self._verdict(False, "the coordinator ended the stream")

    def _replay(self, diff: pb.StateDiff) -> str | None:
        """Apply ``diff`` to the local state; why it could not be, or None."""
        assert self.replay is not None
        try:
            self.replay.apply(diff)
        except ProtocolError as exc:
            return f"replay failed at height {diff.height}: {exc}"
        return None


def probe_channel(target: str, *, tls: bool, ca_pem: bytes | None) -> grpc.aio.Channel:
    """A channel to ``target`` as an agent opens it: TLS (system roots or ``ca_pem``) unless
    told plaintext."""
    if not tls:
        return grpc.aio.insecure_channel(target)
    return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca_pem))
