"""``ioswarm conformance``: run the Ethereum state tests through the agents' execution path."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ioswarm.config import conformance_fixtures
from ioswarm.conformance.fixtures import FORKS, load_cases
from ioswarm.conformance.runner import CaseOutcome
from ioswarm.conformance.suite import run_suite

_PROGRESS_EVERY = 500


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "conformance",
        help="run the Ethereum state tests (Cancun, Prague) through the L3/L4 engine",
        description="Run every Cancun and Prague case of a state-test fixture tree through the "
        "agents' decode, rules and engine path; print pass/fail/skip counts, the pass rate and "
        "each failure. Exits 1 when a failure is not in ioswarm/conformance/known.py.",
    )
    p.add_argument(
        "--fixtures",
        help="fixture tree (else IOSWARM_CONFORMANCE_FIXTURES, else ../shared/ethereum-tests)",
    )
    p.add_argument("--only", default="", help="run only case ids containing this text")
    p.add_argument("--include-slow", action="store_true", help="also run the listed slow cases")
    p.add_argument(
        "--case-budget",
        type=float,
        default=120.0,
        help="seconds one case may take before it fails as a timeout (0: no limit)",
    )
    p.add_argument("--report-json", type=Path, help="write the counts and failures here")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    root = conformance_fixtures(args.fixtures, env)
    started = time.monotonic()
    cases = (c for c in load_cases(root, FORKS) if args.only in c.case_id)

    def progress(index: int, outcome: CaseOutcome | None) -> None:
        if index % _PROGRESS_EVERY == 0:
            print(f"... {index} cases, {time.monotonic() - started:.0f} s", file=sys.stderr)

    report = run_suite(
        cases,
        include_slow=args.include_slow,
        case_budget=args.case_budget or None,
        progress=progress,
    )
    for line in report.lines():
        print(line)
    print(f"conformance: {time.monotonic() - started:.0f} s")
    if args.report_json is not None:
        args.report_json.write_text(
            json.dumps(
                {
                    "passed": report.passed,
                    "failed": len(report.failed),
                    "skipped": len(report.skipped),
                    "pass_rate": report.pass_rate,
                    "failures": {o.case_id: o.detail for o in report.failed},
                    "unlisted": [o.case_id for o in report.unlisted_failures],
                },
                indent=1,
            )
        )
    return 1 if report.unlisted_failures else 0
