"""Re-verification: excluded executing-level verdicts are queued, and the re-verification
task's answer is judged exactly; the scheduler never gives it to the excluded agent, and gives
executing tasks deadlines that grow with their gas."""

from __future__ import annotations

from dataclasses import replace

from ioswarm.core.execshadow import ExecEffects
from ioswarm.core.models import IncludedTx, Level, Outcome, Task, Verdict
from ioswarm.core.scheduling import Scheduler
from ioswarm.core.shadow import ShadowBook
from tests.unit.test_execshadow import SENDER, SLOT, TOKEN, ctx, truth, word

TX = b"\xaa" * 32


def exec_task(task_id: int, **kw: object) -> Task:
    base = Task(
        task_id=task_id,
        tx_hash=TX,
        raw_tx=b"\x02",
        level=Level.L3,
        sender=SENDER,
        nonce=4,
        block_height=9,
        block_gas_limit=30_000_000,
        read_set=frozenset({(TOKEN, SLOT)}),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def verdict(task_id: int, effects: ExecEffects, reads: frozenset[str] = frozenset()) -> Verdict:
    return Verdict(task_id, True, sender=SENDER, effects=effects, context_reads=reads)


def wrong_storage() -> ExecEffects:
    t = truth()
    return replace(t, storage={(TOKEN, SLOT): word(8)})


def landed(block: int = 10) -> IncludedTx:
    return IncludedTx(TX, SENDER, 4, block, 1, gas_used=40_000, tx_index=0, effects=truth())


def book_with_block(actual_timestamp: int) -> ShadowBook:
    book = ShadowBook(expiry_blocks=20)
    book.on_block(10, [landed()], ctx(timestamp=actual_timestamp))
    return book


def test_an_excluded_execution_is_queued_for_reverification() -> None:
    """A difference the wrong predicted timestamp explains is excluded and queued, once."""
    book = book_with_block(actual_timestamp=25)
    c = book.record("a", exec_task(1), verdict(1, wrong_storage(), frozenset({"TIMESTAMP"})), ctx())
    assert c is not None and (c.outcome, c.detail) == (Outcome.EXCLUDED, "block_context")
    assert [(r.agent_id, r.task.task_id, r.reason) for r in book.reverifiable] == [
        ("a", 1, "block_context")
    ]


def test_a_match_is_not_queued() -> None:
    """An answer that matches needs no second opinion."""
    book = book_with_block(actual_timestamp=25)
    c = book.record("a", exec_task(1), verdict(1, truth(), frozenset({"TIMESTAMP"})), ctx())
    assert c is not None and c.outcome is Outcome.MATCHED and not book.reverifiable


def test_a_reverification_answer_cannot_hide_behind_the_context_or_a_race() -> None:
    """With the real context and pre-state given, a wrong answer is mismatched even where the
    ordinary task would have been excluded, and it is never queued again."""
    book = book_with_block(actual_timestamp=25)
    real = ctx(timestamp=25)
    task = exec_task(2, context_block=10, avoid="a")
    c = book.record("b", task, verdict(2, wrong_storage(), frozenset({"TIMESTAMP"})), real)
    assert c is not None and (c.outcome, c.detail, c.reverify) == (
        Outcome.MISMATCHED,
        "storage",
        True,
    )
    assert not book.reverifiable
    assert book.by_level[Level.L3].reverified == 1


def test_a_right_reverification_answer_matches_and_counts_as_reverified() -> None:
    """The honest answer to a re-verification task matches; the level counts one exclusion
    settled, so nothing is left unverified."""
    book = book_with_block(actual_timestamp=25)
    book.record("a", exec_task(1), verdict(1, wrong_storage(), frozenset({"TIMESTAMP"})), ctx())
    task = exec_task(2, context_block=10, avoid="a")
    c = book.record("b", task, verdict(2, truth(), frozenset({"TIMESTAMP"})), ctx(timestamp=25))
    assert c is not None and c.outcome is Outcome.MATCHED and c.reverify
    counts = book.by_level[Level.L3].as_dict()
    assert counts["reverified"] == 1 and counts["unverified"] == 0


def test_missing_state_on_a_reverification_task_is_the_agents_fault() -> None:
    """The task carried every account and slot the transaction touched."""
    book = book_with_block(actual_timestamp=25)
    task = exec_task(2, context_block=10, avoid="a")
    claim = Verdict(2, False, "missing_state", sender=SENDER, detail="block_context")
    c = book.record("b", task, claim, ctx(timestamp=25))
    assert c is not None and c.outcome is Outcome.MISMATCHED and c.reverify


def scheduler() -> Scheduler:
    return Scheduler(task_timeout=2.0, max_inflight_per_agent=8, queue_size=100, max_attempts=3)


def test_scheduler_never_gives_a_task_to_its_avoided_agent() -> None:
    """Alone, the avoided agent gets nothing; once another joins, the task goes to it."""
    s = scheduler()
    s.add_agent("a", Level.L3)
    s.enqueue(exec_task(7, avoid="a", context_block=10))
    assert s.assign(now=0.0, max_batch=4) == {}
    assert s.waiting(7) and not s.can_serve(Level.L3, other_than="a")
    s.add_agent("b", Level.L4)
    assert s.can_serve(Level.L3, other_than="a")
    out = s.assign(now=1.0, max_batch=4)
    assert list(out) == ["b"] and out["b"][0].task_id == 7 and not s.waiting(7)


def test_avoided_agent_still_gets_other_tasks() -> None:
    """Avoidance is per task: the avoided agent keeps its ordinary work."""
    s = scheduler()
    s.add_agent("a", Level.L3)
    s.enqueue(exec_task(7, avoid="a", context_block=10))
    s.enqueue(exec_task(8))
    out = s.assign(now=0.0, max_batch=4)
    assert [t.task_id for t in out["a"]] == [8]


def test_executing_deadlines_grow_with_gas_and_simple_ones_do_not() -> None:
    """An L3 task's deadline is the base plus time per gas; an L2 task keeps the base."""
    s = Scheduler(
        task_timeout=2.0,
        max_inflight_per_agent=8,
        queue_size=100,
        max_attempts=3,
        timeout_per_gas=0.5 / 1_000_000,
    )
    heavy = exec_task(1, gas_limit=10_000_000)
    light = replace(exec_task(2, gas_limit=10_000_000), level=Level.L2)
    assert s.timeout_for(heavy) == 7.0 and s.timeout_for(light) == 2.0
    s.add_agent("a", Level.L3)
    s.enqueue(heavy)
    s.enqueue(light)
    s.assign(now=0.0, max_batch=4)
    assert list(s.expire(now=3.0).reassigned) == [2]  # past the light task's deadline only
    assert not s.expire(now=6.9).reassigned
    assert list(s.expire(now=7.1).reassigned) == [1]
