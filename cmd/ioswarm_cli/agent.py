"""``ioswarm agent``: run one validation agent against one or several coordinators.

The flags take the reference agent's (ioswarm-agent) spellings and Go's flag syntax as well
as GNU's, so its command lines, scripts and service units work unchanged: ``--flag value``,
``--flag=value``, ``-flag value``, ``-flag=value``; booleans as ``--tls``, ``--tls=false``,
``-tls=true`` (or ``--no-tls``). ``--coordinator`` takes several coordinators comma-separated,
one link each; ``--api-key`` one key for all or one per coordinator in the same order.
Reference flags ioswarm has no use for are accepted with a warning naming them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ioswarm.agent.levels import validator_for
from ioswarm.agent.runtime import Agent
from ioswarm.agent.validators import Validator
from ioswarm.config import AGENT_ENV, LEVELS, AgentConfig, agent_config, parse_bool
from ioswarm.core.models import Level
from ioswarm.errors import ConfigError
from ioswarm.logs import setup_logging
from ioswarm.protocol import auth_metadata
from ioswarm_cli import agent_status

if TYPE_CHECKING:
    from ioswarm.agent.l4sync import StateFollower

log = logging.getLogger("ioswarm.agent")

MODES = ("validator", "llm", "both")


def _go_bool(name: str) -> Any:
    def parse(raw: str) -> bool:
        try:
            return parse_bool(name, raw)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(exc.problem) from None

    return parse


def add_parser(sub: Any) -> None:
    env = ", ".join(AGENT_ENV.values())
    p: argparse.ArgumentParser = sub.add_parser(
        "agent",
        help="run a validation agent",
        allow_abbrev=False,  # as Go's flag package: a flag is spelled out whole
        description="Connect to one or several coordinators, validate the transactions they "
        "stream, submit results. Flags take Go's syntax too (-flag, -flag=value, "
        f"--tls=false). Environment equivalents: {env}.",
    )

    def flag(name: str, **kw: Any) -> None:
        p.add_argument(f"--{name}", f"-{name}", **kw)

    flag(
        "coordinator",
        metavar="HOST:PORT[,HOST:PORT...]",
        help="coordinator gRPC address; several comma-separated: one link to each",
    )
    flag("agent-id", help="this agent's id")
    flag(
        "api-key",
        metavar="KEY[,KEY...]",
        help="iosw_ API key from the coordinator operator; one for all coordinators, or one "
        "per coordinator in --coordinator's order",
    )
    flag("wallet", help="0x or io1 address that receives rewards")
    flag("level", help=f"validation level: {', '.join(LEVELS)}, any case (default L2)")
    flag("region", help="free-form region label shown on the dashboard")
    flag(
        "tls",
        nargs="?",
        const=True,
        default=None,
        type=_go_bool("--tls"),
        metavar="BOOL",
        help="TLS to the coordinators (default true; --tls=false for plaintext on loopback; "
        "port 443 always uses TLS)",
    )
    p.add_argument("--no-tls", dest="tls", action="store_false", help="same as --tls=false")
    flag("ca-cert", help="PEM CA bundle to trust for the coordinators' certificates")
    flag("tls-cert", dest="ca_cert", help="the reference's name for --ca-cert")
    flag("datadir", help="L4: directory of the local state store (required for L4)")
    flag(
        "snapshot",
        metavar="FILE|URL",
        help="L4: IOSWSNAP snapshot to start an empty state store from (default: the "
        "coordinator's, via DownloadSnapshot)",
    )
    flag(
        "mode",
        help="reference flag: 'validator' (the only mode here); 'both' warns and runs the "
        "validator; 'llm' is refused (no LLM proxy in ioswarm)",
    )
    flag("llm-port", help="reference flag, accepted and ignored with a warning (no LLM proxy)")
    flag("log-format", choices=("kv", "json"), default="kv")
    flag("log-level", type=str.lower, choices=("debug", "info", "warning", "error"), default="info")
    p.set_defaults(run=run)
    agent_status.add_parser(p.add_subparsers(dest="agent_command", metavar="{status}"))


def reference_only(args: argparse.Namespace) -> list[str]:
    """Warnings for the reference's flags that ioswarm accepts but does not act on; a value
    that cannot be honoured is a ConfigError naming its flag."""
    warnings = []
    mode = (args.mode or "validator").strip().lower()
    if mode not in MODES:
        raise ConfigError("--mode", f"must be one of {', '.join(MODES)}, got {args.mode!r}")
    if mode == "llm":
        raise ConfigError(
            "--mode", "llm runs only the reference's LLM proxy, which ioswarm does not have"
        )
    if mode == "both":
        warnings.append("flag --mode=both: ioswarm has no LLM proxy; running the validator only")
    if args.llm_port is not None:
        warnings.append("flag --llm-port ignored: ioswarm has no LLM proxy")
    return warnings


async def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    warnings = reference_only(args)
    values = {
        "coordinator": args.coordinator,
        "agent_id": args.agent_id,
        "api_key": args.api_key,
        "wallet": args.wallet,
        "level": args.level,
        "tls": args.tls,
        "ca_cert": args.ca_cert,
        "region": args.region,
        "datadir": args.datadir,
        "snapshot": args.snapshot,
    }
    config = agent_config(values, env)
    if config.level == "L4" and not config.datadir:
        raise ConfigError("--datadir", "an L4 agent needs a directory for its state store")
    setup_logging(args.log_level, args.log_format)
    for warning in warnings:
        log.warning(warning)
    validator, follower = _validator(config)
    agent = Agent(config, validator, follower)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.shutdown, signal.Signals(sig).name)
    try:
        await agent.run()
    finally:
        if follower is not None:
            follower.close()
    return 0


def _validator(config: AgentConfig) -> tuple[Validator, StateFollower | None]:
    """The level's validator, and for L4 the state follower that feeds it."""
    if config.level != "L4":
        return validator_for(Level.parse(config.level)), None
    # LMDB loads only for L4 agents.
    from ioswarm.agent.l4sync import StateFollower  # noqa: PLC0415

    follower = StateFollower(
        config.datadir,
        agent_id=config.agent_id,
        metadata=auth_metadata(config.agent_id, config.api_key),
        snapshot=config.snapshot or None,
    )
    follower.open()  # a store left by an earlier run is ready before the first task
    return validator_for(Level.L4, state=follower), follower


def reference_main(argv: Sequence[str] | None = None) -> int:
    """``ioswarm-agent``, the reference agent's command name: ``ioswarm-agent FLAGS`` runs
    ``ioswarm agent FLAGS`` (and ``ioswarm-agent keygen|addr|service`` the agent tools), so
    its service units and scripts work with ioswarm installed."""
    from ioswarm_cli.main import main  # noqa: PLC0415 - main imports this module

    return main(["agent", *(sys.argv[1:] if argv is None else argv)])
