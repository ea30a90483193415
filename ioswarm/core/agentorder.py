"""Which agent gets the next task: the least loaded, and among equals the one served longest ago.

The scheduler keeps its agents here in one heap per agent level, keyed by
``(unanswered tasks, stamp of the latest assignment, agent id)``. A task of level L looks at the
tops of the heaps of levels L and up, so an agent sits in exactly one heap and picking one costs
O(log n), not a scan of every agent.

Entries are invalidated lazily: an agent whose load changes gets a fresh entry, and its slot
holds its one live entry (``queued``). An entry that is not (by identity) its slot's
``queued``, whose agent is gone, or whose agent changed level is stale and is dropped when it
reaches a heap's top. When stale entries outnumber live ones the heaps are rebuilt from the
slots, so memory stays O(agents).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from ioswarm.core.models import Level

# (unanswered tasks, stamp of the latest assignment, agent id)
Entry = tuple[int, int, str]

# Heaps may hold this many entries beyond two per agent before they are rebuilt.
_SLACK = 64


@dataclass(slots=True, eq=False)
class AgentSlot:
    """One agent as the scheduler sees it."""

    agent_id: str
    level: Level
    limit: int  # most unanswered tasks it may hold (lower while throttled)
    inflight: set[int] = field(default_factory=set)
    assigned_total: int = 0
    # Stamp of its latest assignment; among agents with equal load the lowest goes first,
    # so equal agents take turns (a new agent, stamp 0, goes first once).
    served: int = 0
    # Its one live heap entry (compared by identity), or None when it is in no heap.
    queued: tuple[int, int, str] | None = None


class AgentsByLoad:
    """Agents with room, in the order they should get tasks (see the module docstring).

    A round of assignment runs between :meth:`start_round` and :meth:`end_round`; in between
    an agent taken with :meth:`take` is given one task by the caller, which then hands it back
    with :meth:`after_assign`.
    """

    def __init__(self, agents: dict[str, AgentSlot], max_inflight: int) -> None:
        self._agents = agents
        self._max_inflight = max_inflight
        self._heaps: dict[Level, list[Entry]] = {level: [] for level in Level}
        self._size = 0
        self._stamps = itertools.count(1)
        # maxBatchSize of the latest round: decides who is worth a place in a heap.
        self._batch = 0
        self._out: dict[str, int] = {}  # tasks given to each agent this round
        # Agents whose load or limit changed since the last round: sorted again when the next
        # round starts, once each, however many of their tasks were answered meanwhile.
        self._dirty: set[AgentSlot] = set()
        # For each task level, the levels whose agents may take it.
        self._fit = {level: [lv for lv in Level if lv >= level] for level in Level}
        self._full: list[AgentSlot] = []  # taken out for this round only
        self._at: list[Entry] | None = None  # the heap whose top is the agent just taken

    # -- keeping entries fresh ------------------------------------------------------------------

    def ready(self, slot: AgentSlot) -> bool:
        """The agent may start a round: it has room for a full batch, or holds less than one.

        An agent holding a batch or more of work is topped up only once it has room for a full
        batch: a sliver now gains it nothing, and agents that answer batch by batch would keep
        getting slivers back for as long as they run.
        """
        n = len(slot.inflight)
        room = slot.limit - n
        if room <= 0:
            return False
        fill = min(self._batch, self._max_inflight, slot.limit)
        return room >= fill or n < self._batch

    def touch(self, slot: AgentSlot) -> None:
        """The agent's load, limit or level changed, or it joined: it gets a fresh entry (when it
        is worth one) before the next round, and its older entries are stale from then on."""
        self._dirty.add(slot)

    def _resort(self, slot: AgentSlot) -> None:
        if not self.ready(slot):
            slot.queued = None
            return
        self._push(slot)

    def forget_level(self, slot: AgentSlot) -> None:
        """The agent's level is about to change: its entry, in the old level's heap, is stale."""
        slot.queued = None

    def _push(self, slot: AgentSlot) -> None:
        key = len(slot.inflight), slot.served
        queued = slot.queued
        if queued is not None and queued[:2] == key:
            return
        slot.queued = entry = (key[0], key[1], slot.agent_id)
        heapq.heappush(self._heaps[slot.level], entry)
        self._size += 1
        if self._size > 2 * len(self._agents) + _SLACK:
            self._rebuild()

    def _rebuild(self) -> None:
        """Drop every stale entry: one entry per agent that has a live one."""
        heaps: dict[Level, list[Entry]] = {level: [] for level in Level}
        for slot in self._agents.values():
            if slot.queued is not None:
                heaps[slot.level].append(slot.queued)
        for heap in heaps.values():
            heapq.heapify(heap)
        self._heaps = heaps
        self._size = sum(len(h) for h in heaps.values())

    def entries(self) -> int:
        """Heap entries, stale ones included (bounded by twice the agents plus a constant)."""
        return self._size

    # -- a round ----------------------------------------------------------------------------------

    def start_round(self, max_batch: int) -> None:
        """Begin handing out at most ``max_batch`` tasks per agent."""
        self._out = {}
        self._full = []
        agents = self._agents
        if max_batch != self._batch:
            # Who is worth an entry depends on the batch size: sort every agent afresh.
            self._batch = max_batch
            self._dirty.clear()
            for slot in agents.values():
                slot.queued = None
                self._resort(slot)
        elif self._dirty:
            for slot in self._dirty:
                if agents.get(slot.agent_id) is slot:
                    self._resort(slot)
            self._dirty.clear()

    def end_round(self) -> dict[str, int]:
        """Agents set aside as full for the round get their entries back; returns how many
        tasks each agent was given."""
        self._dirty.update(self._full)
        self._full = []
        out, self._out = self._out, {}
        return out

    def _top(self, level: Level) -> Entry | None:
        """The live top entry of one heap, after dropping stale ones above it."""
        heap = self._heaps[level]
        agents = self._agents
        while heap:
            entry = heap[0]
            slot = agents.get(entry[2])
            # The slot holds its live entry itself: anything else is stale.
            if slot is not None and slot.queued is entry and slot.level is level:
                return entry
            heapq.heappop(heap)
            self._size -= 1
        return None

    def _first(self, level: Level) -> AgentSlot | None:
        """The first agent in order among those of ``level`` and up, its entry left on its
        heap's top (``self._at``); agents not fit for this round leave their heaps on the way."""
        heaps = self._heaps
        while True:
            best: Entry | None = None
            best_heap: list[Entry] = []
            for lv in self._fit[level]:
                top = self._top(lv) if heaps[lv] else None
                if top is not None and (best is None or top < best):
                    best, best_heap = top, heaps[lv]
            if best is None:
                return None
            slot = self._agents[best[2]]
            given = self._out.get(slot.agent_id, 0)
            # Mid-round only the cap and the batch size stop an agent; before its first task
            # of the round it must also be worth a batch (``ready``).
            if (
                self.ready(slot)
                if given == 0
                else given < self._batch and (len(slot.inflight) < slot.limit)
            ):
                self._at = best_heap
                return slot
            heapq.heappop(best_heap)
            self._size -= 1
            slot.queued = None
            if given >= self._batch:
                self._full.append(slot)  # its batch is full for this round
            # else: not worth a task this round; back in a heap when its load drops (touch)

    def _detach(self, slot: AgentSlot) -> None:
        """Take the entry ``_first`` left on top off its heap."""
        assert self._at is not None
        heapq.heappop(self._at)
        self._size -= 1
        slot.queued = None
        self._at = None

    def take(self, level: Level, avoid: str = "", held: tuple[str, ...] = ()) -> AgentSlot | None:
        """The agent that should get a task of ``level``: never ``avoid``, and one of ``held``
        (agents that had the task before) only when no other agent has room."""
        if not avoid and not held:
            return self._first(level)
        aside: list[AgentSlot] = []
        fallback: AgentSlot | None = None
        chosen: AgentSlot | None = None
        while (slot := self._first(level)) is not None:
            self._detach(slot)
            if slot.agent_id == avoid:
                aside.append(slot)
            elif slot.agent_id in held:
                if fallback is None:
                    fallback = slot  # the first one met is the least loaded of them
                else:
                    aside.append(slot)
            else:
                chosen = slot
                break
        if chosen is None:
            chosen = fallback
        elif fallback is not None:
            aside.append(fallback)
        for slot in aside:
            self._push(slot)  # unchanged, and fit for this round: the same key again
        return chosen

    def after_assign(self, slot: AgentSlot) -> None:
        """``slot``, just returned by :meth:`take`, was given one task (its inflight counts it
        already): stamp it and put it back, behind the agents with equal load."""
        slot.served = next(self._stamps)
        given = self._out.get(slot.agent_id, 0) + 1
        self._out[slot.agent_id] = given
        at = self._at
        if at is not None and at[0] is slot.queued:
            self._at = None
            if given < self._batch and len(slot.inflight) < slot.limit:
                # One sift instead of a pop and a push.
                slot.queued = entry = (len(slot.inflight), slot.served, slot.agent_id)
                heapq.heapreplace(at, entry)
                return
            heapq.heappop(at)
            self._size -= 1
            slot.queued = None
        if given >= self._batch:
            self._full.append(slot)
        elif len(slot.inflight) < slot.limit:
            self._push(slot)
