"""The diff broadcaster: catch-up plus live fan-out without gaps, duplicates or stalls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.state.broadcast import DiffBroadcaster, DiffsPruned, SubscriberDropped
from tests.helpers import eventually


class History:
    """An in-memory stand-in for the diff store that yields to the loop on every read."""

    def __init__(self) -> None:
        self.diffs: dict[int, pb.StateDiff] = {}

    @property
    def first(self) -> int | None:
        return min(self.diffs) if self.diffs else None

    def range(self, from_height: int, to_height: int | None = None) -> Iterator[Any]:
        for h in sorted(self.diffs):
            if h >= from_height and (to_height is None or h < to_height):
                yield self.diffs[h]


def diff(height: int) -> pb.StateDiff:
    return pb.StateDiff(height=height, post_state_hash=height.to_bytes(32, "big"))


def publish(b: DiffBroadcaster, hist: History, height: int) -> None:
    hist.diffs[height] = diff(height)
    b.publish(diff(height))


async def collect(b: DiffBroadcaster, hist: History, start: int, n: int) -> list[int]:
    out: list[int] = []
    async for d in b.subscribe(start, hist):
        out.append(d.height)
        await asyncio.sleep(0)  # a consumer that lets the producer run between diffs
        if len(out) == n:
            break
    return out


async def test_catch_up_while_publishing_has_no_gap_and_no_duplicate() -> None:
    """Diffs published during a long catch-up arrive exactly once, in order, after history."""
    b = DiffBroadcaster(buffer_size=4, queue_bound=1000)
    hist = History()
    for h in range(1, 201):
        publish(b, hist, h)
    task = asyncio.create_task(collect(b, hist, 3, 298))

    async def producer() -> None:
        for h in range(201, 301):
            publish(b, hist, h)
            await asyncio.sleep(0)

    await producer()
    assert await asyncio.wait_for(task, 10) == list(range(3, 301))
    await eventually(lambda: b.subscriber_count == 0, what="subscriber gone")


async def test_slow_subscriber_is_dropped_and_others_are_unaffected() -> None:
    """A subscriber over its bound is dropped with a reason; a keeping-up one sees every diff."""
    b = DiffBroadcaster(buffer_size=8, queue_bound=3)
    hist = History()
    publish(b, hist, 1)
    slow = b.subscribe(0, hist)
    slow_first = asyncio.create_task(anext(slow))
    fast = asyncio.create_task(collect(b, hist, 2, 10))
    await eventually(lambda: b.subscriber_count == 2, what="two subscribers")
    for h in range(2, 12):
        publish(b, hist, h)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    assert (await slow_first).height == 2
    with pytest.raises(SubscriberDropped, match="behind"):
        while True:
            await anext(slow)
    assert await asyncio.wait_for(fast, 5) == list(range(2, 12))
    await slow.aclose()
    await eventually(lambda: b.subscriber_count == 0, what="subscribers gone")
    assert b.dropped_total == 1


async def test_height_below_the_retained_window_is_refused() -> None:
    """Asking for a pruned height raises DiffsPruned so the agent re-snapshots."""
    b = DiffBroadcaster(buffer_size=2)
    hist = History()
    for h in range(1, 10):
        publish(b, hist, h)
    del hist.diffs[1], hist.diffs[2]
    with pytest.raises(DiffsPruned):
        await anext(b.subscribe(1, hist))
    assert b.subscriber_count == 0


async def test_live_only_subscriber_starts_at_the_next_diff() -> None:
    """from_height 0 skips history and starts with the next published diff."""
    b = DiffBroadcaster(buffer_size=2)
    hist = History()
    publish(b, hist, 1)
    task = asyncio.create_task(collect(b, hist, 0, 2))
    await eventually(lambda: b.subscriber_count == 1, what="subscribed")
    publish(b, hist, 2)
    publish(b, hist, 3)
    assert await asyncio.wait_for(task, 5) == [2, 3]


async def test_reset_drops_every_subscriber() -> None:
    """After the store is rebuilt every subscriber is dropped with the reason."""
    b = DiffBroadcaster(buffer_size=2)
    hist = History()
    publish(b, hist, 1)
    sub = b.subscribe(2, hist)
    nxt = asyncio.create_task(anext(sub))
    await eventually(lambda: b.subscriber_count == 1, what="subscribed")
    b.reset("rebuilt")
    with pytest.raises(SubscriberDropped, match="rebuilt"):
        await nxt
    assert b.subscriber_count == 0
