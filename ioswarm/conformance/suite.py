"""Run a tree of state-test fixtures and summarise it: pass, fail and skip counts, the pass
rate, and each failure with its detail (and, for a listed one, the reason it is listed)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType

from ioswarm.conformance.fixtures import StateCase
from ioswarm.conformance.known import Listing, listing_for
from ioswarm.conformance.runner import CaseOutcome, run_case

__all__ = ["CaseTimeout", "SuiteReport", "run_suite", "run_within"]


class CaseTimeout(BaseException):
    """A case ran past its time budget. A BaseException on purpose: the engine turns every
    Exception into a declared engine error, and this one must stop the case instead."""


def _expire(signum: int, frame: FrameType | None) -> None:
    raise CaseTimeout


def run_within(case: StateCase, budget: float | None) -> CaseOutcome:
    """``run_case(case)``, failed as a timeout after ``budget`` seconds (main thread only)."""
    if budget is None:
        return run_case(case)
    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        return run_case(case)
    except CaseTimeout:
        return CaseOutcome(case.case_id, "fail", f"timeout: over the {budget:g} s case budget")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class SuiteReport:
    """What a run found. A listed failure counts as failed; an unlisted one also fails the run."""

    passed: int = 0
    failed: list[CaseOutcome] = field(default_factory=list)
    skipped: list[tuple[str, Listing]] = field(default_factory=list)
    listed_failures: dict[str, Listing] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)  # listed as failing, but passed

    @property
    def run(self) -> int:
        """Cases executed (passed or failed)."""
        return self.passed + len(self.failed)

    @property
    def pass_rate(self) -> float:
        """Passed over all cases, skipped ones included (a skip is not a pass)."""
        total = self.run + len(self.skipped)
        return self.passed / total if total else 0.0

    @property
    def unlisted_failures(self) -> list[CaseOutcome]:
        """Failures the known list does not name: each is a regression."""
        return [o for o in self.failed if o.case_id not in self.listed_failures]

    def lines(self) -> list[str]:
        """The summary as printable lines, failures last."""
        total = self.run + len(self.skipped)
        out = [
            f"conformance: {total} cases: {self.passed} passed, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped; pass rate {100 * self.pass_rate:.2f}%",
        ]
        for case_id, listing in self.skipped:
            out.append(f"  skipped {case_id}: {listing.reason}")
        for outcome in self.failed:
            listed = self.listed_failures.get(outcome.case_id)
            note = f" [listed: {listed.reason}]" if listed else " [NOT LISTED]"
            out.append(f"  failed {outcome.case_id}: {outcome.detail}{note}")
        for case_id in self.stale:
            out.append(f"  passes but listed as failing: {case_id}")
        return out


def run_suite(
    cases: Iterable[StateCase],
    *,
    include_slow: bool = False,
    case_budget: float | None = None,
    progress: Callable[[int, CaseOutcome | None], None] | None = None,
) -> SuiteReport:
    """Run every case (skipping the listed slow ones unless ``include_slow``) and report; a
    case over ``case_budget`` seconds fails as a timeout."""
    report = SuiteReport()
    for index, case in enumerate(cases, 1):
        listing = listing_for(case.case_id)
        if listing is not None and listing.kind == "slow" and not include_slow:
            report.skipped.append((case.case_id, listing))
            if progress is not None:
                progress(index, None)
            continue
        outcome = run_within(case, case_budget)
        if outcome.verdict == "pass":
            report.passed += 1
            if listing is not None and listing.kind == "fail":
                report.stale.append(case.case_id)
        else:
            report.failed.append(outcome)
            if listing is not None:
                report.listed_failures[case.case_id] = listing
        if progress is not None:
            progress(index, outcome)
    return report
