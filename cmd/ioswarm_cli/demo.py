"""``ioswarm demo``: anvil + workload + coordinator + agents on one machine, with a report."""

from __future__ import annotations

import argparse
from typing import Any

from ioswarm.errors import ConfigError
from ioswarm.logs import setup_logging
from ioswarm.sim.adversaries import KINDS, parse_kinds
from ioswarm.sim.demo import DemoOptions, format_report, run_demo


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run the whole loop locally and print a report",
        description="Start anvil (prague, 2 s blocks, loopback), a workload, the coordinator and "
        "N agents; print live progress and a final report.",
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds of workload (default 60)")
    p.add_argument("--agents", type=int, default=4, help="number of agents (default 4)")
    p.add_argument("--level", default="L3", help="highest agent level: L1..L4 (default L3)")
    p.add_argument(
        "--rate", type=float, help="transfer tx/s (default 40; 30 plus 15 contract tx/s at L3)"
    )
    p.add_argument("--block-time", type=float, help="anvil block time (default 2 s; 1 s at L3)")
    p.add_argument("--seed", type=int, help="workload random seed")
    p.add_argument("--report-json", help="write the report as JSON to this path")
    p.add_argument(
        "--adversaries",
        default="lazy",
        help="dishonest in-process agents beside the honest ones: a comma list of "
        f"{', '.join(KINDS)}; 'all' or 'none' (default: lazy)",
    )
    p.set_defaults(run=run)


async def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    if args.level.upper() not in ("L1", "L2", "L3", "L4"):
        raise ConfigError("--level", "must be L1, L2, L3 or L4")
    if args.agents < 1 or args.duration <= 0 or (args.rate is not None and args.rate <= 0):
        raise ConfigError("--agents/--duration/--rate", "must be positive")
    kinds = parse_kinds(args.adversaries)
    setup_logging("warning")
    opts = DemoOptions(
        duration=args.duration,
        agents=args.agents,
        level=args.level.upper(),
        rate=args.rate,
        block_time=args.block_time,
        report_json=args.report_json,
        seed=args.seed,
        adversaries=tuple(kinds),
    )
    report = await run_demo(opts, env, out=lambda line: print(line, flush=True))
    print(format_report(report))
    shadow = report.get("shadow") or {}
    agents = report.get("per_agent") or {}
    ok = all(
        s.get("mismatched", 0) == 0
        and s.get("matched", 0) + sum((s.get("excluded") or {}).values()) == s.get("compared", 0)
        for s in shadow.values()
    )
    paid_right = all(a.get("claimable_equals_ledger", True) for a in agents.values())
    # An honest agent never fails a canary: its truth was checked with the honest rules.
    canaries_right = all(not (a.get("canaries") or {}).get("failed") for a in agents.values())
    # An adversary with anything claimable means the coordinator paid for unchecked work.
    unpaid = all(
        int(a.get("claimable_wei") or 0) == 0 for a in (report.get("adversaries") or {}).values()
    )
    return 0 if ok and paid_right and canaries_right and unpaid and shadow else 1
