"""``ioswarm <subcommand>``: parse, dispatch, map errors to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from ioswarm import __version__
from ioswarm.errors import ConfigError, IoswarmError, LoopFailed
from ioswarm_cli import (
    agent,
    agent_tools,
    conformance,
    coordinator,
    demo,
    keygen,
    l4sim,
    l4test,
    rewards_cmds,
    snapshot,
    workload,
)

COMMANDS = (
    coordinator,
    agent,
    keygen,
    workload,
    demo,
    rewards_cmds,
    snapshot,
    l4sim,
    l4test,
    conformance,
)

EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_SOFTWARE = 70  # sysexits EX_SOFTWARE: a loop kept crashing; let the supervisor restart us
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ioswarm",
        description="Hand EVM transaction validation to a swarm of agents and pay them on-chain.",
    )
    parser.add_argument("--version", action="version", version=f"ioswarm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    agent_tools.describe_in(sub.choices["agent"])
    return parser


def exit_code(exc: IoswarmError) -> int:
    """The process exit code for an error that ended a subcommand."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, LoopFailed):
        return EXIT_SOFTWARE
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; errors print one line to stderr and return a non-zero code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # `ioswarm agent keygen|addr|service` are tools, not the agent's run flags.
    tools = agent_tools.tool_parser(argv)
    args = tools.parse_args(argv[1:]) if tools else build_parser().parse_args(argv)
    try:
        code: int = asyncio.run(args.run(args, dict(os.environ)))
        return code
    except IoswarmError as exc:
        print(f"ioswarm {args.command}: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
