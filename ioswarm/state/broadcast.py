"""Fan-out of per-block state diffs to L4 subscribers, with catch-up from the diff store.

A subscriber gets every diff from the height it asks for, in order, without a gap or a
duplicate, even while blocks keep arriving during its catch-up: it joins the live fan-out
first, then reads history (ring buffer, else the diff store) up to the last height published
before it joined, then drains its live queue, skipping heights it already sent.

Each subscriber's live queue is bounded. One that falls more than its bound behind is dropped
with :class:`SubscriberDropped` instead of stalling the others or growing without limit; it
reconnects and catches up from the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Iterator
from typing import Any, Protocol

from ioswarm.core.retention import TableSize
from ioswarm.errors import IoswarmError

log = logging.getLogger("ioswarm.state")

_CATCHUP_CHUNK = 64  # diffs read from the store per step, so a long catch-up yields often


class DiffHistory(Protocol):
    """What catch-up reads: ``ioswarm.state.diffstore.DiffStore`` satisfies it."""

    @property
    def first(self) -> int | None: ...
    def range(self, from_height: int, to_height: int | None = None) -> Iterator[Any]: ...


class SubscriberDropped(IoswarmError):
    """The subscriber fell too far behind (or the stream was reset); reconnect and catch up."""


class DiffsPruned(IoswarmError):
    """The asked-for height is below the retained window; the agent must re-snapshot."""


class _Subscriber:
    __slots__ = ("bound", "dropped", "queue", "ready")

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.queue: deque[Any] = deque()
        self.ready = asyncio.Event()
        self.dropped: str | None = None


class DiffBroadcaster:
    """Recent diffs in a ring buffer plus live subscribers with bounded queues."""

    def __init__(self, buffer_size: int, queue_bound: int | None = None) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self._ring: deque[Any] = deque(maxlen=buffer_size)
        self._subs: set[_Subscriber] = set()
        self.queue_bound = queue_bound if queue_bound is not None else buffer_size
        self.last_height: int | None = None
        self.dropped_total = 0

    def tables(self, max_subscribers: int) -> dict[str, TableSize]:
        """Sizes and bounds of the ring and the subscriber set (about one per agent)."""
        return {
            "diff_ring": TableSize(len(self._ring), self._ring.maxlen or 0),
            "diff_subscribers": TableSize(len(self._subs), max_subscribers),
        }

    @property
    def subscriber_count(self) -> int:
        """Live subscribers right now."""
        return len(self._subs)

    def publish(self, diff: Any) -> None:
        """Fan one diff (``StateDiff``, heights increasing) out; drop subscribers over bound."""
        self._ring.append(diff)
        self.last_height = int(diff.height)
        for sub in list(self._subs):
            if len(sub.queue) >= sub.bound:
                self._drop(sub, f"fell more than {sub.bound} diffs behind")
                continue
            sub.queue.append(diff)
            sub.ready.set()

    def reset(self, reason: str) -> None:
        """Forget history and drop every subscriber (after the store was rebuilt)."""
        for sub in list(self._subs):
            self._drop(sub, reason)
        self._ring.clear()
        self.last_height = None

    def _drop(self, sub: _Subscriber, reason: str) -> None:
        self._subs.discard(sub)
        sub.dropped = reason
        sub.queue.clear()
        sub.ready.set()
        self.dropped_total += 1

    async def subscribe(self, from_height: int, history: DiffHistory) -> AsyncGenerator[Any, None]:
        """Every diff from ``from_height`` on: history first, then live, forever.

        ``from_height`` 0 means live only. Raises :class:`DiffsPruned` when history no longer
        holds ``from_height`` and :class:`SubscriberDropped` when dropped.
        """
        sub = _Subscriber(self.queue_bound)
        # Joining and reading last_height happen with no await between: every diff above
        # ``upto`` reaches the queue, every diff up to it is history.
        self._subs.add(sub)
        upto = self.last_height
        sent = from_height - 1 if from_height > 0 else (upto if upto is not None else -1)
        try:
            if upto is not None and sent < upto:
                for diff in self._history(sent + 1, upto, history):
                    if sub.dropped is not None:
                        raise SubscriberDropped(sub.dropped)
                    yield diff
                    sent = int(diff.height)
            while True:
                while sub.queue:
                    diff = sub.queue.popleft()
                    height = int(diff.height)
                    if height <= sent:
                        continue
                    if sent >= 0 and height != sent + 1:
                        raise SubscriberDropped(f"stream skipped from {sent} to {height}")
                    yield diff
                    sent = height
                if sub.dropped is not None:
                    raise SubscriberDropped(sub.dropped)
                sub.ready.clear()
                await sub.ready.wait()
        finally:
            self._subs.discard(sub)

    def _history(self, first: int, last: int, history: DiffHistory) -> Iterable[Any]:
        """Diffs ``first..last`` from the ring when it covers them, else from the store."""
        if self._ring and int(self._ring[0].height) <= first:
            return [d for d in self._ring if first <= int(d.height) <= last]
        return self._from_store(first, last, history)

    def _from_store(self, first: int, last: int, history: DiffHistory) -> Iterator[Any]:
        oldest = history.first
        if oldest is None or oldest > first:
            raise DiffsPruned(
                f"height {first} is below the retained diffs "
                f"(oldest {oldest if oldest is not None else 'none'}); download a snapshot"
            )
        expected = first
        while expected <= last:
            chunk = list(history.range(expected, min(last + 1, expected + _CATCHUP_CHUNK)))
            if not chunk:
                raise DiffsPruned(f"height {expected} is no longer retained; download a snapshot")
            for diff in chunk:
                if int(diff.height) != expected:
                    raise DiffsPruned(f"height {expected} is no longer retained")
                yield diff
                expected += 1
