"""Shadow mode: compare every agent answer with what the chain really did.

Ground truth at L1/L2 is inclusion: a transaction that landed had a valid signature, and its
nonce and balance were valid when it executed (a reverted transaction is still valid). A
difference caused by the race between dispatch and inclusion is not the agent's fault and is
counted as *excluded* with its reason, never as a match:

- ``replaced``: the same sender and nonce landed with another hash, and the coordinator saw
  that replacement in the mempool;
- ``nonce_consumed``: the same sender and nonce landed with another hash it never saw;
- ``nonce_race``: the agent rejected on nonce because the state the coordinator sent at
  dispatch had a different nonce than the one the transaction found at inclusion;
- ``balance_race``: likewise for balance.

Results whose transaction has not landed stay pending until it lands or until
``expiry_blocks`` pass; then they expire without a verdict.

Memory is bounded: chain truth is kept for ``truth_window`` blocks, replacements seen in the
mempool for as long as a verdict they explain can wait, and each per-transaction table holds at
most ``max_tracked`` entries (``maxTrackedTxs``; past it the oldest go first, a pending verdict
then expiring without a verdict). Per-agent counts are dropped by the coordinator once an agent
has been gone longer than its retention (:mod:`ioswarm.core.retention`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Final

from ioswarm.core.evidence import INCOMPLETE, false_missing_claim, missing_evidence
from ioswarm.core.execshadow import (
    ACCOUNT_FIELDS,
    PredictedContext,
    StateKey,
    describe_difference,
    first_difference,
    judge_execution,
)
from ioswarm.core.execution import MISSING_STATE
from ioswarm.core.models import IncludedTx, Level, Outcome, Task, Verdict
from ioswarm.core.retention import TableSize
from ioswarm.core.rules import Reject

__all__ = [
    "BALANCE_REASONS",
    "NONCE_REASONS",
    "REVERIFIABLE",
    "Comparison",
    "Outcome",
    "Reverifiable",
    "ShadowBook",
    "ShadowCounts",
    "judge_included",
]

NONCE_REASONS: Final = frozenset({Reject.NONCE_TOO_LOW, Reject.NONCE_TOO_HIGH})
BALANCE_REASONS: Final = frozenset({Reject.INSUFFICIENT_BALANCE})


@dataclass(frozen=True, slots=True)
class Comparison:
    """One verdict judged against the chain."""

    agent_id: str
    task_id: int
    level: Level
    outcome: Outcome
    detail: str = ""  # exclusion reason or the mismatched field
    note: str = ""  # for an execution mismatch: the transaction and both values, for the log
    reverify: bool = False  # the verdict of a re-verification task (exact by construction)


@dataclass
class ShadowCounts:
    """compared == matched + mismatched + sum(excluded.values())."""

    compared: int = 0
    matched: int = 0
    mismatched: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    mismatched_fields: dict[str, int] = field(default_factory=dict)
    reverified: int = 0
    """Of the excluded comparisons counted here, those a re-verification task (answered by
    another agent) gave an exact verdict after all."""

    def add(self, c: Comparison) -> None:
        self.compared += 1
        if c.outcome is Outcome.MATCHED:
            self.matched += 1
        elif c.outcome is Outcome.MISMATCHED:
            self.mismatched += 1
            self.mismatched_fields[c.detail] = self.mismatched_fields.get(c.detail, 0) + 1
        else:
            self.excluded[c.detail] = self.excluded.get(c.detail, 0) + 1

    def merge(self, other: ShadowCounts) -> None:
        """Add another tally's counts to this one."""
        self.compared += other.compared
        self.matched += other.matched
        self.mismatched += other.mismatched
        self.reverified += other.reverified
        for k, v in other.excluded.items():
            self.excluded[k] = self.excluded.get(k, 0) + v
        for k, v in other.mismatched_fields.items():
            self.mismatched_fields[k] = self.mismatched_fields.get(k, 0) + v

    @property
    def excluded_total(self) -> int:
        return sum(self.excluded.values())

    @property
    def accuracy(self) -> float:
        """matched / (matched + mismatched); exclusions are neither right nor wrong."""
        judged = self.matched + self.mismatched
        return self.matched / judged if judged else 1.0

    def as_dict(self) -> dict[str, object]:
        return {
            "compared": self.compared,
            "matched": self.matched,
            "mismatched": self.mismatched,
            "excluded": dict(sorted(self.excluded.items())),
            "mismatched_fields": dict(sorted(self.mismatched_fields.items())),
            "reverified": self.reverified,
            "unverified": max(0, self.excluded_total - self.reverified),
            "accuracy": round(self.accuracy, 6),
        }


@dataclass(frozen=True, slots=True)
class _Pending:
    agent_id: str
    task: Task
    verdict: Verdict
    recorded_at: int  # head block height when the verdict arrived
    predicted: PredictedContext | None = None


def judge_included(agent_id: str, task: Task, verdict: Verdict, truth: IncludedTx) -> Comparison:
    """Judge a verdict for a transaction that landed (it was valid at L1 and L2)."""

    def result(outcome: Outcome, detail: str = "") -> Comparison:
        return Comparison(agent_id, task.task_id, task.level, outcome, detail)

    if verdict.valid:
        if verdict.sender and verdict.sender != truth.sender:
            return result(Outcome.MISMATCHED, "sender")
        return result(Outcome.MATCHED)
    state = task.sender_state
    if task.level >= Level.L2 and state is not None:
        if verdict.reject_reason in NONCE_REASONS and state.nonce != truth.nonce:
            return result(Outcome.EXCLUDED, "nonce_race")
        if verdict.reject_reason in BALANCE_REASONS and state.balance < task.max_cost:
            return result(Outcome.EXCLUDED, "balance_race")
    return result(Outcome.MISMATCHED, "valid")


# Exclusions a re-verification can settle: the transaction landed, and the difference may be
# the race or the context, which a task with the real pre-state and context takes away.
REVERIFIABLE: Final = frozenset(
    {"read_write_race", "block_context", MISSING_STATE, "nonce_race", "balance_race"}
)
MAX_REVERIFY_QUEUE = 4096


@dataclass(frozen=True, slots=True)
class Reverifiable:
    """An excluded executing-level comparison whose transaction landed: what a
    re-verification task is made from."""

    agent_id: str
    task: Task
    truth: IncludedTx
    reason: str


def judge_reverification(
    agent_id: str,
    task: Task,
    verdict: Verdict,
    truth: IncludedTx,
    context: PredictedContext | None,
) -> Comparison:
    """Judge the answer to a re-verification task exactly.

    The task carried the transaction's real pre-state in its block (every account and slot it
    touched) and the block's real context, so neither a race nor the context can explain a
    difference, and a claim of missing state is the agent's fault.
    """

    def result(outcome: Outcome, detail: str = "", note: str = "") -> Comparison:
        return Comparison(agent_id, task.task_id, task.level, outcome, detail, note, True)

    if not verdict.valid and verdict.reject_reason == MISSING_STATE:
        return result(Outcome.MISMATCHED, MISSING_STATE)
    if not verdict.valid or verdict.effects is None:
        base = judge_included(agent_id, task, verdict, truth)
        return result(base.outcome, base.detail)
    if truth.effects is None or context is None:
        return result(Outcome.EXCLUDED, "no_trace")
    diff = first_difference(verdict.effects, truth.effects)
    if diff is None:
        return result(Outcome.MATCHED)
    note = (
        f"tx=0x{task.tx_hash.hex()} block={truth.block_number} index={truth.tx_index} "
        f"reverify {describe_difference(diff, verdict.effects, truth.effects)}"
    )
    return result(Outcome.MISMATCHED, diff, note)


class ShadowBook:
    """Pending verdicts, recent chain truth, and the per-agent / per-level tallies."""

    def __init__(
        self,
        expiry_blocks: int,
        truth_window_blocks: int | None = None,
        max_tracked: int = 100_000,
    ) -> None:
        self.expiry_blocks = expiry_blocks
        self.truth_window = truth_window_blocks or expiry_blocks
        self.max_tracked = max_tracked
        self.by_level: dict[Level, ShadowCounts] = {}
        self.by_agent: dict[str, ShadowCounts] = {}
        self.by_agent_level: dict[tuple[str, Level], ShadowCounts] = {}
        self.expired = 0
        self._pending: dict[bytes, list[_Pending]] = {}
        self._pending_count = 0
        self._included: OrderedDict[bytes, IncludedTx] = OrderedDict()
        self._consumed: dict[tuple[bytes, int], bytes] = {}
        # Replaced txs, by the head height they were seen replaced at (oldest first).
        self._replaced: OrderedDict[bytes, int] = OrderedDict()
        self._head = 0
        # L3: per block, the real context and each tx's write-set in block order.
        self._contexts: dict[int, PredictedContext] = {}
        self._writes: dict[int, list[frozenset[StateKey]]] = {}
        # Excluded executing-level comparisons, oldest first, for the re-verifier to take.
        self.reverifiable: deque[Reverifiable] = deque(maxlen=MAX_REVERIFY_QUEUE)

    @property
    def pending(self) -> int:
        return self._pending_count

    def note_replaced(self, tx_hash: bytes) -> None:
        """The mempool showed another tx with this one's sender and nonce."""
        self._replaced.pop(tx_hash, None)
        self._replaced[tx_hash] = self._head
        while len(self._replaced) > self.max_tracked:
            self._replaced.popitem(last=False)

    def is_included(self, tx_hash: bytes) -> bool:
        return tx_hash in self._included

    def record(
        self,
        agent_id: str,
        task: Task,
        verdict: Verdict,
        predicted: PredictedContext | None = None,
    ) -> Comparison | None:
        """Take a verdict; judge it now if the chain already decided, else keep it pending.

        An answer without the evidence its level requires is wrong at once, whatever the chain
        does later (see :mod:`ioswarm.core.evidence`).
        """
        again = bool(task.context_block)  # a re-verification task: its verdicts are exact
        gap = missing_evidence(task, verdict)
        if gap:
            return self._tally(
                Comparison(
                    agent_id, task.task_id, task.level, Outcome.MISMATCHED, INCOMPLETE, gap, again
                ),
                task,
            )
        if task.level >= Level.L3 and not verdict.valid and verdict.reject_reason == MISSING_STATE:
            if verdict.detail == "block_context" and predicted is None:
                # The batch really carried no context: the coordinator's doing, not the agent's.
                return self._tally(
                    Comparison(agent_id, task.task_id, task.level, Outcome.EXCLUDED, MISSING_STATE)
                )
            hashes = predicted.block_hashes if predicted is not None else {}
            false = false_missing_claim(task, verdict.detail, hashes, predicted is not None)
            if false and task.level == Level.L3:
                return self._tally(
                    Comparison(
                        agent_id,
                        task.task_id,
                        task.level,
                        Outcome.MISMATCHED,
                        MISSING_STATE,
                        false,
                        again,
                    ),
                    task,
                )
        pending = _Pending(agent_id, task, verdict, self._head, predicted)
        truth = self._included.get(task.tx_hash)
        if truth is not None:
            return self._judged(pending, truth)
        other = self._consumed.get((task.sender, task.nonce))
        if other is not None and other != task.tx_hash:
            return self._tally(self._nonce_taken(agent_id, task))
        self._pending.setdefault(task.tx_hash, []).append(pending)
        self._pending_count += 1
        while self._pending_count > self.max_tracked:
            # Oldest first: past the bound, the longest-waiting verdicts expire unjudged.
            tx_hash = next(iter(self._pending))
            self._drop_pending(tx_hash)
        return None

    def _drop_pending(self, tx_hash: bytes) -> int:
        gone = len(self._pending.pop(tx_hash, ()))
        self._pending_count -= gone
        self.expired += gone
        return gone

    def _judged(self, p: _Pending, truth: IncludedTx) -> Comparison:
        """Judge and count; an excluded executing-level verdict is queued for re-verification."""
        c = self._judge(p, truth)
        if (
            c.outcome is Outcome.EXCLUDED
            and c.detail in REVERIFIABLE
            and p.task.level >= Level.L3
            and not p.task.context_block
        ):
            self.reverifiable.append(Reverifiable(p.agent_id, p.task, truth, c.detail))
        return self._tally(c, p.task)

    def _judge(self, p: _Pending, truth: IncludedTx) -> Comparison:
        task, verdict = p.task, p.verdict
        if task.level < Level.L3:
            return judge_included(p.agent_id, task, verdict, truth)
        if task.context_block:
            return judge_reverification(p.agent_id, task, verdict, truth, p.predicted)

        def result(outcome: Outcome, detail: str = "") -> Comparison:
            return Comparison(p.agent_id, task.task_id, task.level, outcome, detail)

        actual = self._contexts.get(truth.block_number)
        if not verdict.valid and verdict.reject_reason == MISSING_STATE:
            return result(*self._judge_missing_state(p, truth, actual))
        if not verdict.valid or verdict.effects is None:
            base = judge_included(p.agent_id, task, verdict, truth)
            if base.outcome is Outcome.MISMATCHED and task.read_set & self._written_before(
                task.block_height, truth
            ):
                return result(Outcome.EXCLUDED, "read_write_race")
            return base
        if truth.effects is None or actual is None or p.predicted is None:
            return result(Outcome.EXCLUDED, "no_trace")
        outcome, detail = judge_execution(
            verdict.effects,
            verdict.context_reads,
            truth.effects,
            p.predicted,
            actual,
            task.read_set,
            self._written_before(task.block_height, truth),
        )
        note = ""
        if outcome == Outcome.MISMATCHED.value:
            note = (
                f"tx=0x{task.tx_hash.hex()} block={truth.block_number} index={truth.tx_index} "
                f"state_block={task.block_height} "
                + describe_difference(detail, verdict.effects, truth.effects)
            )
        return Comparison(p.agent_id, task.task_id, task.level, Outcome(outcome), detail, note)

    def _judge_missing_state(
        self, p: _Pending, truth: IncludedTx, actual: PredictedContext | None
    ) -> tuple[Outcome, str]:
        """A claim that the task lacked state, checked against what was sent and touched.

        The coordinator sent every key the access-list simulation found (the task's read set).
        When the chain's execution wrote only keys that were sent, nothing it read changed before
        it, and the real block context is the one the agent was given, the execution the agent
        ran followed the same path over the same keys: the claim is false. Otherwise the
        difference may be real and the claim is excluded. An L4 agent executes on its own full
        state, so a missing-state claim there is never the coordinator's doing.
        """
        task = p.task
        if task.level >= Level.L4:
            return Outcome.MISMATCHED, MISSING_STATE
        effects = truth.effects
        if effects is None or actual is None or p.predicted is None:
            return Outcome.EXCLUDED, MISSING_STATE
        if task.read_set & self._written_before(task.block_height, truth):
            return Outcome.EXCLUDED, "read_write_race"
        if p.predicted.differing(actual):
            return Outcome.EXCLUDED, MISSING_STATE
        sent = task.read_set
        sent_accounts = {address for address, _ in sent}
        coinbases = {p.predicted.coinbase, actual.coinbase}
        for address, key in effects.writes:
            if address in coinbases:
                continue
            if key in ACCOUNT_FIELDS:
                if address not in sent_accounts:
                    return Outcome.EXCLUDED, MISSING_STATE
            elif (address, key) not in sent:
                return Outcome.EXCLUDED, MISSING_STATE
        return Outcome.MISMATCHED, MISSING_STATE

    def _written_before(self, prefetch_block: int, truth: IncludedTx) -> frozenset[StateKey]:
        """What was written after the state was read at ``prefetch_block`` and before ``truth``."""
        out: set[StateKey] = set()
        for number in range(prefetch_block + 1, truth.block_number):
            for w in self._writes.get(number, ()):
                out |= w
        for w in self._writes.get(truth.block_number, [])[: truth.tx_index]:
            out |= w
        return frozenset(out)

    def on_block(
        self,
        number: int,
        included: list[IncludedTx],
        actual: PredictedContext | None = None,
    ) -> list[Comparison]:
        """Fold one landed block in; returns every verdict it decided."""
        self._head = max(self._head, number)
        if actual is not None:
            self._contexts[number] = actual
        self._writes[number] = [
            tx.effects.writes if tx.effects is not None else frozenset() for tx in included
        ]
        out: list[Comparison] = []
        for tx in included:
            self._included[tx.tx_hash] = tx
            self._consumed[(tx.sender, tx.nonce)] = tx.tx_hash
            judged = self._pending.pop(tx.tx_hash, ())
            self._pending_count -= len(judged)
            for p in judged:
                out.append(self._judged(p, tx))
        if included:
            taken = {(tx.sender, tx.nonce) for tx in included}
            for tx_hash in [
                h
                for h, ps in self._pending.items()
                if ps and (ps[0].task.sender, ps[0].task.nonce) in taken
            ]:
                taken_ps = self._pending.pop(tx_hash)
                self._pending_count -= len(taken_ps)
                for p in taken_ps:
                    out.append(self._tally(self._nonce_taken(p.agent_id, p.task)))
        self._forget_old(number)
        return out

    def _nonce_taken(self, agent_id: str, task: Task) -> Comparison:
        reason = "replaced" if task.tx_hash in self._replaced else "nonce_consumed"
        return Comparison(agent_id, task.task_id, task.level, Outcome.EXCLUDED, reason)

    def _forget_old(self, head: int) -> None:
        horizon = head - self.truth_window
        for number in [n for n in self._writes if n <= horizon]:
            del self._writes[number]
        for number in [n for n in self._contexts if n <= horizon]:
            del self._contexts[number]
        while self._included:
            tx_hash, tx = next(iter(self._included.items()))
            if tx.block_number > horizon and len(self._included) <= self.max_tracked:
                break
            self._included.popitem(last=False)
            key = (tx.sender, tx.nonce)
            if self._consumed.get(key) == tx_hash:
                del self._consumed[key]
            self._replaced.pop(tx_hash, None)
        # A replacement matters while a verdict it explains may still be judged.
        replaced_horizon = head - max(self.expiry_blocks, self.truth_window)
        while self._replaced and next(iter(self._replaced.values())) <= replaced_horizon:
            self._replaced.popitem(last=False)

    def expire(self, head: int) -> int:
        """Drop verdicts whose tx has not landed ``expiry_blocks`` after they arrived."""
        gone = 0
        for tx_hash in list(self._pending):
            keep = [p for p in self._pending[tx_hash] if head - p.recorded_at < self.expiry_blocks]
            gone += len(self._pending[tx_hash]) - len(keep)
            if keep:
                self._pending[tx_hash] = keep
            else:
                del self._pending[tx_hash]
                self._replaced.pop(tx_hash, None)
        self._pending_count -= gone
        self.expired += gone
        return gone

    def _tally(self, c: Comparison, task: Task | None = None) -> Comparison:
        self.by_level.setdefault(c.level, ShadowCounts()).add(c)
        self.by_agent.setdefault(c.agent_id, ShadowCounts()).add(c)
        self.by_agent_level.setdefault((c.agent_id, c.level), ShadowCounts()).add(c)
        if task is not None and task.avoid and c.outcome is not Outcome.EXCLUDED:
            # An exact re-verification settles the excluded answer it re-checked: counted
            # where that answer was (its agent and level), not for the agent that answered.
            level = task.reverifies or task.level
            self.by_level.setdefault(level, ShadowCounts()).reverified += 1
            self.by_agent.setdefault(task.avoid, ShadowCounts()).reverified += 1
            self.by_agent_level.setdefault((task.avoid, level), ShadowCounts()).reverified += 1
        return c

    def agent_ids(self) -> set[str]:
        """Agents with counts."""
        return set(self.by_agent) | {a for a, _ in self.by_agent_level}

    def forget_agent(self, agent_id: str) -> None:
        """Drop an agent's counts (it has been gone longer than its retention). The per-level
        totals keep them."""
        self.by_agent.pop(agent_id, None)
        for key in [k for k in self.by_agent_level if k[0] == agent_id]:
            del self.by_agent_level[key]

    def tables(self, max_agents: int) -> dict[str, TableSize]:
        """Sizes and bounds of the book's tables; per-agent ones hold registered agents and at
        most as many departed ones."""
        window = self.truth_window + 1
        agents = 2 * max_agents
        return {
            "shadow_pending_verdicts": TableSize(self._pending_count, self.max_tracked),
            "shadow_included": TableSize(len(self._included), self.max_tracked),
            "shadow_consumed": TableSize(len(self._consumed), self.max_tracked),
            "shadow_replaced": TableSize(len(self._replaced), self.max_tracked),
            "shadow_block_writes": TableSize(len(self._writes), window),
            "shadow_block_contexts": TableSize(len(self._contexts), window),
            "shadow_by_agent": TableSize(len(self.by_agent), agents),
            "shadow_by_agent_level": TableSize(len(self.by_agent_level), agents * len(Level)),
        }

    def level_totals(self, agents: Collection[str]) -> dict[Level, ShadowCounts]:
        """Per-level counts over the given agents only (e.g. the honest ones of a demo)."""
        out: dict[Level, ShadowCounts] = {}
        for (agent_id, level), counts in self.by_agent_level.items():
            if agent_id in agents:
                out.setdefault(level, ShadowCounts()).merge(counts)
        return dict(sorted(out.items()))

    def totals(self) -> ShadowCounts:
        """All levels together."""
        total = ShadowCounts()
        for counts in self.by_level.values():
            total.merge(counts)
        return total
