"""The dispatcher: turns scheduler assignments into TaskBatches on per-agent stream outboxes.

Each open GetTasks stream has its own outbox; the scheduler caps every agent's unanswered
tasks (``maxInflightPerAgent``), so an outbox never holds more than that and a slow agent
gets backpressure instead of an unbounded queue, while the least-loaded policy keeps every
stream fed in proportion to how fast it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ioswarm.coordinator.metrics import CoordinatorMetrics
from ioswarm.coordinator.wire import add_task_pb
from ioswarm.core.execshadow import PredictedContext
from ioswarm.core.models import Level, Task
from ioswarm.core.retention import TableSize
from ioswarm.core.scheduling import Scheduler
from ioswarm.proto import ioswarm_pb2 as pb

log = logging.getLogger("ioswarm.dispatcher")

IDLE_TICK_SEC = 0.25


@dataclass(eq=False)
class AgentStream:
    """One open GetTasks stream: the batches waiting to be written to it."""

    agent_id: str
    level: Level
    outbox: asyncio.Queue[pb.TaskBatch | None] = field(default_factory=asyncio.Queue)
    closed: bool = False
    batches_sent: int = 0
    tasks_sent: int = 0


class Dispatcher:
    """Owns the scheduler and the agent outboxes; one loop (``run``) moves work between them."""

    def __init__(
        self,
        scheduler: Scheduler,
        metrics: CoordinatorMetrics,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        max_batch: int,
        chain_id: Callable[[], int],
        context: Callable[[int], tuple[pb.BlockContext, PredictedContext] | None] = (
            lambda height: None
        ),
        extra: Callable[[str, list[Task]], Task | None] = lambda agent_id, tasks: None,
        on_dropped: Callable[[int], None] = lambda task_id: None,
        block_context: Callable[[int], tuple[pb.BlockContext, PredictedContext] | None] = (
            lambda number: None
        ),
    ) -> None:
        """``extra(agent_id, tasks)`` may add one task of its own to a batch about to go to
        that agent (a canary); it travels at a random position and is the agent's like any.
        ``on_dropped(task_id)`` hears of every task given up unanswered. ``context(height)``
        is the context predicted for the block after ``height``; ``block_context(number)`` the
        real context of a landed block (for re-verification tasks)."""
        self.scheduler = scheduler
        self.metrics = metrics
        self._clock = clock
        self._wall = wall_clock
        self._max_batch = max_batch
        self._chain_id = chain_id
        self._context = context
        self._block_context = block_context
        self._extra = extra
        self._on_dropped = on_dropped
        self._rng = random.Random()  # only shuffles positions; see _send
        self._predicted: dict[int, PredictedContext] = {}
        self._streams: dict[str, AgentStream] = {}
        self._sent_at: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._batch_prefix = os.urandom(4).hex()
        self._batch_seq = itertools.count(1)
        # Metric children per level, looked up once: ``labels()`` costs more than ``inc()``.
        self._created: dict[Level, Any] = {}
        self._dispatched: dict[Level, Any] = {}
        # Tasks created since the last flush, per level: counted in the metric once per loop
        # tick (``step``), not once per task.
        self._created_unflushed: dict[Level, int] = {}
        self.reassigned_total = 0
        self.dispatched_total = 0
        self.dropped_total = 0

    # -- streams ------------------------------------------------------------------------------

    def open_stream(self, agent_id: str, level: Level) -> AgentStream:
        """Open (or take over) the agent's task stream; an older stream of the agent ends."""
        old = self._streams.get(agent_id)
        if old is not None:
            self._end(old)
        stream = AgentStream(agent_id, level)
        self._streams[agent_id] = stream
        self.scheduler.add_agent(agent_id, level)
        self.metrics.streams.set(len(self._streams))
        self.wake()
        return stream

    def close_stream(self, stream: AgentStream) -> None:
        """The stream ended: its agent's unanswered tasks go to other agents now."""
        stream.closed = True
        if self._streams.get(stream.agent_id) is not stream:
            return
        del self._streams[stream.agent_id]
        requeued = self.scheduler.remove_agent(stream.agent_id)
        if requeued:
            self.reassigned_total += len(requeued)
            self.metrics.tasks_reassigned.inc(len(requeued))
            log.info("stream closed agent_id=%s requeued=%d", stream.agent_id, len(requeued))
        self.metrics.streams.set(len(self._streams))
        self.wake()

    def disconnect(self, agent_id: str) -> None:
        """End the agent's stream from the coordinator side (eviction, shutdown)."""
        stream = self._streams.get(agent_id)
        if stream is not None:
            self._end(stream)
            self.close_stream(stream)

    def _end(self, stream: AgentStream) -> None:
        if not stream.closed:
            stream.closed = True
            stream.outbox.put_nowait(None)

    def stream_count(self) -> int:
        return len(self._streams)

    def has_stream(self, agent_id: str) -> bool:
        return agent_id in self._streams

    def tables(self) -> dict[str, TableSize]:
        """Sizes and bounds of the per-task tables (open tasks only) and the streams."""
        open_bound = self.scheduler.open_bound
        return {
            "dispatch_sent_at": TableSize(len(self._sent_at), open_bound),
            "dispatch_predicted": TableSize(len(self._predicted), open_bound),
            "dispatch_streams": TableSize(len(self._streams), self.scheduler.max_agents),
        }

    # -- tasks --------------------------------------------------------------------------------

    def withdraw(self, task_id: int) -> None:
        """Take back a queued task nobody will take (e.g. a re-verification no other agent
        is there for)."""
        self.scheduler.cancel(task_id)
        self._sent_at.pop(task_id, None)
        self._predicted.pop(task_id, None)

    def submit(self, task: Task) -> bool:
        """Queue a task for dispatch; False when the retry queue is full."""
        if not self.scheduler.enqueue(task):
            self.dropped_total += 1
            self.metrics.tasks_dropped.labels(reason="queue_full").inc()
            return False
        unflushed = self._created_unflushed
        unflushed[task.level] = unflushed.get(task.level, 0) + 1
        self._wake.set()
        return True

    def flush_metrics(self) -> None:
        """Count the tasks created since the last flush (``step`` calls this every tick)."""
        if not self._created_unflushed:
            return
        for level, count in self._created_unflushed.items():
            created = self._created.get(level)
            if created is None:
                created = self.metrics.tasks_created.labels(level=level.name)
                self._created[level] = created
            created.inc(count)
        self._created_unflushed = {}

    def finish(
        self, agent_id: str, task_id: int
    ) -> tuple[Task, float, PredictedContext | None] | None:
        """Mark an accepted result; returns the task, seconds since it was sent, and the block
        context it was sent with (executing levels only)."""
        task = self.scheduler.complete(agent_id, task_id)
        if task is None:
            return None
        sent = self._sent_at.pop(task_id, None)
        predicted = self._predicted.pop(task_id, None)
        self.wake()
        return task, (self._clock() - sent) if sent is not None else 0.0, predicted

    def predicted(self, task_id: int) -> PredictedContext | None:
        """The block context an executing task was sent with (None before it was sent)."""
        return self._predicted.get(task_id)

    def release(self, agent_id: str, task_id: int) -> None:
        """A declined task goes back to the queue (or is dropped after max attempts)."""
        self._sent_at.pop(task_id, None)
        self._predicted.pop(task_id, None)
        if self.scheduler.release(agent_id, task_id):
            self.reassigned_total += 1
            self.metrics.tasks_reassigned.inc()
        else:
            self._on_dropped(task_id)
            self.dropped_total += 1
            self.metrics.tasks_dropped.labels(reason="declined").inc()
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        self.flush_metrics()
        for stream in list(self._streams.values()):
            self._end(stream)

    async def run(self) -> None:
        """Expire deadlines and hand out queued tasks until ``stop``."""
        while not self._stopped.is_set():
            deadline = self.scheduler.next_deadline()
            timeout = IDLE_TICK_SEC
            if deadline is not None:
                timeout = max(0.0, min(timeout, deadline - self._clock()))
            if not self._wake.is_set():
                # asyncio.timeout, unlike wait_for, needs no task per wait.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            self._wake.clear()
            if self._stopped.is_set():
                break
            self.step()

    def step(self) -> None:
        """One round: expire overdue tasks, then assign and enqueue batches."""
        now = self._clock()
        self.flush_metrics()
        report = self.scheduler.expire(now)
        if report.reassigned:
            self.reassigned_total += len(report.reassigned)
            self.metrics.tasks_reassigned.inc(len(report.reassigned))
            log.info(
                "task deadline passed reassigned=%d agents=%s",
                len(report.reassigned),
                ",".join(sorted(report.overdue_agents)),
            )
        for task_id in report.dropped:
            self._sent_at.pop(task_id, None)
            self._predicted.pop(task_id, None)
            self._on_dropped(task_id)
        if report.dropped:
            self.dropped_total += len(report.dropped)
            self.metrics.tasks_dropped.labels(reason="max_attempts").inc(len(report.dropped))
        assignments = self.scheduler.assign(now, self._max_batch)
        if assignments:
            self._send(assignments, now)
        self.metrics.queue_depth.set(self.scheduler.queued)

    def _context_groups(self, tasks: list[Task]) -> list[list[Task]]:
        """Executing tasks travel with the context predicted for the block after the one their
        state was read at; tasks read at different heights go in different batches."""
        if all(t.level < Level.L3 for t in tasks):
            return [tasks]
        groups: dict[tuple[int, int], list[Task]] = {}
        for t in tasks:
            groups.setdefault((t.block_height, t.context_block), []).append(t)
        return list(groups.values())

    def _attach_context(self, batch: pb.TaskBatch, tasks: list[Task]) -> None:
        """Remember each task's context so shadow mode judges it against what it was given."""
        first = tasks[0]
        if first.context_block:
            ctx = self._block_context(first.context_block)
        else:
            ctx = self._context(first.block_height)
        if ctx is None:
            return
        batch.block_context.CopyFrom(ctx[0])
        for t in tasks:
            self._predicted[t.task_id] = ctx[1]

    def _add_extra(self, agent_id: str, group: list[Task], now: float) -> None:
        """Put the ``extra`` task for this batch, if any, at a random place in it."""
        task = self._extra(agent_id, group)
        if task is None or not self.scheduler.adopt(task, agent_id, now):
            return
        group.insert(self._rng.randint(0, len(group)), task)

    def _send(self, assignments: dict[str, list[Task]], now: float) -> None:
        """Put one TaskBatch per assigned agent on its stream's outbox."""
        wall_ms = int(self._wall() * 1000)
        chain_id = self._chain_id()
        sent_at = self._sent_at
        levels: dict[Level, int] = {}
        for agent_id, tasks in assignments.items():
            stream = self._streams.get(agent_id)
            if stream is None or stream.closed:
                # The scheduler only assigns to agents with an open stream; if one just
                # closed, the tasks come back through close_stream's requeue.
                continue
            for group in self._context_groups(tasks):
                if not group[0].context_block:  # a re-verification batch carries no canary
                    self._add_extra(agent_id, group, now)
                batch = pb.TaskBatch(
                    batch_id=f"{self._batch_prefix}-{next(self._batch_seq)}",
                    timestamp=wall_ms,
                    chain_id=chain_id,
                )
                executing = False
                add = batch.tasks.add
                for t in group:
                    # The message is built here, in the batch, once per send: a queued task
                    # holds no protobuf, and none is copied.
                    add_task_pb(add, t)
                    sent_at[t.task_id] = now
                    levels[t.level] = levels.get(t.level, 0) + 1
                    executing = executing or t.level >= Level.L3
                if executing:
                    self._attach_context(batch, group)
                stream.outbox.put_nowait(batch)
                stream.batches_sent += 1
                stream.tasks_sent += len(group)
                self.dispatched_total += len(group)
        for level, count in levels.items():
            dispatched = self._dispatched.get(level)
            if dispatched is None:
                dispatched = self.metrics.tasks_dispatched.labels(level=level.name)
                self._dispatched[level] = dispatched
            dispatched.inc(count)
