"""The coordinator's integrity desk: canaries out, conduct in, throttles and flags applied.

:class:`ioswarm.core.integrity.IntegrityBook` holds the rules and counts; this desk connects
them to the running parts: it mints a canary when the dispatcher builds a batch that is due one,
turns a changed throttle into a scheduler limit, a metric and a log line, logs an agent's first
answer of each kind that earns nothing, and builds the per-agent view of ``/swarm/agents``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

from ioswarm.coordinator.canaries import CanaryMint
from ioswarm.coordinator.canaryexec import executed_canary
from ioswarm.coordinator.canaryplan import EXECUTED_MAX, CanaryPlanner
from ioswarm.coordinator.metrics import CoordinatorMetrics
from ioswarm.core.evidence import INCOMPLETE
from ioswarm.core.execshadow import PredictedContext
from ioswarm.core.integrity import THROTTLED_INFLIGHT, IntegrityBook
from ioswarm.core.models import Level, Task
from ioswarm.core.retention import TableSize
from ioswarm.core.scheduling import Scheduler
from ioswarm.core.shadow import ShadowCounts
from ioswarm.errors import IoswarmError
from ioswarm.node.canarytruth import CanaryTruthReader

log = logging.getLogger("ioswarm.integrity")

_FLAG_KINDS = 2
"""Kinds of answers :meth:`IntegrityDesk.flag` logs once per agent (canary_failed, incomplete)."""

_EMPTY_CONDUCT: dict[str, Any] = {
    "canaries": {"judged": 0, "matched": 0, "failed": 0, "failed_kinds": {}, "matched_kinds": {}},
    "refused": {},
    "declined": 0,
    "declined_excused": 0,
    "decline_pct": 0.0,
    "late": 0,
    "throttled": False,
}


class IntegrityDesk:
    """Canary planning and per-agent conduct of one coordinator."""

    def __init__(
        self,
        canary_pct: float,
        decline_max_pct: float,
        scheduler: Scheduler,
        metrics: CoordinatorMetrics,
        rng: random.Random,
    ) -> None:
        # Every canary is an open task, so the scheduler's open-task bound bounds them too.
        self.book = IntegrityBook(decline_max_pct, scheduler.open_bound)
        self.canary_pct = canary_pct
        self._scheduler = scheduler
        self._metrics = metrics
        self._rng = rng
        self.planner: CanaryPlanner | None = None
        self._mint: CanaryMint | None = None
        self._reader: CanaryTruthReader | None = None
        self._context: Callable[[int], PredictedContext | None] = lambda height: None
        self._minting: asyncio.Task[None] | None = None
        # The context each ready executed canary was traced under, by task id.
        self._traced_under: dict[int, PredictedContext] = {}
        self._flagged: set[tuple[str, str]] = set()
        self.executed_made = 0

    def start(
        self,
        chain_id: int,
        base_fee: Callable[[int], int],
        reader: CanaryTruthReader | None = None,
        context: Callable[[int], PredictedContext | None] = lambda height: None,
    ) -> None:
        """Canaries need the chain id to be signed for; without a share there are none.
        With a ``reader`` (L3 on a node that traces calls), executed L3 canaries are minted
        too, under ``context(height)``: the block context batches at that height carry."""
        if self.canary_pct > 0 and self.planner is None:
            self._mint = CanaryMint(chain_id, self._rng)
            self.planner = CanaryPlanner(self._mint, self.canary_pct, self._rng, base_fee=base_fee)
            self._reader = reader
            self._context = context

    async def stop(self) -> None:
        task = self._minting
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- canaries -----------------------------------------------------------------------------

    def on_task(self, task: Task, next_id: Callable[[], int]) -> None:
        """A real task was queued (a template for canaries, and maybe an id to hold back)."""
        if self.planner is not None:
            self.planner.on_task(task, next_id)

    def canary_for(self, agent_id: str, tasks: list[Task]) -> Task | None:
        """The dispatcher's hook: a canary for this batch of ``agent_id``'s, when one is due."""
        if self.planner is None:
            return None
        canary = self.planner.for_batch(agent_id, tasks)
        if canary is None:
            return None
        if canary.executed is not None:
            traced = self._traced_under.pop(canary.task.task_id, None)
            if traced is None or traced != self._context(canary.task.block_height):
                return None  # the batch's context is not the one the truth was traced under
        self.book.expect(canary.task.task_id, canary.kind, canary.truth, canary.executed)
        self._metrics.canaries_created.labels(level=canary.task.level.name).inc()
        return canary.task

    def prepare_executed(self, tasks: list[Task], head: int) -> None:
        """Mint an executed canary off the dispatch path from one of this round's L3/L4 tasks,
        when batches at that height could use one (one at a time; the node traces it)."""
        planner, reader, mint = self.planner, self._reader, self._mint
        if planner is None or reader is None or mint is None or not reader.supported:
            return
        if self._minting is not None and not self._minting.done():
            return
        templates = [t for t in tasks if t.level >= Level.L3]
        if not templates:
            return
        template = self._rng.choice(templates)
        context = self._context(template.block_height)
        if context is None or not planner.wants_executed(template.level, template.block_height):
            return
        task_id = planner.take_id()
        if task_id is None:
            return
        self._minting = asyncio.create_task(
            self._mint_executed(mint, reader, planner, template, task_id, context, head),
            name="ioswarm-canary-mint",
        )

    async def _mint_executed(
        self,
        mint: CanaryMint,
        reader: CanaryTruthReader,
        planner: CanaryPlanner,
        template: Task,
        task_id: int,
        context: PredictedContext,
        head: int,
    ) -> None:
        try:
            canary = await executed_canary(
                mint, reader, template, task_id, context, context.base_fee
            )
        except IoswarmError as exc:  # the node's trouble: no canary this round, said once
            log.debug("executed canary not minted task_id=%d error=%s", task_id, exc)
            return
        except Exception:  # a bug here must not go silent, nor stop validation
            log.exception("executed canary mint failed task_id=%d", task_id)
            return
        if canary is not None:
            self._traced_under[task_id] = context
            planner.offer_executed(canary, head)
            ready = planner.executed_ids()
            for old in [t for t in self._traced_under if t not in ready]:
                del self._traced_under[old]  # the planner dropped it (its height passed)
            self.executed_made += 1

    def dropped(self, task_id: int) -> None:
        """A task was given up unanswered: a canary's truth is no longer needed."""
        self.book.forget(task_id)

    # -- conduct ------------------------------------------------------------------------------

    def answered(
        self,
        agent_id: str,
        declined: bool,
        agents: Callable[[], Iterable[str]],
        excused: bool = False,
    ) -> None:
        """Count one answer or decline; apply a throttle that turns on or off (``agents``
        lists every registered agent, for the gauge; called only then)."""
        state = self.book.note_answer(agent_id, declined, excused)
        if state is not None:
            self._apply(agent_id, state, agents)

    def forgive(self, agent_id: str, agents: Callable[[], Iterable[str]]) -> None:
        """Drop the agent's recent declines (excused after the fact), lifting a throttle."""
        if self.book.forgive(agent_id):
            self._apply(agent_id, False, agents)

    def _apply(self, agent_id: str, state: bool, agents: Callable[[], Iterable[str]]) -> None:
        conduct = self.book.conduct(agent_id)
        self._scheduler.set_limit(agent_id, THROTTLED_INFLIGHT if state else None)
        if state:
            log.warning(
                "agent throttled agent_id=%s decline_pct=%.1f limit=%d declineMaxPct=%g",
                agent_id,
                conduct.decline_pct,
                THROTTLED_INFLIGHT,
                self.book.decline_max_pct,
            )
        else:
            log.info(
                "agent throttle lifted agent_id=%s decline_pct=%.1f", agent_id, conduct.decline_pct
            )
        self._metrics.agents_throttled.set(sum(1 for a in agents() if self.throttled(a)))

    def throttled(self, agent_id: str) -> bool:
        conduct = self.book.known(agent_id)
        return conduct is not None and conduct.throttled

    def reconnected(self, agent_id: str) -> None:
        """A new task stream starts with a fresh scheduler slot: a throttle carries over."""
        if self.throttled(agent_id):
            self._scheduler.set_limit(agent_id, THROTTLED_INFLIGHT)

    def flag(self, agent_id: str, what: str, detail: str) -> None:
        """Log an agent's first answer of a kind that earns nothing (later ones are counted)."""
        if (agent_id, what) in self._flagged:
            log.debug("agent flagged again agent_id=%s what=%s %s", agent_id, what, detail)
            return
        self._flagged.add((agent_id, what))
        log.warning("agent flagged agent_id=%s what=%s %s", agent_id, what, detail)

    def agent_ids(self) -> set[str]:
        """Agents with conduct, a canary countdown or a logged flag."""
        ids = set(self.book.agent_ids()) | {a for a, _ in self._flagged}
        if self.planner is not None:
            ids.update(self.planner.agent_ids())
        return ids

    def forget_agent(self, agent_id: str) -> None:
        """Drop everything kept about an agent (gone longer than its retention)."""
        self.book.forget_agent(agent_id)
        if self.planner is not None:
            self.planner.forget(agent_id)
        self._flagged = {f for f in self._flagged if f[0] != agent_id}

    def tables(self, max_agents: int) -> dict[str, TableSize]:
        """Sizes and bounds of the desk's tables, its book's and its planner's."""
        out = self.book.tables(max_agents)
        out["integrity_flagged"] = TableSize(len(self._flagged), 2 * max_agents * _FLAG_KINDS)
        out["canary_traced_under"] = TableSize(len(self._traced_under), EXECUTED_MAX)
        if self.planner is not None:
            out.update(self.planner.tables(max_agents))
        return out

    def view(
        self, agent_id: str, shadow: ShadowCounts | None, standing: tuple[bool, str] | None
    ) -> dict[str, Any]:
        """Canaries, refusals, declines and throttle of one agent, and whether it earns in the
        open epoch (``standing``, None without rewards); ``earning.reasons`` says why not."""
        conduct = self.book.known(agent_id)
        view: dict[str, Any] = dict(conduct.as_dict() if conduct else _EMPTY_CONDUCT)
        incomplete = shadow.mismatched_fields.get(INCOMPLETE, 0) if shadow else 0
        view["incomplete"] = incomplete
        eligible, why = standing if standing is not None else (True, "")
        reasons = [why] if why else []
        flags = {
            "canary_failed": bool(conduct and conduct.canary_failed),
            INCOMPLETE: incomplete > 0,
            "refused": bool(conduct and conduct.refused),
            "throttled": bool(conduct and conduct.throttled),
            "declines": bool(conduct and conduct.declined and not conduct.answers),
            "late": bool(conduct and conduct.late and not conduct.answers),
        }
        reasons += [name for name, on in flags.items() if on and name not in reasons]
        view["earning"] = {"eligible": eligible, "reasons": reasons}
        return view
