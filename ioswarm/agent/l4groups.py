"""Group commits for the L4 state follower: the next group is read while the last one flushes.

On a store much larger than the CPU caches, a durable commit of a group of diffs spends most of
its time flushing the pages the group dirtied (the GIL is released meanwhile), and preparing the
next group (reading current values in key order, hashing, checking each post state hash) only
reads. :class:`GroupCommitter` overlaps the two: group N+1 is prepared in a read view, on top of
group N's final values, while group N's pages are flushed in a worker thread; group N+1's commit
starts only once group N's has ended, and it checks that the store is at group N's height and
hash.
Every commit writes data, height and hash together, so a crash leaves the store at a group
boundary.

:func:`chained` and :func:`next_group` are the follower's checks and queue draining.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

from ioswarm.core.diffchain import state_link_problem
from ioswarm.errors import StoreError
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.state.diffapply import PreparedGroup
from ioswarm.state.store import StateStore

_R = TypeVar("_R")

Committed = Callable[[PreparedGroup, Sequence[pb.StateDiff]], None]
"""Called on the event loop after a group's commit: the group and its diffs."""


class GroupCommitter:
    """Commits groups of checked diffs to a store, one commit in flight behind the next group."""

    def __init__(self, store: StateStore, committed: Committed) -> None:
        self._store = store
        self._committed = committed
        self._last: PreparedGroup | None = None
        self._pending: asyncio.Future[bytes] | None = None
        self._written = asyncio.Event()
        self._written.set()

    @property
    def tip(self) -> tuple[int, bytes] | None:
        """Height and hash after the last group handed in (committed or not), if any."""
        last = self._last
        return None if last is None else (last.height, last.digest)

    async def submit(self, diffs: Sequence[pb.StateDiff]) -> None:
        """Prepare ``diffs`` (checked to follow :attr:`tip`) and start their commit.

        Waits for the commit before it to end first. Raises :class:`StoreError` when a diff does
        not hash to its post state hash (nothing of this group is written then) or when the
        commit before failed; call :meth:`drain` before applying anything another way.
        """
        # py-lmdb releases and retakes the GIL around every put: preparing (Python) while the
        # previous group's puts run would make them wait for the GIL each time. So preparing
        # starts once those puts are done, and overlaps the flush, which holds no GIL.
        await self._written.wait()
        prepare = partial(self._store.prepare_diffs, diffs, self._last)
        group = await off_loop(prepare)
        await self._finish()
        loop = asyncio.get_running_loop()
        written = asyncio.Event()
        commit = partial(
            self._store.commit_prepared, group, partial(loop.call_soon_threadsafe, written.set)
        )
        pending = loop.run_in_executor(None, commit)
        pending.add_done_callback(partial(self._done, group, diffs, written))
        self._pending = pending
        self._written = written
        self._last = group

    async def drain(self) -> None:
        """Wait for the commit in flight; raise its error, if any. The tip is then the store's."""
        try:
            await self._finish()
        finally:
            self._last = None

    async def close(self) -> None:
        """Wait for the commit in flight even if cancelled meanwhile (its report included).

        A store write must not be left running when the caller goes on to close the store.
        """
        pending = self._pending
        if pending is not None:
            await asyncio.wait([pending])
        with contextlib.suppress(StoreError):
            await self.drain()

    def _done(
        self,
        group: PreparedGroup,
        diffs: Sequence[pb.StateDiff],
        written: asyncio.Event,
        pending: asyncio.Future[bytes],
    ) -> None:
        """On the event loop as soon as a commit ends: report it if it succeeded."""
        written.set()  # also when it failed before writing: nothing waits in vain
        if not pending.cancelled() and pending.exception() is None:
            self._committed(group, diffs)

    async def _finish(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            await asyncio.shield(pending)
        except StoreError:
            self._last = None
            raise


def chained(
    diffs: Sequence[pb.StateDiff], height: int, digest: bytes
) -> tuple[int, list[pb.StateDiff]] | None:
    """Leading duplicates and the rest, if the rest follows (``height``, ``digest``) cleanly.

    Diffs at or below ``height`` at the front are duplicates (counted, skipped). Every other
    diff must follow the one before at height + 1 and name its post state hash as
    ``prev_state_hash``, and carry a 32-byte post state hash; None if any does not (the caller
    then applies one by one, which names the offending diff).
    """
    skipped = 0
    while skipped < len(diffs) and diffs[skipped].height <= height:
        skipped += 1
    run = list(diffs[skipped:])
    for diff in run:
        post = bytes(diff.post_state_hash)
        prev = bytes(diff.prev_state_hash)
        if state_link_problem(height, digest, diff.height, prev, post) is not None:
            return None
        height, digest = diff.height, post
    return skipped, run


Queued = pb.StateDiff | BaseException | None
"""What the stream reader queues: a diff, the error that ended the stream, or None at its end."""


async def next_group(
    queue: asyncio.Queue[Queued], max_entries: int, one_at_a_time: bool
) -> list[pb.StateDiff] | None:
    """The next diff (waiting for it) and those queued behind it up to ``max_entries`` writes.

    None at the stream's end; the stream's error is raised once the diffs before it are out.
    """
    item = await queue.get()
    group: list[pb.StateDiff] = []
    entries = 0
    while True:
        if item is None:
            return group or None
        if isinstance(item, BaseException):
            if group:  # apply what came before the failure; the failure comes next time
                queue.put_nowait(item)  # the reader has stopped: there is room
                return group
            raise item
        group.append(item)
        entries += len(item.entries)
        if one_at_a_time or entries >= max_entries or queue.empty():
            return group
        item = queue.get_nowait()


async def read_stream(call: object, queue: asyncio.Queue[Queued]) -> None:
    """Move the stream's diffs into ``queue``, then None at its end or the error that ended it."""
    end: BaseException | None = None
    try:
        async for diff in call:  # type: ignore[attr-defined]
            await queue.put(diff)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # handed to the applier, which raises it in its own task
        end = exc
    await queue.put(end)


async def off_loop(fn: Callable[[], _R]) -> _R:
    """Run ``fn()`` in a worker thread; if cancelled meanwhile, still wait for it to end."""
    future = asyncio.get_running_loop().run_in_executor(None, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise
