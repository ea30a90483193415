"""How long the coordinator remembers things: table sizes and departed agents.

Every table a long-lived coordinator object holds is bounded by what the operator configured
(``maxAgents``, ``maxInflightPerAgent``, ``maxTrackedTxs``, a retention in blocks), not by how
long the coordinator has been running. Owners report their tables as :class:`TableSize` so one
place (the coordinator's ``/metrics``) shows every size next to its bound.

Per-agent records (shadow counts, conduct, canary countdowns, rate buckets) outlive an agent's
registration by ``agentRetentionBlocks``: an agent evicted for missed heartbeats that comes back
within it keeps its history (a throttle cannot be shed by reconnecting), and at most
``maxAgents`` departed agents are remembered at once (the longest gone are forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["DepartedAgents", "PerAgentTables", "TableSize", "TableSizes", "sweep_agents"]


@dataclass(frozen=True, slots=True)
class TableSize:
    """One in-memory table: how many entries it holds now and the most it may hold."""

    entries: int
    bound: int


TableSizes = Mapping[str, TableSize]
"""Table name -> size, as each owner's ``tables()`` reports them."""


class PerAgentTables(Protocol):
    """An owner of tables keyed by agent id."""

    def agent_ids(self) -> Iterable[str]:
        """Every agent id any of its tables holds an entry for."""
        ...

    def forget_agent(self, agent_id: str) -> None:
        """Drop every entry of ``agent_id``."""
        ...


class DepartedAgents:
    """Agents that left the registry, each kept until ``retention_blocks`` after it left."""

    def __init__(self, retention_blocks: int, max_departed: int) -> None:
        if retention_blocks < 1 or max_departed < 1:
            raise ValueError("retention_blocks and max_departed must be at least 1")
        self.retention_blocks = retention_blocks
        self.max_departed = max_departed
        self._left: OrderedDict[str, int] = OrderedDict()  # agent id -> height it left at

    def __len__(self) -> int:
        return len(self._left)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._left

    def agent_ids(self) -> list[str]:
        """The departed agents still remembered, longest gone first."""
        return list(self._left)

    def depart(self, agent_id: str, height: int) -> list[str]:
        """``agent_id`` left at ``height``; returns the agents forgotten to make room."""
        self._left.pop(agent_id, None)
        self._left[agent_id] = height
        gone = []
        while len(self._left) > self.max_departed:
            gone.append(self._left.popitem(last=False)[0])
        return gone

    def returned(self, agent_id: str) -> bool:
        """``agent_id`` registered again; True when it was still remembered."""
        return self._left.pop(agent_id, None) is not None

    def expire(self, height: int) -> list[str]:
        """Forget agents that left ``retention_blocks`` or more before ``height``."""
        gone = []
        horizon = height - self.retention_blocks
        while self._left:
            agent_id, left_at = next(iter(self._left.items()))
            if left_at > horizon:
                break
            self._left.popitem(last=False)
            gone.append(agent_id)
        return gone

    def tables(self) -> dict[str, TableSize]:
        return {"departed_agents": TableSize(len(self._left), self.max_departed)}


def sweep_agents(owners: Iterable[PerAgentTables], keep: Iterable[str]) -> int:
    """Drop every per-agent entry of an agent not in ``keep`` (registered or retained);
    returns how many agent entries were dropped. Also catches entries made after an agent
    was forgotten (a verdict of a departed agent judged later)."""
    kept = set(keep)
    dropped = 0
    for owner in owners:
        for agent_id in [a for a in owner.agent_ids() if a not in kept]:
            owner.forget_agent(agent_id)
            dropped += 1
    return dropped
