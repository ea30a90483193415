"""A synthetic L4 state source: a StateStore + DiffStore fed block by block, served over gRPC.

``SyntheticChain`` plays the coordinator's state side (diffs with prev/post state hashes, as the
wire carries them); ``FakeStateServicer`` serves ``StreamStateDiffs`` and ``DownloadSnapshot``
from it, with knobs to tamper with or skip a diff once, and ``serve_state`` runs it on
127.0.0.1 with an aiohttp server for the snapshot files.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from aiohttp import web

from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.proto import ioswarm_pb2_grpc as pb_grpc
from ioswarm.state.diffstore import DiffStore
from ioswarm.state.snapshot_io import export_snapshot
from ioswarm.state.store import ACCOUNT, CODE, STORAGE, StateStore, Write, encode_account

MAP = 1 << 26
MAX_STREAM_STEPS = 100_000  # bound on one served stream


def address(n: int) -> bytes:
    """A deterministic 20-byte address."""
    return n.to_bytes(20, "big")


def word(n: int) -> bytes:
    """A 32-byte big-endian word."""
    return n.to_bytes(32, "big")


class SyntheticChain:
    """State and diffs of a made-up chain; each :meth:`add_block` makes one StateDiff."""

    def __init__(self, path: Path, *, retain: int | None = None, seed: int = 7) -> None:
        self.store = StateStore(path / "state", map_size=MAP, sync=False)
        self.diffs = DiffStore(path / "diffs", map_size=MAP, retain=retain, sync=False)
        self.hashes: dict[int, bytes] = {0: self.store.state_hash}
        self.changed = asyncio.Event()
        self._rng = random.Random(seed)

    def close(self) -> None:
        """Close both stores."""
        self.store.close()
        self.diffs.close()

    @property
    def height(self) -> int:
        """Height of the newest block."""
        return self.store.height

    def add_block(self, writes: Sequence[Write] | None = None) -> pb.StateDiff:
        """Apply ``writes`` (random account and storage writes by default) as the next block."""
        height = self.store.height + 1
        if writes is None:
            writes = self.random_writes()
        prev = self.store.state_hash
        post = self.store.apply_diff(height, writes)
        diff = pb.StateDiff(
            height=height,
            entries=[
                pb.StateDiffEntry(
                    op=pb.StateDiffEntry.Op.Name(w.op),
                    namespace=w.namespace,
                    key=w.key,
                    value=w.value,
                )
                for w in writes
            ],
            prev_state_hash=prev,
            post_state_hash=post,
        )
        self.diffs.append(diff)
        self.hashes[height] = post
        self.changed.set()
        self.changed = asyncio.Event()
        return diff

    def add_blocks(self, n: int) -> None:
        """Append ``n`` random blocks."""
        for _ in range(n):
            self.add_block()

    def random_writes(self) -> list[Write]:
        """A few account, code and storage writes over a small address space."""
        rng = self._rng
        writes: list[Write] = []
        for _ in range(rng.randint(1, 6)):
            a = address(rng.randint(1, 40))
            kind = rng.random()
            if kind < 0.5:
                value = encode_account(rng.randint(0, 9), rng.randint(0, 10**20), bytes(32))
                writes.append(Write.put(ACCOUNT, a, value))
            elif kind < 0.9:
                slot = word(rng.randint(0, 5))
                writes.append(Write.put(STORAGE, a + slot, word(rng.randint(0, 3))))
            else:
                code = bytes(rng.randint(1, 255) for _ in range(8))
                writes.append(Write.put(CODE, bytes(rng.getrandbits(8) for _ in range(32)), code))
        return writes


@dataclass
class ServeStats:
    """What the fake servicer saw."""

    streams: int = 0
    active: int = 0
    snapshots: int = 0


class FakeStateServicer(pb_grpc.IOSwarmServicer):  # type: ignore[misc]
    """StreamStateDiffs and DownloadSnapshot over a :class:`SyntheticChain`."""

    def __init__(self, chain: SyntheticChain, snapshot_dir: Path) -> None:
        self.chain = chain
        self.snapshot_dir = snapshot_dir
        snapshot_dir.mkdir(parents=True, exist_ok=True)
        self.base_url = ""
        self.tamper_once: set[int] = set()
        self.tamper_always: set[int] = set()
        self.skip_once: set[int] = set()
        self.stats = ServeStats()

    async def StreamStateDiffs(  # noqa: N802 - gRPC method name
        self, request: pb.StreamStateDiffsRequest, context: Any
    ) -> AsyncIterator[pb.StateDiff]:
        chain = self.chain
        first = chain.diffs.first
        if first is not None and request.from_height < first:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, f"first retained {first}")
        self.stats.streams += 1
        self.stats.active += 1
        try:
            height = request.from_height
            for _ in range(MAX_STREAM_STEPS):
                diff = chain.diffs.get(height)
                if diff is None:
                    await chain.changed.wait()
                    continue
                if height in self.skip_once:
                    self.skip_once.discard(height)
                    height += 1
                    continue
                if height in self.tamper_once or height in self.tamper_always:
                    self.tamper_once.discard(height)
                    diff.entries.append(
                        pb.StateDiffEntry(
                            op=pb.StateDiffEntry.PUT,
                            namespace=ACCOUNT,
                            key=address(999),
                            value=bytes(72),
                        )
                    )
                yield diff
                height += 1
        finally:
            self.stats.active -= 1

    async def DownloadSnapshot(  # noqa: N802 - gRPC method name
        self, request: pb.DownloadSnapshotRequest, context: Any
    ) -> pb.DownloadSnapshotResponse:
        self.stats.snapshots += 1
        height = self.chain.height
        name = f"state-{height}.ioswsnap"
        info = await asyncio.to_thread(export_snapshot, self.chain.store, self.snapshot_dir / name)
        return pb.DownloadSnapshotResponse(
            url=f"{self.base_url}/snapshots/{name}",
            height=info.height,
            sha256=info.file_sha256,
            size=info.file_bytes,
        )


@asynccontextmanager
async def serve_state(
    chain: SyntheticChain, snapshot_dir: Path
) -> AsyncIterator[tuple[FakeStateServicer, str]]:
    """Run the fake servicer and a snapshot HTTP server on 127.0.0.1; yield it and its target."""
    servicer = FakeStateServicer(chain, snapshot_dir)
    app = web.Application()
    app.router.add_static("/snapshots", snapshot_dir)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    servicer.base_url = f"http://127.0.0.1:{port}"
    server = grpc.aio.server()
    pb_grpc.add_IOSwarmServicer_to_server(servicer, server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{grpc_port}"
    finally:
        chain.changed.set()
        await server.stop(grace=None)
        await runner.cleanup()
