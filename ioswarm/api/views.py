"""The JSON documents the HTTP API serves, read from a coordinator's parts (all in-memory)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ioswarm.core.models import Level
from ioswarm.core.timeline import Sample

if TYPE_CHECKING:
    from ioswarm.config import CoordinatorConfig
    from ioswarm.coordinator.chainwatch import Head, MempoolPoller
    from ioswarm.coordinator.dispatcher import Dispatcher
    from ioswarm.coordinator.gateway import Totals
    from ioswarm.coordinator.integrity import IntegrityDesk
    from ioswarm.coordinator.supervisor import LoopSupervisor
    from ioswarm.core.registry import AgentRegistry
    from ioswarm.core.scheduling import Scheduler
    from ioswarm.core.shadow import ShadowBook
    from ioswarm.rewards.epochs import EpochManager
    from ioswarm.state.sync import StateSync


class SwarmViews:
    """Stats, status, agents, leaderboard, shadow, epoch, rewards and health documents; the
    :class:`~ioswarm.api.server.SwarmView` the API is built on."""

    def __init__(
        self,
        config: CoordinatorConfig,
        chain_id: Callable[[], int],
        task_level: Level,
        registry: AgentRegistry,
        scheduler: Scheduler,
        dispatcher: Dispatcher,
        integrity: IntegrityDesk,
        shadow: ShadowBook,
        totals: Totals,
        head: Head,
        poller: MempoolPoller,
        loops: LoopSupervisor,
        epochs: EpochManager | None,
        state_sync: StateSync | None,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        started_at: float,
    ) -> None:
        """``chain_id`` is read per document: it is the node's once the coordinator checked
        it. ``started_at`` is the wall-clock time uptime counts from."""
        self._config = config
        self._chain_id = chain_id
        self._task_level = task_level
        self._registry = registry
        self._scheduler = scheduler
        self._dispatcher = dispatcher
        self._integrity = integrity
        self._shadow = shadow
        self._totals = totals
        self._head = head
        self._poller = poller
        self._loops = loops
        self._epochs = epochs
        self._state_sync = state_sync
        self._clock = clock
        self._wall = wall_clock
        self._started_at = started_at

    def stats(self) -> dict[str, Any]:
        """The reference /api/stats document."""
        total = self._shadow.totals()
        epoch, epoch_tasks, epoch_accuracy = self._epoch_stats(total.accuracy)
        return {
            "active_agents": len(self._registry),
            "agents_by_level": self._registry.by_level(),
            "tasks_dispatched": self._dispatcher.dispatched_total,
            "tasks_received": self._totals.results_accepted,
            "shadow_accuracy": round(total.accuracy * 100, 4),
            "shadow_compared": total.compared,
            "shadow_matched": total.matched,
            "current_epoch": epoch,
            "epoch_tasks": epoch_tasks,
            "epoch_accuracy": round(epoch_accuracy * 100, 4),
            "task_level": self._task_level.name,
            "uptime": _uptime(self._wall() - self._started_at),
            "updated_at": _iso(self._wall()),
        }

    def sample(self, at: float) -> Sample:
        """The running totals the console's trends are drawn from, stamped ``at``."""
        total = self._shadow.totals()
        return Sample(
            at,
            self._dispatcher.dispatched_total,
            self._totals.results_accepted,
            self._totals.latency_sum_sec,
            self._totals.results_accepted,  # each accepted result has one latency
            total.matched,
            total.mismatched,
        )

    def _epoch_stats(self, overall_accuracy: float) -> tuple[int, int, float]:
        """(epoch, tasks in it, accuracy in it); without an epoch manager, all-time figures."""
        if self._epochs is not None:
            return self._epochs.current_epoch_stats()
        epoch = max(self._head.number, 0) // self._config.reward.epoch_blocks
        return epoch, self._totals.results_accepted, overall_accuracy

    def epoch_view(self) -> dict[str, Any]:
        """The open epoch and settlement (/swarm/epoch)."""
        if self._epochs is None:
            return {"enabled": False}
        return self._epochs.epoch_view()

    def rewards_view(self, agent_id: str) -> dict[str, Any]:
        """One agent's reward history (/api/rewards)."""
        if self._epochs is None:
            return {"agent_id": agent_id, "history": [], "enabled": False}
        return self._epochs.rewards_view(agent_id)

    def status(self) -> dict[str, Any]:
        """Counters of the whole coordinator (/swarm/status)."""
        totals = self._totals
        return {
            "chain_id": self._chain_id(),
            "head_block": self._head.number,
            "node_syncing": self._poller.syncing,
            "task_level": self._task_level.name,
            "shadow_mode": self._config.shadow_mode,
            "agents": len(self._registry),
            "streams": self._dispatcher.stream_count(),
            "queue_depth": self._scheduler.queued,
            "open_tasks": self._scheduler.open_tasks,
            "tasks_created": totals.tasks_created,
            "tasks_dispatched": self._dispatcher.dispatched_total,
            "tasks_reassigned": self._dispatcher.reassigned_total,
            "tasks_dropped": self._dispatcher.dropped_total,
            "results_accepted": totals.results_accepted,
            "results_late": totals.results_late,
            "results_declined": totals.results_declined,
            "canary_results": totals.canary_results,
            "blocks_seen": totals.blocks_seen,
            "uptime_sec": round(self._wall() - self._started_at, 1),
            **self._l4_status(),
        }

    def _l4_status(self) -> dict[str, Any]:
        sync = self._state_sync
        if sync is None:
            return {}
        return {
            "l4_state_height": sync.height,
            "l4_diff_subscribers": sync.broadcaster.subscriber_count,
            "l4_subscribers_dropped": sync.broadcaster.dropped_total,
            "l4_rebootstraps": sync.rebootstraps,
        }

    def agents(self) -> list[dict[str, Any]]:
        """One row per registered agent, with its conduct (/swarm/agents)."""
        now = self._clock()
        out = []
        for rec in sorted(self._registry.all(), key=lambda r: r.agent_id):
            counts = self._shadow.by_agent.get(rec.agent_id)
            out.append(
                {
                    "agent_id": rec.agent_id,
                    "level": rec.level.name,
                    "wallet": rec.wallet,
                    "pending_wallet": rec.pending_wallet,
                    "region": rec.region,
                    "version": rec.version,
                    "connected": self._dispatcher.has_stream(rec.agent_id),
                    "last_heartbeat_sec_ago": round(now - rec.last_seen, 1),
                    "inflight": self._scheduler.inflight(rec.agent_id),
                    "tasks_assigned": self._scheduler.assigned_total(rec.agent_id),
                    "results_accepted": rec.results_accepted,
                    "shadow": counts.as_dict() if counts else None,
                    "l4_state": rec.state.as_dict() if rec.level >= Level.L4 else None,
                }
            )
        for row in out:
            row.update(self.conduct_view(str(row["agent_id"])))
        return out

    def conduct_view(self, agent_id: str) -> dict[str, Any]:
        """Canaries, refusals, declines and throttle of one agent, and whether (and why not)
        it earns in the open epoch."""
        standing = self._epochs.standing(agent_id) if self._epochs is not None else None
        return self._integrity.view(agent_id, self._shadow.by_agent.get(agent_id), standing)

    def leaderboard(self) -> list[dict[str, Any]]:
        """Agents ranked by matched results (/swarm/leaderboard)."""
        rows: list[dict[str, Any]] = []
        for rec in self._registry.all():
            c = self._shadow.by_agent.get(rec.agent_id)
            rows.append(
                {
                    "agent_id": rec.agent_id,
                    "level": rec.level.name,
                    "results": rec.results_accepted,
                    "matched": c.matched if c else 0,
                    "accuracy_pct": round((c.accuracy if c else 1.0) * 100, 4),
                }
            )
        rows.sort(key=lambda r: (-int(r["matched"]), r["agent_id"]))
        for rank, row in enumerate(rows, 1):
            row["rank"] = rank
        return rows

    def shadow_view(self) -> dict[str, Any]:
        """Shadow comparisons per level and in total (/swarm/shadow)."""
        return {
            "enabled": self._config.shadow_mode,
            "pending": self._shadow.pending,
            "expired": self._shadow.expired,
            "levels": {lv.name: c.as_dict() for lv, c in sorted(self._shadow.by_level.items())},
            "total": self._shadow.totals().as_dict(),
        }

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(ok, detail): ok while every loop runs; detail has each loop's state and restarts,
        and whether settlement is halted (shown, not fatal: validation goes on)."""
        loops_ok = self._loops.healthy
        settler = self._epochs.settler if self._epochs is not None else None
        return loops_ok, {
            "loops_running": loops_ok,
            "loops": self._loops.states(),
            "head_block": self._head.number,
            "node_syncing": self._poller.syncing,
            # Settlement halted on a foreign chain is shown, not fatal: validation goes on.
            "settlement_halted": settler.halt_reason if settler else None,
            "settlement_halt_detail": settler.halted if settler else None,
        }


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{(s % 3600) // 60}m{s % 60}s"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
