"""When canaries go out, to whom, and shaped like what.

Every agent gets canaries at its own steady rate: after each canary an agent is due another one
after a number of tasks drawn uniformly from ``1 .. 2 * 100 / canaryPct`` (mean
``100 / canaryPct``). So an agent that answers ``2 * 100 / canaryPct`` tasks in an epoch has met
at least one canary, which is what lets the reward rules ask for one (``reward.minCanaries``),
and no agent can tell from a count when the next one comes.

What an agent could otherwise use to pick canaries out, and how it is avoided:

- **ids**: a canary's id is reserved when real tasks are made, from the same sequence, so it
  falls among the ids of real tasks of that moment, not after all of them;
- **twins**: a canary copies the destination, value and data of a real pending transaction; the
  template is drawn from recent tasks of the level (most of which went to other agents), not
  from the batch the canary travels in;
- **position and timing**: it goes out inside an ordinary batch, at a random position, with the
  batch's deadline; it carries the fields a real task of its level carries.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from ioswarm.coordinator.canaries import Canary, CanaryMint
from ioswarm.core.models import Level, Task
from ioswarm.core.retention import TableSize

EXECUTED_READY = 2
"""Executed canaries kept ready per state height (each costs the node a few traced calls)."""
EXECUTED_SHARE = 0.5
"""Of the canaries an executing batch gets, the share that is executed (when one is ready)."""
RECENT_TEMPLATES = 512
"""Recent real tasks per level that canaries are shaped after."""
RESERVED_IDS = 256
"""Task ids held back for canaries (the oldest are released unused)."""
TEMPLATE_TRIES = 4
EXECUTED_MAX = EXECUTED_READY * len(Level) * 2
"""Executed canaries kept ready in all (those of the highest heights)."""


class CanaryPlanner:
    """Chooses, per batch, whether it carries a canary, and mints it."""

    def __init__(
        self,
        mint: CanaryMint,
        pct: float,
        rng: random.Random,
        base_fee: Callable[[int], int] = lambda height: 0,
    ) -> None:
        """``base_fee(height)`` is the base fee predicted for the block after ``height`` (what
        executing agents check a fee cap against)."""
        if not 0 < pct <= 100:
            raise ValueError("canary share must be in (0, 100]")
        self._mint = mint
        self._rng = rng
        self._base_fee = base_fee
        self._max_gap = max(1, round(2 * 100 / pct))
        self._templates: dict[Level, deque[Task]] = {}
        self._ids: deque[int] = deque(maxlen=RESERVED_IDS)
        self._reserve_pct = pct
        self._due: dict[str, int] = {}
        self._executed: dict[tuple[Level, int], deque[Canary]] = {}
        self.made = 0
        self.skipped = 0

    def on_task(self, task: Task, next_id: Callable[[], int]) -> None:
        """A real task was made: remember it as a template, and now and then hold back the next
        id of the sequence for a canary."""
        self._templates.setdefault(task.level, deque(maxlen=RECENT_TEMPLATES)).append(task)
        if self._rng.random() * 100 < self._reserve_pct or not self._ids:
            self._ids.append(next_id())

    def for_batch(self, agent_id: str, tasks: list[Task]) -> Canary | None:
        """A canary for this batch of ``agent_id``'s, or None (not due, or none could be made).

        The canary takes the batch's level and, for executing levels, its state height (the
        batch carries one block context).
        """
        due = self._due.get(agent_id)
        if due is None:
            due = self._due[agent_id] = self._rng.randint(1, self._max_gap)
        due -= len(tasks)
        self._due[agent_id] = due
        if due > 0 or not self._ids:
            return None
        first = tasks[0]
        canary = self._take_executed(first) or self._mint_like(
            first.level, first.block_height if first.level >= Level.L3 else None
        )
        if canary is None:
            self.skipped += 1
            return None
        self._due[agent_id] = self._rng.randint(1, self._max_gap)
        self.made += 1
        return canary

    # -- executed canaries (minted ahead, off the dispatch path: they need the node) --------

    def take_id(self) -> int | None:
        """A held-back id for a canary minted elsewhere (an executed one)."""
        return self._ids.popleft() if self._ids else None

    def wants_executed(self, level: Level, height: int) -> bool:
        """Whether another executed canary for batches of ``level`` at ``height`` would be
        used."""
        return len(self._executed.get((level, height), ())) < EXECUTED_READY

    def offer_executed(self, canary: Canary, head: int) -> None:
        """Keep an executed canary for the next due batch at its state height; heights the
        head has left behind are dropped (their batches are gone)."""
        key = (canary.task.level, canary.task.block_height)
        self._executed.setdefault(key, deque()).append(canary)
        for old in [k for k in self._executed if k[1] < head - 1 or not self._executed[k]]:
            del self._executed[old]
        # Two heights' worth at most, even while the head stands still.
        while sum(len(d) for d in self._executed.values()) > EXECUTED_MAX:
            del self._executed[min(self._executed, key=lambda k: k[1])]

    def _take_executed(self, first: Task) -> Canary | None:
        if first.level < Level.L3 or self._rng.random() >= EXECUTED_SHARE:
            return None
        ready = self._executed.get((first.level, first.block_height))
        return ready.popleft() if ready else None

    def _mint_like(self, level: Level, height: int | None) -> Canary | None:
        pool = self._templates.get(level)
        if not pool:
            return None
        candidates = list(pool) if height is None else [t for t in pool if t.block_height == height]
        if not candidates:
            return None
        for _ in range(TEMPLATE_TRIES):
            template = self._rng.choice(candidates)
            base_fee = self._base_fee(template.block_height) if level >= Level.L3 else 0
            canary = self._mint.make(template, self._ids[0], base_fee=base_fee)
            if canary is not None:
                self._ids.popleft()
                return canary
        return None

    def forget(self, agent_id: str) -> None:
        """The agent left; a new agent under its id starts a fresh countdown."""
        self._due.pop(agent_id, None)

    def agent_ids(self) -> list[str]:
        """Agents with a canary countdown."""
        return list(self._due)

    def executed_ids(self) -> set[int]:
        """Task ids of the executed canaries kept ready."""
        return {c.task.task_id for ready in self._executed.values() for c in ready}

    def tables(self, max_agents: int) -> dict[str, TableSize]:
        """Sizes and bounds of the planner's tables."""
        return {
            "canary_countdowns": TableSize(len(self._due), 2 * max_agents),
            "canary_templates": TableSize(
                sum(len(d) for d in self._templates.values()), RECENT_TEMPLATES * len(Level)
            ),
            "canary_reserved_ids": TableSize(len(self._ids), RESERVED_IDS),
            "canary_executed_ready": TableSize(
                sum(len(d) for d in self._executed.values()), EXECUTED_MAX
            ),
        }
