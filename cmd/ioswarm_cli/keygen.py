"""``ioswarm keygen``: print the API key of an agent id."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ioswarm.core.tokens import agent_token
from ioswarm.errors import ConfigError


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "keygen",
        help="print the iosw_ API key of an agent (a wallet key pair: 'ioswarm agent keygen')",
        description="Derive an agent's API key: iosw_ + hex(HMAC-SHA256(masterSecret, agentID)). "
        "The secret comes from --secret, else IOSWARM_MASTER_SECRET, else one line on stdin.",
    )
    p.add_argument("--secret", help="the coordinator's masterSecret (prefer env or stdin)")
    p.add_argument("--agent-id", required=True, help="the agent id the key is for")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    secret = args.secret or env.get("IOSWARM_MASTER_SECRET")
    if not secret and not sys.stdin.isatty():
        secret = sys.stdin.readline().strip()
    if not secret:
        raise ConfigError(
            "--secret", "no master secret (use --secret, IOSWARM_MASTER_SECRET or stdin)"
        )
    print(agent_token(secret, args.agent_id))
    return 0
