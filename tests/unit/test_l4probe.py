"""The l4test probe against fake streams: a broken link or a silent stream is a FAIL that says
why; a chained stream is a PASS with the final state hash."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from ioswarm.agent.l4probe import DiffStreamProbe
from ioswarm.errors import ProtocolError
from ioswarm.proto import ioswarm_pb2 as pb


def _h(n: int) -> bytes:
    return n.to_bytes(32, "big")


def diffs(n: int, tamper_at: int | None = None) -> list[pb.StateDiff]:
    """``n`` chained diffs from height 50; at ``tamper_at`` the prev hash is forged."""
    out = []
    for k in range(n):
        prev = _h(999) if k == tamper_at else _h(k)
        ctx = pb.BlockContext(
            number=50 + k, recent_block_hashes=[pb.BlockHash(number=49 + k, hash=_h(1000 + k))]
        )
        out.append(
            pb.StateDiff(
                height=50 + k,
                prev_state_hash=prev,
                post_state_hash=_h(k + 1),
                block_hash=_h(1001 + k),
                block_context=ctx,
            )
        )
    return out


class FakeCall:
    def __init__(self, items: list[pb.StateDiff], hang: bool) -> None:
        self.items, self.hang, self.cancelled = items, hang, False

    def __aiter__(self) -> AsyncIterator[pb.StateDiff]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[pb.StateDiff]:
        for item in self.items:
            yield item
        if self.hang:
            await asyncio.Event().wait()

    def cancel(self) -> None:
        self.cancelled = True


class FakeStub:
    """A coordinator that accepts the probe and streams the given diffs."""

    def __init__(self, items: list[pb.StateDiff], hang: bool = False, accept: bool = True):
        self.call = FakeCall(items, hang)
        self.accept = accept
        self.registered: list[pb.RegisterRequest] = []

    async def _register(self, req: pb.RegisterRequest, metadata: Any) -> pb.RegisterResponse:
        self.registered.append(req)
        return pb.RegisterResponse(accepted=self.accept, reason="" if self.accept else "full")

    @property
    def Register(self) -> Any:  # noqa: N802 - gRPC method name
        return self._register

    @property
    def StreamStateDiffs(self) -> Any:  # noqa: N802 - gRPC method name
        return lambda req, metadata: self.call


def probe(stub: FakeStub, blocks: int = 3, timeout: float = 5.0) -> DiffStreamProbe:
    return DiffStreamProbe(
        stub,
        agent_id="probe",
        wallet="0x" + "42" * 20,
        metadata=(("x", "y"),),
        blocks=blocks,
        timeout=timeout,
    )


async def test_chained_stream_passes_with_the_final_hash() -> None:
    """Four chained diffs, three links asked: PASS, height 53, state hash 4; registered L4."""
    stub = FakeStub(diffs(6))
    verdict = await probe(stub).run()
    assert verdict.passed and verdict.blocks == 3 and verdict.height == 53
    assert verdict.line() == f"PASS blocks=3 height=53 state_hash=0x{_h(4).hex()}"
    assert stub.registered[0].capability == 4 and stub.call.cancelled


async def test_tampered_stream_fails_naming_the_broken_link() -> None:
    """A forged prev hash at height 52 is a FAIL naming height 52 and the prev state hash."""
    verdict = await probe(FakeStub(diffs(6, tamper_at=2)), blocks=5).run()
    assert not verdict.passed and verdict.broken is not None and verdict.broken.height == 52
    line = verdict.line()
    assert line.startswith("FAIL blocks=1 height=51 ") and "height 52" in line
    assert "prev state hash" in line


async def test_forged_block_hash_fails() -> None:
    """A block context whose parent hash is not the streamed block hash is a FAIL."""
    items = diffs(4)
    items[2].block_context.recent_block_hashes[0].hash = _h(7)
    verdict = await probe(FakeStub(items)).run()
    assert not verdict.passed and "block 51 hash" in verdict.reason


async def test_silent_stream_times_out() -> None:
    """A stream that stops sending is a FAIL naming the timeout and how far it got."""
    verdict = await probe(FakeStub(diffs(2), hang=True), blocks=5, timeout=0.2).run()
    assert not verdict.passed and "timeout after 0.2s with 1 of 5 blocks" in verdict.reason


async def test_refused_registration_fails() -> None:
    """A coordinator that refuses the probe's registration is a FAIL giving its reason."""
    verdict = await probe(FakeStub([], accept=False)).run()
    assert not verdict.passed and verdict.reason == "register refused: full"


class FakeState:
    """A local state at height 49 with hash 0 that refuses the diff of ``bad_height``."""

    def __init__(self, bad_height: int | None = None) -> None:
        self.height, self.state_hash = 49, _h(0)
        self.bad_height = bad_height
        self.applied: list[int] = []
        self.bootstrapped = False

    async def bootstrap(self, stub: Any) -> None:
        self.bootstrapped = True

    def apply(self, diff: pb.StateDiff) -> bool:
        if diff.height == self.bad_height:
            raise ProtocolError(f"state diff {diff.height} rejected: post state hash mismatch")
        self.applied.append(diff.height)
        self.height, self.state_hash = diff.height, bytes(diff.post_state_hash)
        return True


class RecordingStub(FakeStub):
    def __init__(self, items: list[pb.StateDiff]) -> None:
        super().__init__(items)
        self.asked: list[pb.StreamStateDiffsRequest] = []

    @property
    def StreamStateDiffs(self) -> Any:  # noqa: N802 - gRPC method name
        def call(req: pb.StreamStateDiffsRequest, metadata: Any) -> FakeCall:
            self.asked.append(req)
            return self.call

        return call

    @property
    def DownloadSnapshot(self) -> Any:  # noqa: N802 - gRPC method name
        raise AssertionError("the fake state bootstraps itself")


async def test_replay_streams_from_the_local_height_and_applies_every_diff() -> None:
    """With a local state at 49 the stream starts at 50, the first diff's link to the local
    hash is checked too, and every checked diff is applied."""
    stub, state = RecordingStub(diffs(5)), FakeState()
    verdict = await probe_with(stub, state).run()
    assert verdict.passed and verdict.blocks == 3 and verdict.line().endswith("state=replayed")
    assert state.bootstrapped and stub.asked[0].from_height == 50
    assert state.applied == [50, 51, 52]


async def test_replay_failure_is_a_fail_naming_the_height() -> None:
    """A diff whose entries the local state refuses is a FAIL naming its height."""
    verdict = await probe_with(RecordingStub(diffs(5)), FakeState(bad_height=51)).run()
    assert not verdict.passed and verdict.blocks == 1
    assert verdict.reason.startswith("replay failed at height 51: ")


async def test_replay_checks_the_first_diff_against_the_local_hash() -> None:
    """A stream whose first diff does not follow the local state fails at that diff."""
    state = FakeState()
    state.state_hash = _h(77)
    verdict = await probe_with(RecordingStub(diffs(5)), state).run()
    assert not verdict.passed and verdict.broken is not None and verdict.broken.height == 50


def probe_with(stub: FakeStub, state: FakeState) -> DiffStreamProbe:
    return DiffStreamProbe(
        stub,
        agent_id="probe",
        wallet="0x" + "42" * 20,
        metadata=(),
        blocks=3,
        timeout=5.0,
        replay=state,
    )
