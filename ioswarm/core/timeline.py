"""The operator console's trends: a bounded ring of cumulative counter samples, turned into
per-point rates (throughput, mean latency, accuracy) over a trailing window.

Samples hold running totals, so a point's rate is a difference of two samples: a skipped or
late sample widens one interval instead of losing work. Accuracy is ``None`` wherever
nothing was judged: a rate over no comparisons is unknown, not 100 %.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sample:
    """Running totals at monotonic time ``at`` (seconds)."""

    at: float
    dispatched: int
    results: int
    latency_sum_sec: float
    latency_count: int
    matched: int
    mismatched: int


def accuracy_pct(matched: int, mismatched: int) -> float | None:
    """matched / (matched + mismatched) in percent (2 decimals), ``None`` when nothing was
    judged (exclusions are neither right nor wrong)."""
    judged = matched + mismatched
    return round(100 * matched / judged, 2) if judged else None


class Timeline:
    """The last ``capacity`` samples; rates use ``rate_window`` samples back, accuracy
    ``accuracy_window`` (comparisons arrive in bursts, one per block)."""

    def __init__(self, capacity: int = 300, rate_window: int = 5, accuracy_window: int = 30):
        if capacity < 2 or rate_window < 1 or accuracy_window < 1:
            raise ValueError("capacity >= 2 and windows >= 1")
        self._samples: deque[Sample] = deque(maxlen=capacity)
        self._rate_window = rate_window
        self._accuracy_window = accuracy_window

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, sample: Sample) -> None:
        """Append a sample; one not later than the newest is ignored (clock went nowhere)."""
        if self._samples and sample.at <= self._samples[-1].at:
            return
        self._samples.append(sample)

    def series(self, now: float) -> dict[str, list[float | None]]:
        """Per sample (oldest first): seconds before ``now`` (``t``, negative), results per
        second, dispatches per second, mean latency in ms (``None`` with no result) and
        accuracy in percent (``None`` with nothing judged). The first sample has no rate."""
        s = list(self._samples)
        out: dict[str, list[float | None]] = {
            "t": [],
            "results_per_sec": [],
            "dispatched_per_sec": [],
            "latency_ms": [],
            "accuracy_pct": [],
        }
        for i in range(1, len(s)):
            cur = s[i]
            old = s[max(0, i - self._rate_window)]
            span = cur.at - old.at
            out["t"].append(round(cur.at - now, 1))
            out["results_per_sec"].append(round((cur.results - old.results) / span, 2))
            out["dispatched_per_sec"].append(round((cur.dispatched - old.dispatched) / span, 2))
            count = cur.latency_count - old.latency_count
            mean = (cur.latency_sum_sec - old.latency_sum_sec) / count if count else None
            out["latency_ms"].append(None if mean is None else round(mean * 1000, 2))
            acc = s[max(0, i - self._accuracy_window)]
            out["accuracy_pct"].append(
                accuracy_pct(cur.matched - acc.matched, cur.mismatched - acc.mismatched)
            )
        return out
