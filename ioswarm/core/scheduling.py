"""Scheduling policy: who gets which task, deadlines, failover, a bounded retry queue.

The scheduler is a plain object driven by the caller's clock. The coordinator calls
``assign`` when work or capacity appears, ``complete`` when results arrive and ``expire``
periodically; it never blocks and never does I/O.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import Enum

from ioswarm.core.models import Level, Task

RECENT_DONE_LIMIT = 200_000


class Completion(Enum):
    """How a submitted result for a task id relates to this agent."""

    ACCEPTED = "accepted"  # the agent holds the task now: the result counts
    LATE = "late"  # the agent held it once, but it timed out or was answered elsewhere
    FOREIGN = "foreign"  # the task exists but was never this agent's
    UNKNOWN = "unknown"  # no such task (never issued, or long forgotten)


@dataclass
class _AgentSlot:
    agent_id: str
    level: Level
    inflight: set[int] = field(default_factory=set)
    assigned_total: int = 0


@dataclass
class _TaskState:
    task: Task
    attempts: int = 0
    assignee: str | None = None
    deadline: float = 0.0
    past: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class ExpireReport:
    """Tasks whose deadline passed: requeued for another agent, or dropped after max attempts."""

    reassigned: list[int]
    dropped: list[int]
    overdue_agents: dict[str, int]


class Scheduler:
    """Least-loaded assignment with per-task deadlines and failover."""

    def __init__(
        self,
        task_timeout: float,
        max_inflight_per_agent: int,
        queue_size: int,
        max_attempts: int,
    ) -> None:
        self.task_timeout = task_timeout
        self.max_inflight = max_inflight_per_agent
        self.queue_size = queue_size
        self.max_attempts = max_attempts
        self._agents: dict[str, _AgentSlot] = {}
        self._tasks: dict[int, _TaskState] = {}
        self._ready: deque[int] = deque()
        self._deadlines: list[tuple[float, int, int]] = []  # (deadline, task_id, attempt)
        self._done: OrderedDict[int, frozenset[str]] = OrderedDict()

    # -- agents -----------------------------------------------------------------------------

    def add_agent(self, agent_id: str, level: Level) -> None:
        """Make an agent eligible for tasks up to ``level`` (idempotent; keeps its inflight)."""
        slot = self._agents.get(agent_id)
        if slot is None:
            self._agents[agent_id] = _AgentSlot(agent_id, level)
        else:
            slot.level = level

    def remove_agent(self, agent_id: str) -> list[int]:
        """Forget an agent; its unanswered tasks go back to the front of the queue."""
        slot = self._agents.pop(agent_id, None)
        if slot is None:
            return []
        requeued = []
        for task_id in sorted(slot.inflight):
            state = self._tasks.get(task_id)
            if state is None:
                continue
            state.assignee = None
            requeued.append(task_id)
        self._ready.extendleft(reversed(requeued))
        return requeued

    def has_agent(self, agent_id: str) -> bool:
        return agent_id in self._agents

    def inflight(self, agent_id: str) -> int:
        slot = self._agents.get(agent_id)
        return len(slot.inflight) if slot else 0

    def assigned_total(self, agent_id: str) -> int:
        slot = self._agents.get(agent_id)
        return slot.assigned_total if slot else 0

    # -- tasks ------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._ready)

    @property
    def open_tasks(self) -> int:
        return len(self._tasks)

    def enqueue(self, task: Task) -> bool:
        """Queue a new task; False when the queue is full (the caller counts the drop)."""
        if len(self._ready) >= self.queue_size or task.task_id in self._tasks:
            return False
        self._tasks[task.task_id] = _TaskState(task)
        self._ready.append(task.task_id)
        return True

    def assign(self, now: float, max_batch: int) -> dict[str, list[Task]]:
        """Hand queued tasks to the least-loaded eligible agents, at most ``max_batch`` each.

        A task retried after a timeout avoids the agents that already had it when another
        eligible agent has room.
        """
        out: dict[str, list[Task]] = {}
        free = sum(
            min(max_batch, self.max_inflight - len(s.inflight)) for s in self._agents.values()
        )
        if not self._ready or free <= 0:
            return out
        heaps: dict[Level, list[tuple[int, str]]] = {}
        skipped: list[int] = []
        while self._ready and free > 0:
            task_id = self._ready.popleft()
            state = self._tasks.get(task_id)
            if state is None or state.assignee is not None:
                continue
            level = state.task.level
            heap = heaps.get(level)
            if heap is None:
                heap = [
                    (len(s.inflight), s.agent_id)
                    for s in self._agents.values()
                    if s.level >= level and len(s.inflight) < self.max_inflight
                ]
                heapq.heapify(heap)
                heaps[level] = heap
            chosen = self._pick(heap, state, out, max_batch) if heap else None
            if chosen is None:
                skipped.append(task_id)
                continue
            slot = self._agents[chosen]
            slot.inflight.add(task_id)
            slot.assigned_total += 1
            state.assignee = chosen
            state.attempts += 1
            state.deadline = now + self.task_timeout
            state.past.add(chosen)
            heapq.heappush(self._deadlines, (state.deadline, task_id, state.attempts))
            out.setdefault(chosen, []).append(state.task)
            free -= 1
        self._ready.extendleft(reversed(skipped))
        return out

    def _pick(
        self,
        heap: list[tuple[int, str]],
        state: _TaskState,
        out: dict[str, list[Task]],
        max_batch: int,
    ) -> str | None:
        held: list[tuple[int, str]] = []
        chosen: str | None = None
        while heap:
            load, agent_id = heapq.heappop(heap)
            slot = self._agents.get(agent_id)
            if slot is None or len(slot.inflight) != load:
                if slot is not None and len(slot.inflight) < self.max_inflight:
                    heapq.heappush(heap, (len(slot.inflight), agent_id))
                continue
            if len(out.get(agent_id, ())) >= max_batch or load >= self.max_inflight:
                continue  # full for this round
            if agent_id in state.past and state.attempts > 0:
                held.append((load, agent_id))
                continue
            chosen = agent_id
            break
        if chosen is None and held:
            held.sort()
            chosen = held.pop(0)[1]
        for item in held:
            heapq.heappush(heap, item)
        if chosen is not None and len(self._agents[chosen].inflight) + 1 < self.max_inflight:
            heapq.heappush(heap, (len(self._agents[chosen].inflight) + 1, chosen))
        return chosen

    def classify(self, agent_id: str, task_id: int) -> Completion:
        """How a result from ``agent_id`` for ``task_id`` would be treated (no state change)."""
        state = self._tasks.get(task_id)
        if state is not None:
            if state.assignee == agent_id:
                return Completion.ACCEPTED
            return Completion.LATE if agent_id in state.past else Completion.FOREIGN
        past = self._done.get(task_id)
        if past is None:
            return Completion.UNKNOWN
        return Completion.LATE if agent_id in past else Completion.FOREIGN

    def complete(self, agent_id: str, task_id: int) -> Task | None:
        """Record an accepted result; returns the task, or None if it was not this agent's."""
        if self.classify(agent_id, task_id) is not Completion.ACCEPTED:
            return None
        state = self._tasks.pop(task_id)
        slot = self._agents.get(agent_id)
        if slot is not None:
            slot.inflight.discard(task_id)
        self._remember_done(task_id, frozenset(state.past))
        return state.task

    def _remember_done(self, task_id: int, past: frozenset[str]) -> None:
        self._done[task_id] = past
        while len(self._done) > RECENT_DONE_LIMIT:
            self._done.popitem(last=False)

    def cancel(self, task_id: int) -> None:
        """Drop a task that no longer needs an answer (e.g. its tx was already included)."""
        state = self._tasks.pop(task_id, None)
        if state is None:
            return
        if state.assignee is not None:
            slot = self._agents.get(state.assignee)
            if slot is not None:
                slot.inflight.discard(task_id)
        self._remember_done(task_id, frozenset(state.past))

    def expire(self, now: float) -> ExpireReport:
        """Requeue every task past its deadline, or drop it after ``max_attempts``."""
        reassigned: list[int] = []
        dropped: list[int] = []
        overdue: dict[str, int] = {}
        while self._deadlines and self._deadlines[0][0] <= now:
            _, task_id, attempt = heapq.heappop(self._deadlines)
            state = self._tasks.get(task_id)
            if state is None or state.attempts != attempt or state.assignee is None:
                continue  # answered, or already moved on: a stale deadline entry
            slot = self._agents.get(state.assignee)
            if slot is not None:
                slot.inflight.discard(task_id)
            overdue[state.assignee] = overdue.get(state.assignee, 0) + 1
            state.assignee = None
            if state.attempts >= self.max_attempts:
                del self._tasks[task_id]
                self._remember_done(task_id, frozenset(state.past))
                dropped.append(task_id)
            else:
                reassigned.append(task_id)
        self._ready.extendleft(reversed(reassigned))
        return ExpireReport(reassigned, dropped, overdue)

    def next_deadline(self) -> float | None:
        return self._deadlines[0][0] if self._deadlines else None
