"""StateFollower against an in-process diff source (gRPC + HTTP on 127.0.0.1, LMDB in tmp)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc.aio
import pytest

from ioswarm.agent.l4sync import StateFollower, download_snapshot
from ioswarm.errors import ProtocolError, StoreError
from ioswarm.proto import ioswarm_pb2_grpc as pb_grpc
from tests.helpers import eventually
from tests.integration.l4fake import MAP, SyntheticChain, serve_state

pytestmark = pytest.mark.integration


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[SyntheticChain]:
    c = SyntheticChain(tmp_path / "chain")
    c.add_blocks(10)
    yield c
    c.close()


@asynccontextmanager
async def following(follower: StateFollower, target: str) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``follower`` against ``target`` until the block ends; then stop and close it."""
    async with grpc.aio.insecure_channel(target) as channel:
        task = asyncio.create_task(follower.run(pb_grpc.IOSwarmStub(channel)))
        try:
            yield task
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            follower.close()


def _follower(tmp_path: Path, name: str = "agent", **kw: object) -> StateFollower:
    return StateFollower(tmp_path / name, agent_id=name, map_size=MAP, **kw)  # type: ignore[arg-type]


async def _at_tip(follower: StateFollower, chain: SyntheticChain) -> bool:
    return follower.height == chain.height and follower.state_hash == chain.hashes[chain.height]


async def test_bootstraps_from_coordinator_snapshot_and_follows(
    tmp_path: Path, chain: SyntheticChain
) -> None:
    """An empty follower downloads the advertised snapshot, imports it and follows live diffs."""
    async with serve_state(chain, tmp_path / "snaps") as (servicer, target):
        follower = _follower(tmp_path)
        async with following(follower, target):
            await eventually(lambda: _at_tip(follower, chain), what="initial catch-up")
            chain.add_blocks(5)
            await eventually(lambda: _at_tip(follower, chain), what="live diffs")
            assert follower.stats.snapshot_loads == 1
            assert servicer.stats.snapshots == 1
            assert follower.stats.gaps == 0
            assert follower.stats.diffs_applied == 5
    assert not (tmp_path / "agent" / "snapshot.download").exists()


async def test_tampered_diff_is_rejected_and_resynced(
    tmp_path: Path, chain: SyntheticChain
) -> None:
    """A diff whose entries do not hash to its post state hash is refused; a resync recovers."""
    async with serve_state(chain, tmp_path / "snaps") as (servicer, target):
        follower = _follower(tmp_path)
        async with following(follower, target):
            await eventually(lambda: _at_tip(follower, chain))
            servicer.tamper_once.add(chain.height + 2)
            chain.add_blocks(4)
            await eventually(lambda: _at_tip(follower, chain))
            assert follower.stats.rejected == 1
            assert follower.stats.resyncs == 1
            assert follower.stats.snapshot_loads == 1


async def test_gap_triggers_resync_from_local_height(tmp_path: Path, chain: SyntheticChain) -> None:
    """A skipped height is a gap: the follower reconnects from its own height + 1."""
    async with serve_state(chain, tmp_path / "snaps") as (servicer, target):
        follower = _follower(tmp_path)
        async with following(follower, target):
            await eventually(lambda: _at_tip(follower, chain))
            servicer.skip_once.add(chain.height + 1)
            chain.add_blocks(3)
            await eventually(lambda: _at_tip(follower, chain))
            assert follower.stats.gaps == 1
            assert follower.stats.resyncs == 1
            assert follower.stats.snapshot_loads == 1
            assert servicer.stats.streams >= 2


async def test_persistent_divergence_falls_back_to_snapshot(
    tmp_path: Path, chain: SyntheticChain
) -> None:
    """The same diff refused ``max_rejects`` times in a row makes the follower re-snapshot."""
    async with serve_state(chain, tmp_path / "snaps") as (servicer, target):
        follower = _follower(tmp_path, max_rejects=2, backoff_max=0.2)
        async with following(follower, target):
            await eventually(lambda: _at_tip(follower, chain))
            bad = chain.height + 1
            servicer.tamper_always.add(bad)
            chain.add_blocks(2)
            await eventually(lambda: follower.stats.rejected >= 2)
            servicer.tamper_always.clear()
            chain.add_blocks(1)
            await eventually(lambda: _at_tip(follower, chain))
            assert follower.stats.snapshot_loads == 2


async def test_out_of_range_reloads_a_snapshot(tmp_path: Path) -> None:
    """A local height older than the coordinator's window (OUT_OF_RANGE) loads a new snapshot."""
    chain = SyntheticChain(tmp_path / "chain", retain=3)
    try:
        chain.add_blocks(5)
        async with serve_state(chain, tmp_path / "snaps") as (_, target):
            follower = _follower(tmp_path)
            async with following(follower, target):
                await eventually(lambda: _at_tip(follower, chain))
            chain.add_blocks(10)  # the follower's next height is now pruned
            follower = _follower(tmp_path)
            follower.open()
            assert follower.height == 5
            async with following(follower, target):
                await eventually(lambda: _at_tip(follower, chain))
                assert follower.stats.out_of_range == 1
                assert follower.stats.snapshot_loads == 1
    finally:
        chain.close()


async def test_restart_resumes_from_store_without_snapshot(
    tmp_path: Path, chain: SyntheticChain
) -> None:
    """Reopening a datadir is ready at once at the stored height and never reloads a snapshot."""
    async with serve_state(chain, tmp_path / "snaps") as (servicer, target):
        first = _follower(tmp_path)
        async with following(first, target):
            await eventually(lambda: _at_tip(first, chain))
        chain.add_blocks(4)
        second = _follower(tmp_path)
        second.open()
        assert second.ready.is_set()
        assert second.height == chain.height - 4
        async with following(second, target):
            await eventually(lambda: _at_tip(second, chain))
            assert second.stats.snapshot_loads == 0
            assert second.stats.diffs_applied == 4
            assert servicer.stats.snapshots == 1


_KILL_CHILD = """
import os, signal, sys
from ioswarm.agent.l4sync import StateFollower
from ioswarm.proto import ioswarm_pb2 as pb
follower = StateFollower(sys.argv[1], map_size=1 << 26)
for raw in sys.stdin.buffer.read().split(b"\\n--\\n"):
    if raw:
        follower.apply(pb.StateDiff.FromString(bytes.fromhex(raw.decode())))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_after_apply_keeps_height(tmp_path: Path, chain: SyntheticChain) -> None:
    """A process killed without cleanup right after applying diffs reopens at that height."""
    payload = b"\n--\n".join(d.SerializeToString().hex().encode() for d in chain.diffs.range(1))
    datadir = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_CHILD, str(datadir)],
        input=payload,
        capture_output=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    follower = StateFollower(datadir, map_size=MAP)
    follower.open()
    try:
        assert follower.ready.is_set()
        assert follower.height == chain.height
        assert follower.state_hash == chain.hashes[chain.height]
    finally:
        follower.close()


def test_apply_refuses_gap_and_wrong_prev_hash(tmp_path: Path, chain: SyntheticChain) -> None:
    """``apply`` raises on a gap or a foreign prev hash and leaves the store untouched."""
    follower = _follower(tmp_path)
    try:
        diffs = list(chain.diffs.range(1))
        follower.apply(diffs[0])
        with pytest.raises(ProtocolError, match="gap"):
            follower.apply(diffs[2])
        wrong = type(diffs[1])()
        wrong.CopyFrom(diffs[1])
        wrong.prev_state_hash = b"\x01" * 32
        with pytest.raises(ProtocolError, match="prev state hash"):
            follower.apply(wrong)
        assert follower.height == 1
        assert not follower.apply(diffs[0])
        assert follower.stats.duplicates == 1
    finally:
        follower.close()


async def test_download_checks_sha256(tmp_path: Path, chain: SyntheticChain) -> None:
    """A download whose sha256 differs from the advertised one is an error."""
    async with serve_state(chain, tmp_path / "snaps") as (servicer, _):
        info = await servicer.DownloadSnapshot(None, None)  # type: ignore[arg-type]
        dest = tmp_path / "dl"
        assert await download_snapshot(info.url, dest, sha256=bytes(info.sha256)) == info.size
        with pytest.raises(StoreError, match="sha256"):
            await download_snapshot(info.url, dest, sha256=b"\x00" * 32)
        with pytest.raises(StoreError, match="expected"):
            await download_snapshot(info.url, dest, size=info.size + 1)
