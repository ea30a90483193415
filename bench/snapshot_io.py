"""Snapshot export/import throughput and diff-apply rate on a synthetic state of ``size_mb``.

Builds a state whose IOSWSNAP stream is about ``size_mb`` MB in a StateStore in a temporary
directory, then measures:

- export MB/s: uncompressed stream bytes per second, LMDB -> gzip file (target >= 100),
- import MB/s: uncompressed stream bytes per second, gzip file -> empty store, state hash
  recomputed (target >= 100),
- L4 diff apply entries/s: blocks of 500 mixed writes made on the source store (the
  coordinator's side, with prev/post state hashes as the wire carries them) and followed by an
  L4 ``StateFollower`` on the imported store through its stream path: every diff checked
  (height, prev hash, post hash verified inside the transaction), whatever is queued applied as
  one durable group (target >= 50k); for reference also the rate of one durable commit per
  block (``apply_diff``), which is bound by the flush of ~900 dirty pages per block,
- peak memory: ``ru_maxrss`` (includes LMDB's file-backed map pages, which the kernel can drop)
  and the peak anonymous RSS sampled from /proc (the process's own heap), which is what
  "bounded memory" is about.

The ``state`` mix is, by stream bytes, ~25 % code (10 KB blobs built from repeated fragments,
so they compress like bytecode), ~10 % accounts, ~65 % storage slots (keys are 20-byte
addresses plus random 32-byte slots, values half small integers, half random words). The
``storage`` mix is slots only: the per-entry worst case.

Run: ``python bench/snapshot_io.py [--size-mb 1024] [--mix state|storage] [--dir /tmp]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ioswarm.agent.l4sync import StateFollower
from ioswarm.core.models import EMPTY_CODE_HASH
from ioswarm.core.statehash import keccak256
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.state import snapshot_io
from ioswarm.state.snapshot_io import export_snapshot, import_snapshot
from ioswarm.state.store import ACCOUNT, CODE, STORAGE, StateStore, Write, encode_account

MB = 1_000_000
_MAP_SIZE = 16 << 30
# Stream bytes of one entry: marker, ns_len, ns, two u32 lengths, key, value.
ACCOUNT_BYTES = 1 + 1 + 7 + 4 + 20 + 4 + 72
STORAGE_BYTES = 1 + 1 + 7 + 4 + 52 + 4 + 32
CODE_SIZE = 10_240
CODE_BYTES = 1 + 1 + 4 + 4 + 32 + 4 + CODE_SIZE
SLOTS_PER_CONTRACT = 64
DIFF_ENTRIES = 500
PER_BLOCK_BLOCKS = 40  # blocks applied with one durable commit each (the reference figure)
IMPORT_TARGET_MB_S = 100.0
DIFF_TARGET_ENTRIES_S = 50_000.0


class _PeakMemory:
    """Sample RssAnon from /proc/self/status every 50 ms and keep the maximum (kB)."""

    def __init__(self) -> None:
        self.peak_anon_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        status = Path("/proc/self/status")
        while not self._stop.wait(0.05):
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        self.peak_anon_kb = max(self.peak_anon_kb, int(line.split()[1]))
            except OSError:  # not Linux: only ru_maxrss is reported
                return


def _spread(index: int, count: int, width: int, rng: random.Random) -> bytes:
    """The index-th of ``count`` increasing keys that look random (sorted, as LMDB stores)."""
    step = (1 << (8 * width)) // count
    return (index * step + rng.randrange(step)).to_bytes(width, "big")


def _code(rng: random.Random, fragments: list[bytes]) -> bytes:
    parts = [rng.choice(fragments) for _ in range(CODE_SIZE // 64 + 1)]
    return b"".join(parts)[:CODE_SIZE]


def synthetic_state(
    size_mb: int, mix: str, seed: int, sample: list[bytes]
) -> Iterator[tuple[str, bytes, bytes]]:
    """Yield a sorted synthetic state of about ``size_mb`` MB of stream bytes.

    Fills ``sample`` with up to 50k storage keys for the diff benchmark.
    """
    rng = random.Random(seed)
    total = size_mb * MB
    share = {"state": (0.25, 0.10), "storage": (0.0, 0.0)}[mix]
    n_code = int(total * share[0]) // CODE_BYTES
    n_accounts = int(total * share[1]) // ACCOUNT_BYTES
    n_slots = (total - n_code * CODE_BYTES - n_accounts * ACCOUNT_BYTES) // STORAGE_BYTES
    n_contracts = max(1, n_slots // SLOTS_PER_CONTRACT)
    fragments = [rng.randbytes(64) for _ in range(64)]
    code_hashes = [_spread(i, max(n_code, 1), 32, rng) for i in range(n_code)]
    for i in range(n_accounts):
        code_hash = code_hashes[i % n_code] if n_code and i % 4 == 0 else EMPTY_CODE_HASH
        value = encode_account(rng.randrange(1000), rng.randrange(1 << 80), code_hash)
        yield ACCOUNT, _spread(i, n_accounts, 20, rng), value
    for code_hash in code_hashes:
        yield CODE, code_hash, _code(rng, fragments)
    every = max(1, n_slots // 50_000)
    emitted = 0
    for c in range(n_contracts):
        address = _spread(c, n_contracts, 20, rng)
        per = SLOTS_PER_CONTRACT if c < n_contracts - 1 else n_slots - emitted
        for slot in sorted(rng.randbytes(32) for _ in range(per)):
            value = (
                rng.randrange(1, 1 << 64).to_bytes(32, "big")
                if rng.random() < 0.5
                else rng.randbytes(32)
            )
            key = address + slot
            if emitted % every == 0:
                sample.append(key)
            emitted += 1
            yield STORAGE, key, value


def _diff_blocks(sample: list[bytes], count: int, seed: int) -> list[list[Write]]:
    """Blocks of mixed writes, generated before timing so only apply_diff is measured."""
    rng = random.Random(seed)
    blocks = []
    for _ in range(count):
        writes: list[Write] = []
        for _ in range(DIFF_ENTRIES):
            r = rng.random()
            if r < 0.6:  # update an existing slot
                writes.append(Write.put(STORAGE, rng.choice(sample), rng.randbytes(32)))
            elif r < 0.85:  # a new slot
                writes.append(Write.put(STORAGE, rng.randbytes(52), rng.randbytes(32)))
            elif r < 0.95:  # an account touched by a transaction
                value = encode_account(rng.randrange(1000), rng.randrange(1 << 80), EMPTY_CODE_HASH)
                writes.append(Write.put(ACCOUNT, rng.randbytes(20), value))
            else:  # a cleared slot
                writes.append(Write.delete(STORAGE, rng.choice(sample)))
        blocks.append(writes)
    return blocks


def _wire_diffs(source: StateStore, blocks: list[list[Write]]) -> list[pb.StateDiff]:
    """Apply ``blocks`` to the source store; return them as StateDiffs with prev/post hashes."""
    out = []
    height = source.height
    for writes in blocks:
        height += 1
        prev = source.state_hash
        post = source.apply_diff(height, writes)
        entries = [
            pb.StateDiffEntry(
                op=pb.StateDiffEntry.Op.Name(w.op), namespace=w.namespace, key=w.key, value=w.value
            )
            for w in writes
        ]
        out.append(
            pb.StateDiff(height=height, entries=entries, prev_state_hash=prev, post_state_hash=post)
        )
    return out


def _per_block_rate(datadir: Path, diffs: list[pb.StateDiff]) -> float:
    """Verified apply, one diff per durable commit (``StateFollower.apply``): entries/s."""
    follower = StateFollower(datadir, map_size=_MAP_SIZE)
    try:
        t0 = time.perf_counter()
        for diff in diffs:
            follower.apply(diff)
        return sum(len(d.entries) for d in diffs) / (time.perf_counter() - t0)
    finally:
        follower.close()


class _Call:
    """A served ``StreamStateDiffs`` call: the diffs from the asked height, then the end."""

    def __init__(self, diffs: list[pb.StateDiff], from_height: int) -> None:
        self._diffs = [d for d in diffs if d.height >= from_height]

    async def __aiter__(self) -> Any:
        for diff in self._diffs:
            yield diff

    def cancel(self) -> None:
        """Nothing to release."""


class _Stub:
    """The follower's side of the coordinator, in memory: the diffs stream at once."""

    def __init__(self, diffs: list[pb.StateDiff]) -> None:
        self._diffs = diffs

    def StreamStateDiffs(self, request: Any, metadata: Any = ()) -> _Call:  # noqa: N802
        return _Call(self._diffs, request.from_height)

    @property
    def DownloadSnapshot(self) -> Any:  # noqa: N802 - never called: the store is complete
        raise AssertionError("the follower's store is complete")


async def _follow_rate(datadir: Path, diffs: list[pb.StateDiff]) -> tuple[float, int]:
    """Catch up through the follower's stream path; (entries/s, diffs per durable commit)."""
    follower = StateFollower(datadir, map_size=_MAP_SIZE)
    follower.open()
    target = diffs[-1].height
    try:
        t0 = time.perf_counter()
        task = asyncio.create_task(follower.run(_Stub(diffs)))
        reached = await follower.wait_for_height(target, within=300)
        elapsed = time.perf_counter() - t0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        stats = follower.stats
        if not reached or stats.rejected:
            raise RuntimeError(f"follower stopped at {follower.height}, not {target}")
    finally:
        follower.close()
    entries = sum(len(d.entries) for d in diffs)
    return entries / elapsed, round(stats.diffs_applied / max(stats.commits, 1))


def run(
    size_mb: int = 1024,
    *,
    mix: str = "state",
    workdir: str | None = None,
    diff_blocks: int = 400,
) -> dict[str, Any]:
    """Build, export, import and apply diffs; print and return the figures."""
    root = Path(tempfile.mkdtemp(prefix="ioswarm-snapbench-", dir=workdir))
    figures: dict[str, Any] = {
        "size_mb": size_mb,
        "mix": mix,
        "gzip_backend": snapshot_io.GZIP_BACKEND,
        "gzip_level": snapshot_io.DEFAULT_LEVEL,
        "keccak": getattr(keccak256, "__module__", "?") + "." + keccak256.__name__,
    }
    map_size = _MAP_SIZE
    try:
        with _PeakMemory() as memory:
            sample: list[bytes] = []
            with StateStore(root / "src", map_size=map_size) as src:
                t0 = time.perf_counter()
                src.load(synthetic_state(size_mb, mix, 1, sample), 1_000_000)
                figures["build_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                info = export_snapshot(src, root / "state.snap.gz")
                export_s = time.perf_counter() - t0
                source_hash = src.state_hash
            agent = root / "agent"
            with StateStore(agent / "state", map_size=map_size) as dst:
                t0 = time.perf_counter()
                result = import_snapshot(root / "state.snap.gz", dst)
                import_s = time.perf_counter() - t0
                if result.state_hash != source_hash:
                    raise RuntimeError("imported state hash differs from the exported store")
            # The coordinator's side makes the diffs; a throwaway store needs no flush.
            with StateStore(root / "src", map_size=map_size, sync=False) as src:
                blocks = _diff_blocks(sample, PER_BLOCK_BLOCKS + diff_blocks, 2)
                diffs = _wire_diffs(src, blocks)
            figures["diff_apply_per_block_entries_per_s"] = _per_block_rate(
                agent, diffs[:PER_BLOCK_BLOCKS]
            )
            rate, per_commit = asyncio.run(_follow_rate(agent, diffs[PER_BLOCK_BLOCKS:]))
            figures["diff_apply_entries_per_s"] = rate
            figures["diff_blocks_per_commit"] = per_commit
        stream_mb = info.stream_bytes / MB
        figures.update(
            entries=info.count,
            counts=info.counts,
            stream_mb=stream_mb,
            file_mb=info.file_bytes / MB,
            export_s=export_s,
            export_mb_per_s=stream_mb / export_s,
            import_s=import_s,
            import_mb_per_s=stream_mb / import_s,
            import_entries_per_s=info.count / import_s,
            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            peak_anon_rss_mb=memory.peak_anon_kb / 1024,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"state: {figures['entries']:,} entries {figures['counts']}, "
        f"stream {stream_mb:,.0f} MB, gzip file {figures['file_mb']:,.0f} MB "
        f"({figures['gzip_backend']} level {figures['gzip_level']}); built in "
        f"{figures['build_s']:.1f} s"
    )
    print(f"export:     {figures['export_mb_per_s']:8.1f} MB/s   (target >= 100)")
    print(
        f"import:     {figures['import_mb_per_s']:8.1f} MB/s   (target >= 100: "
        f"{figures['import_mb_per_s'] / IMPORT_TARGET_MB_S:.2f}x; "
        f"{figures['import_entries_per_s']:,.0f} entries/s, state hash recomputed)"
    )
    diff_rate = figures["diff_apply_entries_per_s"]
    import_rate = figures["import_mb_per_s"]
    print(
        f"diff apply: {diff_rate:8,.0f} entries/s (target >= {DIFF_TARGET_ENTRIES_S:,.0f}: "
        f"{diff_rate / DIFF_TARGET_ENTRIES_S:.2f}x; L4 follower, every diff verified, "
        f"{figures['diff_blocks_per_commit']} blocks of {DIFF_ENTRIES} writes per durable commit)"
    )
    print(
        f"per block:  {figures['diff_apply_per_block_entries_per_s']:8,.0f} entries/s "
        f"(one durable commit per block: the flush of each block's dirty pages bounds it)"
    )
    print(
        f"peak RSS:   {figures['peak_rss_mb']:8.0f} MB (ru_maxrss, includes LMDB map pages); "
        f"peak anonymous RSS {figures['peak_anon_rss_mb']:.0f} MB"
    )
    met = diff_rate >= DIFF_TARGET_ENTRIES_S and import_rate >= IMPORT_TARGET_MB_S
    print(
        f"L4 diff apply >= 50k entries/s and snapshot import >= 100 MB/s on the {size_mb} MB "
        f"store: {'met' if met else 'NOT met'} "
        f"(diff apply {diff_rate / DIFF_TARGET_ENTRIES_S:.2f}x, "
        f"import {import_rate / IMPORT_TARGET_MB_S:.2f}x of target)"
    )
    figures["l4_store_targets_met"] = met
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=1024, help="snapshot stream size in MB")
    parser.add_argument("--mix", choices=("state", "storage"), default="state")
    parser.add_argument("--dir", default=None, help="where to put the temporary stores")
    parser.add_argument("--diff-blocks", type=int, default=400, help="blocks of 500 writes")
    args = parser.parse_args(argv)
    run(args.size_mb, mix=args.mix, workdir=args.dir, diff_blocks=args.diff_blocks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
