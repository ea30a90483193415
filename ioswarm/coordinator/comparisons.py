"""Where a shadow or canary comparison is counted: epoch ledger, metrics, integrity flags, log."""

from __future__ import annotations

import logging

from ioswarm.coordinator.integrity import IntegrityDesk
from ioswarm.coordinator.metrics import CoordinatorMetrics
from ioswarm.core.evidence import INCOMPLETE
from ioswarm.core.registry import AgentRegistry
from ioswarm.core.retention import TableSize
from ioswarm.core.shadow import Comparison, Outcome
from ioswarm.rewards.epochs import EpochManager

log = logging.getLogger("ioswarm.coordinator")

MISMATCH_WARNINGS_PER_AGENT = 20


class ComparisonCounter:
    """Books each comparison once, whether a block settled it (shadow) or a submitted result
    did (canary, or a shadow verdict whose outcome was already known)."""

    def __init__(
        self,
        metrics: CoordinatorMetrics,
        integrity: IntegrityDesk,
        registry: AgentRegistry,
        epochs: EpochManager | None,
    ) -> None:
        self._metrics = metrics
        self._integrity = integrity
        self._registry = registry
        self._epochs = epochs
        self._mismatch_logs: dict[str, int] = {}

    def agent_ids(self) -> list[str]:
        """Agents whose mismatches were logged."""
        return list(self._mismatch_logs)

    def forget_agent(self, agent_id: str) -> None:
        """Drop an agent's mismatch log count (gone longer than its retention)."""
        self._mismatch_logs.pop(agent_id, None)

    def tables(self, max_agents: int) -> dict[str, TableSize]:
        """Size of the per-agent mismatch log counts."""
        return {"mismatch_log_counts": TableSize(len(self._mismatch_logs), 2 * max_agents)}

    def count(self, c: Comparison, canary: bool = False) -> None:
        """Book one comparison; a failed canary or an incomplete answer flags the agent."""
        level = c.level.name
        if self._epochs is not None:
            rec = self._registry.get(c.agent_id)
            self._epochs.on_comparison(
                c.agent_id,
                rec.wallet if rec else "",
                c.outcome,
                canary=canary,
                detail=c.detail,
            )
        if canary:
            self._metrics.canary_verdicts.labels(level=level, outcome=c.outcome.value).inc()
            if c.outcome is Outcome.MISMATCHED:
                self._integrity.flag(c.agent_id, "canary_failed", f"task_id={c.task_id} {c.note}")
            return
        self._metrics.shadow.labels(level=level, outcome=c.outcome.value).inc()
        if c.outcome is Outcome.EXCLUDED:
            self._metrics.shadow_excluded.labels(level=level, reason=c.detail).inc()
        elif c.detail == INCOMPLETE:
            self._integrity.flag(
                c.agent_id, INCOMPLETE, f"task_id={c.task_id} level={level} missing={c.note}"
            )
        elif c.outcome is Outcome.MISMATCHED:
            # Each mismatch of an honest agent is worth a line (it points at a bug); a cheater
            # makes thousands, so past a few per agent they go to DEBUG, with one line saying so.
            seen = self._mismatch_logs.get(c.agent_id, 0) + 1
            self._mismatch_logs[c.agent_id] = seen
            level_no = logging.WARNING if seen <= MISMATCH_WARNINGS_PER_AGENT else logging.DEBUG
            log.log(
                level_no,
                "shadow mismatch agent_id=%s task_id=%d level=%s field=%s %s",
                c.agent_id,
                c.task_id,
                level,
                c.detail,
                c.note,
            )
            if seen == MISMATCH_WARNINGS_PER_AGENT:
                log.warning(
                    "agent has %d shadow mismatches agent_id=%s; further ones are logged at DEBUG",
                    seen,
                    c.agent_id,
                )
