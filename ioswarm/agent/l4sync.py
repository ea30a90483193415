"""The L4 agent's state follower: a local LMDB StateStore kept at the coordinator's height.

Bootstrap: an existing store in ``datadir`` is resumed as it is (no snapshot reload, so a
restart is ready at once); an empty one is loaded from the snapshot given (file or URL), else
from the one the coordinator names in ``DownloadSnapshot`` (fetched over HTTP, size and sha256
checked before import).

Then ``StreamStateDiffs`` from local height + 1. Every diff must follow the local height and
carry the local state hash as ``prev_state_hash``; it is applied in one transaction that rolls
back unless the result hashes to ``post_state_hash``. A gap or a hash mismatch ends the stream
and reconnects from the local height + 1 (a resync); the same diff failing
``max_rejects`` times in a row, or the coordinator answering OUT_OF_RANGE (the local height fell
out of its retention window), loads a fresh snapshot: the last resort, since it replaces the
whole store. RESOURCE_EXHAUSTED (dropped as a slow subscriber) just reconnects and catches up.

Diffs are applied in groups: a reader task moves arriving diffs into a bounded queue, and
whatever is queued when the applier is free (at most ``group_entries`` writes) is checked diff by
diff and committed in one durable transaction with the height and state hash of its last diff;
the next group is read and hashed while that commit flushes (:mod:`ioswarm.agent.l4groups`). A
follower at the tip applies each diff as it comes; one that is behind commits many blocks per
flush. A crash leaves the store at a group's boundary, data, height and hash together. The store
work runs in worker threads so the event loop stays free; the L4 validator reads inside one LMDB
read view and checks its height there, so it never sees the store move in the middle of an
execution.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import grpc
import grpc.aio

from ioswarm.agent.l4groups import (
    GroupCommitter,
    Queued,
    chained,
    next_group,
    off_loop,
    read_stream,
)
from ioswarm.core.diffchain import LinkKind, state_link_problem
from ioswarm.errors import IoswarmError, ProtocolError, StoreError
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.state.diffapply import PreparedGroup
from ioswarm.state.snapshot_io import import_snapshot
from ioswarm.state.store import DEFAULT_MAP_SIZE, StateStore

__all__ = ["FollowerStats", "StateFollower", "download_snapshot"]

log = logging.getLogger("ioswarm.agent.l4sync")

DEFAULT_MAX_REJECTS = 3
# A group's writes are read, hashed and written in key order in one transaction. On a 1 GB
# store almost every random write dirties its own 4 KiB page, which LMDB holds in memory until
# the commit (and keeps for reuse after it): 50k writes hold ~200 MB. Against 25k-write groups
# they take a fifth less CPU per entry (fewer branch pages and commits per entry).
DEFAULT_GROUP_ENTRIES = 50_000
_QUEUE_DIFFS = 256  # diffs read ahead of the applier; past that the stream waits (backpressure)
_CHUNK = 1 << 20
_DOWNLOAD_NAME = "snapshot.download"
_STATE_DIR = "state"


class DiffStub(Protocol):
    """The two RPCs the follower uses; ``ioswarm_pb2_grpc.IOSwarmStub`` satisfies it."""

    @property
    def StreamStateDiffs(self) -> Any: ...  # noqa: N802 - gRPC method name

    @property
    def DownloadSnapshot(self) -> Any: ...  # noqa: N802 - gRPC method name


@dataclass
class FollowerStats:
    """Counters of one follower, cumulative over reconnects."""

    diffs_applied: int = 0
    entries_applied: int = 0
    commits: int = 0
    """Durable commits that applied diffs (a group of diffs is one)."""
    resyncs: int = 0
    """Streams ended on purpose because of a gap or a rejected diff."""
    reconnects: int = 0
    """Streams opened after the first."""
    snapshot_loads: int = 0
    gaps: int = 0
    """Diffs that did not follow the local height (each causes a resync)."""
    rejected: int = 0
    """Diffs whose prev or post state hash disagreed with the local store."""
    duplicates: int = 0
    """Diffs at or below the local height, skipped."""
    dropped: int = 0
    """Streams the coordinator ended as a slow subscriber (RESOURCE_EXHAUSTED)."""
    out_of_range: int = 0


class _Resync(Exception):
    """End the current stream and reconnect from the local height + 1."""


class StateFollower:
    """Keeps ``datadir``'s StateStore in step with the coordinator's state, diff by diff."""

    def __init__(
        self,
        datadir: str | Path,
        *,
        agent_id: str = "",
        metadata: Sequence[tuple[str, str]] = (),
        snapshot: str | None = None,
        apply_delay: float = 0.0,
        max_rejects: int = DEFAULT_MAX_REJECTS,
        backoff_max: float = 5.0,
        map_size: int = DEFAULT_MAP_SIZE,
        sync: bool = True,
        http: aiohttp.ClientSession | None = None,
        group_entries: int = DEFAULT_GROUP_ENTRIES,
    ) -> None:
        """``apply_delay`` sleeps after each diff (a deliberately slow follower, for tests: it
        applies one diff at a time). ``group_entries`` bounds the writes of one group commit."""
        self.datadir = Path(datadir)
        self.agent_id = agent_id
        self.metadata = tuple(metadata)
        self.snapshot_source = snapshot
        self.apply_delay = apply_delay
        self.max_rejects = max_rejects
        self.backoff_max = backoff_max
        self.group_entries = group_entries
        self.stats = FollowerStats()
        self.ready = asyncio.Event()
        """Set while the store holds a complete state (after bootstrap or on reopen)."""
        self._map_size = map_size
        self._sync = sync
        self._http = http
        self._store: StateStore | None = None
        self._height = 0
        self._hash = b""
        self._advanced = asyncio.Event()
        self._rejects: tuple[int, int] = (0, 0)  # (height, consecutive rejections of it)
        self._need_snapshot = False
        self._streams = 0

    # -- state --------------------------------------------------------------------------------

    @property
    def store(self) -> StateStore | None:
        """The local store while it holds a complete state, else None."""
        return self._store if self.ready.is_set() else None

    @property
    def height(self) -> int:
        """Height of the local state (0 before bootstrap)."""
        return self._height if self.ready.is_set() else 0

    @property
    def state_hash(self) -> bytes:
        """State hash at :attr:`height` (empty before bootstrap)."""
        return self._hash if self.ready.is_set() else b""

    def open(self) -> None:
        """Open the store; a complete one is ready at once. Idempotent."""
        if self._store is not None:
            return
        self._store = StateStore(
            self.datadir / _STATE_DIR, map_size=self._map_size, sync=self._sync
        )
        with self._store.view() as view:
            complete = not view.loading and view.height > 0
            self._height, self._hash = view.height, view.state_hash
        if complete:
            self.ready.set()
            log.info("state resumed height=%d datadir=%s", self._height, self.datadir)

    def close(self) -> None:
        """Close the store (call after :meth:`run` has ended)."""
        self.ready.clear()
        if self._store is not None:
            self._store.close()
            self._store = None

    async def wait_for_height(self, height: int, within: float) -> bool:
        """Wait up to ``within`` seconds for the local height to reach ``height``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.height < height:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), remaining)
        return True

    def apply(self, diff: pb.StateDiff) -> bool:
        """Check and apply one diff; False if it was already applied.

        Raises :class:`ProtocolError` for a gap or a hash mismatch; the store is unchanged then.
        """
        applied = self._apply_one(diff)
        if applied:
            self._notify()
        return applied

    def apply_many(self, diffs: Sequence[pb.StateDiff]) -> int:
        """Check consecutive diffs and apply them in one durable transaction; return how many.

        Diffs at or below the local height are skipped. Each must follow the one before (or
        the local height) and name its state hash as ``prev_state_hash``; each post hash is
        verified inside the transaction. A diff that fails a check ends the group: the ones
        before it are applied, then :class:`ProtocolError` is raised as :meth:`apply` would.
        """
        try:
            return self._apply_group(diffs)
        finally:
            self._notify()

    def _apply_one(self, diff: pb.StateDiff) -> bool:
        """:meth:`apply` without waking waiters (safe off the event loop thread)."""
        store = self._open_store()
        height = diff.height
        if height <= self._height:
            self.stats.duplicates += 1
            return False
        post = bytes(diff.post_state_hash)
        broken = state_link_problem(
            self._height, self._hash, height, bytes(diff.prev_state_hash), post
        )
        if broken is not None:
            if broken.kind is LinkKind.GAP:
                self.stats.gaps += 1
            else:
                self.stats.rejected += 1
            raise ProtocolError(str(broken))
        try:
            digest = store.apply_diff(height, diff.entries, expected_hash=post)
        except StoreError as exc:
            self.stats.rejected += 1
            raise ProtocolError(f"state diff {height} rejected: {exc}") from exc
        self._record(height, digest, 1, len(diff.entries))
        return True

    def _apply_group(self, diffs: Sequence[pb.StateDiff]) -> int:
        """:meth:`apply_many` without waking waiters (safe off the event loop thread)."""
        store = self._open_store()
        group: list[pb.StateDiff] = []
        height, digest = self._height, self._hash
        for diff in diffs:
            if diff.height <= height and not group:
                self.stats.duplicates += 1
                continue
            post = bytes(diff.post_state_hash)
            prev = bytes(diff.prev_state_hash)
            if state_link_problem(height, digest, diff.height, prev, post) is not None:
                break  # _apply_one below raises the precise error once the group is in
            group.append(diff)
            height, digest = diff.height, post
        applied = 0
        if len(group) > 1:
            try:
                digest = store.apply_diffs(group)
            except StoreError:
                pass  # one by one below: the good ones are applied, the bad one named
            else:
                entries = sum(len(d.entries) for d in group)
                self._record(group[-1].height, digest, len(group), entries)
                applied = len(group)
        for diff in diffs:
            if diff.height > self._height and self._apply_one(diff):
                applied += 1
        return applied

    def _record(self, height: int, digest: bytes, diffs: int, entries: int) -> None:
        self._height, self._hash = height, digest
        self.stats.diffs_applied += diffs
        self.stats.entries_applied += entries
        self.stats.commits += 1

    def _notify(self) -> None:
        """Wake the waiters of a new height (on the event loop thread)."""
        if self._height:
            self.ready.set()  # a store built up from height 0 by diffs is complete too
        self._advanced.set()
        self._advanced = asyncio.Event()

    def _open_store(self) -> StateStore:
        self.open()
        assert self._store is not None
        return self._store

    # -- the loop -----------------------------------------------------------------------------

    async def run(self, stub: DiffStub) -> None:
        """Bootstrap, then follow the diff stream until cancelled; reconnect on any failure."""
        self.open()
        failures = 0
        while True:
            started = time.monotonic()
            try:
                if self._need_snapshot or not self.ready.is_set():
                    await self._bootstrap(stub, refresh=self._need_snapshot)
                await self._follow(stub)
            except _Resync as exc:
                self.stats.resyncs += 1
                log.warning(
                    "state resync agent_id=%s height=%d reason=%s", self.agent_id, self._height, exc
                )
            except grpc.aio.AioRpcError as exc:
                self._on_rpc_error(exc)
            except (IoswarmError, OSError, aiohttp.ClientError) as exc:
                log.warning(
                    "state sync failed agent_id=%s height=%d error=%s",
                    self.agent_id,
                    self._height,
                    exc,
                )
            # A stream that ran a while resets the backoff; repeated quick failures grow it.
            failures = 0 if time.monotonic() - started > 10 else failures + 1
            delay = min(self.backoff_max, 0.1 * 2 ** min(failures, 8)) * random.uniform(0.8, 1.2)
            await asyncio.sleep(delay if failures > 1 else 0.05)

    def _on_rpc_error(self, exc: grpc.aio.AioRpcError) -> None:
        code = _log_rpc_error(exc, self.agent_id, self._height)
        if code == grpc.StatusCode.OUT_OF_RANGE:
            self.stats.out_of_range += 1
            self._need_snapshot = True
        elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            self.stats.dropped += 1

    async def _follow(self, stub: DiffStub) -> None:
        """One stream from the local height + 1; returns when the coordinator ends it."""
        if self._streams:
            self.stats.reconnects += 1
        self._streams += 1
        call = stub.StreamStateDiffs(
            pb.StreamStateDiffsRequest(agent_id=self.agent_id, from_height=self._height + 1),
            metadata=self.metadata,
        )
        queue: asyncio.Queue[Queued] = asyncio.Queue(1 if self.apply_delay else _QUEUE_DIFFS)
        reader = asyncio.create_task(read_stream(call, queue))
        committer = GroupCommitter(self._open_store(), self._committed)
        try:
            while group := await next_group(queue, self.group_entries, bool(self.apply_delay)):
                await self._apply_queued(committer, group)
                if self.apply_delay:
                    await asyncio.sleep(self.apply_delay)
        finally:
            reader.cancel()
            call.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await committer.close()
            self._notify()

    async def _apply_queued(self, committer: GroupCommitter, group: list[pb.StateDiff]) -> None:
        """Hand a clean group to the committer; apply any other one by one, naming the bad diff."""
        tip = committer.tip or (self._height, self._hash)
        clean = chained(group, *tip)
        if clean is not None:
            skipped, run = clean
            self.stats.duplicates += skipped
            try:
                if run:
                    await committer.submit(run)
                self._rejects = (0, 0)
                return
            except StoreError:
                pass  # a post hash that does not match: named below
        await committer.drain()
        try:
            await off_loop(partial(self._apply_group, group))
        except ProtocolError as exc:
            self._count_reject(self._height + 1)
            raise _Resync(str(exc)) from exc
        finally:
            self._notify()
        self._rejects = (0, 0)

    def _committed(self, group: PreparedGroup, diffs: Sequence[pb.StateDiff]) -> None:
        self._record(group.height, group.digest, len(diffs), sum(len(d.entries) for d in diffs))
        self._notify()

    def _count_reject(self, height: int) -> None:
        at, count = self._rejects
        count = count + 1 if at == height else 1
        self._rejects = (height, count)
        if count >= self.max_rejects:
            # Reconnecting keeps bringing the same refused diff: the local state itself is
            # wrong, and only a fresh snapshot repairs it.
            self._need_snapshot = True

    async def bootstrap(self, stub: DiffStub) -> None:
        """Make the store complete once: resume it, else load the snapshot given or the
        coordinator's (for a one-off follower such as ``ioswarm l4test --datadir``)."""
        self.open()
        if not self.ready.is_set():
            await self._bootstrap(stub, refresh=False)

    async def _bootstrap(self, stub: DiffStub, *, refresh: bool) -> None:
        """Load a snapshot into the store: the one given (first time only) or the coordinator's."""
        source = None if refresh else self.snapshot_source
        self.datadir.mkdir(parents=True, exist_ok=True)
        download = self.datadir / _DOWNLOAD_NAME
        want_height = 0
        try:
            if source is not None and not _is_url(source):
                path = Path(source)
            elif source is not None:
                await download_snapshot(source, download, session=self._http)
                path = download
            else:
                info = await stub.DownloadSnapshot(
                    pb.DownloadSnapshotRequest(agent_id=self.agent_id),
                    metadata=self.metadata,
                    timeout=30,
                )
                await download_snapshot(
                    info.url,
                    download,
                    sha256=bytes(info.sha256) or None,
                    size=info.size or None,
                    session=self._http,
                )
                path, want_height = download, info.height
            await self._import(path, want_height)
        finally:
            download.unlink(missing_ok=True)

    async def _import(self, path: Path, want_height: int) -> None:
        store = self._open_store()
        self.ready.clear()
        self._height, self._hash = 0, b""

        def load() -> tuple[int, bytes]:
            if not store.is_empty():
                store.clear()
            result = import_snapshot(path, store)
            return result.height, result.state_hash

        height, digest = await asyncio.to_thread(load)
        if want_height and height != want_height:
            raise StoreError(f"snapshot {path}: height {height}, coordinator said {want_height}")
        self._height, self._hash = height, digest
        self._need_snapshot = False
        self._rejects = (0, 0)
        self.stats.snapshot_loads += 1
        self.ready.set()
        self._advanced.set()
        self._advanced = asyncio.Event()
        log.info("state loaded from snapshot agent_id=%s height=%d", self.agent_id, height)


def _log_rpc_error(exc: grpc.aio.AioRpcError, agent_id: str, height: int) -> grpc.StatusCode:
    """Log why a diff stream ended; return its status code."""
    code: grpc.StatusCode = exc.code()
    if code == grpc.StatusCode.OUT_OF_RANGE:
        log.warning(
            "state height out of the coordinator's window agent_id=%s height=%d", agent_id, height
        )
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        log.info("state stream dropped as slow agent_id=%s height=%d", agent_id, height)
    else:
        log.warning(
            "state stream failed agent_id=%s height=%d status=%s detail=%s",
            agent_id,
            height,
            code.name,
            exc.details(),
        )
    return code


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


async def download_snapshot(
    url: str,
    dest: Path,
    *,
    sha256: bytes | None = None,
    size: int | None = None,
    session: aiohttp.ClientSession | None = None,
    total_sec: float = 600.0,
) -> int:
    """Fetch ``url`` into ``dest``; check ``size`` and ``sha256`` when given; return the size."""
    own = session is None
    client = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=total_sec))
    digest = hashlib.sha256()
    written = 0
    try:
        async with client.get(url) as resp:
            if resp.status != 200:
                raise StoreError(f"snapshot download {url}: HTTP {resp.status}")
            out = await asyncio.to_thread(dest.open, "wb")
            with out:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    written += len(chunk)
                    if size is not None and written > size:
                        raise StoreError(f"snapshot download {url}: more than {size} bytes")
                    digest.update(chunk)
                    out.write(chunk)
    except aiohttp.ClientError as exc:
        raise StoreError(f"snapshot download {url}: {exc}") from exc
    finally:
        if own:
            await client.close()
    if size is not None and written != size:
        raise StoreError(f"snapshot download {url}: {written} bytes, expected {size}")
    if sha256 is not None and digest.digest() != sha256:
        raise StoreError(f"snapshot download {url}: sha256 mismatch")
    return written
