"""Agent registry: admission (maxAgents), heartbeats, eviction. Clock injected."""

from __future__ import annotations

from dataclasses import dataclass, field

from ioswarm.core.models import Level
from ioswarm.core.refjson import Codec


class RegistryFull(Exception):
    """Raised by ``register`` when maxAgents agents are already registered."""


@dataclass(slots=True)
class StateAgreement:
    """How an L4 agent's reported state hashes compared with the coordinator's, per height."""

    height: int = 0  # the latest height the agent reported
    checked: int = 0  # distinct heights compared
    mismatched: int = 0
    first: int = 0  # lowest and highest height compared
    last: int = 0

    def record(self, height: int, equal: bool) -> bool:
        """Count one comparison at ``height``; a height already compared is not counted again.

        Returns whether it was counted.
        """
        self.height = height
        if height <= self.last:
            return False
        self.checked += 1
        self.mismatched += 0 if equal else 1
        self.first = self.first or height
        self.last = height
        return True

    def as_dict(self) -> dict[str, int]:
        """The counts, for the API and reports."""
        return {
            "height": self.height,
            "heights_checked": self.checked,
            "mismatched": self.mismatched,
            "first_checked": self.first,
            "last_checked": self.last,
        }


@dataclass
class AgentRecord:
    """What the coordinator knows about one registered agent.

    ``wallet`` is paid for the work done now; ``pending_wallet`` (None: no change asked) is the
    wallet a re-registration asked for, which replaces it at the next epoch boundary. ``codec``
    is the wire codec the coordinator saw the agent register in, which its other calls must use.
    """

    agent_id: str
    level: Level
    wallet: str
    region: str
    version: str
    registered_at: float
    last_seen: float
    tasks_processed: int = 0
    tasks_pending: int = 0
    results_accepted: int = 0
    latency_sum_sec: float = 0.0  # dispatch-to-result time of its accepted results, summed
    streams: int = 0
    directive: str = ""
    info: dict[str, float] = field(default_factory=dict)
    state: StateAgreement = field(default_factory=StateAgreement)
    pending_wallet: str | None = None
    codec: Codec = Codec.PROTOBUF


@dataclass(frozen=True, slots=True)
class WalletChange:
    """A wallet that replaced another at an epoch boundary."""

    agent_id: str
    old: str
    new: str


class AgentRegistry:
    """Registered agents; re-registering an id reuses its slot."""

    def __init__(self, max_agents: int, heartbeat_interval: float, miss_limit: int) -> None:
        self.max_agents = max_agents
        self.heartbeat_interval = heartbeat_interval
        self.miss_limit = miss_limit
        self._agents: dict[str, AgentRecord] = {}

    def __len__(self) -> int:
        return len(self._agents)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def get(self, agent_id: str) -> AgentRecord | None:
        return self._agents.get(agent_id)

    def all(self) -> list[AgentRecord]:
        return list(self._agents.values())

    def agent_ids(self) -> list[str]:
        return list(self._agents)

    def register(
        self,
        agent_id: str,
        level: Level,
        wallet: str,
        region: str,
        version: str,
        now: float,
        *,
        defer_wallet: bool = False,
    ) -> AgentRecord:
        """Admit or refresh an agent; raises RegistryFull for a new id over maxAgents.

        A new id gets its wallet at once. For a known id with ``defer_wallet``, a different
        wallet becomes ``pending_wallet`` (applied by :meth:`apply_pending_wallets`) and the
        current wallet again cancels a pending change; without it the wallet changes at once.
        """
        rec = self._agents.get(agent_id)
        if rec is None:
            if len(self._agents) >= self.max_agents:
                raise RegistryFull(f"maxAgents={self.max_agents} reached")
            rec = AgentRecord(agent_id, level, wallet, region, version, now, now)
            self._agents[agent_id] = rec
            return rec
        rec.level, rec.region, rec.version = level, region, version
        if defer_wallet:
            rec.pending_wallet = None if wallet == rec.wallet else wallet
        else:
            rec.wallet, rec.pending_wallet = wallet, None
        rec.last_seen = now
        rec.directive = ""
        return rec

    def apply_pending_wallets(self) -> list[WalletChange]:
        """At an epoch boundary: every pending wallet becomes the agent's wallet."""
        changes = []
        for rec in self._agents.values():
            if rec.pending_wallet is not None:
                changes.append(WalletChange(rec.agent_id, rec.wallet, rec.pending_wallet))
                rec.wallet, rec.pending_wallet = rec.pending_wallet, None
        return changes

    def touch(self, agent_id: str, now: float) -> AgentRecord | None:
        rec = self._agents.get(agent_id)
        if rec is not None:
            rec.last_seen = now
        return rec

    def remove(self, agent_id: str) -> AgentRecord | None:
        return self._agents.pop(agent_id, None)

    def stale(self, now: float) -> list[str]:
        """Agents that missed ``miss_limit`` heartbeats in a row."""
        limit = self.heartbeat_interval * self.miss_limit
        return [a.agent_id for a in self._agents.values() if now - a.last_seen > limit]

    def by_level(self) -> dict[str, int]:
        counts = {lv.name: 0 for lv in Level}
        for a in self._agents.values():
            counts[a.level.name] += 1
        return counts
