"""L4 follower: restart-to-ready time over an existing store, and verified diff-apply rate.

Builds a coordinator-side StateStore block by block (``blocks`` blocks of ``writes`` mixed
account and storage writes), turning each block into a ``StateDiff`` with prev/post state
hashes as the wire carries them. Then measures:

- diff apply entries/s: a fresh ``StateFollower`` applies every diff with its checks (follows
  the local height, prev hash equal to the local hash, post hash verified in the same durable
  transaction) — the live path, one fsync per block;
- restart-to-ready ms: closing the follower and constructing + opening a new one over the same
  datadir until ``ready`` is set (target < 100 ms), repeated and reported as the median.

Run: ``python bench/l4_restart.py [--blocks 400] [--writes 500]``
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ioswarm.agent.l4sync import StateFollower
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.state.store import ACCOUNT, STORAGE, StateStore, Write, encode_account

RESTARTS = 7


def _diffs(store: StateStore, blocks: int, writes: int, rng: random.Random) -> list[pb.StateDiff]:
    """``blocks`` consecutive diffs built on ``store``, each with its prev/post state hash."""
    out = []
    for height in range(1, blocks + 1):
        block: list[Write] = []
        for _ in range(writes):
            address = rng.randrange(1, 50_000).to_bytes(20, "big")
            if rng.random() < 0.3:
                value = encode_account(rng.randrange(100), rng.randrange(10**20), bytes(32))
                block.append(Write.put(ACCOUNT, address, value))
            else:
                slot = rng.randrange(64).to_bytes(32, "big")
                block.append(Write.put(STORAGE, address + slot, rng.randbytes(32)))
        prev = store.state_hash
        post = store.apply_diff(height, block)
        out.append(
            pb.StateDiff(
                height=height,
                entries=[
                    pb.StateDiffEntry(
                        op=pb.StateDiffEntry.Op.Name(w.op),
                        namespace=w.namespace,
                        key=w.key,
                        value=w.value,
                    )
                    for w in block
                ],
                prev_state_hash=prev,
                post_state_hash=post,
            )
        )
    return out


def run(blocks: int = 400, writes: int = 500, seed: int = 1) -> dict[str, float]:
    """Measure and print; return the figures."""
    root = Path(tempfile.mkdtemp(prefix="ioswarm-bench-l4-"))
    try:
        with StateStore(root / "coordinator", map_size=1 << 30, sync=False) as source:
            diffs = _diffs(source, blocks, writes, random.Random(seed))
        follower = StateFollower(root / "agent", map_size=1 << 30)
        started = time.perf_counter()
        for diff in diffs:
            follower.apply(diff)
        apply_sec = time.perf_counter() - started
        entries = follower.stats.entries_applied
        height = follower.height
        follower.close()
        samples = []
        for _ in range(RESTARTS):
            t0 = time.perf_counter()
            again = StateFollower(root / "agent", map_size=1 << 30)
            again.open()
            ready = again.ready.is_set() and again.height == height
            samples.append(time.perf_counter() - t0)
            again.close()
            if not ready:
                raise SystemExit("restart did not resume the stored height")
        result = {
            "blocks": float(blocks),
            "entries": float(entries),
            "diff_apply_entries_per_sec": round(entries / apply_sec),
            "diff_apply_blocks_per_sec": round(blocks / apply_sec, 1),
            "restart_to_ready_ms_median": round(statistics.median(samples) * 1000, 2),
            "restart_to_ready_ms_max": round(max(samples) * 1000, 2),
            "restart_target_ms": 100.0,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"l4 follower: {result['diff_apply_entries_per_sec']:.0f} entries/s verified apply "
        f"({result['diff_apply_blocks_per_sec']} blocks/s of {writes} writes); restart to ready "
        f"{result['restart_to_ready_ms_median']} ms median (target < 100 ms, "
        f"{100 / max(result['restart_to_ready_ms_median'], 1e-3):.0f}x under it)"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=400)
    parser.add_argument("--writes", type=int, default=500)
    args = parser.parse_args()
    run(args.blocks, args.writes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
