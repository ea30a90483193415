"""Epoch reward math, in integers only.

Scaling (everything that is not a count is an integer):

- **ppm**: percentages and multipliers are parts per million. ``bonusAccuracyPct: 99.5`` is
  ``995_000`` ppm, ``bonusMultiplier: 1.2`` is ``1_200_000`` ppm. The float config values are
  converted once, in :meth:`RewardPolicy.from_config`, through their decimal text (``99.5`` is
  exactly 995000 ppm, not whatever the binary float rounds to).
- **weight**: ``matched * 1_000_000`` without the bonus, ``matched * bonus_multiplier_ppm`` with
  it; i.e. one matched task weighs one million units. That keeps a fractional multiplier exact
  and stays far below the contract's uint96 limit (2^96 ~ 7.9e28) for any real task count.
- **accuracy**: ``matched / (matched + mismatched)``; exclusions (races that were not the
  agent's fault) count neither way, as in :mod:`ioswarm.core.shadow`. Canary verdicts (tasks
  whose answer the coordinator knows) count like any other, and also on their own: an agent
  below ``min_accuracy_ppm`` overall *or on its canaries* gets weight 0 for the epoch. The
  canary floor is what stops an agent that answers real traffic by copying or guessing (right
  most of the time, since most pending transactions are valid) but cannot answer a canary.
  The bonus test is exact (``matched * 1e6 >= threshold_ppm * judged``, no rounding); the
  reported ``accuracy_ppm`` is floored. An agent with nothing judged reports 100 % but has no
  matched tasks, so weight 0.
- **wei**: :func:`split` gives the delegate ``floor(reward * cut / 100)`` and the agents the
  rest. :func:`allocate` gives each agent ``floor(agents_wei * weight / total_weight)``; the
  remainder (fewer wei than there are weighted agents) is not assigned here. On chain the
  contract splits the deposit by the same weights and carries its own sub-wei remainders
  forward, so the ledger's per-agent figure is what the agent can expect, exact up to that
  remainder.

Weights are per wallet on chain: agents sharing a wallet add up (:func:`wallet_weights`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from ioswarm.core.evidence import INCOMPLETE
from ioswarm.core.models import Outcome

PPM = 1_000_000
"""Parts per million: the scale of percentages, multipliers and accuracies."""
WEI_PER_IOTX = 10**18
MAX_WEIGHT = 2**96 - 1
"""The contract stores weights (and their sum) in 96 bits: ~6.6e22 matched tasks at a 1.2
multiplier, beyond any epoch, so the math does not clamp."""

ELIGIBLE = ""
UNDER_MIN = "under_min"
NO_MATCHES = "no_matches"
NO_WALLET = "no_wallet"
DEPARTED = "departed"
UNDER_ACCURACY = "under_min_accuracy"
CANARY_FAILED = "canary_failed"
NO_CANARY = "no_canary"

_WALLET = re.compile(r"0x[0-9a-f]{40}")
_ZERO_WALLET = "0x" + "0" * 40


def to_ppm(value: float | int | str | Decimal, scale: int = PPM) -> int:
    """``value * scale`` rounded half-even, computed from the value's decimal text."""
    try:
        exact = Decimal(str(value)) * scale
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {value!r}") from exc
    if not exact.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def normalize_wallet(wallet: str) -> str:
    """The wallet as lowercase 0x hex, or ``""`` when it cannot be paid (malformed or zero)."""
    w = wallet.strip().lower()
    if not _WALLET.fullmatch(w) or w == _ZERO_WALLET:
        return ""
    return w


def wei_to_iotx(wei: int) -> float:
    """Display value only: IOTX as a float. Never compute with it."""
    return float(Decimal(wei) / WEI_PER_IOTX)


def iotx_text(wei: int) -> str:
    """Exact decimal IOTX of ``wei`` for people: ``1.5``, ``0.000000000000000001``, ``0``."""
    text = f"{Decimal(wei) / WEI_PER_IOTX:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True, slots=True)
class RewardPolicy:
    """The reward rules of one coordinator, in integer units."""

    min_tasks: int = 10
    """Agents with fewer tasks in the epoch get weight 0."""
    bonus_accuracy_ppm: int = 995_000
    """Accuracy (ppm) at or above which the bonus multiplier applies."""
    bonus_multiplier_ppm: int = 1_200_000
    """Weight multiplier (ppm) for agents that reach the bonus accuracy."""
    delegate_cut_pct: int = 10
    """Percent of each epoch reward the delegate keeps."""
    min_accuracy_ppm: int = 900_000
    """Accuracy (ppm), overall and on canaries, below which an agent gets weight 0."""
    min_canaries: int = 0
    """Canaries an agent must have answered in the epoch to earn (0: no such rule). Without
    one, nothing shows that its answers to real traffic were its own work."""

    def __post_init__(self) -> None:
        if self.min_tasks < 0:
            raise ValueError("min_tasks must be >= 0")
        if not 0 <= self.bonus_accuracy_ppm <= PPM:
            raise ValueError("bonus_accuracy_ppm must be in 0..1_000_000")
        if self.bonus_multiplier_ppm <= 0:
            raise ValueError("bonus_multiplier_ppm must be > 0")
        if not 0 <= self.delegate_cut_pct <= 100:
            raise ValueError("delegate_cut_pct must be in 0..100")
        if not 0 <= self.min_accuracy_ppm <= PPM:
            raise ValueError("min_accuracy_ppm must be in 0..1_000_000")
        if self.min_canaries < 0:
            raise ValueError("min_canaries must be >= 0")

    @classmethod
    def from_config(
        cls,
        *,
        min_tasks: int,
        bonus_accuracy_pct: float,
        bonus_multiplier: float,
        delegate_cut_pct: int,
        min_accuracy_pct: float = 90.0,
        min_canaries: int = 0,
    ) -> RewardPolicy:
        """Convert the config's percent and float values to ppm, once."""
        return cls(
            min_tasks=min_tasks,
            bonus_accuracy_ppm=to_ppm(bonus_accuracy_pct, PPM // 100),
            bonus_multiplier_ppm=to_ppm(bonus_multiplier),
            delegate_cut_pct=delegate_cut_pct,
            min_accuracy_ppm=to_ppm(min_accuracy_pct, PPM // 100),
            min_canaries=min_canaries,
        )


@dataclass(slots=True)
class EpochTally:
    """What one agent did in one epoch: tasks answered and how the chain judged them."""

    agent_id: str
    wallet: str
    tasks: int = 0
    matched: int = 0
    mismatched: int = 0
    excluded: int = 0
    canary_matched: int = 0
    canary_failed: int = 0
    incomplete: int = 0
    """Mismatches because the answer lacked its level's evidence (also in ``mismatched``)."""

    def add_comparison(
        self, outcome: Outcome | str, *, canary: bool = False, detail: str = ""
    ) -> None:
        """Count one verdict; a canary's also counts on its own, and an ``incomplete``
        mismatch is noted.

        The string form of an :class:`Outcome` is still taken while callers move to the enum;
        an unknown string raises ValueError.
        """
        outcome = Outcome(outcome)
        if outcome is Outcome.MATCHED:
            self.matched += 1
            self.canary_matched += 1 if canary else 0
        elif outcome is Outcome.MISMATCHED:
            self.mismatched += 1
            self.canary_failed += 1 if canary else 0
            self.incomplete += 1 if detail == INCOMPLETE else 0
        else:
            if canary:
                raise ValueError("a canary verdict is exact: never excluded")
            self.excluded += 1

    @property
    def judged(self) -> int:
        """Comparisons that were either right or wrong."""
        return self.matched + self.mismatched

    @property
    def accuracy_ppm(self) -> int:
        """floor(matched / judged * 1e6); 1e6 when nothing was judged."""
        judged = self.judged
        return self.matched * PPM // judged if judged else PPM

    @property
    def canary_accuracy_ppm(self) -> int:
        """floor(canaries right / canaries judged * 1e6); 1e6 when none was judged."""
        judged = self.canary_matched + self.canary_failed
        return self.canary_matched * PPM // judged if judged else PPM


@dataclass(frozen=True, slots=True)
class Payout:
    """One agent's result for one epoch."""

    agent_id: str
    wallet: str
    """Normalized wallet; ``""`` when the agent registered none that can be paid."""
    weight: int
    tasks: int
    matched: int
    mismatched: int
    excluded: int
    accuracy_ppm: int
    bonus_applied: bool
    reason: str = ELIGIBLE
    """Why the weight is 0 (``no_wallet``, ``under_min``, ``canary_failed``, ``no_canary``,
    ``under_min_accuracy``, ``no_matches``, ``departed``)."""
    amount_wei: int = 0
    """Expected share of the agents' wei (see :func:`allocate`)."""
    rank: int = 0
    """1 = largest weight; equal weights share a rank; 0 for departed agents."""
    canary_matched: int = 0
    canary_failed: int = 0
    incomplete: int = 0


@dataclass(frozen=True, slots=True)
class WalletWeight:
    """One entry of the on-chain ``depositAndSettle`` call."""

    wallet: str
    weight: int


@dataclass(frozen=True, slots=True)
class EpochPlan:
    """Everything decided when an epoch closes, before anything is sent."""

    epoch: int
    reward_wei: int
    agents_wei: int
    delegate_wei: int
    deposit_wei: int
    """Wei sent to the pool: ``agents_wei``, or 0 when no agent earned weight."""
    payouts: tuple[Payout, ...]
    wallets: tuple[WalletWeight, ...]

    @property
    def total_weight(self) -> int:
        return sum(p.weight for p in self.payouts)

    @property
    def total_agents(self) -> int:
        """Agents that took part (departed ones excluded)."""
        return sum(1 for p in self.payouts if p.reason != DEPARTED)


def _qualifies_for_bonus(tally: EpochTally, policy: RewardPolicy) -> bool:
    judged = tally.judged
    return judged > 0 and tally.matched * PPM >= policy.bonus_accuracy_ppm * judged


def weight_reason(tally: EpochTally, wallet: str, policy: RewardPolicy) -> str:
    """Why ``tally`` earns nothing this epoch (``""`` when it earns): the first rule it fails.

    ``wallet`` is the normalized wallet (``""`` when it cannot be paid).
    """
    if not wallet:
        return NO_WALLET
    if tally.tasks < policy.min_tasks:
        return UNDER_MIN
    if tally.canary_accuracy_ppm < policy.min_accuracy_ppm:
        return CANARY_FAILED
    if tally.canary_matched + tally.canary_failed < policy.min_canaries:
        return NO_CANARY
    if tally.accuracy_ppm < policy.min_accuracy_ppm:
        return UNDER_ACCURACY
    if tally.matched == 0:
        return NO_MATCHES
    return ELIGIBLE


def compute_weights(
    tallies: Iterable[EpochTally],
    previous_agents: Mapping[str, str],
    policy: RewardPolicy,
) -> list[Payout]:
    """Weights of one epoch, sorted by agent id.

    ``previous_agents`` maps agent id to wallet for agents that had weight in the previous
    epoch; those absent now get a ``departed`` row with weight 0, so their wallet is zeroed on
    chain instead of sharing future deposits.
    """
    out: list[Payout] = []
    seen: set[str] = set()
    for t in tallies:
        seen.add(t.agent_id)
        wallet = normalize_wallet(t.wallet)
        bonus = _qualifies_for_bonus(t, policy)
        multiplier = policy.bonus_multiplier_ppm if bonus else PPM
        weight = t.matched * multiplier
        reason = weight_reason(t, wallet, policy)
        if reason != ELIGIBLE:
            weight = 0
        out.append(
            Payout(
                agent_id=t.agent_id,
                wallet=wallet,
                weight=weight,
                tasks=t.tasks,
                matched=t.matched,
                mismatched=t.mismatched,
                excluded=t.excluded,
                accuracy_ppm=t.accuracy_ppm,
                bonus_applied=bonus and weight > 0,
                reason=reason,
                canary_matched=t.canary_matched,
                canary_failed=t.canary_failed,
                incomplete=t.incomplete,
            )
        )
    for agent_id, wallet in previous_agents.items():
        if agent_id not in seen:
            out.append(
                Payout(agent_id, normalize_wallet(wallet), 0, 0, 0, 0, 0, 0, False, DEPARTED)
            )
    out.sort(key=lambda p: p.agent_id)
    return out


def split(epoch_reward_wei: int, delegate_cut_pct: int) -> tuple[int, int]:
    """``(agents_wei, delegate_wei)``: the delegate's cut is floored, the agents get the rest."""
    if epoch_reward_wei < 0:
        raise ValueError("epoch reward must be >= 0")
    if not 0 <= delegate_cut_pct <= 100:
        raise ValueError("delegate cut must be in 0..100")
    delegate = epoch_reward_wei * delegate_cut_pct // 100
    return epoch_reward_wei - delegate, delegate


def allocate(total_wei: int, weights: Sequence[int]) -> list[int]:
    """``floor(total_wei * w / sum(weights))`` per weight.

    The sum is at most ``total_wei`` and short of it by less than the number of non-zero
    weights (each floor drops less than one wei). All zeros when the weights sum to 0.
    """
    if total_wei < 0 or any(w < 0 for w in weights):
        raise ValueError("amounts and weights must be >= 0")
    total_weight = sum(weights)
    if total_weight == 0:
        return [0] * len(weights)
    return [total_wei * w // total_weight for w in weights]


def ranks(weights: Sequence[int]) -> list[int]:
    """Competition ranks ("1224"): 1 + the number of strictly larger weights."""
    ordered = sorted(weights, reverse=True)
    first: dict[int, int] = {}
    for i, w in enumerate(ordered):
        first.setdefault(w, i + 1)
    return [first[w] for w in weights]


def wallet_weights(
    payouts: Iterable[Payout], previous_wallets: Collection[str]
) -> tuple[WalletWeight, ...]:
    """The on-chain list, sorted by wallet: summed weight per wallet.

    A wallet with weight 0 is listed only if it had weight before (zeroing a wallet that is
    already 0 would cost gas and change nothing).
    """
    totals: dict[str, int] = {}
    for p in payouts:
        if p.wallet:
            totals[p.wallet] = totals.get(p.wallet, 0) + p.weight
    for w in previous_wallets:
        wallet = normalize_wallet(w)
        if wallet:
            totals.setdefault(wallet, 0)
    previous = {normalize_wallet(w) for w in previous_wallets}
    return tuple(
        WalletWeight(w, weight)
        for w, weight in sorted(totals.items())
        if weight > 0 or w in previous
    )


def plan_epoch(
    epoch: int,
    tallies: Iterable[EpochTally],
    previous_agents: Mapping[str, str],
    previous_wallets: Collection[str],
    policy: RewardPolicy,
    epoch_reward_wei: int,
) -> EpochPlan:
    """Weights, amounts, ranks and the on-chain list of one closed epoch.

    When no agent earned weight, nothing is deposited: the contract would hold the wei and
    hand it to the next epoch's agents, who did not earn it; it stays with the delegate.
    """
    payouts = compute_weights(tallies, previous_agents, policy)
    agents_wei, delegate_wei = split(epoch_reward_wei, policy.delegate_cut_pct)
    weights = [p.weight for p in payouts]
    deposit = agents_wei if sum(weights) > 0 else 0
    amounts = allocate(deposit, weights)
    present = [i for i, p in enumerate(payouts) if p.reason != DEPARTED]
    rank_of = dict(zip(present, ranks([weights[i] for i in present]), strict=True))
    ranked = tuple(
        replace(p, amount_wei=amounts[i], rank=rank_of.get(i, 0)) for i, p in enumerate(payouts)
    )
    return EpochPlan(
        epoch=epoch,
        reward_wei=epoch_reward_wei,
        agents_wei=agents_wei,
        delegate_wei=delegate_wei,
        deposit_wei=deposit,
        payouts=ranked,
        wallets=wallet_weights(ranked, previous_wallets),
    )


POOL_PRECISION = 10**18


@dataclass
class PoolModel:
    """The AgentRewardPool's arithmetic, replayed exactly (integer, scaled by 1e18).

    Per-epoch amounts in the ledger are floors of each epoch's share; the contract carries
    sub-wei fractions forward (per agent, and in an undistributed remainder), so after several
    epochs an agent can claim up to one wei per epoch more. Replaying the settled calls in
    order through this model gives what the chain must show, to the wei.
    """

    cumulative: int = 0
    undistributed: int = 0
    total_weight: int = 0
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)  # weight, snapshot
    pending: dict[str, int] = field(default_factory=dict)  # scaled

    def settle(self, wallets: Sequence[str], weights: Sequence[int], value: int) -> None:
        """``depositAndSettle(wallets, weights)`` with ``value`` wei."""
        for wallet, weight in zip(wallets, weights, strict=True):
            key = wallet.lower()
            old_weight, snapshot = self.positions.get(key, (0, 0))
            if old_weight and snapshot != self.cumulative:
                owed = old_weight * (self.cumulative - snapshot)
                self.pending[key] = self.pending.get(key, 0) + owed
            self.positions[key] = (weight, self.cumulative)
            self.total_weight += weight - old_weight
        pool = self.undistributed + value * POOL_PRECISION
        if self.total_weight and pool:
            increment = pool // self.total_weight
            pool -= increment * self.total_weight
            self.cumulative += increment
        self.undistributed = pool

    def accrued_scaled(self, wallet: str) -> int:
        key = wallet.lower()
        weight, snapshot = self.positions.get(key, (0, 0))
        return self.pending.get(key, 0) + weight * (self.cumulative - snapshot)

    def claimable(self, wallet: str) -> int:
        """Whole wei ``wallet`` can claim (nothing claimed yet)."""
        return self.accrued_scaled(wallet) // POOL_PRECISION
