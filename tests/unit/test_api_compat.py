"""The reference-compatible fields derived from ioswarm's counts (pure)."""

from __future__ import annotations

import math

import pytest

from ioswarm.api import compat
from ioswarm.core.models import Level
from ioswarm.core.shadow import Comparison, Outcome, ShadowCounts


def counts(*outcomes: tuple[Outcome, str], level: Level = Level.L2) -> ShadowCounts:
    c = ShadowCounts()
    for i, (outcome, detail) in enumerate(outcomes):
        c.add(Comparison("a", i, level, outcome, detail))
    return c


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (7.9, "7s"),
        (60, "1m0s"),
        (125, "2m5s"),
        (3600, "1h0m0s"),
        (3723, "1h2m3s"),
        (-5, "0s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    """Durations read like the reference's whole-second Go durations."""
    assert compat.go_duration(seconds) == text


def test_accuracy_is_zero_when_nothing_was_judged() -> None:
    """An idle swarm (or one with only excluded comparisons) shows accuracy 0, not 100."""
    assert compat.accuracy_pct(ShadowCounts()) == 0.0
    assert compat.accuracy_pct(counts((Outcome.EXCLUDED, "nonce_race"))) == 0.0
    three_of_four = counts(*[(Outcome.MATCHED, "")] * 3, (Outcome.MISMATCHED, "valid"))
    assert compat.accuracy_pct(three_of_four) == 75.0
    assert compat.fraction(1, 0) == 0.0


def test_shadow_stats_map_ioswarm_counts_to_the_reference_fields() -> None:
    """Rejections of landed transactions are false negatives, nonce races are counted as the
    reference's exclusions, and the EVM figures follow which field differed first."""
    l2 = counts(
        (Outcome.MATCHED, ""),
        (Outcome.MISMATCHED, "valid"),
        (Outcome.EXCLUDED, "nonce_race"),
        (Outcome.EXCLUDED, "replaced"),
        (Outcome.EXCLUDED, "balance_race"),
    )
    l3 = counts(
        (Outcome.MATCHED, ""),
        (Outcome.MATCHED, ""),
        (Outcome.MISMATCHED, "gas_used"),
        (Outcome.MISMATCHED, "storage"),
        (Outcome.MISMATCHED, "coinbase_fee"),
        (Outcome.MISMATCHED, "status"),
        level=Level.L3,
    )
    stats = compat.shadow_stats({Level.L2: l2, Level.L3: l3})
    assert stats == {
        "TotalCompared": 11,
        "TotalMatched": 3,
        "TotalMismatched": 5,
        "FalsePositives": 0,
        "FalseNegatives": 1,
        "NonceRaceExcluded": 2,
        "EVMGasMatches": 2 + 2,  # matched, and storage / coinbase_fee differing after gas
        "EVMGasMismatches": 1,
        "EVMStateMatches": 2 + 1,  # matched, and coinbase_fee differing after the state
        "EVMStateMismatches": 1,
    }
    assert compat.shadow_stats({}) == dict.fromkeys(stats, 0)


def test_agent_reported_figures_are_safe_json() -> None:
    """NaN and infinities from a heartbeat become 0 (they are not JSON numbers)."""
    assert compat.finite(math.nan) == compat.finite(math.inf) == compat.finite(-math.inf) == 0.0
    assert compat.finite(12.5) == 12.5


def test_leaderboard_entry_has_the_reference_keys() -> None:
    """``tasks`` is the accepted results, ``accuracy`` a fraction, ``wallet`` always a string."""
    row = {"results": 4, "avg_latency_us": 1500.0, "wallet": None}
    entry = compat.leaderboard_entry(
        row, counts((Outcome.MATCHED, ""), (Outcome.MISMATCHED, "valid"))
    )
    assert entry == {"tasks": 4, "accuracy": 0.5, "avg_latency_us": 1500.0, "wallet": ""}
    assert compat.leaderboard_entry(row, None)["accuracy"] == 0.0
