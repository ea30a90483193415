"""``ioswarm <subcommand>``: parse, dispatch, map errors to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Sequence

from ioswarm import __version__
from ioswarm.errors import ConfigError, IoswarmError, LoopFailed

# The modules that register subcommands (each has ``add_parser(sub)``), in --help order.
COMMANDS = (
    "coordinator",
    "agent",
    "keygen",
    "workload",
    "demo",
    "rewards_cmds",
    "snapshot",
    "l4sim",
    "l4test",
    "conformance",
)
# Which module registers each subcommand. Only the module of the command given is imported:
# ``ioswarm agent`` starts without the coordinator's, the workload's or settlement's imports
# (web3, py-evm, LMDB), which cost most of a second.
COMMAND_MODULES = {
    "coordinator": "coordinator",
    "agent": "agent",
    "keygen": "keygen",
    "workload": "workload",
    "demo": "demo",
    "deploy": "rewards_cmds",
    "fund": "rewards_cmds",
    "claim": "rewards_cmds",
    "rewards": "rewards_cmds",
    "snapshot": "snapshot",
    "l4sim": "l4sim",
    "l4test": "l4test",
    "conformance": "conformance",
}

EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_SOFTWARE = 70  # sysexits EX_SOFTWARE: a loop kept crashing; let the supervisor restart us
EXIT_INTERRUPTED = 130


def build_parser(command: str | None = None, help_text: bool = True) -> argparse.ArgumentParser:
    """The command line parser: with every subcommand, or only ``command``'s when it is one.
    ``help_text=False`` leaves out what only ``--help`` shows (and the imports it needs)."""
    parser = argparse.ArgumentParser(
        prog="ioswarm",
        description="Hand EVM transaction validation to a swarm of agents and pay them on-chain.",
    )
    parser.add_argument("--version", action="version", version=f"ioswarm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = (COMMAND_MODULES[command],) if command in COMMAND_MODULES else COMMANDS
    for name in names:
        importlib.import_module(f"ioswarm_cli.{name}").add_parser(sub)
    if "agent" in sub.choices and help_text:
        from ioswarm_cli import agent_tools  # noqa: PLC0415 - with the agent command only

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
    tools = None
    if argv[:1] == ["agent"] and len(argv) > 1 and not argv[1].startswith("-"):
        from ioswarm_cli import agent_tools  # noqa: PLC0415 - with the agent command only

        tools = agent_tools.tool_parser(argv)
    if tools is not None:
        args = tools.parse_args(argv[1:])
    else:
        wants_help = "-h" in argv or "--help" in argv
        args = build_parser(argv[0] if argv else None, wants_help).parse_args(argv)
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
