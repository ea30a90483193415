"""Per-agent conduct: canary truths, declines and throttling, refused submissions.

The coordinator pays only for checked work. Shadow mode checks real transactions against the
chain; this book keeps what the rest of the checks need:

- **canaries**: the known answer of every canary task in flight (by task id). A canary verdict
  is exact: the evidence rules first, then :func:`ioswarm.core.canary.judge_canary`. Never
  excluded, never pending.
- **declines**: an agent may give a task back (its L4 state is not at the task's height, state
  is missing). A decline earns nothing; an agent whose recent answers are mostly declines is
  throttled to a few tasks at a time, and the throttle lifts when it answers again.
- **refusals**: submissions refused with a status (a task not assigned to it, a resubmission,
  a body id that is not its own), counted per status.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from ioswarm.core.canary import (
    CanaryTruth,
    ExecutedCanaryTruth,
    judge_canary,
    judge_executed_canary,
)
from ioswarm.core.evidence import INCOMPLETE, missing_evidence
from ioswarm.core.models import Task, Verdict
from ioswarm.core.retention import TableSize
from ioswarm.core.shadow import Comparison, Outcome

DECLINE_WINDOW = 100
"""Answers (declines included) the decline share is taken over."""
DECLINE_MIN_SAMPLES = 20
"""Answers an agent gives before its decline share can throttle it."""
THROTTLED_INFLIGHT = 4
"""Most unanswered tasks a throttled agent holds."""


@dataclass
class Conduct:
    """What one agent did that is not a verdict on real traffic."""

    agent_id: str
    answers: int = 0
    declined: int = 0
    excused: int = 0
    late: int = 0
    canary_matched: int = 0
    canary_failed: int = 0
    canary_failed_kinds: dict[str, int] = field(default_factory=dict)
    canary_matched_kinds: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    throttled: bool = False
    throttled_times: int = 0
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=DECLINE_WINDOW))

    @property
    def decline_pct(self) -> float:
        """Declines among the last DECLINE_WINDOW answers, in percent."""
        return 100.0 * sum(self.recent) / len(self.recent) if self.recent else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "canaries": {
                "judged": self.canary_matched + self.canary_failed,
                "matched": self.canary_matched,
                "failed": self.canary_failed,
                "failed_kinds": dict(sorted(self.canary_failed_kinds.items())),
                "matched_kinds": dict(sorted(self.canary_matched_kinds.items())),
            },
            "refused": dict(sorted(self.refused.items())),
            "declined": self.declined,
            "declined_excused": self.excused,
            "decline_pct": round(self.decline_pct, 2),
            "late": self.late,
            "throttled": self.throttled,
        }


class IntegrityBook:
    """Canary truths in flight and every agent's :class:`Conduct`."""

    def __init__(self, decline_max_pct: float, max_canaries: int = 100_000) -> None:
        """``max_canaries`` bounds the canary truths kept: every canary is an open task (its
        truth is dropped when the task is answered or given up), so the scheduler's open-task
        bound is enough; past it the oldest are forgotten."""
        self.decline_max_pct = decline_max_pct
        self.max_canaries = max_canaries
        self._canaries: OrderedDict[int, tuple[str, CanaryTruth, ExecutedCanaryTruth | None]] = (
            OrderedDict()
        )
        self._conduct: dict[str, Conduct] = {}
        self.canaries_made: dict[str, int] = {}

    def conduct(self, agent_id: str) -> Conduct:
        c = self._conduct.get(agent_id)
        if c is None:
            c = self._conduct[agent_id] = Conduct(agent_id)
        return c

    def known(self, agent_id: str) -> Conduct | None:
        return self._conduct.get(agent_id)

    # -- canaries -----------------------------------------------------------------------------

    def expect(
        self,
        task_id: int,
        kind: str,
        truth: CanaryTruth,
        executed: ExecutedCanaryTruth | None = None,
    ) -> None:
        """Remember a canary's truth until an agent answers it; ``executed`` is the execution
        an executed canary's answer must report."""
        self._canaries[task_id] = (kind, truth, executed)
        self.canaries_made[kind] = self.canaries_made.get(kind, 0) + 1
        while len(self._canaries) > self.max_canaries:
            self._canaries.popitem(last=False)

    def is_canary(self, task_id: int) -> bool:
        return task_id in self._canaries

    def forget(self, task_id: int) -> None:
        """The canary's task was dropped unanswered."""
        self._canaries.pop(task_id, None)

    @property
    def canaries_open(self) -> int:
        return len(self._canaries)

    def agent_ids(self) -> list[str]:
        """Agents with a conduct record."""
        return list(self._conduct)

    def forget_agent(self, agent_id: str) -> None:
        """Drop an agent's conduct (it has been gone longer than its retention)."""
        self._conduct.pop(agent_id, None)

    def tables(self, max_agents: int) -> dict[str, TableSize]:
        """Sizes and bounds of the book's tables (conduct: registered agents and at most as
        many departed ones)."""
        return {
            "integrity_canaries": TableSize(len(self._canaries), self.max_canaries),
            "integrity_conduct": TableSize(len(self._conduct), 2 * max_agents),
        }

    def judge_canary(self, agent_id: str, task: Task, verdict: Verdict) -> Comparison | None:
        """The exact verdict on a canary answer (None when ``task`` is not a canary)."""
        entry = self._canaries.pop(task.task_id, None)
        if entry is None:
            return None
        kind, truth, executed = entry
        gap = missing_evidence(task, verdict)
        if gap:
            wrong = INCOMPLETE
        elif executed is not None:
            wrong = judge_executed_canary(executed, verdict)
        else:
            wrong = judge_canary(truth, task.level, verdict)
        c = self.conduct(agent_id)
        if wrong:
            c.canary_failed += 1
            c.canary_failed_kinds[kind] = c.canary_failed_kinds.get(kind, 0) + 1
            note = f"canary={kind}" + (f" missing={gap}" if gap else "")
            return Comparison(agent_id, task.task_id, task.level, Outcome.MISMATCHED, wrong, note)
        c.canary_matched += 1
        c.canary_matched_kinds[kind] = c.canary_matched_kinds.get(kind, 0) + 1
        return Comparison(agent_id, task.task_id, task.level, Outcome.MATCHED, "", kind)

    # -- declines, late results, refusals ---------------------------------------------------

    def note_answer(self, agent_id: str, declined: bool, excused: bool = False) -> bool | None:
        """Count one answer; returns the new throttle state when it changed, else None.

        An ``excused`` decline (one the coordinator can vouch for) earns nothing either but
        does not count towards the throttle.
        """
        c = self.conduct(agent_id)
        if declined:
            c.declined += 1
            if excused:
                c.excused += 1
                return None
        else:
            c.answers += 1
        c.recent.append(declined)
        over = len(c.recent) >= DECLINE_MIN_SAMPLES and c.decline_pct > self.decline_max_pct
        if over == c.throttled:
            return None
        c.throttled = over
        c.throttled_times += 1 if over else 0
        return over

    def forgive(self, agent_id: str) -> bool:
        """Forget the agent's recent declines (they were excused after the fact, e.g. an L4
        agent's while it bootstrapped); True when that lifts its throttle."""
        c = self._conduct.get(agent_id)
        if c is None:
            return False
        c.recent.clear()
        lifted = c.throttled
        c.throttled = False
        return lifted

    def note_late(self, agent_id: str) -> None:
        self.conduct(agent_id).late += 1

    def note_refused(self, agent_id: str, status: str) -> None:
        refused = self.conduct(agent_id).refused
        refused[status] = refused.get(status, 0) + 1
