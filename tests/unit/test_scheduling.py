"""Scheduling policy: least-loaded assignment, deadlines, failover, bounded queue."""

from __future__ import annotations

from ioswarm.core.models import Level, Task
from ioswarm.core.scheduling import Completion, Scheduler


def task(i: int, level: Level = Level.L1) -> Task:
    return Task(i, bytes([i % 256]) * 32, b"raw", level, b"s" * 20, i, 1, 30_000_000)


def sched(**kw: int) -> Scheduler:
    args = {"max_inflight_per_agent": 100, "queue_size": 1000, "max_attempts": 3}
    args.update(kw)
    return Scheduler(task_timeout=2.0, **args)


def test_least_loaded_spreads_tasks_evenly() -> None:
    """Tasks go to the agent with the fewest unanswered tasks, so load stays balanced."""
    s = sched()
    for a in ("a", "b", "c"):
        s.add_agent(a, Level.L2)
    for i in range(1, 31):
        s.enqueue(task(i))
    out = s.assign(0.0, max_batch=64)
    assert sorted(len(v) for v in out.values()) == [10, 10, 10]


def test_level_capability_is_respected() -> None:
    """An L1 agent never receives an L2 task."""
    s = sched()
    s.add_agent("l1", Level.L1)
    s.add_agent("l2", Level.L2)
    for i in range(1, 11):
        s.enqueue(task(i, Level.L2))
    out = s.assign(0.0, 64)
    assert set(out) == {"l2"} and len(out["l2"]) == 10


def test_tasks_wait_when_no_agent_can_take_them() -> None:
    """Tasks above every agent's level stay queued in order."""
    s = sched()
    s.add_agent("l1", Level.L1)
    s.enqueue(task(1, Level.L2))
    s.enqueue(task(2, Level.L1))
    out = s.assign(0.0, 64)
    assert [t.task_id for t in out["l1"]] == [2]
    assert s.queued == 1


def test_inflight_cap_gives_backpressure() -> None:
    """An agent never holds more than max_inflight unanswered tasks."""
    s = sched(max_inflight_per_agent=5)
    s.add_agent("a", Level.L1)
    for i in range(1, 21):
        s.enqueue(task(i))
    first = s.assign(0.0, 64)
    assert len(first["a"]) == 5
    assert s.assign(0.1, 64) == {}
    assert s.complete("a", first["a"][0].task_id) is not None
    assert len(s.assign(0.2, 64)["a"]) == 1


def test_deadline_fails_over_to_another_agent() -> None:
    """A task not answered by its deadline goes to a different agent."""
    s = sched()
    s.add_agent("a", Level.L1)
    s.enqueue(task(1))
    assert list(s.assign(0.0, 64)) == ["a"]
    s.add_agent("b", Level.L1)
    report = s.expire(2.5)
    assert report.reassigned == [1] and report.overdue_agents == {"a": 1}
    assert list(s.assign(2.5, 64)) == ["b"]
    assert s.classify("a", 1) is Completion.LATE
    assert s.classify("b", 1) is Completion.ACCEPTED


def test_answered_task_does_not_expire() -> None:
    """Completing a task removes its deadline."""
    s = sched()
    s.add_agent("a", Level.L1)
    s.enqueue(task(1))
    s.assign(0.0, 64)
    assert s.complete("a", 1) is not None
    assert s.expire(10.0).reassigned == []


def test_max_attempts_drops_task() -> None:
    """After max_attempts deadlines a task is dropped, not retried forever."""
    s = sched(max_attempts=2)
    s.add_agent("a", Level.L1)
    s.enqueue(task(1))
    s.assign(0.0, 64)
    assert s.expire(3.0).reassigned == [1]
    s.assign(3.0, 64)
    report = s.expire(6.0)
    assert report.dropped == [1] and s.open_tasks == 0


def test_remove_agent_requeues_its_tasks_first() -> None:
    """A lost agent's tasks return to the front of the queue at once."""
    s = sched()
    s.add_agent("a", Level.L1)
    for i in range(1, 4):
        s.enqueue(task(i))
    s.assign(0.0, 64)
    s.enqueue(task(9))
    assert s.remove_agent("a") == [1, 2, 3]
    s.add_agent("b", Level.L1)
    assert [t.task_id for t in s.assign(0.0, 64)["b"]] == [1, 2, 3, 9]


def test_classify_foreign_and_unknown() -> None:
    """Results for someone else's task are foreign; never-issued ids are unknown."""
    s = sched()
    s.add_agent("a", Level.L1)
    s.add_agent("b", Level.L1)
    s.enqueue(task(1))
    owner = next(iter(s.assign(0.0, 64)))
    other = "b" if owner == "a" else "a"
    assert s.classify(other, 1) is Completion.FOREIGN
    assert s.classify(owner, 777) is Completion.UNKNOWN
    assert s.complete(other, 1) is None
    assert s.complete(owner, 1) is not None
    assert s.classify(owner, 1) is Completion.ANSWERED  # a resubmission, never credited twice
    assert s.classify(other, 1) is Completion.FOREIGN


def test_late_answer_after_a_timeout_is_late_not_answered() -> None:
    """An agent whose task timed out and was answered elsewhere is late; the answerer's copy is
    a resubmission."""
    s = sched(max_attempts=2)
    s.add_agent("a", Level.L1)
    s.enqueue(task(1))
    s.assign(0.0, 64)
    s.add_agent("b", Level.L1)
    s.expire(10.0)
    [(second, _)] = s.assign(10.0, 64).items()
    assert second == "b" and s.complete("b", 1) is not None
    assert s.classify("a", 1) is Completion.LATE
    assert s.classify("b", 1) is Completion.ANSWERED


def test_throttled_agent_gets_at_most_its_limit() -> None:
    """A throttle caps what one agent may hold; the others take the rest."""
    s = sched()
    s.add_agent("slow", Level.L1)
    s.add_agent("ok", Level.L1)
    s.set_limit("slow", 2)
    for i in range(1, 41):
        s.enqueue(task(i))
    for _ in range(3):
        s.assign(0.0, 8)
    assert s.inflight("slow") == 2
    assert s.inflight("ok") == 24
    s.set_limit("slow", None)
    s.assign(0.0, 8)
    assert s.inflight("slow") == 10


def test_queue_is_bounded() -> None:
    """enqueue refuses beyond queue_size."""
    s = sched(queue_size=2)
    assert s.enqueue(task(1)) and s.enqueue(task(2))
    assert not s.enqueue(task(3))


def test_batch_size_caps_each_agent_per_round() -> None:
    """One assign round gives an agent at most max_batch tasks."""
    s = sched()
    s.add_agent("a", Level.L1)
    for i in range(1, 11):
        s.enqueue(task(i))
    assert len(s.assign(0.0, 4)["a"]) == 4
    assert s.queued == 6


def test_released_task_goes_to_another_agent() -> None:
    """A declined task returns to the front of the queue and is offered to a different agent."""
    s = sched()
    s.add_agent("a", Level.L1)
    s.enqueue(task(1))
    s.assign(0.0, 64)
    s.add_agent("b", Level.L1)
    assert s.release("a", 1)
    assert s.inflight("a") == 0
    assert list(s.assign(0.1, 64)) == ["b"]
    assert not s.release("a", 1)  # no longer a's to give back
