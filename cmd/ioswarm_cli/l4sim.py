"""``ioswarm l4sim``: L4 state sync under agent churn, with PASS/FAIL checks."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ioswarm.errors import ConfigError
from ioswarm.logs import setup_logging
from ioswarm.sim.l4sim import ROLES, L4SimOptions, run_l4sim


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "l4sim",
        help="stress L4 state sync: followers that start late, disconnect, flap, quit, lag",
        description="Start anvil (1 s blocks), a workload, a coordinator with L4 state sync and "
        f"L4 agents in the roles {', '.join(ROLES)}; print one PASS/FAIL line per check and "
        "exit non-zero on any FAIL.",
    )
    p.add_argument("--blocks", type=int, default=120, help="blocks to run the schedule for")
    p.add_argument("--agents", type=int, default=len(ROLES), help="number of L4 agents")
    p.add_argument("--rate", type=float, default=4.0, help="workload transactions per second")
    p.add_argument("--seed", type=int, default=1, help="workload random seed")
    p.add_argument("--datadir", default="", help="directory for all stores (default: a temp dir)")
    p.add_argument("--json", action="store_true", help="print the per-agent numbers as JSON")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="error")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    if args.blocks < 20 or args.agents < 1 or args.rate <= 0:
        raise ConfigError("--blocks/--agents/--rate", "need blocks >= 20, agents >= 1, rate > 0")
    setup_logging(args.log_level)
    opts = L4SimOptions(
        blocks=args.blocks, agents=args.agents, rate=args.rate, seed=args.seed, datadir=args.datadir
    )
    report = await run_l4sim(opts, env)
    if args.json:
        print(json.dumps(report.numbers, indent=2, sort_keys=True))
    passed = sum(c.ok for c in report.checks)
    print(f"{passed}/{len(report.checks)} checks passed")
    return 0 if report.ok else 1
