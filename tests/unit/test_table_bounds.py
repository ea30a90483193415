"""Memory bounded by design: every table of the pure scheduling, shadow and integrity logic
stays under its configured bound over a long run with agent churn, and each retention rule
keeps the guarantee it exists for."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ioswarm.config import CoordinatorConfig
from ioswarm.coordinator.admission import SubmissionGate
from ioswarm.coordinator.chainwatch import Head, MempoolPoller
from ioswarm.coordinator.dispatcher import Dispatcher
from ioswarm.coordinator.metrics import CoordinatorMetrics, TableCollector
from ioswarm.coordinator.service import Coordinator
from ioswarm.core.canary import CanaryTruth
from ioswarm.core.execshadow import PredictedContext
from ioswarm.core.integrity import IntegrityBook
from ioswarm.core.models import BlockHeader, IncludedTx, Level, PendingTx, Task, Verdict
from ioswarm.core.retention import DepartedAgents, TableSize, sweep_agents
from ioswarm.core.scheduling import Completion, Scheduler
from ioswarm.core.shadow import Outcome, ShadowBook
from ioswarm.errors import RequestRefused
from ioswarm.proto import ioswarm_pb2 as pb

MAX_AGENTS = 8
MAX_INFLIGHT = 32
QUEUE = 400
ATTEMPTS = 3
TIMEOUT = 2.0
MAX_TRACKED = 1500
RETENTION_BLOCKS = 20
EXPIRY_BLOCKS = 8


def sender_of(i: int) -> bytes:
    return (i % 5000).to_bytes(20, "big")


def make_task(i: int, tx: int, level: Level = Level.L1, height: int = 1) -> Task:
    return Task(i, tx.to_bytes(32, "big"), b"raw", level, sender_of(tx), tx, height, 30_000_000)


def context(number: int) -> PredictedContext:
    return PredictedContext(number, number * 12, 30_000_000, 7, b"\x00" * 20, b"\x00" * 32, 1)


def test_long_run_with_churn_keeps_every_table_under_its_bound() -> None:
    """Hundreds of thousands of tasks over thousands of blocks, with agents leaving, coming
    back and new ids joining, never take a table past its bound, and every table is used."""
    rng = random.Random(7)
    sched = Scheduler(TIMEOUT, MAX_INFLIGHT, QUEUE, ATTEMPTS, max_agents=MAX_AGENTS)
    shadow = ShadowBook(EXPIRY_BLOCKS, max_tracked=MAX_TRACKED)
    book = IntegrityBook(25.0, max_canaries=sched.open_bound)
    departed = DepartedAgents(RETENTION_BLOCKS, MAX_AGENTS)
    live: list[str] = []
    next_agent = 0
    next_task = 1
    sent_at: dict[int, int] = {}  # tx -> block its task was made at
    waiting: list[int] = []  # txs not yet included
    answered: list[tuple[str, int]] = []
    biggest: dict[str, int] = defaultdict(int)
    credited_twice = 0
    now = 0.0

    def tables() -> dict[str, TableSize]:
        return {
            **sched.tables(),
            **shadow.tables(MAX_AGENTS),
            **book.tables(MAX_AGENTS),
            **departed.tables(),
        }

    for block in range(1, 2401):
        # Churn: now and then an agent vanishes (its tasks go back), a known one returns or
        # a new id joins, up to maxAgents registered.
        if live and rng.random() < 0.08:
            gone = live.pop(rng.randrange(len(live)))
            sched.remove_agent(gone)
            departed.depart(gone, block)
        while len(live) < MAX_AGENTS and rng.random() < 0.5:
            back = departed.agent_ids()
            if back and rng.random() < 0.3:
                agent = rng.choice(back)
            else:
                agent, next_agent = f"agent-{next_agent}", next_agent + 1
            live.append(agent)
            sched.add_agent(agent, Level.L2)
        for _ in range(2):  # two dispatch rounds per block
            now += 0.5
            for _ in range(45):
                tx = next_task
                t = make_task(next_task, tx, Level.L1 if tx % 2 else Level.L2, block)
                next_task += 1
                if sched.enqueue(t):
                    sent_at[tx] = block
                    waiting.append(tx)
                    if tx % 40 == 0:
                        book.expect(t.task_id, "valid", CanaryTruth(True, "", t.sender))
            report = sched.expire(now)
            for task_id in report.dropped:
                book.forget(task_id)
            for agent, batch in sched.assign(now, 16).items():
                for t in batch:
                    roll = rng.random()
                    if roll < 0.04:
                        continue  # never answered: times out and moves on
                    if roll < 0.07:
                        book.note_answer(agent, declined=True)
                        if not sched.release(agent, t.task_id):
                            book.forget(t.task_id)
                        continue
                    assert sched.classify(agent, t.task_id) is Completion.ACCEPTED
                    done = sched.complete(agent, t.task_id)
                    assert done is not None
                    book.note_answer(agent, declined=False)
                    verdict = Verdict(t.task_id, True, sender=t.sender)
                    if book.is_canary(t.task_id):
                        book.judge_canary(agent, t, verdict)
                    else:
                        shadow.record(agent, t, verdict)
                    answered.append((agent, t.task_id))
        # Replays of answered task ids, old and new: never accepted again.
        for agent, task_id in rng.sample(answered, min(5, len(answered))):
            kind = sched.classify(agent, task_id)
            assert kind in (Completion.ANSWERED, Completion.FORGOTTEN)
            credited_twice += sched.complete(agent, task_id) is not None
        answered = answered[-2000:]
        # The block: most txs sent a block or more ago land; some never do, some are replaced.
        landing = [tx for tx in waiting if sent_at[tx] < block and rng.random() < 0.7]
        for tx in rng.sample(waiting, min(3, len(waiting))):
            shadow.note_replaced(tx.to_bytes(32, "big"))
        included = [
            IncludedTx(tx.to_bytes(32, "big"), sender_of(tx), tx, block, 1, tx_index=i)
            for i, tx in enumerate(landing[:200])
        ]
        landed = {tx for tx in landing[:200]}
        waiting = [tx for tx in waiting if tx not in landed and sent_at[tx] > block - 30]
        for tx in landed:
            del sent_at[tx]
        for tx in [tx for tx in sent_at if sent_at[tx] <= block - 30]:
            del sent_at[tx]
        shadow.on_block(block, included, context(block))
        shadow.expire(block)
        departed.expire(block)
        sweep_agents((shadow, book), [*live, *departed.agent_ids()])
        for name, size in tables().items():
            assert size.entries <= size.bound, (block, name, size)
            biggest[name] = max(biggest[name], size.entries)

    assert next_task > 200_000
    assert credited_twice == 0
    unused = sorted(name for name, most in biggest.items() if most == 0)
    assert unused == [], f"tables never used: {unused}"
    assert sched.classify("agent-0", 1) is Completion.FORGOTTEN


# -- finished tasks -----------------------------------------------------------------------------


def small_scheduler() -> Scheduler:
    return Scheduler(TIMEOUT, 2, 10, 2, max_agents=1)


def run_one(s: Scheduler, task_id: int, agent: str, now: float) -> None:
    assert s.enqueue(make_task(task_id, task_id))
    s.assign(now, 8)
    assert s.complete(agent, task_id) is not None


def test_forgotten_task_id_is_never_credited_and_not_refused_as_unknown() -> None:
    """An answered task evicted from memory (past its count bound) is FORGOTTEN: a replay earns
    nothing, the batch is not refused, and an id never issued is still NOT_FOUND."""
    s = small_scheduler()  # remembers 1 agent x 2 inflight x 3 = 6 finished tasks
    s.add_agent("a", Level.L1)
    for i in range(1, 21):
        run_one(s, i, "a", 0.0)
    assert s.tables()["scheduler_done"] == TableSize(6, 6)
    assert s.classify("a", 20) is Completion.ANSWERED
    assert s.classify("a", 1) is Completion.FORGOTTEN
    assert s.complete("a", 1) is None
    gate = SubmissionGate(100.0, 100, 10, s.classify, lambda: 0.0)
    _, kinds = gate.admit("a", [pb.TaskResult(task_id=1, valid=True)])
    assert kinds == [Completion.FORGOTTEN]
    with pytest.raises(RequestRefused) as replay:
        gate.admit("a", [pb.TaskResult(task_id=20, valid=True)])
    assert replay.value.status == "ALREADY_EXISTS"
    with pytest.raises(RequestRefused) as unknown:
        gate.admit("a", [pb.TaskResult(task_id=99, valid=True)])
    assert unknown.value.status == "NOT_FOUND"


def test_finished_tasks_are_remembered_for_a_whole_task_life_then_forgotten() -> None:
    """A finished task is remembered for (maxTaskAttempts + 1) timeouts of the caller's clock,
    so a late answer within it is told apart, and forgotten after."""
    s = Scheduler(TIMEOUT, 8, 10, 2, max_agents=4)
    s.add_agent("a", Level.L1)
    run_one(s, 1, "a", 0.0)
    s.expire(3 * TIMEOUT - 0.1)
    assert s.classify("a", 1) is Completion.ANSWERED
    s.expire(3 * TIMEOUT + 0.1)
    assert s.classify("a", 1) is Completion.FORGOTTEN
    assert s.tables()["scheduler_done"].entries == 0


def test_deadline_heap_is_compacted_and_live_deadlines_survive() -> None:
    """Rounds whose tasks were all answered are dropped from the deadline heap once it passes
    its bound, while an unanswered task still times out and is reassigned."""
    s = Scheduler(TIMEOUT, 2, 10, 3, max_agents=1)  # deadline bound 2 x 1 x 2 + 1 = 5
    s.add_agent("a", Level.L1)
    s.enqueue(make_task(1, 1))
    s.assign(0.0, 1)  # task 1 stays unanswered
    for i in range(2, 40):
        run_one(s, i, "a", 0.01 * i)
        s.expire(0.01 * i)
        assert s.tables()["scheduler_deadlines"].entries <= 5
    s.add_agent("b", Level.L1)
    report = s.expire(TIMEOUT + 1)
    assert report.reassigned == [1]


# -- departed agents ----------------------------------------------------------------------------


def tally(book: ShadowBook, agent: str, i: int) -> None:
    book.on_block(i, [IncludedTx(i.to_bytes(32, "big"), sender_of(i), i, i, 1)])
    book.record(agent, make_task(i, i), Verdict(i, True, sender=sender_of(i)))


def test_agent_returning_within_retention_keeps_its_history() -> None:
    """An evicted agent that comes back before agentRetentionBlocks pass finds its shadow
    counts and its throttle; one gone longer starts afresh."""
    shadow = ShadowBook(5)
    book = IntegrityBook(25.0)
    departed = DepartedAgents(10, 4)
    for i in range(1, 4):
        tally(shadow, "a", i)
        tally(shadow, "b", i + 100)
    for _ in range(30):
        book.note_answer("a", declined=True)
    assert book.conduct("a").throttled
    departed.depart("a", 5)
    departed.depart("b", 5)
    departed.expire(14)
    sweep_agents((shadow, book), ["c", *departed.agent_ids()])
    assert shadow.by_agent["a"].matched == 3 and book.conduct("a").throttled
    assert departed.returned("a")  # "a" registers again at block 14
    departed.expire(15)
    sweep_agents((shadow, book), ["a", "c", *departed.agent_ids()])
    assert shadow.by_agent["a"].matched == 3 and book.conduct("a").throttled
    assert "b" not in shadow.by_agent and "b" not in departed
    assert shadow.by_level[Level.L1].matched == 6  # the per-level totals keep everything


def test_departed_agents_past_max_are_forgotten_longest_gone_first() -> None:
    """At most maxAgents departed agents are remembered; the longest gone go first."""
    departed = DepartedAgents(1000, 2)
    assert departed.depart("a", 1) == []
    assert departed.depart("b", 2) == []
    assert departed.depart("c", 3) == ["a"]
    assert departed.agent_ids() == ["b", "c"]
    assert departed.tables()["departed_agents"] == TableSize(2, 2)


def test_sweep_drops_entries_made_for_a_forgotten_agent() -> None:
    """A verdict of an agent already forgotten, judged later, does not leave its entry behind."""
    shadow = ShadowBook(5)
    shadow.record("gone", make_task(1, 1), Verdict(1, True, sender=sender_of(1)))
    shadow.on_block(1, [IncludedTx((1).to_bytes(32, "big"), sender_of(1), 1, 1, 1)])
    assert "gone" in shadow.by_agent
    assert sweep_agents((shadow,), ["a"]) == 1
    assert shadow.agent_ids() == set()


# -- shadow tables ------------------------------------------------------------------------------


def test_replacement_is_remembered_while_a_verdict_can_wait_then_forgotten() -> None:
    """A replacement seen in the mempool still excludes as 'replaced' within expiryBlocks, and
    is forgotten after it (it no longer leaks when the replaced tx never lands)."""
    book = ShadowBook(expiry_blocks=5)
    old = (1).to_bytes(32, "big")
    book.note_replaced(old)
    book.on_block(3, [])
    book.record("a", make_task(1, 1), Verdict(1, True, sender=sender_of(1)))
    [c] = book.on_block(4, [IncludedTx(b"\x09" * 32, sender_of(1), 1, 4, 1)])
    assert (c.outcome, c.detail) == (Outcome.EXCLUDED, "replaced")
    book.note_replaced(b"\x07" * 32)  # replaced, never dispatched, never lands
    book.on_block(20, [])
    assert book.tables(1)["shadow_replaced"].entries == 0


def test_pending_verdicts_past_max_tracked_expire_oldest_first() -> None:
    """Past maxTrackedTxs, the longest-waiting verdicts expire without a verdict (counted)."""
    book = ShadowBook(expiry_blocks=100, max_tracked=3)
    for i in range(1, 6):
        book.record("a", make_task(i, i), Verdict(i, True, sender=sender_of(i)))
    assert book.pending == 3 and book.expired == 2
    [c] = book.on_block(1, [IncludedTx((5).to_bytes(32, "big"), sender_of(5), 5, 1, 1)])
    assert c.outcome is Outcome.MATCHED and book.pending == 2


def test_included_truth_is_capped_by_max_tracked() -> None:
    """Chain truth is kept for the truth window and never more than maxTrackedTxs txs."""
    book = ShadowBook(expiry_blocks=100, max_tracked=10)
    for block in range(1, 6):
        txs = [
            IncludedTx((block * 100 + i).to_bytes(32, "big"), sender_of(i), block, block, 1)
            for i in range(4)
        ]
        book.on_block(block, txs)
    sizes = book.tables(1)
    assert sizes["shadow_included"].entries == 10 and sizes["shadow_consumed"].entries <= 10
    assert book.is_included((504).to_bytes(32, "big")) is False  # index 4 never existed
    assert book.is_included((503).to_bytes(32, "big")) and not book.is_included(
        (101).to_bytes(32, "big")
    )


# -- canaries -----------------------------------------------------------------------------------


def test_dropped_task_forgets_its_canary_truth() -> None:
    """A task given up after maxTaskAttempts tells the integrity book to drop its canary."""
    sched = Scheduler(TIMEOUT, 4, 10, 1, max_agents=2)
    book = IntegrityBook(25.0, max_canaries=sched.open_bound)
    now = [0.0]
    dispatcher = Dispatcher(
        sched,
        CoordinatorMetrics(CollectorRegistry()),
        lambda: now[0],
        lambda: 0.0,
        8,
        lambda: 1,
        on_dropped=book.forget,
    )
    sched.add_agent("a", Level.L1)
    assert dispatcher.submit(make_task(1, 1))
    book.expect(1, "valid", CanaryTruth(True, "", sender_of(1)))
    sched.assign(0.0, 8)
    now[0] = TIMEOUT + 1
    dispatcher.step()
    assert not book.is_canary(1) and sched.open_tasks == 0


def test_canary_truths_are_capped() -> None:
    """The book never holds more canary truths than its bound (the oldest go first)."""
    book = IntegrityBook(25.0, max_canaries=3)
    for i in range(1, 6):
        book.expect(i, "valid", CanaryTruth(True, "", b""))
    assert book.tables(1)["integrity_canaries"] == TableSize(3, 3)
    assert not book.is_canary(2) and book.is_canary(5)


# -- metrics ------------------------------------------------------------------------------------


def test_table_sizes_and_asyncio_tasks_are_exported_on_scrape() -> None:
    """The collector reads sizes at scrape time into ioswarm_table_entries/bound gauges."""
    registry = CollectorRegistry()
    sizes = {"scheduler_done": TableSize(3, 10)}
    registry.register(TableCollector(lambda: sizes, lambda: 5))
    sizes["scheduler_done"] = TableSize(4, 10)
    text = generate_latest(registry).decode()
    assert 'ioswarm_table_entries{table="scheduler_done"} 4.0' in text
    assert 'ioswarm_table_bound{table="scheduler_done"} 10.0' in text
    assert "ioswarm_asyncio_tasks 5.0" in text


def test_coordinator_exports_every_table_with_a_config_bound() -> None:
    """A coordinator's /metrics registry carries one entries and one bound gauge per table,
    with bounds taken from its configuration."""
    config = CoordinatorConfig(max_agents=7, max_inflight_per_agent=11, max_tracked_txs=1234)
    registry = CollectorRegistry()
    coordinator = Coordinator(config, node=None, registry=registry)  # type: ignore[arg-type]
    tables = coordinator.tables()
    assert tables["registry_agents"] == TableSize(0, 7)
    assert tables["dispatch_streams"].bound == 7
    assert tables["mempool_dispatched"].bound == 1234
    assert tables["shadow_pending_verdicts"].bound == 1234
    assert tables["scheduler_done"].bound == 7 * 11 * (config.max_task_attempts + 1)
    text = generate_latest(registry).decode()
    for name in tables:
        assert f'ioswarm_table_bound{{table="{name}"}}' in text
    assert "ioswarm_asyncio_tasks 0.0" in text


# -- mempool poller ------------------------------------------------------------------------------


class ListedMempool:
    """The two node calls the poller makes, answering from a mempool the test sets (a stand-in:
    a real node cannot be made to drop and replace transactions on cue)."""

    def __init__(self) -> None:
        self.pending: list[PendingTx] = []

    async def pending_transactions(self) -> list[PendingTx]:
        return list(self.pending)

    async def raw_transactions(self, hashes: list[bytes]) -> dict[bytes, bytes]:
        return {h: b"raw" for h in hashes}

    def listed_raw(self, tx_hash: bytes) -> bytes | None:
        return None  # the bytes are read with raw_transactions


def pending(i: int, nonce: int) -> PendingTx:
    return PendingTx(i.to_bytes(32, "big"), sender_of(1), nonce, None, 0, 21_000, 1)


async def test_mempool_memory_follows_the_pool_and_still_sees_replacements() -> None:
    """The poller forgets hashes and nonce slots the node no longer lists, yet a replacement
    that pushes its predecessor out of the pool in one poll is still reported."""
    node = ListedMempool()
    made: list[bytes] = []
    replaced: list[bytes] = []

    async def make_tasks(items: list[tuple[object, bytes]], header: BlockHeader) -> int:
        made.extend(item.tx_hash for item, _ in items)  # type: ignore[attr-defined]
        return len(items)

    head = Head(BlockHeader(1, b"\x01" * 32, b"\x00" * 32, 10**10, 30_000_000, 7, b"\x00" * 20))
    poller = MempoolPoller(
        node,  # type: ignore[arg-type]
        head,
        make_tasks,  # type: ignore[arg-type]
        needs_state=lambda: False,
        has_agents=lambda: True,
        on_replaced=replaced.append,
        interval=1.0,
        sync_max_lag_sec=0,
        wall_clock=lambda: 10.0**10,
        on_error=lambda loop: None,
        on_syncing=lambda syncing: None,
    )
    node.pending = [pending(1, 0), pending(2, 1)]
    await poller.step()
    await poller.step()
    assert made == [pending(1, 0).tx_hash, pending(2, 1).tx_hash]  # dispatched once
    node.pending = [pending(3, 1)]  # tx 1 left the pool, tx 3 replaced tx 2
    await poller.step()
    assert replaced == [pending(2, 1).tx_hash]
    sizes = poller.tables()
    assert sizes["mempool_dispatched"].entries == 1 and sizes["mempool_slot_owners"].entries == 1
