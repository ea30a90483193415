"""Scheduling policy: who gets which task, deadlines, failover, a bounded retry queue.

The scheduler is a plain object driven by the caller's clock. The coordinator calls
``assign`` when work or capacity appears, ``complete`` when results arrive and ``expire``
periodically; it never blocks and never does I/O.

Memory is bounded by the configuration: open tasks by ``retryQueueSize`` plus what
``maxAgents`` agents may hold (``maxInflightPerAgent`` each), and finished tasks are remembered
(to tell a late or repeated answer from a foreign one) for ``(maxTaskAttempts + 1)`` task
timeouts, at most ``maxAgents x maxInflightPerAgent x (maxTaskAttempts + 1)`` of them. A result
for a task finished longer ago than that is :attr:`Completion.FORGOTTEN`: task ids are never
reused, so such a task can never be credited again, whoever answers it.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass
from enum import Enum

from ioswarm.core.agentorder import AgentsByLoad, AgentSlot
from ioswarm.core.models import Level, Task
from ioswarm.core.retention import TableSize


class Completion(Enum):
    """How a submitted result for a task id relates to this agent."""

    ACCEPTED = "accepted"  # the agent holds the task now: the result counts
    LATE = "late"  # the agent held it once, but it timed out or was answered elsewhere
    FOREIGN = "foreign"  # the task exists but was never this agent's
    ANSWERED = "answered"  # this agent's result for it was already accepted
    FORGOTTEN = "forgotten"  # finished before the remembered window: earns nothing
    UNKNOWN = "unknown"  # no such task was ever issued


# EIP-7825's cap on a transaction's gas limit: no deadline grows past what it allows.
MAX_TX_GAS = 2**24


@dataclass(slots=True)
class _TaskState:
    task: Task
    attempts: int = 0
    assignee: str | None = None
    deadline: float = 0.0
    # Agents that held the task. A tuple, not a set: a task has one or two of them, and a
    # tuple of strings is soon untracked by the cyclic GC, whose full passes otherwise walk
    # every open and recently finished task's set.
    past: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExpireReport:
    """Tasks whose deadline passed: requeued for another agent, or dropped after max attempts."""

    reassigned: list[int]
    dropped: list[int]
    overdue_agents: dict[str, int]


class FinishedTasks:
    """Recently finished tasks: who held each and whose answer counted, oldest first.

    Kept for ``retention`` (caller's clock) and at most ``limit`` of them; every id forgotten
    is at or below a watermark, so a result for it is :attr:`Completion.FORGOTTEN`, never
    :attr:`Completion.UNKNOWN`.
    """

    def __init__(self, retention: float, limit: int) -> None:
        self.retention = retention
        self.limit = limit
        self._done: OrderedDict[int, tuple[tuple[str, ...], str, float]] = OrderedDict()
        self.forgotten_upto = 0

    def __len__(self) -> int:
        return len(self._done)

    def remember(self, task_id: int, past: tuple[str, ...], answered_by: str, now: float) -> None:
        """``task_id`` finished at ``now``; ``answered_by`` is "" when nobody's answer counted."""
        done = self._done
        done[task_id] = (past, answered_by, now)
        while len(done) > self.limit:
            self._forget_oldest()

    def trim(self, now: float) -> None:
        """Forget tasks finished more than ``retention`` before ``now``."""
        done, horizon = self._done, now - self.retention
        while done and next(iter(done.values()))[2] < horizon:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        task_id, _ = self._done.popitem(last=False)
        self.forgotten_upto = max(self.forgotten_upto, task_id)

    def classify(self, agent_id: str, task_id: int) -> Completion:
        """How a result for a task that is no longer open relates to ``agent_id``."""
        done = self._done.get(task_id)
        if done is None:
            return Completion.FORGOTTEN if task_id <= self.forgotten_upto else Completion.UNKNOWN
        past, answered_by, _ = done
        if answered_by == agent_id:
            return Completion.ANSWERED
        return Completion.LATE if agent_id in past else Completion.FOREIGN


class Scheduler:
    """Least-loaded assignment with per-task deadlines and failover."""

    def __init__(
        self,
        task_timeout: float,
        max_inflight_per_agent: int,
        queue_size: int,
        max_attempts: int,
        max_agents: int = 100,
        timeout_per_gas: float = 0.0,
    ) -> None:
        """``max_agents`` (the registry's ``maxAgents``) only sizes the memory bounds.
        An executing task (L3/L4) gets ``task_timeout`` plus ``timeout_per_gas`` seconds per
        unit of its transaction's gas limit: a heavy execution is not given up on only for
        being heavy."""
        self.task_timeout = task_timeout
        self.timeout_per_gas = timeout_per_gas
        self.max_inflight = max_inflight_per_agent
        self.queue_size = queue_size
        self.max_attempts = max_attempts
        self.max_agents = max_agents
        held = max_agents * max_inflight_per_agent
        # Most tasks open at once: a full queue plus every agent holding its most.
        self.open_bound = queue_size + held
        self.deadline_limit = 2 * held + 1
        self._now = 0.0
        self._agents: dict[str, AgentSlot] = {}
        self._by_load = AgentsByLoad(self._agents, max_inflight_per_agent)
        # Agents per level, for can_serve without a scan.
        self._levels: dict[Level, int] = dict.fromkeys(Level, 0)
        self._tasks: dict[int, _TaskState] = {}
        self._ready: deque[int] = deque()
        # One entry per assign round, not per task: every task of a round shares its deadline,
        # and each entry is popped once whether its tasks were answered or not.
        # (deadline, round, [(task_id, attempt), ...])
        self._deadlines: list[tuple[float, int, list[tuple[int, int]]]] = []
        self._rounds = itertools.count()
        # A finished task is remembered for as long as it could have lived, and once more:
        # an answer later than that is from an agent that held it over a whole task's life.
        longest = task_timeout + timeout_per_gas * MAX_TX_GAS
        self._done = FinishedTasks((max_attempts + 1) * longest, held * (max_attempts + 1))

    def timeout_for(self, task: Task) -> float:
        """Seconds an agent has for ``task``."""
        if task.level >= Level.L3 and self.timeout_per_gas:
            return self.task_timeout + self.timeout_per_gas * min(task.gas_limit, MAX_TX_GAS)
        return self.task_timeout

    # -- agents -----------------------------------------------------------------------------

    def add_agent(self, agent_id: str, level: Level) -> None:
        """Make an agent eligible for tasks up to ``level`` (idempotent; keeps its inflight)."""
        slot = self._agents.get(agent_id)
        if slot is None:
            slot = AgentSlot(agent_id, level, self.max_inflight)
            self._agents[agent_id] = slot
        elif slot.level is not level:
            self._levels[slot.level] -= 1
            self._by_load.forget_level(slot)
            slot.level = level
        else:
            return
        self._levels[level] += 1
        self._by_load.touch(slot)

    def set_limit(self, agent_id: str, limit: int | None) -> None:
        """Cap the agent's unanswered tasks below ``maxInflightPerAgent`` (a throttle), or lift
        the cap with None. Tasks it already holds stay with it."""
        slot = self._agents.get(agent_id)
        if slot is not None:
            cap = self.max_inflight
            slot.limit = cap if limit is None else max(0, min(limit, cap))
            self._by_load.touch(slot)

    def task(self, task_id: int) -> Task | None:
        """An open task by id."""
        state = self._tasks.get(task_id)
        return state.task if state is not None else None

    def remove_agent(self, agent_id: str) -> list[int]:
        """Forget an agent; its unanswered tasks go back to the front of the queue."""
        slot = self._agents.pop(agent_id, None)
        if slot is None:
            return []
        self._levels[slot.level] -= 1  # its heap entries are stale: the slot is gone
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
        eligible agent has room. A task's ``avoid`` agent never gets it: it waits for another.
        """
        out: dict[str, list[Task]] = {}
        self._now = max(self._now, now)
        ready = self._ready
        if not ready:
            return out
        tasks = self._tasks
        by_load = self._by_load
        by_load.start_round(max_batch)
        # Lowest task level no agent has room for in this round (none freed mid-round).
        exhausted: Level | None = None
        skipped: list[int] = []
        deadline = now + self.task_timeout
        due: dict[float, list[tuple[int, int]]] = {}
        timeout_for = self.timeout_for
        while ready:
            task_id = ready.popleft()
            state = tasks.get(task_id)
            if state is None or state.assignee is not None:
                continue
            task = state.task
            level = task.level
            if exhausted is not None and level >= exhausted:
                skipped.append(task_id)
                continue
            if state.attempts or task.avoid:
                # Those that had it are a last resort (after a timeout), its avoid agent never.
                slot = by_load.take(level, task.avoid, state.past if state.attempts else ())
            else:
                slot = by_load.take(level)
            if slot is None:
                skipped.append(task_id)
                if not state.attempts and not task.avoid:
                    exhausted = level
                    if level is Level.L1:
                        break  # nobody has room left: the rest stay queued, in order
                continue
            chosen = slot.agent_id
            slot.inflight.add(task_id)
            slot.assigned_total += 1
            by_load.after_assign(slot)
            state.assignee = chosen
            state.attempts += 1
            task_deadline = deadline if level < Level.L3 else now + timeout_for(task)
            state.deadline = task_deadline
            if chosen not in state.past:
                state.past += (chosen,)
            due.setdefault(task_deadline, []).append((task_id, state.attempts))
            batch = out.get(chosen)
            if batch is None:
                out[chosen] = [task]
            else:
                batch.append(task)
        by_load.end_round()
        for at, entries in due.items():
            heapq.heappush(self._deadlines, (at, next(self._rounds), entries))
        ready.extendleft(reversed(skipped))
        return out

    def can_serve(self, level: Level, other_than: str) -> bool:
        """Some agent other than ``other_than`` takes tasks of ``level``."""
        able = sum(n for lv, n in self._levels.items() if lv >= level)
        other = self._agents.get(other_than)
        if other is not None and other.level >= level:
            able -= 1
        return able > 0

    def waiting(self, task_id: int) -> bool:
        """The task is queued and held by no agent (never sent, or given back)."""
        state = self._tasks.get(task_id)
        return state is not None and state.assignee is None

    def adopt(self, task: Task, agent_id: str, now: float) -> bool:
        """Hand a task straight to ``agent_id`` (it travels in a batch being sent to it now),
        with the usual deadline and failover. False if the agent is gone or the id is taken."""
        slot = self._agents.get(agent_id)
        if slot is None or task.task_id in self._tasks:
            return False
        deadline = now + self.timeout_for(task)
        state = _TaskState(task, attempts=1, assignee=agent_id, deadline=deadline, past=(agent_id,))
        self._tasks[task.task_id] = state
        slot.inflight.add(task.task_id)
        slot.assigned_total += 1
        self._by_load.touch(slot)
        heapq.heappush(self._deadlines, (deadline, next(self._rounds), [(task.task_id, 1)]))
        return True

    def classify(self, agent_id: str, task_id: int) -> Completion:
        """How a result from ``agent_id`` for ``task_id`` would be treated (no state change)."""
        state = self._tasks.get(task_id)
        if state is not None:
            if state.assignee == agent_id:
                return Completion.ACCEPTED
            return Completion.LATE if agent_id in state.past else Completion.FOREIGN
        return self._done.classify(agent_id, task_id)

    def complete(self, agent_id: str, task_id: int) -> Task | None:
        """Record an accepted result; returns the task, or None if it was not this agent's."""
        state = self._tasks.get(task_id)
        if state is None or state.assignee != agent_id:
            return None  # not Completion.ACCEPTED
        del self._tasks[task_id]
        self._unload(agent_id, task_id)
        self._remember_done(task_id, state.past, agent_id)
        return state.task

    def _unload(self, agent_id: str, task_id: int) -> None:
        """The agent no longer holds the task: its place in the order moves up."""
        slot = self._agents.get(agent_id)
        if slot is not None:
            slot.inflight.discard(task_id)
            self._by_load.touch(slot)

    def _remember_done(self, task_id: int, past: tuple[str, ...], answered_by: str = "") -> None:
        self._done.remember(task_id, past, answered_by, self._now)

    def _trim(self, now: float) -> None:
        """Forget tasks finished long ago; compact the deadline heap when answered tasks'
        entries (popped only at their deadline) pile up."""
        self._done.trim(now)
        if len(self._deadlines) > self.deadline_limit:
            tasks = self._tasks
            live: list[tuple[float, int, list[tuple[int, int]]]] = []
            for deadline, n, entries in self._deadlines:
                kept = [
                    (task_id, attempt)
                    for task_id, attempt in entries
                    if (state := tasks.get(task_id)) is not None
                    and state.attempts == attempt
                    and state.assignee is not None
                ]
                if kept:
                    live.append((deadline, n, kept))
            heapq.heapify(live)
            self._deadlines = live

    def release(self, agent_id: str, task_id: int) -> bool:
        """The agent gave the task back unanswered (it declined): requeue it at the front for
        another agent, or drop it after ``max_attempts``. True when it was requeued."""
        state = self._tasks.get(task_id)
        if state is None or state.assignee != agent_id:
            return False
        self._unload(agent_id, task_id)
        state.assignee = None
        if state.attempts >= self.max_attempts:
            del self._tasks[task_id]
            self._remember_done(task_id, state.past)
            return False
        self._ready.appendleft(task_id)
        return True

    def cancel(self, task_id: int) -> None:
        """Drop a task that no longer needs an answer (e.g. its tx was already included)."""
        state = self._tasks.pop(task_id, None)
        if state is None:
            return
        if state.assignee is not None:
            self._unload(state.assignee, task_id)
        self._remember_done(task_id, state.past)

    def expire(self, now: float) -> ExpireReport:
        """Requeue every task past its deadline, or drop it after ``max_attempts``."""
        reassigned: list[int] = []
        dropped: list[int] = []
        overdue: dict[str, int] = {}
        self._now = max(self._now, now)
        self._trim(self._now)
        tasks = self._tasks
        late: list[tuple[float, int, str]] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, entries = heapq.heappop(self._deadlines)
            for task_id, attempt in entries:
                state = tasks.get(task_id)
                if state is None or state.attempts != attempt or state.assignee is None:
                    continue  # answered, or already moved on: a stale deadline entry
                late.append((deadline, task_id, state.assignee))
        # At most one entry per task is still live, so handling them in (deadline, task id)
        # order after the filter is the order a per-task deadline heap would pop them in.
        late.sort()
        for _, task_id, assignee in late:
            state = tasks[task_id]
            self._unload(assignee, task_id)
            overdue[assignee] = overdue.get(assignee, 0) + 1
            state.assignee = None
            if state.attempts >= self.max_attempts:
                del tasks[task_id]
                self._remember_done(task_id, state.past)
                dropped.append(task_id)
            else:
                reassigned.append(task_id)
        self._ready.extendleft(reversed(reassigned))
        return ExpireReport(reassigned, dropped, overdue)

    def next_deadline(self) -> float | None:
        return self._deadlines[0][0] if self._deadlines else None

    def tables(self) -> dict[str, TableSize]:
        """Sizes and bounds of the scheduler's tables."""
        return {
            "scheduler_agents": TableSize(len(self._agents), self.max_agents),
            "scheduler_agent_order": TableSize(self._by_load.entries(), 2 * self.max_agents + 64),
            "scheduler_open_tasks": TableSize(len(self._tasks), self.open_bound),
            "scheduler_ready": TableSize(len(self._ready), self.open_bound),
            "scheduler_deadlines": TableSize(len(self._deadlines), self.deadline_limit),
            "scheduler_done": TableSize(len(self._done), self._done.limit),
        }
