"""Agent order: fair shares among 1,000 agents, O(log n) picks that are never stale."""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from ioswarm.core.agentorder import AgentSlot
from ioswarm.core.models import Level, Task
from ioswarm.core.scheduling import Completion, Scheduler


def task(i: int, level: Level = Level.L1, avoid: str = "") -> Task:
    return Task(i, bytes([i % 256]) * 32, b"raw", level, b"s" * 20, i, 1, 30_000_000, avoid=avoid)


def sched(agents: int = 1000, inflight: int = 16, queue: int = 100_000) -> Scheduler:
    return Scheduler(
        task_timeout=1e9,
        max_inflight_per_agent=inflight,
        queue_size=queue,
        max_attempts=3,
        max_agents=agents,
    )


def saturated_shares(agents: int, rounds: int, supply: int, answered: int) -> list[int]:
    """Run ``rounds`` dispatch rounds: ``supply`` new tasks per round (fewer than the agents
    have room for), and the ``answered`` oldest batches answered after each round, the way a
    pipeline drains; returns tasks answered per agent."""
    s = sched(agents)
    ids = [f"agent-{i:04d}" for i in range(agents)]
    for a in ids:
        s.add_agent(a, Level.L1)
    done = dict.fromkeys(ids, 0)
    pipeline: deque[tuple[str, list[Task]]] = deque()
    next_id = 1
    for step in range(rounds):
        for _ in range(supply):
            assert s.enqueue(task(next_id))
            next_id += 1
        out = s.assign(float(step), max_batch=8)
        pipeline.extend(out.items())
        for _ in range(min(answered, len(pipeline))):
            agent_id, batch = pipeline.popleft()
            for t in batch:
                assert s.complete(agent_id, t.task_id) is not None
            done[agent_id] += len(batch)
    return list(done.values())


def test_shares_are_fair_among_1000_equal_agents() -> None:
    """With 1,000 equally fast agents and less work than room, every agent's share of the
    answered tasks is within 80% of the busiest one's: ties in load go round-robin, not to
    the lowest agent id."""
    counts = saturated_shares(agents=1000, rounds=300, supply=2000, answered=250)
    assert sum(counts) > 100_000
    assert min(counts) / max(counts) >= 0.8


def test_equal_agents_take_turns_when_work_is_scarce() -> None:
    """Less work than agents, answered at once: every agent is always at load 0, and the task
    goes to the one served longest ago, so each of 1,000 agents gets the same share."""
    s = sched(agents=1000)
    for i in range(1000):
        s.add_agent(f"agent-{i:04d}", Level.L1)
    got: dict[str, int] = {}
    for i in range(1, 5001):
        s.enqueue(task(i))
        [(agent_id, [t])] = s.assign(float(i), max_batch=8).items()
        assert s.complete(agent_id, t.task_id) is not None
        got[agent_id] = got.get(agent_id, 0) + 1
    assert len(got) == 1000 and set(got.values()) == {5}


def test_a_faster_agent_gets_more_but_nobody_starves() -> None:
    """An agent that answers at once holds less and so gets more; the slow ones still get
    their turns."""
    s = sched(agents=50, inflight=16)
    for i in range(50):
        s.add_agent(f"a{i}", Level.L1)
    got = dict.fromkeys((f"a{i}" for i in range(50)), 0)
    next_id = 1
    for step in range(200):
        for _ in range(100):
            s.enqueue(task(next_id))
            next_id += 1
        for agent_id, batch in s.assign(float(step), max_batch=8).items():
            got[agent_id] += len(batch)
            if agent_id == "a7" or step % 4 == 0:  # a7 answers every round, others 1 in 4
                for t in batch:
                    s.complete(agent_id, t.task_id)
    others = [n for a, n in got.items() if a != "a7"]
    assert got["a7"] > max(others)
    assert min(others) > 0


def test_a_removed_agent_is_never_picked() -> None:
    """An agent that left keeps stale heap entries, but no task goes to it."""
    s = sched(agents=3)
    for a in ("a", "b", "c"):
        s.add_agent(a, Level.L1)
    s.remove_agent("a")
    for i in range(1, 21):
        s.enqueue(task(i))
    out = s.assign(0.0, max_batch=8)
    assert "a" not in out and sum(len(b) for b in out.values()) == 16


def test_an_agent_back_under_the_same_id_is_picked_once_per_turn() -> None:
    """An agent removed and added again is one agent: stale entries of its first life do not
    make it a double."""
    s = sched(agents=2, inflight=4)
    s.add_agent("a", Level.L1)
    s.add_agent("b", Level.L1)
    s.remove_agent("a")
    s.add_agent("a", Level.L1)
    for i in range(1, 5):
        s.enqueue(task(i))
    out = s.assign(0.0, max_batch=4)
    assert sorted(len(b) for b in out.values()) == [2, 2]


def test_a_load_change_moves_the_agent() -> None:
    """An agent whose load grew outside assign (a canary adopted) is not picked at its old,
    lower load."""
    s = sched(agents=2, inflight=16)
    s.add_agent("a", Level.L1)
    s.add_agent("b", Level.L1)
    for i in range(100, 104):
        assert s.adopt(task(i), "a", 0.0)
    s.enqueue(task(1))
    s.enqueue(task(2))
    out = s.assign(0.0, max_batch=8)
    assert [t.task_id for t in out["b"]] == [1, 2] and "a" not in out


def test_a_level_change_moves_the_agent_to_its_new_heap() -> None:
    """An agent re-registered at a lower level stops getting tasks of its old level."""
    s = sched(agents=1)
    s.add_agent("a", Level.L3)
    s.add_agent("a", Level.L1)
    s.enqueue(task(1, Level.L3))
    s.enqueue(task(2, Level.L1))
    out = s.assign(0.0, max_batch=8)
    assert [t.task_id for t in out["a"]] == [2]
    assert not s.can_serve(Level.L2, "nobody")
    assert s.can_serve(Level.L1, "nobody") and not s.can_serve(Level.L1, "a")


def test_when_nobody_has_room_the_queue_keeps_its_order() -> None:
    """A round that finds every agent full stops early and leaves the queue as it was; the
    tasks then go out in that order once room appears."""
    s = sched(agents=2, inflight=2)
    s.add_agent("a", Level.L2)
    s.add_agent("b", Level.L1)
    for i in (1, 2, 3, 4):
        s.enqueue(task(i, Level.L2 if i == 1 else Level.L1))
    first = s.assign(0.0, max_batch=2)
    assert sorted(t.task_id for b in first.values() for t in b) == [1, 2, 3, 4]
    for i in (5, 6, 7):
        s.enqueue(task(i, Level.L2 if i == 6 else Level.L1))
    assert s.assign(0.1, max_batch=2) == {} and s.queued == 3
    for t in first["a"]:
        s.complete("a", t.task_id)
    assert [t.task_id for t in s.assign(0.2, max_batch=2)["a"]] == [5, 6]
    assert s.queued == 1


def test_heap_entries_stay_bounded() -> None:
    """Lazy invalidation leaves stale entries behind, but never more than about two per
    agent."""
    s = sched(agents=10, inflight=8)
    for i in range(10):
        s.add_agent(f"a{i}", Level.L2)
    next_id = 1
    for step in range(500):
        for _ in range(40):
            s.enqueue(task(next_id))
            next_id += 1
        for agent_id, batch in s.assign(float(step), max_batch=4).items():
            for t in batch:
                s.complete(agent_id, t.task_id)
        assert s.tables()["scheduler_agent_order"].entries <= 2 * 10 + 64


def _best(s: Scheduler, level: Level, max_batch: int, avoid: str) -> set[str]:
    """Brute force: the agents a single task of ``level`` may go to right now."""
    slots: list[AgentSlot] = list(s._agents.values())  # the oracle reads the slots
    fit = []
    for slot in slots:
        n = len(slot.inflight)
        room = slot.limit - n
        fill = min(max_batch, s.max_inflight, slot.limit)
        worth = room > 0 and (room >= fill or n < max_batch)
        if slot.level >= level and worth and slot.agent_id != avoid:
            fit.append(slot)
    if not fit:
        return set()
    key = min((len(x.inflight), x.served) for x in fit)
    return {x.agent_id for x in fit if (len(x.inflight), x.served) == key}


AGENTS = [f"a{i}" for i in range(6)]
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(AGENTS), st.sampled_from(list(Level))),
        st.tuples(st.just("remove"), st.sampled_from(AGENTS), st.just(Level.L1)),
        st.tuples(st.just("limit"), st.sampled_from(AGENTS), st.integers(0, 6)),
        st.tuples(st.just("answer"), st.sampled_from(AGENTS), st.integers(0, 5)),
        st.tuples(st.just("pick"), st.sampled_from(["", *AGENTS]), st.sampled_from(list(Level))),
        st.tuples(st.just("expire"), st.just(""), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops=OPS, max_batch=st.integers(1, 4))
def test_every_pick_is_the_least_loaded_fit_agent(
    ops: list[tuple[str, str, int]], max_batch: int
) -> None:
    """Whatever joined, left, changed level or limit, answered or timed out before, a single
    task goes to an agent with the least load (then the longest wait) among those fit for it:
    never to one at a stale load, above its limit, below the task's level or to avoid."""
    s = Scheduler(task_timeout=1.0, max_inflight_per_agent=6, queue_size=1000, max_attempts=9)
    held: dict[str, list[int]] = {}
    now = 0.0
    next_id = 1
    for op, who, arg in ops:
        now += 0.3
        if op == "add":
            s.add_agent(who, Level(arg))
        elif op == "remove":
            s.remove_agent(who)
            held.pop(who, None)
        elif op == "limit":
            s.set_limit(who, arg if arg < 6 else None)
        elif op == "answer":
            mine = held.get(who, [])
            for task_id in mine[:arg]:
                s.complete(who, task_id)
            held[who] = mine[arg:]
        elif op == "expire":
            s.expire(now)
            for agent_id in list(held):
                held[agent_id] = [
                    t for t in held[agent_id] if s.classify(agent_id, t) is Completion.ACCEPTED
                ]
        else:
            if s.queued:
                # Requeued work goes first; hand it out, and judge a lone task another time.
                for agent_id, batch in s.assign(now, max_batch).items():
                    held.setdefault(agent_id, []).extend(t.task_id for t in batch)
                continue
            expected = _best(s, Level(arg), max_batch, who)
            s.enqueue(task(next_id, Level(arg), avoid=who))
            out = s.assign(now, max_batch)
            if expected:
                [(chosen, [t])] = out.items()
                assert chosen in expected and t.task_id == next_id
                held.setdefault(chosen, []).append(next_id)
            else:
                assert out == {}
                s.cancel(next_id)
                s.assign(now, max_batch)  # the queue entry of the cancelled task goes
            next_id += 1
        for slot in s._agents.values():  # no cap is ever passed
            assert len(slot.inflight) <= s.max_inflight
