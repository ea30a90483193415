"""Per-agent conduct (canary verdicts, declines, throttle, refusals) and the canary planner."""

from __future__ import annotations

import random
from dataclasses import replace

from ioswarm.coordinator.canaries import CanaryMint
from ioswarm.coordinator.canaryplan import CanaryPlanner
from ioswarm.core.canary import CanaryTruth, judge_canary
from ioswarm.core.integrity import DECLINE_MIN_SAMPLES, IntegrityBook
from ioswarm.core.models import Level, Verdict
from ioswarm.core.shadow import Outcome
from tests.unit.test_canary import CHAIN_ID, honest_check, template

KEY_ADDRESS = b"\x09" * 20


def test_canary_verdicts_are_exact_and_counted_per_agent() -> None:
    """A right answer matches, a wrong or incomplete one fails; both are counted by kind."""
    book = IntegrityBook(decline_max_pct=25)
    t = template("1559", Level.L2)
    for tid in (10, 11, 12):
        book.expect(tid, "nonce_too_high", CanaryTruth(False, "nonce_too_high", KEY_ADDRESS))
    right = book.judge_canary(
        "a", replace(t, task_id=10), Verdict(10, False, "nonce_too_high", sender=KEY_ADDRESS)
    )
    wrong = book.judge_canary("a", replace(t, task_id=11), Verdict(11, True, sender=KEY_ADDRESS))
    lazy = book.judge_canary("a", replace(t, task_id=12), Verdict(12, True))
    assert right is not None and right.outcome is Outcome.MATCHED
    assert wrong is not None and (wrong.outcome, wrong.detail) == (Outcome.MISMATCHED, "valid")
    assert lazy is not None and (lazy.outcome, lazy.detail) == (Outcome.MISMATCHED, "incomplete")
    c = book.conduct("a")
    assert (c.canary_matched, c.canary_failed, c.canary_failed_kinds) == (
        1,
        2,
        {"nonce_too_high": 2},
    )
    # Each truth is used once: a second answer for the same id is not a canary verdict.
    assert not book.is_canary(10)
    assert book.judge_canary("a", replace(t, task_id=10), Verdict(10, True)) is None


def test_an_agent_that_mostly_declines_is_throttled_and_released_when_it_answers() -> None:
    """Past declineMaxPct of the last answers (after a few samples) the throttle turns on."""
    book = IntegrityBook(decline_max_pct=25)
    changes = [book.note_answer("d", declined=True) for _ in range(DECLINE_MIN_SAMPLES)]
    assert changes[:-1] == [None] * (DECLINE_MIN_SAMPLES - 1) and changes[-1] is True
    assert book.conduct("d").throttled and book.conduct("d").decline_pct == 100.0
    states = [book.note_answer("d", declined=False) for _ in range(100)]
    assert False in states and not book.conduct("d").throttled
    honest = IntegrityBook(decline_max_pct=25)
    for i in range(200):  # one decline in ten stays under 25 %
        assert honest.note_answer("h", declined=i % 10 == 0) is None
    assert not honest.conduct("h").throttled


def test_excused_declines_earn_nothing_but_do_not_throttle_and_forgiving_lifts_one() -> None:
    """Declines the coordinator can vouch for are counted apart; forgiving clears the window."""
    book = IntegrityBook(decline_max_pct=25)
    for _ in range(50):
        assert book.note_answer("l4", declined=True, excused=True) is None
    c = book.conduct("l4")
    assert (c.declined, c.excused, c.throttled, len(c.recent)) == (50, 50, False, 0)
    for _ in range(DECLINE_MIN_SAMPLES):
        book.note_answer("boot", declined=True)
    assert book.conduct("boot").throttled
    assert book.forgive("boot") is True
    assert not book.conduct("boot").throttled and book.conduct("boot").decline_pct == 0.0
    assert book.forgive("boot") is False and book.forgive("nobody") is False


def test_refusals_and_late_results_are_counted() -> None:
    """Refused submissions count per status; late results per agent."""
    book = IntegrityBook(decline_max_pct=25)
    book.note_refused("r", "PERMISSION_DENIED")
    book.note_refused("r", "PERMISSION_DENIED")
    book.note_refused("r", "ALREADY_EXISTS")
    book.note_late("r")
    view = book.conduct("r").as_dict()
    assert view["refused"] == {"ALREADY_EXISTS": 1, "PERMISSION_DENIED": 2} and view["late"] == 1


def planner(pct: float = 25) -> tuple[CanaryPlanner, list[int], list[int]]:
    """A planner fed 40 real L2 tasks; returns it, every id issued, and the real tasks' ids."""
    ids = iter(range(1000, 100_000))
    issued: list[int] = []
    real: list[int] = []

    def next_id() -> int:
        issued.append(next(ids))
        return issued[-1]

    p = CanaryPlanner(CanaryMint(CHAIN_ID, random.Random(3)), pct, random.Random(4))
    for _ in range(40):
        real.append(next_id())
        p.on_task(replace(template("1559", Level.L2), task_id=real[-1]), next_id)
    return p, issued, real


def test_every_agent_meets_a_canary_within_twice_the_mean_gap() -> None:
    """At 25 % an agent gets a canary at least every 8 tasks, at no fixed interval."""
    p, _, _ = planner(25)
    batch = [template("1559", Level.L2)]
    gaps: list[int] = []
    since = 0
    for _ in range(400):
        since += 1
        if p.for_batch("a", batch) is not None:
            gaps.append(since)
            since = 0
    assert gaps and max(gaps) <= 8 and min(gaps) >= 1
    assert len(set(gaps)) > 3  # not a fixed period an agent could count


def test_canary_ids_are_reserved_among_real_ids_and_used_once() -> None:
    """A canary's id was held back from the real sequence while real tasks were made."""
    p, issued, real = planner(25)
    batch = [template("1559", Level.L2)]
    got = [c.task.task_id for c in (p.for_batch("a", batch) for _ in range(200)) if c]
    assert got and len(got) == len(set(got))
    assert set(got) <= set(issued) - set(real)
    assert min(got) < max(real)  # interleaved with real ids, not after all of them


def test_canary_truth_agrees_with_the_honest_check() -> None:
    """Whatever the planner mints, the honest L2 rules give exactly its truth."""
    p, _, _ = planner(100)
    seen = 0
    for _ in range(50):
        c = p.for_batch("b", [template("1559", Level.L2)])
        if c is None:
            continue
        seen += 1
        verdict = honest_check(c).verdict(c.task.task_id)
        assert judge_canary(c.truth, c.task.level, verdict) == "", c.kind
    assert seen > 0
