"""The JSON documents the HTTP API serves, read from a coordinator's parts (all in-memory)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ioswarm.api import compat
from ioswarm.core.models import Level
from ioswarm.core.rewards import wei_to_iotx
from ioswarm.core.shadow import ShadowCounts
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
        # (epoch, wall time it was first seen open): the reference's epoch ``elapsed``.
        self._epoch_opened: tuple[int, float] = (-1, started_at)

    def live_agents(self) -> list[str]:
        """Registered agents whose last heartbeat is within :data:`compat.LIVE_WINDOW_SEC`."""
        now = self._clock()
        return [
            r.agent_id for r in self._registry.all() if now - r.last_seen <= compat.LIVE_WINDOW_SEC
        ]

    def stats(self) -> dict[str, Any]:
        """The reference /api/stats document (accuracies in percent, 0 when nothing was
        judged; ``active_agents`` and ``agents_by_level`` count live agents)."""
        total = self._shadow.totals()
        epoch, epoch_tasks, epoch_accuracy = self._epoch_stats(total)
        live = set(self.live_agents())
        by_level = {lv.name: 0 for lv in Level}
        for rec in self._registry.all():
            if rec.agent_id in live:
                by_level[rec.level.name] += 1
        return {
            "active_agents": len(live),
            "agents_by_level": by_level,
            "tasks_dispatched": self._dispatcher.dispatched_total,
            "tasks_received": self._totals.results_accepted,
            "shadow_accuracy": compat.accuracy_pct(total),
            "shadow_compared": total.compared,
            "shadow_matched": total.matched,
            "current_epoch": epoch,
            "epoch_tasks": epoch_tasks,
            "epoch_accuracy": round(epoch_accuracy * 100, 4),
            "task_level": self._task_level.name,
            "uptime": compat.go_duration(self._wall() - self._started_at),
            "updated_at": int(self._wall()),
        }

    def sample(self, at: float) -> Sample:
        """The running totals the console's trends are drawn from, stamped ``at`` (taken
        every second; it also notes when a new epoch opened)."""
        self._note_epoch()
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

    def _current_epoch(self) -> int:
        if self._epochs is not None:
            return self._epochs.current_epoch()
        return max(self._head.number, 0) // self._config.reward.epoch_blocks

    def _note_epoch(self) -> int:
        epoch = self._current_epoch()
        if epoch != self._epoch_opened[0]:
            seen = self._epoch_opened[0] >= 0
            self._epoch_opened = (epoch, self._wall() if seen else self._started_at)
        return epoch

    def _epoch_stats(self, overall: ShadowCounts) -> tuple[int, int, float]:
        """(epoch, tasks in it, accuracy in it as a fraction, 0 when nothing was judged);
        without an epoch manager, all-time figures."""
        if self._epochs is not None:
            return self._epochs.current_epoch_stats()
        judged = overall.matched + overall.mismatched
        return (
            self._current_epoch(),
            self._totals.results_accepted,
            compat.fraction(overall.matched, judged),
        )

    def epoch_view(self) -> dict[str, Any]:
        """The open epoch and settlement (/swarm/epoch), with the reference's ``epoch``,
        ``agents`` (a count; the tallies are ``agent_list``), ``total_tasks``,
        ``total_correct``, ``accuracy`` (a fraction) and ``elapsed``."""
        epoch = self._note_epoch()
        elapsed = compat.go_duration(self._wall() - self._epoch_opened[1])
        if self._epochs is None:
            return {
                "enabled": False,
                "epoch": epoch,
                "agents": 0,
                "total_tasks": 0,
                "total_correct": 0,
                "accuracy": 0.0,
                "elapsed": elapsed,
                "agent_list": [],
            }
        doc = self._epochs.epoch_view()
        doc["elapsed"] = elapsed
        return doc

    def rewards_view(self, agent_id: str) -> dict[str, Any]:
        """One agent's reward history (/api/rewards)."""
        if self._epochs is None:
            return {
                "agent_id": agent_id,
                "history": [],
                "totals": {"earned_iotx": 0.0, "total_tasks": 0, "avg_accuracy": 0.0},
                "enabled": False,
            }
        return self._epochs.rewards_view(agent_id)

    def status(self) -> dict[str, Any]:
        """Counters of the whole coordinator (/swarm/status), the reference's keys first."""
        totals = self._totals
        live = set(self.live_agents())
        regions: dict[str, int] = {}
        for rec in self._registry.all():
            if rec.agent_id in live:
                regions[rec.region] = regions.get(rec.region, 0) + 1
        return {
            "uptime": compat.go_duration(self._wall() - self._started_at),
            "agents_total": len(self._registry),
            "agents_live": len(live),
            "tasks_received": totals.results_accepted,
            "shadow_accuracy": compat.accuracy_pct(self._shadow.totals()),
            "regions": dict(sorted(regions.items())),
            # Read by the reference agent's delegate chooser to compare coordinators.
            "agent_count": len(live),
            "epoch_reward_iotx": wei_to_iotx(self._config.epoch_reward_wei),
            "delegate_cut_pct": self._config.reward.delegate_cut_pct,
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
        """One row per registered agent, with its conduct (/swarm/agents); the reference's
        keys (``id``, ``tasks_processed`` and ``tasks_pending`` as the agent reports them,
        ``cpu_usage``, ``mem_usage``, ``last_heartbeat``, ``uptime``) beside ioswarm's."""
        now, wall = self._clock(), self._wall()
        out = []
        for rec in sorted(self._registry.all(), key=lambda r: r.agent_id):
            counts = self._shadow.by_agent.get(rec.agent_id)
            out.append(
                {
                    "id": rec.agent_id,
                    "tasks_processed": rec.tasks_processed,
                    "tasks_pending": rec.tasks_pending,
                    "cpu_usage": compat.finite(rec.info.get("cpu_usage", 0.0)),
                    "mem_usage": compat.finite(rec.info.get("mem_usage", 0.0)),
                    "last_heartbeat": compat.rfc3339(wall - (now - rec.last_seen)),
                    "uptime": compat.go_duration(now - rec.registered_at),
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

    def leaderboard(self) -> dict[str, Any]:
        """Agents ranked by matched results (/swarm/leaderboard): the reference's ``epoch``,
        ``agents`` (a count) and ``entries`` (its keys beside ioswarm's ``level``,
        ``results``, ``matched`` and ``accuracy_pct``)."""
        rows: list[dict[str, Any]] = []
        for rec in self._registry.all():
            c = self._shadow.by_agent.get(rec.agent_id)
            row: dict[str, Any] = {
                "agent_id": rec.agent_id,
                "level": rec.level.name,
                "results": rec.results_accepted,
                "matched": c.matched if c else 0,
                "accuracy_pct": compat.accuracy_pct(c or ShadowCounts()),
                "wallet": rec.wallet,
                "avg_latency_us": round(
                    compat.fraction(int(rec.latency_sum_sec * 1e6), rec.results_accepted), 1
                ),
            }
            row.update(compat.leaderboard_entry(row, c))
            rows.append(row)
        rows.sort(key=lambda r: (-int(r["matched"]), r["agent_id"]))
        for rank, row in enumerate(rows, 1):
            row["rank"] = rank
        return {"epoch": self._current_epoch(), "agents": len(rows), "entries": rows}

    def shadow_view(self) -> dict[str, Any]:
        """Shadow comparisons per level and in total (/swarm/shadow), and the reference's
        shadow stats (PascalCase keys, as its Go struct has no JSON tags)."""
        return {
            **compat.shadow_stats(self._shadow.by_level),
            "enabled": self._config.shadow_mode,
            "pending": self._shadow.pending,
            "expired": self._shadow.expired,
            "levels": {lv.name: c.as_dict() for lv, c in sorted(self._shadow.by_level.items())},
            "total": self._shadow.totals().as_dict(),
        }

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(ok, detail): ok while every loop runs; detail has each loop's state and restarts,
        the live agents, and whether settlement is halted (shown, not fatal: validation goes
        on)."""
        loops_ok = self._loops.healthy
        settler = self._epochs.settler if self._epochs is not None else None
        return loops_ok, {
            "loops_running": loops_ok,
            "live_agents": len(self.live_agents()),
            "loops": self._loops.states(),
            "head_block": self._head.number,
            "node_syncing": self._poller.syncing,
            # Settlement halted on a foreign chain is shown, not fatal: validation goes on.
            "settlement_halted": settler.halt_reason if settler else None,
            "settlement_halt_detail": settler.halted if settler else None,
        }
