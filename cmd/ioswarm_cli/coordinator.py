"""``ioswarm coordinator``: run the coordinator sidecar beside a node."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ioswarm.config import load_config
from ioswarm.configfile import ConfigNote
from ioswarm.coordinator.app import CoordinatorApp
from ioswarm.logs import setup_logging

log = logging.getLogger("ioswarm.config")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "coordinator",
        help="run the coordinator (gRPC for agents, HTTP API, shadow mode)",
        description="Run the coordinator next to an EVM node. The config is ioswarm's flat "
        "keys or an iotex-core config file with an ioswarm: section; keys are documented in "
        "config.example.yaml and IOSWARM_* environment variables override them.",
    )
    p.add_argument("--config", "-c", help="YAML config file (omit to use env and defaults)")
    p.add_argument("--check", action="store_true", help="validate the config and exit")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    notes: list[ConfigNote] = []
    config = load_config(args.config, env, notes)
    if args.check:
        for note in notes:
            print(f"{note.level_name}: {note.message}", file=sys.stderr)
        print("config ok" if config.enabled else "config ok (enabled: false, will not serve)")
        return 0
    setup_logging(config.log_level, config.log_format, config.limits.log_repeats_per_min)
    for note in notes:
        log.log(note.level, note.message)
    if not config.enabled:
        # The Go coordinator's switch: a node config with the section turned off runs nothing.
        log.info("coordinator disabled (enabled: false), exiting")
        return 0
    await CoordinatorApp(config).serve_forever()
    return 0
