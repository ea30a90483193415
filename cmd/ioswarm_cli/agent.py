"""``ioswarm agent``: run one validation agent against a coordinator."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import TYPE_CHECKING, Any

from ioswarm.agent.levels import validator_for
from ioswarm.agent.runtime import Agent
from ioswarm.agent.validators import Validator
from ioswarm.config import AgentConfig, agent_config
from ioswarm.core.models import Level
from ioswarm.errors import ConfigError
from ioswarm.logs import setup_logging
from ioswarm.protocol import auth_metadata
from ioswarm_cli import agent_status

if TYPE_CHECKING:
    from ioswarm.agent.l4sync import StateFollower

SUPPORTED = ("L1", "L2", "L3", "L4")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "agent",
        help="run a validation agent",
        description="Connect to a coordinator, validate the transactions it streams, submit "
        "results. Every flag has an IOSWARM_* environment equivalent (IOSWARM_COORDINATOR, "
        "IOSWARM_AGENT_ID, IOSWARM_API_KEY, IOSWARM_WALLET, IOSWARM_LEVEL, IOSWARM_TLS, "
        "IOSWARM_CA_CERT, IOSWARM_REGION).",
    )
    p.add_argument("--coordinator", help="coordinator gRPC address HOST:PORT")
    p.add_argument("--agent-id", help="this agent's id")
    p.add_argument("--api-key", help="iosw_ API key from the coordinator operator")
    p.add_argument("--wallet", help="0x address that receives rewards")
    p.add_argument("--level", help=f"validation level: {', '.join(SUPPORTED)} (default L2)")
    p.add_argument("--region", help="free-form region label shown on the dashboard")
    p.add_argument("--tls", dest="tls", action="store_true", default=None, help="use TLS (default)")
    p.add_argument("--no-tls", dest="tls", action="store_false", help="plaintext (loopback only)")
    p.add_argument("--ca-cert", help="PEM CA bundle to trust for the coordinator's certificate")
    p.add_argument("--datadir", help="L4: directory of the local state store (required for L4)")
    p.add_argument(
        "--snapshot",
        metavar="FILE|URL",
        help="L4: IOSWSNAP snapshot to start an empty state store from (default: the "
        "coordinator's, via DownloadSnapshot)",
    )
    p.add_argument("--log-format", choices=("kv", "json"), default="kv")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.set_defaults(run=run)
    agent_status.add_parser(p.add_subparsers(dest="agent_command", metavar="{status}"))


async def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    values = {
        "coordinator": args.coordinator,
        "agent_id": args.agent_id,
        "api_key": args.api_key,
        "wallet": args.wallet,
        "level": args.level,
        "tls": args.tls,
        "ca_cert": args.ca_cert,
        "region": args.region,
    }
    config = agent_config(values, env)
    if config.level not in SUPPORTED:
        raise ConfigError("--level", f"{config.level} agents are not available in this version")
    if config.level == "L4" and not args.datadir:
        raise ConfigError("--datadir", "an L4 agent needs a directory for its state store")
    setup_logging(args.log_level, args.log_format)
    validator, follower = _validator(config, args)
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


def _validator(
    config: AgentConfig, args: argparse.Namespace
) -> tuple[Validator, StateFollower | None]:
    """The level's validator, and for L4 the state follower that feeds it."""
    if config.level != "L4":
        return validator_for(Level.parse(config.level)), None
    # LMDB loads only for L4 agents.
    from ioswarm.agent.l4sync import StateFollower  # noqa: PLC0415

    follower = StateFollower(
        args.datadir,
        agent_id=config.agent_id,
        metadata=auth_metadata(config.agent_id, config.api_key),
        snapshot=args.snapshot,
    )
    follower.open()  # a store left by an earlier run is ready before the first task
    return validator_for(Level.L4, state=follower), follower
