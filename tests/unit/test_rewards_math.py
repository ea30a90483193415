"""Reward math: integer scaling, weights, the delegate split and per-agent amounts."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioswarm.core.models import Outcome
from ioswarm.core.rewards import (
    CANARY_FAILED,
    DEPARTED,
    ELIGIBLE,
    NO_CANARY,
    NO_MATCHES,
    NO_WALLET,
    PPM,
    UNDER_ACCURACY,
    UNDER_MIN,
    EpochTally,
    RewardPolicy,
    WalletWeight,
    allocate,
    compute_weights,
    normalize_wallet,
    plan_epoch,
    ranks,
    split,
    to_ppm,
    wallet_weights,
)

IOTX = 10**18
W1 = "0x" + "11" * 20
W2 = "0x" + "22" * 20
W3 = "0x" + "33" * 20
POLICY = RewardPolicy(
    min_tasks=10, bonus_accuracy_ppm=995_000, bonus_multiplier_ppm=1_200_000, delegate_cut_pct=10
)


def tally(agent: str, wallet: str, tasks: int, matched: int, mismatched: int = 0) -> EpochTally:
    return EpochTally(agent, wallet, tasks=tasks, matched=matched, mismatched=mismatched)


def test_policy_from_config_converts_floats_exactly() -> None:
    """99.5 % and x1.2 become exactly 995000 and 1200000 ppm, through their decimal text."""
    policy = RewardPolicy.from_config(
        min_tasks=5, bonus_accuracy_pct=99.5, bonus_multiplier=1.2, delegate_cut_pct=10
    )
    assert policy.bonus_accuracy_ppm == 995_000
    assert policy.bonus_multiplier_ppm == 1_200_000
    assert to_ppm(0.1 + 0.2) == 300_000  # the float 0.30000000000000004, rounded half-even
    assert to_ppm(1.0000005) == 1_000_000  # exactly half a ppm rounds to even


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "x"])
def test_to_ppm_refuses_non_numbers(bad: object) -> None:
    """NaN, infinity and text are refused, not turned into a weight."""
    with pytest.raises(ValueError):
        to_ppm(bad)  # type: ignore[arg-type]


def test_bonus_applies_at_the_threshold_exactly() -> None:
    """199/200 = 99.5 % earns the bonus; 198/199 (99.497 %) does not, and exclusions don't count."""
    at = tally("a", W1, 200, 199, 1)
    below = tally("b", W2, 199, 198, 1)
    [a, b] = compute_weights([at, below], {}, POLICY)
    assert a.bonus_applied and a.weight == 199 * 1_200_000
    assert not b.bonus_applied and b.weight == 198 * PPM
    assert a.accuracy_ppm == 995_000 and b.accuracy_ppm == 994_974  # floored for display
    excluded = EpochTally("c", W3, tasks=20, matched=10, mismatched=0, excluded=10)
    [c] = compute_weights([excluded], {}, POLICY)
    assert c.bonus_applied and c.accuracy_ppm == PPM


def test_zero_weight_reasons() -> None:
    """Under the minimum, no usable wallet, or no match: weight 0 with the reason named."""
    rows = compute_weights(
        [
            tally("few", W1, 9, 9),
            tally("nowallet", "", 50, 50),
            tally("zero", "0x" + "00" * 20, 50, 50),
            tally("bad", "0x1234", 50, 50),
            tally("wrong", W2, 50, 0, 50),
            tally("good", W3, 10, 10),
            tally("silent", "0x" + "55" * 20, 50, 0),
        ],
        {},
        POLICY,
    )
    by_id = {p.agent_id: p for p in rows}
    assert by_id["few"].reason == UNDER_MIN
    assert by_id["nowallet"].reason == NO_WALLET
    assert by_id["zero"].reason == NO_WALLET
    assert by_id["bad"].reason == NO_WALLET
    assert by_id["wrong"].reason == UNDER_ACCURACY
    assert by_id["silent"].reason == NO_MATCHES  # nothing judged: no accuracy, no weight
    assert by_id["good"].reason == ELIGIBLE and by_id["good"].weight == 10 * 1_200_000
    assert all(p.weight == 0 and not p.bonus_applied for p in rows if p.agent_id != "good")


def test_departed_agents_get_a_zero_row() -> None:
    """An agent weighted last epoch and absent now is listed with weight 0 and reason departed."""
    rows = compute_weights([tally("stay", W1, 20, 20)], {"stay": W1, "gone": W2}, POLICY)
    gone = next(p for p in rows if p.agent_id == "gone")
    assert gone.reason == DEPARTED and gone.weight == 0 and gone.wallet == W2


def test_split_floors_the_delegate_cut() -> None:
    """The delegate's cut is floored and the agents get the rest; nothing is lost."""
    assert split(IOTX // 2, 10) == (IOTX // 2 - IOTX // 20, IOTX // 20)
    assert split(999, 10) == (900, 99)
    assert split(7, 0) == (7, 0)
    assert split(7, 100) == (0, 7)
    with pytest.raises(ValueError):
        split(7, 101)
    with pytest.raises(ValueError):
        split(-1, 10)


def test_allocate_floors_each_share() -> None:
    """Each amount is floor(total * w / W); the remainder is fewer wei than weighted agents."""
    assert allocate(10, [1, 1, 1]) == [3, 3, 3]
    assert allocate(100, [3, 0, 1]) == [75, 0, 25]
    assert allocate(100, [0, 0]) == [0, 0]
    assert allocate(0, [5]) == [0]


def test_ranks_share_places_for_equal_weights() -> None:
    """Competition ranking: equal weights share a rank, the next rank skips."""
    assert ranks([5, 9, 5, 1, 0]) == [2, 1, 2, 4, 5]
    assert ranks([]) == []


def test_wallet_weights_sum_shared_wallets_and_zero_only_known_ones() -> None:
    """Agents sharing a wallet add up; a wallet at 0 is sent only if it had weight before."""
    rows = compute_weights(
        [
            tally("a", W1, 20, 20),
            tally("b", W1.upper().replace("0X", "0x"), 20, 10),
            tally("c", W2, 1, 1),
        ],
        {},
        POLICY,
    )
    assert wallet_weights(rows, []) == (WalletWeight(W1, 20 * 1_200_000 + 10 * 1_200_000),)
    assert wallet_weights(rows, [W2, W3]) == (
        WalletWeight(W1, 36_000_000),
        WalletWeight(W2, 0),
        WalletWeight(W3, 0),
    )


def test_plan_with_no_weight_deposits_nothing() -> None:
    """When no agent earned weight, nothing is deposited and departed wallets are still zeroed."""
    plan = plan_epoch(3, [tally("a", W1, 1, 1)], {"b": W2}, [W2], POLICY, IOTX)
    assert plan.deposit_wei == 0
    assert plan.agents_wei + plan.delegate_wei == IOTX
    assert all(p.amount_wei == 0 for p in plan.payouts)
    assert plan.wallets == (WalletWeight(W2, 0),)
    assert plan.total_agents == 1


def test_plan_ranks_and_amounts() -> None:
    """The plan gives each agent its floor share and a rank; departed agents get rank 0."""
    plan = plan_epoch(
        1,
        [tally("a", W1, 30, 30), tally("b", W2, 30, 28, 2), tally("c", W3, 2, 2)],
        {"d": "0x" + "44" * 20},
        ["0x" + "44" * 20],
        POLICY,
        IOTX,
    )
    by_id = {p.agent_id: p for p in plan.payouts}
    assert plan.deposit_wei == IOTX - IOTX // 10
    # a: 30 matched at 100 % (x1.2) = 36e6; b: 28 matched at 93 %, no bonus = 28e6
    assert by_id["a"].amount_wei == plan.deposit_wei * 36 // 64
    assert by_id["b"].amount_wei == plan.deposit_wei * 28 // 64
    assert [by_id[x].rank for x in "abcd"] == [1, 2, 3, 0]
    assert by_id["d"].reason == DEPARTED
    assert plan.total_agents == 3


def test_accuracy_floor_gives_weight_zero() -> None:
    """Below minAccuracyPct an agent earns nothing; at the floor exactly it earns."""
    rows = compute_weights(
        [tally("under", W1, 100, 89, 11), tally("at", W2, 100, 90, 10)], {}, POLICY
    )
    by_id = {p.agent_id: p for p in rows}
    assert (by_id["under"].weight, by_id["under"].reason) == (0, UNDER_ACCURACY)
    assert (by_id["at"].weight, by_id["at"].reason) == (90 * PPM, ELIGIBLE)


def test_failed_canaries_forfeit_the_epoch_even_at_high_accuracy() -> None:
    """A copier right on 95 % of real traffic but wrong on its canaries gets weight 0."""
    copier = tally("copier", W1, 100, 0)
    honest = tally("honest", W2, 100, 0)
    for _ in range(95):
        copier.add_comparison(Outcome.MATCHED)
        honest.add_comparison(Outcome.MATCHED)
    for _ in range(5):
        copier.add_comparison(Outcome.MISMATCHED, canary=True)
        honest.add_comparison(Outcome.MATCHED, canary=True)
    assert copier.accuracy_ppm == 950_000 and copier.canary_accuracy_ppm == 0
    by_id = {p.agent_id: p for p in compute_weights([copier, honest], {}, POLICY)}
    assert (by_id["copier"].weight, by_id["copier"].reason) == (0, CANARY_FAILED)
    assert by_id["copier"].canary_failed == 5
    assert by_id["honest"].weight == 100 * 1_200_000 and by_id["honest"].canary_matched == 5


def test_an_epoch_without_a_canary_pays_nothing_when_canaries_are_required() -> None:
    """With minCanaries 1, perfect answers to real traffic alone do not show the work."""
    policy = RewardPolicy(min_tasks=1, min_canaries=1)
    unproven = tally("unproven", W1, 50, 50)
    proven = tally("proven", W2, 50, 49)
    proven.add_comparison(Outcome.MATCHED, canary=True)
    by_id = {p.agent_id: p for p in compute_weights([unproven, proven], {}, policy)}
    assert (by_id["unproven"].weight, by_id["unproven"].reason) == (0, NO_CANARY)
    assert by_id["proven"].reason == ELIGIBLE and by_id["proven"].canary_matched == 1
    assert compute_weights([unproven], {}, replace(policy, min_canaries=0))[0].weight > 0


def test_incomplete_answers_count_as_mismatches() -> None:
    """An incomplete answer is a mismatch and is noted as such."""
    t = EpochTally("a", W1)
    t.add_comparison(Outcome.MISMATCHED, detail="incomplete")
    t.add_comparison(Outcome.MISMATCHED, detail="valid")
    assert (t.mismatched, t.incomplete) == (2, 1)
    with pytest.raises(ValueError):
        t.add_comparison(Outcome.EXCLUDED, canary=True)


def test_tally_counts_each_outcome() -> None:
    """Each shadow outcome lands in its own counter."""
    t = EpochTally("a", W1)
    for outcome in Outcome:
        t.add_comparison(outcome)
    assert (t.matched, t.mismatched, t.excluded) == (1, 1, 1)


def test_tally_takes_an_outcome_string_and_refuses_an_unknown_one() -> None:
    """An outcome's string value still counts (callers are moving to the enum); any other
    string raises and counts nothing."""
    t = EpochTally("a", W1)
    for outcome in ("matched", "mismatched", "excluded"):
        t.add_comparison(outcome)
    assert (t.matched, t.mismatched, t.excluded) == (1, 1, 1)
    for unknown in ("pending", "MATCHED", "nonce_mismatch", ""):
        with pytest.raises(ValueError):
            t.add_comparison(unknown)
    assert (t.matched, t.mismatched, t.excluded) == (1, 1, 1)


def test_normalize_wallet() -> None:
    """Wallets are lowercased; malformed and zero addresses cannot be paid."""
    assert normalize_wallet(" 0x" + "Ab" * 20 + " ") == "0x" + "ab" * 20
    assert normalize_wallet("ab" * 20) == ""
    assert normalize_wallet("0x" + "00" * 20) == ""


@settings(max_examples=300, deadline=None)
@given(
    total=st.integers(min_value=0, max_value=10**30),
    weights=st.lists(st.integers(min_value=0, max_value=2**96 - 1), max_size=40),
)
def test_allocate_never_overpays(total: int, weights: list[int]) -> None:
    """Property: amounts sum to at most the total and fall short by fewer wei than weights > 0."""
    amounts = allocate(total, weights)
    assert len(amounts) == len(weights)
    assert all(a >= 0 for a in amounts)
    paid = sum(amounts)
    assert paid <= total
    weighted = sum(1 for w in weights if w)
    if weighted:
        assert total - paid < weighted
    else:
        assert paid == 0


tallies_strategy = st.lists(
    st.builds(
        EpochTally,
        agent_id=st.text(min_size=1, max_size=8),
        wallet=st.sampled_from([W1, W2, W3, "", "0x" + "55" * 20]),
        tasks=st.integers(min_value=0, max_value=5000),
        matched=st.integers(min_value=0, max_value=5000),
        mismatched=st.integers(min_value=0, max_value=100),
        excluded=st.integers(min_value=0, max_value=100),
    ),
    max_size=25,
    unique_by=lambda t: t.agent_id,
)


@settings(max_examples=300, deadline=None)
@given(
    tallies=tallies_strategy,
    reward=st.integers(min_value=0, max_value=10**27),
    cut=st.integers(min_value=0, max_value=100),
    min_tasks=st.integers(min_value=0, max_value=100),
    threshold=st.integers(min_value=0, max_value=PPM),
    multiplier=st.integers(min_value=1, max_value=5 * PPM),
)
def test_plan_invariants(
    tallies: list[EpochTally],
    reward: int,
    cut: int,
    min_tasks: int,
    threshold: int,
    multiplier: int,
) -> None:
    """Property: wei is conserved, agents are never overpaid, wallets carry the summed weights."""
    policy = RewardPolicy(min_tasks, threshold, multiplier, cut)
    plan = plan_epoch(7, tallies, {}, [], policy, reward)
    assert plan.agents_wei + plan.delegate_wei == reward
    assert plan.deposit_wei in (0, plan.agents_wei)
    paid = sum(p.amount_wei for p in plan.payouts)
    weighted = sum(1 for p in plan.payouts if p.weight)
    assert paid <= plan.deposit_wei
    assert plan.deposit_wei - paid < max(weighted, 1)
    assert sum(w.weight for w in plan.wallets) == plan.total_weight
    for p in plan.payouts:
        if p.weight:
            assert p.tasks >= min_tasks and p.wallet and p.rank >= 1
        if p.bonus_applied:
            assert p.matched * PPM >= threshold * (p.matched + p.mismatched)
            assert p.weight == p.matched * multiplier


def test_reward_math_imports_no_io_library() -> None:
    """The reward math stays pure: no asyncio, grpc, web3 or lmdb import."""
    import ast
    import inspect

    import ioswarm.core.rewards as module

    imported: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "decimal" in imported
    assert not imported & {"asyncio", "grpc", "web3", "lmdb", "eth_account"}
