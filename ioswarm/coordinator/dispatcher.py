"""The dispatcher: turns scheduler assignments into TaskBatches on per-agent stream outboxes.

Each open GetTasks stream has its own outbox; the scheduler caps every agent's unanswered
tasks (``maxInflightPerAgent``), so an outbox never holds more than that and a slow agent
gets backpressure instead of an unbounded queue, while the least-loaded policy keeps every
stream fed in proportion to how fast it answers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from ioswarm.coordinator.metrics import CoordinatorMetrics
from ioswarm.coordinator.wire import task_to_pb
from ioswarm.core.models import Level, Task
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
    ) -> None:
        self.scheduler = scheduler
        self.metrics = metrics
        self._clock = clock
        self._wall = wall_clock
        self._max_batch = max_batch
        self._chain_id = chain_id
        self._streams: dict[str, AgentStream] = {}
        self._packages: dict[int, pb.TaskPackage] = {}
        self._sent_at: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._batch_prefix = os.urandom(4).hex()
        self._batch_seq = itertools.count(1)
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

    # -- tasks --------------------------------------------------------------------------------

    def submit(self, task: Task) -> bool:
        """Queue a task for dispatch; False when the retry queue is full."""
        if not self.scheduler.enqueue(task):
            self.dropped_total += 1
            self.metrics.tasks_dropped.labels(reason="queue_full").inc()
            return False
        self._packages[task.task_id] = task_to_pb(task)
        self.metrics.tasks_created.labels(level=task.level.name).inc()
        self.wake()
        return True

    def finish(self, agent_id: str, task_id: int) -> tuple[Task, float] | None:
        """Mark an accepted result; returns the task and seconds since it was sent."""
        task = self.scheduler.complete(agent_id, task_id)
        if task is None:
            return None
        self._packages.pop(task_id, None)
        sent = self._sent_at.pop(task_id, None)
        self.wake()
        return task, (self._clock() - sent) if sent is not None else 0.0

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        for stream in list(self._streams.values()):
            self._end(stream)

    async def run(self) -> None:
        """Expire deadlines and hand out queued tasks until ``stop``."""
        while not self._stopped.is_set():
            deadline = self.scheduler.next_deadline()
            timeout = IDLE_TICK_SEC
            if deadline is not None:
                timeout = max(0.0, min(timeout, deadline - self._clock()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopped.is_set():
                break
            self.step()

    def step(self) -> None:
        """One round: expire overdue tasks, then assign and enqueue batches."""
        now = self._clock()
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
            self._packages.pop(task_id, None)
            self._sent_at.pop(task_id, None)
        if report.dropped:
            self.dropped_total += len(report.dropped)
            self.metrics.tasks_dropped.labels(reason="max_attempts").inc(len(report.dropped))
        assignments = self.scheduler.assign(now, self._max_batch)
        wall_ms = int(self._wall() * 1000)
        for agent_id, tasks in assignments.items():
            stream = self._streams.get(agent_id)
            if stream is None or stream.closed:
                # The scheduler only assigns to agents with an open stream; if one just
                # closed, the tasks come back through close_stream's requeue.
                continue
            batch = pb.TaskBatch(
                batch_id=f"{self._batch_prefix}-{next(self._batch_seq)}",
                timestamp=wall_ms,
                chain_id=self._chain_id(),
            )
            batch.tasks.extend(self._packages[t.task_id] for t in tasks)
            for t in tasks:
                self._sent_at[t.task_id] = now
            stream.outbox.put_nowait(batch)
            stream.batches_sent += 1
            stream.tasks_sent += len(tasks)
            self.dispatched_total += len(tasks)
            for level, count in _count_levels(tasks).items():
                self.metrics.tasks_dispatched.labels(level=level).inc(count)
        self.metrics.queue_depth.set(self.scheduler.queued)


def _count_levels(tasks: list[Task]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tasks:
        out[t.level.name] = out.get(t.level.name, 0) + 1
    return out
