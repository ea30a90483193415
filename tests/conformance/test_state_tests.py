"""The vendored subset of the Ethereum state tests passes through the agents' execution path."""

from __future__ import annotations

from pathlib import Path

import pytest

from ioswarm.conformance.fixtures import StateCase, load_cases
from ioswarm.conformance.known import listing_for
from ioswarm.conformance.runner import run_case

FIXTURES = Path(__file__).parent / "fixtures"
CASES = list(load_cases(FIXTURES))


def test_the_subset_covers_both_forks_and_invalid_transactions() -> None:
    """A few hundred cases, both forks, and expected-exception cases among them."""
    assert len(CASES) >= 200
    assert {c.fork for c in CASES} == {"Cancun", "Prague"}
    assert sum(1 for c in CASES if c.expect_exception) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.case_id for c in CASES])
def test_state_test_case(case: StateCase) -> None:
    """The case's post-state root and logs hash match, or its transaction is rejected with
    the reason the fixture names; a case in the known list is expected to fail as listed."""
    listing = listing_for(case.case_id)
    if listing is not None and listing.kind == "slow":
        pytest.skip(listing.reason)
    outcome = run_case(case)
    if listing is not None:
        assert outcome.verdict == "fail", f"listed as failing but passes: {listing.reason}"
        return
    assert outcome.verdict == "pass", outcome.detail
