"""``ioswarm agent``: run one validation agent against a coordinator."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from ioswarm.agent.runtime import Agent
from ioswarm.agent.validators import validator_for
from ioswarm.config import agent_config
from ioswarm.core.models import Level
from ioswarm.errors import ConfigError
from ioswarm.logs import setup_logging

SUPPORTED = ("L1", "L2", "L3")


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
    p.add_argument("--log-format", choices=("kv", "json"), default="kv")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.set_defaults(run=run)


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
    setup_logging(args.log_level, args.log_format)
    agent = Agent(config, validator_for(Level.parse(config.level)))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.shutdown, signal.Signals(sig).name)
    await agent.run()
    return 0
