"""The reference deployment's HTTP field names and JSON types, derived from ioswarm's counts.

Pure functions: the API documents add these fields next to ioswarm's own so a dashboard or
agent written for the reference reads an ioswarm coordinator unchanged. Accuracies follow the
reference: 0 when nothing was judged (never 100 for an idle swarm).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ioswarm.core.models import Level
from ioswarm.core.shadow import ShadowCounts

LIVE_WINDOW_SEC: Final = 60.0
"""An agent whose last heartbeat is this recent counts as live (``agents_live``, ``/healthz``)."""

# Exclusions that are a nonce race between dispatch and inclusion (the reference's
# ``NonceRaceExcluded``): the sender's nonce moved, or the same nonce landed with another hash.
NONCE_RACES: Final = frozenset({"nonce_race", "nonce_consumed", "replaced"})
# An execution mismatch names the first differing field, in this order: status, gas_used, logs,
# storage, balance, nonce, code, coinbase_fee. A field named after gas_used means gas agreed;
# after the state fields, that the state agreed.
AFTER_GAS: Final = frozenset({"logs", "storage", "balance", "nonce", "code", "coinbase_fee"})
STATE_FIELDS: Final = frozenset({"storage", "balance", "nonce", "code"})
AFTER_STATE: Final = frozenset({"coinbase_fee"})


def go_duration(seconds: float) -> str:
    """Whole seconds in the reference's duration format: ``1h2m3s``, ``4m0s``, ``7s``, ``0s``."""
    s = max(int(seconds), 0)
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rfc3339(ts: float) -> str:
    """A unix time as ``2026-12-02T10:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def fraction(part: int, whole: int) -> float:
    """``part / whole``, 0.0 when ``whole`` is 0."""
    return part / whole if whole else 0.0


def accuracy_pct(counts: ShadowCounts) -> float:
    """Matched over judged (matched + mismatched) as a percentage, 0.0 when nothing was judged."""
    return round(fraction(counts.matched, counts.matched + counts.mismatched) * 100, 4)


def finite(value: float) -> float:
    """An agent-reported figure safe for JSON (NaN and infinities are not JSON numbers)."""
    return value if math.isfinite(value) else 0.0


def shadow_stats(levels: Mapping[Level, ShadowCounts]) -> dict[str, int]:
    """The reference's shadow stats (its keys are the Go field names) from per-level counts.

    ioswarm judges only transactions that landed, so an agent calling valid what the chain
    found invalid (``FalsePositives``) is never observed; an agent rejecting a transaction that
    landed is a ``valid`` mismatch (``FalseNegatives``). The EVM figures count L3 and L4.
    """
    total = ShadowCounts()
    evm = ShadowCounts()
    for level, counts in levels.items():
        total.merge(counts)
        if level >= Level.L3:
            evm.merge(counts)
    fields = evm.mismatched_fields

    def summed(names: Iterable[str], table: Mapping[str, int]) -> int:
        return sum(table.get(n, 0) for n in names)

    return {
        "TotalCompared": total.compared,
        "TotalMatched": total.matched,
        "TotalMismatched": total.mismatched,
        "FalsePositives": 0,
        "FalseNegatives": total.mismatched_fields.get("valid", 0),
        "NonceRaceExcluded": summed(NONCE_RACES, total.excluded),
        "EVMGasMatches": evm.matched + summed(AFTER_GAS, fields),
        "EVMGasMismatches": fields.get("gas_used", 0),
        "EVMStateMatches": evm.matched + summed(AFTER_STATE, fields),
        "EVMStateMismatches": summed(STATE_FIELDS, fields),
    }


def leaderboard_entry(row: Mapping[str, Any], counts: ShadowCounts | None) -> dict[str, Any]:
    """The reference's leaderboard entry keys for one ioswarm leaderboard row: ``tasks``
    (results accepted), ``accuracy`` (a fraction, 0 when nothing was judged),
    ``avg_latency_us`` and ``wallet``."""
    c = counts or ShadowCounts()
    return {
        "tasks": int(row["results"]),
        "accuracy": round(fraction(c.matched, c.matched + c.mismatched), 6),
        "avg_latency_us": float(row.get("avg_latency_us", 0.0)),
        "wallet": str(row.get("wallet") or ""),
    }
