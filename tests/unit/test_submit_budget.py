"""The agent's submit budget: results go at once while it has tokens, wait only when it has
none, and follow the limit a coordinator's refusal names."""

from __future__ import annotations

import random

import pytest

from ioswarm.coordinator.admission import SubmissionGate
from ioswarm.core.scheduling import Completion
from ioswarm.core.submitbudget import (
    COORDINATOR_BURST,
    COORDINATOR_RATE_PER_SEC,
    SubmitBudget,
    limit_from_refusal,
)
from ioswarm.errors import RequestRefused


def test_results_go_at_once_while_there_are_tokens() -> None:
    """A fresh budget sends its first calls without waiting, then waits about 1/rate."""
    budget = SubmitBudget(rate=40, burst=40)
    waits = [budget.wait(0.0) for _ in range(budget.burst)]
    assert waits == [0.0] * budget.burst
    wait = budget.wait(0.0)
    assert 0 < wait <= 1 / budget.rate + 1e-9
    assert budget.wait(wait) == 0.0  # the token it waited for is there


def test_the_agent_stays_inside_the_coordinators_bucket() -> None:
    """Calls paced by the agent's budget are never refused by a coordinator bucket of the
    default size, even when the network delays each by up to 100 ms, unevenly."""
    rng = random.Random(7)
    clock = [0.0]
    gate = SubmissionGate(
        COORDINATOR_RATE_PER_SEC,
        COORDINATOR_BURST,
        10,
        lambda agent_id, task_id: Completion.ACCEPTED,
        clock=lambda: clock[0],
    )
    budget = SubmitBudget()
    t, sent_at = 0.0, []
    while t < 10.0:  # an agent that always has results ready
        wait = budget.wait(t)
        if wait == 0:
            sent_at.append(t)
        t += wait or 0.0005
    assert len(sent_at) > 10 * COORDINATOR_RATE_PER_SEC * 0.8  # it keeps up with the limit
    for arrival in sorted(s + rng.uniform(0, 0.1) for s in sent_at):
        clock[0] = arrival
        gate.admit("a", [])  # raises RequestRefused if the agent overran the coordinator


def test_a_refusal_makes_the_budget_follow_the_named_limit() -> None:
    """After a RESOURCE_EXHAUSTED naming a tighter limit, the budget waits as told and then
    paces at that limit's rate."""
    gate = SubmissionGate(
        2.0, 3, 10, lambda agent_id, task_id: Completion.ACCEPTED, clock=lambda: 0.0
    )
    for _ in range(3):
        gate.admit("a", [])
    with pytest.raises(RequestRefused) as refusal:
        gate.admit("a", [])
    detail = str(refusal.value)  # the gRPC status detail the agent reads
    named = limit_from_refusal(detail)
    assert named is not None and (named.rate, named.burst) == (2.0, 3)
    budget = SubmitBudget()
    wait = budget.refused(detail, now=0.0)
    assert wait >= 0.5 and budget.rate <= 2.0 and budget.burst == 1
    assert budget.wait(0.0) > 0


def test_a_refusal_naming_no_limit_still_backs_off() -> None:
    """A refusal without a readable limit empties the bucket: the next call waits."""
    budget = SubmitBudget()
    assert budget.refused("too many requests", now=5.0) > 0
    assert budget.wait(5.0) > 0
    assert limit_from_refusal("rate limit -1/s burst 0") is None
