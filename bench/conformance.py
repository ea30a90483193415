"""State-test pass rate of the L3/L4 engine on the subset vendored in tests/conformance.

The whole Cancun + Prague set takes far longer than a benchmark run; ``make conformance`` runs
it. This prints the subset's counts and pass rate, and the cases per second on one core.
"""

from __future__ import annotations

import time
from pathlib import Path

from ioswarm.conformance.fixtures import load_cases
from ioswarm.conformance.suite import run_suite

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "conformance" / "fixtures"


def run() -> dict[str, float]:
    """Run the vendored subset, print a summary and return the figures."""
    started = time.perf_counter()
    report = run_suite(load_cases(FIXTURES))
    seconds = time.perf_counter() - started
    figures = {
        "cases": float(report.run + len(report.skipped)),
        "passed": float(report.passed),
        "failed": float(len(report.failed)),
        "skipped": float(len(report.skipped)),
        "pass_rate": report.pass_rate,
        "cases_per_sec": report.run / seconds if seconds else 0.0,
    }
    print("== conformance (vendored state-test subset; full set: make conformance) ==")
    print(f"   {report.lines()[0]}")
    print(f"   {figures['cases_per_sec']:.0f} cases/s")
    return figures


if __name__ == "__main__":
    run()
