"""Which submitted results may count: the gate every SubmitResults passes, all or nothing.

A batch is refused whole, with a status that says why, when any of its results may not count:
the agent is over its submit rate (RESOURCE_EXHAUSTED), the batch is larger than what one
agent can hold or names a task twice (INVALID_ARGUMENT), or a result is for a task that never
existed (NOT_FOUND), that was never this agent's (PERMISSION_DENIED), or that this agent's
answer was already accepted for (ALREADY_EXISTS: a replay earns nothing twice).

A result for a task finished longer ago than the scheduler remembers is let through as
:attr:`~ioswarm.core.scheduling.Completion.FORGOTTEN` and counted like a late one: task ids
are never reused, so it cannot be credited, and an honest agent's slow answer does not get its
whole batch refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ioswarm.core.ratelimit import TokenBucket
from ioswarm.core.retention import TableSize
from ioswarm.core.scheduling import Completion
from ioswarm.errors import RequestRefused
from ioswarm.proto import ioswarm_pb2 as pb


class SubmissionGate:
    """Per-agent submit rate limits and the per-result admission checks."""

    def __init__(
        self,
        rate_per_sec: float,
        burst: int,
        max_results: int,
        classify: Callable[[str, int], Completion],
        clock: Callable[[], float],
    ) -> None:
        self._rate = rate_per_sec
        self._burst = burst
        self._max_results = max_results
        self._classify = classify
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def forget(self, agent_id: str) -> None:
        """The agent left; a new one under its id starts with a full bucket."""
        self._buckets.pop(agent_id, None)

    forget_agent = forget

    def agent_ids(self) -> list[str]:
        """Agents with a rate bucket."""
        return list(self._buckets)

    def tables(self, max_agents: int) -> dict[str, TableSize]:
        """Size of the bucket table (only registered agents submit: at most ``max_agents``)."""
        return {"submit_buckets": TableSize(len(self._buckets), max_agents)}

    def admit(
        self, agent_id: str, results: Sequence[pb.TaskResult]
    ) -> tuple[list[int], list[Completion]]:
        """The batch's task ids and how each relates to the agent; raises RequestRefused."""
        bucket = self._buckets.get(agent_id)
        if bucket is None:
            bucket = self._buckets[agent_id] = TokenBucket(self._rate, self._burst)
        if not bucket.try_take(self._clock()):
            raise RequestRefused(
                "RESOURCE_EXHAUSTED",
                f"SubmitResults rate limit {self._rate:g}/s burst {self._burst}; "
                f"retry in {bucket.retry_after():.2f}s",
            )
        if len(results) > self._max_results:
            raise RequestRefused(
                "INVALID_ARGUMENT",
                f"{len(results)} results in one batch; at most {self._max_results} "
                "(maxInflightPerAgent)",
            )
        ids = [r.task_id for r in results]  # one pass over the repeated field, not three
        if len(set(ids)) != len(ids):
            seen: set[int] = set()
            for task_id in ids:
                if task_id in seen:
                    raise RequestRefused("INVALID_ARGUMENT", f"task {task_id} appears twice")
                seen.add(task_id)
        classify = self._classify
        kinds: list[Completion] = []
        for task_id in ids:
            kind = classify(agent_id, task_id)
            if kind is Completion.UNKNOWN:
                raise RequestRefused("NOT_FOUND", f"unknown task id {task_id}")
            if kind is Completion.FOREIGN:
                raise RequestRefused("PERMISSION_DENIED", f"task {task_id} was not assigned to you")
            if kind is Completion.ANSWERED:
                raise RequestRefused(
                    "ALREADY_EXISTS", f"task {task_id} was already answered; results count once"
                )
            kinds.append(kind)
        return ids, kinds
