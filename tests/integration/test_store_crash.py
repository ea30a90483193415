"""A process killed (SIGKILL) in the middle of a group commit or a snapshot import leaves a
store that claims only what it holds: its height's state hash is the hash of its contents."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ioswarm.core.statehash import StateHash
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.state.snapshot_io import export_snapshot
from ioswarm.state.store import ACCOUNT, NAMESPACES, STORAGE, StateStore, Write, encode_account

pytestmark = pytest.mark.integration

MAP = 1 << 28
ROOT = Path(__file__).resolve().parents[2]
BLOCKS = 240
WRITES = 150
GROUP = 40  # blocks per group commit in the child
TRIALS = 8  # kills tried until one lands inside a group; each is checked

_APPLY_CHILD = """
import asyncio, sys
from ioswarm.agent.l4sync import StateFollower
from ioswarm.proto import ioswarm_pb2 as pb

datadir, payload, mode, group = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
diffs = [pb.StateDiff.FromString(bytes.fromhex(line)) for line in open(payload).read().split()]
follower = StateFollower(datadir, map_size=1 << 28, group_entries=group * 150)
follower.open()
if follower.height == 0:  # a follower starts from a complete store (height 0 would snapshot)
    follower.apply(diffs[0])
start = follower.height
todo = [d for d in diffs if d.height > start]


class Call:
    def __init__(self, from_height):
        self.diffs = [d for d in todo if d.height >= from_height]

    async def __aiter__(self):
        for d in self.diffs:
            yield d

    def cancel(self):
        pass


class Stub:
    def StreamStateDiffs(self, request, metadata=()):
        return Call(request.from_height)

    DownloadSnapshot = None


async def stream():
    task = asyncio.create_task(follower.run(Stub()))
    seen = start
    while follower.height < diffs[-1].height:
        await follower.wait_for_height(seen + 1, 5)
        if follower.height > seen:
            seen = follower.height
            print("done", seen, flush=True)
    task.cancel()


if mode == "groups":
    for i in range(0, len(todo), group):
        run = todo[i : i + group]
        print("begin", run[-1].height, flush=True)
        follower.apply_many(run)
        print("done", follower.height, flush=True)
else:
    asyncio.run(stream())
print("end", flush=True)
"""

_IMPORT_CHILD = """
import sys
from ioswarm.state.snapshot_io import import_snapshot
from ioswarm.state.store import StateStore

store = StateStore(sys.argv[2], map_size=1 << 28)
import_snapshot(sys.argv[1], store, progress=lambda p: print("progress", p.entries, flush=True))
print("end", store.height, flush=True)
"""


def _diffs(source: StateStore, rng: random.Random) -> tuple[list[pb.StateDiff], dict[int, bytes]]:
    """BLOCKS diffs of random account and storage writes, with the hash after each height."""
    diffs: list[pb.StateDiff] = []
    hashes = {0: source.state_hash}
    for height in range(1, BLOCKS + 1):
        writes: list[Write] = []
        for _ in range(WRITES):
            who = rng.randrange(1, 3000).to_bytes(20, "big")
            if rng.random() < 0.3:
                value = encode_account(rng.randrange(99), rng.randrange(10**18), bytes(32))
                writes.append(Write.put(ACCOUNT, who, value))
            elif rng.random() < 0.9:
                slot = rng.randrange(50).to_bytes(32, "big")
                writes.append(Write.put(STORAGE, who + slot, rng.randbytes(32)))
            else:
                writes.append(Write.delete(STORAGE, who + rng.randrange(50).to_bytes(32, "big")))
        prev = source.state_hash
        post = source.apply_diff(height, writes)
        hashes[height] = post
        entries = [
            pb.StateDiffEntry(
                op=pb.StateDiffEntry.Op.Name(w.op), namespace=w.namespace, key=w.key, value=w.value
            )
            for w in writes
        ]
        diffs.append(
            pb.StateDiff(height=height, entries=entries, prev_state_hash=prev, post_state_hash=post)
        )
    return diffs, hashes


def _child(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _kill_after(proc: subprocess.Popen[str], first: str, delay: float) -> list[str]:
    """Wait for a stdout line starting with ``first``, let ``delay`` pass, SIGKILL; the lines."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.split("\n")[0])
        if line.startswith(first):
            time.sleep(delay)
            break
    proc.send_signal(signal.SIGKILL)
    lines += proc.stdout.read().splitlines()  # the rest, including what readline buffered
    _, err = proc.communicate(timeout=60)
    finished = proc.returncode == 0 and lines[-1:] and lines[-1].startswith("end")
    assert finished or proc.returncode == -signal.SIGKILL, err
    return lines


def _consistent(path: Path) -> tuple[int, bytes]:
    """Reopen the store; assert its claimed hash is the hash of what it holds."""
    with StateStore(path, map_size=MAP) as store, store.view() as view:
        assert not view.loading
        held = StateHash.of((ns, k, v) for ns in NAMESPACES for k, v in view.iterate(ns))
        assert held.digest() == view.state_hash, f"height {view.height} claims another state"
        return view.height, view.state_hash


@pytest.mark.parametrize("mode", ["groups", "stream"])
def test_sigkill_during_group_commit_leaves_a_consistent_height(tmp_path: Path, mode: str) -> None:
    """Killed at random points of a multi-block apply (plain groups, or the follower's pipelined
    stream path), the store reopens at a group boundary whose hash is the chain's hash there and
    the hash of its contents; following then resumes to the tip."""
    rng = random.Random(5)
    with StateStore(tmp_path / "source", map_size=MAP, sync=False) as source:
        diffs, hashes = _diffs(source, rng)
    payload = tmp_path / "diffs.hex"
    payload.write_text("\n".join(d.SerializeToString().hex() for d in diffs))
    datadir = tmp_path / "agent"
    killed_inside = 0
    before = 1  # the child applies block 1 alone first
    for _ in range(TRIALS):
        proc = _child(_APPLY_CHILD, str(datadir), str(payload), mode, str(GROUP))
        lines = _kill_after(proc, "begin" if mode == "groups" else "done", rng.uniform(0, 0.04))
        if lines and lines[-1].startswith("end"):
            break  # it finished first: nothing was in flight
        height, digest = _consistent(datadir / "state")
        assert digest == hashes[height]
        done = [int(line.split()[1]) for line in lines if line.startswith("done")]
        assert height >= max(done, default=0)  # nothing it reported durable was lost
        if mode == "groups":
            assert (height - before) % GROUP == 0 or height == BLOCKS  # a group boundary
            killed_inside += lines[-1].startswith("begin")
        else:
            killed_inside += height < BLOCKS
        before = height
    assert killed_inside, "no kill landed while diffs were being applied"
    proc = _child(_APPLY_CHILD, str(datadir), str(payload), mode, str(GROUP))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _consistent(datadir / "state") == (BLOCKS, hashes[BLOCKS])


def test_sigkill_during_import_never_claims_the_snapshot_height(tmp_path: Path) -> None:
    """An import killed midway is discarded on reopen (empty, height 0, not the snapshot's
    height); importing again then loads the whole state with the exported hash."""
    rng = random.Random(9)
    snapshot = tmp_path / "state.snap.gz"
    with StateStore(tmp_path / "source", map_size=MAP, sync=False) as source:
        for height in range(1, 5):
            writes = [
                Write.put(STORAGE, rng.randbytes(52), rng.randbytes(32)) for _ in range(50_000)
            ]
            source.apply_diff(height, writes)
        export_snapshot(source, snapshot)
        want = (source.height, source.state_hash)
    target = tmp_path / "agent"
    proc = _child(_IMPORT_CHILD, str(snapshot), str(target))
    lines = _kill_after(proc, "progress", 0.0)
    assert not any(line.startswith("end") for line in lines), "the import finished before the kill"
    with StateStore(target, map_size=MAP) as store:
        assert store.height == 0
        assert not store.loading
        assert store.is_empty()
    proc = _child(_IMPORT_CHILD, str(snapshot), str(target))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _consistent(target) == want
