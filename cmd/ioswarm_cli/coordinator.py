"""``ioswarm coordinator``: run the coordinator sidecar beside a node."""

from __future__ import annotations

import argparse
from typing import Any

from ioswarm.config import load_config
from ioswarm.coordinator.app import CoordinatorApp
from ioswarm.logs import setup_logging


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "coordinator",
        help="run the coordinator (gRPC for agents, HTTP API, shadow mode)",
        description="Run the coordinator next to an EVM node. Keys are documented in "
        "config.example.yaml; IOSWARM_* environment variables override them.",
    )
    p.add_argument("--config", "-c", help="YAML config file (omit to use env and defaults)")
    p.add_argument("--check", action="store_true", help="validate the config and exit")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    config = load_config(args.config, env)
    if args.check:
        print("config ok")
        return 0
    setup_logging(config.log_level, config.log_format, config.limits.log_repeats_per_min)
    await CoordinatorApp(config).serve_forever()
    return 0
