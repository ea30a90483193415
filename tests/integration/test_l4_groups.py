"""Group commits of L4 diffs: a backlog is applied many blocks per commit, a bad diff inside a
group is refused without losing the good ones before it, and a prepared group is written only
on the state it was prepared on."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ioswarm.agent.l4sync import StateFollower
from ioswarm.errors import HashMismatch, ProtocolError, StoreError
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.state.store import ACCOUNT, STORAGE, StateStore, Write, encode_account

pytestmark = pytest.mark.integration

MAP = 1 << 27
BLOCKS = 120
WRITES = 50


def _chain(path: Path) -> tuple[list[pb.StateDiff], dict[int, bytes]]:
    """BLOCKS diffs of random writes over a small key space (keys rewritten across blocks)."""
    rng = random.Random(3)
    diffs: list[pb.StateDiff] = []
    with StateStore(path, map_size=MAP, sync=False) as source:
        hashes = {0: source.state_hash}
        for height in range(1, BLOCKS + 1):
            writes = []
            for _ in range(WRITES):
                who = rng.randrange(1, 200).to_bytes(20, "big")
                if rng.random() < 0.3:
                    value = encode_account(rng.randrange(9), rng.randrange(10**9), bytes(32))
                    writes.append(Write.put(ACCOUNT, who, value))
                elif rng.random() < 0.85:
                    slot = rng.randrange(8).to_bytes(32, "big")
                    writes.append(Write.put(STORAGE, who + slot, rng.randbytes(32)))
                else:
                    writes.append(Write.delete(STORAGE, who + rng.randrange(8).to_bytes(32, "big")))
            prev = source.state_hash
            hashes[height] = post = source.apply_diff(height, writes)
            entries = [
                pb.StateDiffEntry(
                    op=pb.StateDiffEntry.Op.Name(w.op),
                    namespace=w.namespace,
                    key=w.key,
                    value=w.value,
                )
                for w in writes
            ]
            diffs.append(
                pb.StateDiff(
                    height=height, entries=entries, prev_state_hash=prev, post_state_hash=post
                )
            )
    return diffs, hashes


class _Call:
    def __init__(self, diffs: list[pb.StateDiff]) -> None:
        self._diffs = diffs

    async def __aiter__(self) -> AsyncIterator[pb.StateDiff]:
        for diff in self._diffs:
            yield diff

    def cancel(self) -> None:
        """Nothing to release."""


class _Coordinator:
    """Serves the whole backlog at once from the asked height; tampers with one diff once."""

    def __init__(self, diffs: list[pb.StateDiff], tamper: int) -> None:
        self._diffs = diffs
        self._tamper = tamper
        self.streams = 0

    def StreamStateDiffs(self, request: Any, metadata: Any = ()) -> _Call:  # noqa: N802
        self.streams += 1
        out = []
        for diff in self._diffs:
            if diff.height < request.from_height:
                continue
            if diff.height == self._tamper:
                self._tamper = 0
                bad = pb.StateDiff()
                bad.CopyFrom(diff)
                bad.entries[0].value = b"\x07" * len(bad.entries[0].value)
                out.append(bad)
            else:
                out.append(diff)
        return _Call(out)

    @property
    def DownloadSnapshot(self) -> Any:  # noqa: N802 - a complete store never asks
        raise AssertionError("no snapshot expected")


async def test_backlog_is_applied_in_groups_and_a_bad_diff_is_refused(tmp_path: Path) -> None:
    """A follower behind by 119 blocks commits them in groups; a tampered diff in the middle of
    a group is refused once (the diffs before it stay applied), and a resync reaches the tip
    with the chain's hash."""
    diffs, hashes = _chain(tmp_path / "source")
    follower = StateFollower(tmp_path / "agent", map_size=MAP, group_entries=10 * WRITES)
    follower.apply(diffs[0])
    coordinator = _Coordinator(diffs, tamper=57)
    task = asyncio.create_task(follower.run(coordinator))
    try:
        assert await follower.wait_for_height(BLOCKS, 30)
        assert follower.state_hash == hashes[BLOCKS]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        follower.close()
    stats = follower.stats
    assert stats.rejected == 1
    assert stats.resyncs == 1
    assert coordinator.streams == 2
    assert stats.diffs_applied == BLOCKS
    assert stats.commits < BLOCKS // 5  # many blocks per durable commit
    with StateStore(tmp_path / "agent" / "state", map_size=MAP) as store:
        assert (store.height, store.state_hash) == (BLOCKS, hashes[BLOCKS])


def test_apply_many_keeps_the_good_diffs_before_a_bad_one(tmp_path: Path) -> None:
    """``apply_many`` over a run with a wrong post hash at its fifth diff applies the four
    before it and raises for the fifth; the store holds exactly height 5's state."""
    diffs, hashes = _chain(tmp_path / "source")
    follower = StateFollower(tmp_path / "agent", map_size=MAP)
    try:
        follower.apply(diffs[0])
        run = [pb.StateDiff() for _ in range(8)]
        for copy, diff in zip(run, diffs[1:9], strict=True):
            copy.CopyFrom(diff)
        run[4].post_state_hash = b"\x01" * 32
        run[5].prev_state_hash = b"\x01" * 32  # the chain as the forger would send it
        with pytest.raises(ProtocolError, match="rejected"):
            follower.apply_many(run)
        assert (follower.height, follower.state_hash) == (5, hashes[5])
        assert follower.stats.rejected == 1
    finally:
        follower.close()


def test_prepared_group_is_written_only_on_its_base(tmp_path: Path) -> None:
    """A group prepared on one height is refused once the store has moved; a group whose post
    hash is wrong is refused when prepared, naming the height."""
    diffs, hashes = _chain(tmp_path / "source")
    with StateStore(tmp_path / "agent", map_size=MAP) as store:
        early = store.prepare_diffs(diffs[:3])
        store.apply_diffs(diffs[:1])
        with pytest.raises(StoreError, match="prepared on height 0"):
            store.commit_prepared(early)
        assert store.height == 1
        chained = store.prepare_diffs(diffs[1:4])
        following = store.prepare_diffs(diffs[4:9], after=chained)
        store.commit_prepared(chained)
        assert store.commit_prepared(following) == hashes[9]
        wrong = pb.StateDiff()
        wrong.CopyFrom(diffs[10])
        wrong.post_state_hash = b"\x02" * 32
        with pytest.raises(HashMismatch, match="height 11") as info:
            store.prepare_diffs([diffs[9], wrong])
        assert info.value.height == 11
        assert (store.height, store.state_hash) == (9, hashes[9])
