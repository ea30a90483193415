"""The console's trend series: rates over a trailing window, unknown accuracy as None."""

from __future__ import annotations

import pytest

from ioswarm.core.timeline import Sample, Timeline, accuracy_pct


def sample(
    at: float, results: int = 0, lat: float = 0.0, n: int = 0, m: int = 0, x: int = 0
) -> Sample:
    """Totals at ``at``: ``results`` results (one more dispatched), latency sum ``lat`` over
    ``n``, ``m`` matched and ``x`` mismatched."""
    return Sample(at, results + 1, results, lat, n, m, x)


def test_accuracy_is_unknown_when_nothing_was_judged() -> None:
    """No judged comparison gives None, never 100; otherwise matched share in percent."""
    assert accuracy_pct(0, 0) is None
    assert accuracy_pct(3, 1) == 75.0
    assert accuracy_pct(5, 0) == 100.0


def test_series_rates_use_the_trailing_window() -> None:
    """Throughput and mean latency are differences over rate_window samples back."""
    tl = Timeline(capacity=10, rate_window=2, accuracy_window=2)
    tl.add(sample(0.0))
    tl.add(sample(1.0, results=10, lat=1.0, n=10))
    tl.add(sample(2.0, results=30, lat=2.0, n=30, m=4))
    s = tl.series(now=2.0)
    assert s["t"] == [-1.0, 0.0]
    assert s["results_per_sec"] == [10.0, 15.0]
    assert s["dispatched_per_sec"] == [10.0, 15.0]
    assert s["latency_ms"] == [100.0, 66.67]
    assert s["accuracy_pct"] == [None, 100.0]


def test_series_marks_intervals_without_results_and_mismatches() -> None:
    """An interval with no result has latency None; a mismatch lowers accuracy."""
    tl = Timeline(capacity=10, rate_window=1, accuracy_window=1)
    tl.add(sample(0.0, results=5, lat=0.5, n=5, m=1))
    tl.add(sample(1.0, results=5, lat=0.5, n=5, m=1))
    tl.add(sample(2.0, results=6, lat=0.6, n=6, m=2, x=2))
    s = tl.series(now=2.0)
    assert s["latency_ms"] == [None, 100.0]
    assert s["accuracy_pct"] == [None, 33.33]


def test_timeline_is_bounded_and_ignores_samples_out_of_order() -> None:
    """The ring keeps only capacity samples and drops a sample not later than the newest."""
    tl = Timeline(capacity=3)
    for i in range(5):
        tl.add(sample(float(i), results=i))
    tl.add(sample(4.0, results=99))
    assert len(tl) == 3
    assert tl.series(now=4.0)["results_per_sec"] == [1.0, 1.0]
    with pytest.raises(ValueError):
        Timeline(capacity=1)
