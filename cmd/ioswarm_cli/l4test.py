"""``ioswarm l4test``: probe a live coordinator's state-diff stream and print a verdict."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from ioswarm.agent.l4probe import DiffStreamProbe, probe_channel
from ioswarm.core.address import canonical_address
from ioswarm.core.tokens import agent_token
from ioswarm.errors import ConfigError
from ioswarm.proto import ioswarm_pb2_grpc as pb_grpc
from ioswarm.protocol import auth_metadata

EXIT_FAIL = 1


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "l4test",
        help="probe a coordinator's L4 state-diff stream and check its hash chain",
        description="Register as an L4 agent, follow StreamStateDiffs and check that every "
        "diff follows the one before (height, prev/post state hash, block hash) for --blocks "
        "blocks. Prints PASS with the blocks and the final state hash, or FAIL naming the "
        "first broken link or the timeout; exits 0 on PASS, 1 on FAIL. Credentials as the "
        "agent takes them (also IOSWARM_COORDINATOR, IOSWARM_AGENT_ID, IOSWARM_API_KEY, "
        "IOSWARM_WALLET); the operator may give --secret (or IOSWARM_MASTER_SECRET) instead "
        "of an API key.",
    )
    p.add_argument("--coordinator", help="coordinator gRPC address HOST:PORT")
    p.add_argument("--agent-id", help="agent id to register as (default l4test-probe)")
    p.add_argument("--api-key", help="that agent's iosw_ API key")
    p.add_argument("--secret", help="the coordinator's masterSecret, to derive the API key")
    p.add_argument(
        "--wallet",
        help="0x or io1 wallet the agent id is registered with (another one is a wallet change)",
    )
    p.add_argument("--tls", dest="tls", action="store_true", default=True, help="TLS (default)")
    p.add_argument("--no-tls", dest="tls", action="store_false", help="plaintext (loopback)")
    p.add_argument("--ca-cert", help="PEM CA bundle to trust for the coordinator's certificate")
    p.add_argument("--blocks", type=int, default=10, help="links to check (default 10)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before FAIL (default 120)")
    p.add_argument(
        "--from-height",
        type=int,
        default=0,
        help="first height to stream (default 0: live blocks only; ignored with --datadir)",
    )
    p.add_argument(
        "--datadir",
        help="also replay every diff on a local state kept here (an L4 agent's store; loaded "
        "from --snapshot or the coordinator's snapshot when empty): each diff's entries must "
        "then produce its post-state hash",
    )
    p.add_argument(
        "--snapshot", metavar="FILE|URL", help="with --datadir: IOSWSNAP to load an empty state"
    )
    p.set_defaults(run=run)


def _credentials(args: argparse.Namespace, env: dict[str, str]) -> tuple[str, str, str, str]:
    """(coordinator, agent id, API key, wallet) from flags, then the agent's environment."""
    target = args.coordinator or env.get("IOSWARM_COORDINATOR", "")
    if not re.fullmatch(r"[^\s:]+:\d{1,5}", target):
        raise ConfigError("--coordinator", f"must be HOST:PORT, got {target!r}")
    agent_id = args.agent_id or env.get("IOSWARM_AGENT_ID") or "l4test-probe"
    secret = args.secret or env.get("IOSWARM_MASTER_SECRET")
    key = (
        args.api_key
        or env.get("IOSWARM_API_KEY")
        or (agent_token(secret, agent_id) if secret else "")
    )
    if not key:
        raise ConfigError("--api-key", "is required (or --secret, IOSWARM_API_KEY)")
    wallet = args.wallet or env.get("IOSWARM_WALLET", "")
    if not wallet:
        raise ConfigError("--wallet", "is required (or IOSWARM_WALLET)")
    try:
        wallet = canonical_address(wallet)
    except ValueError as exc:
        raise ConfigError("--wallet", str(exc)) from None
    if args.blocks < 1:
        raise ConfigError("--blocks", "must be >= 1")
    if args.timeout <= 0:
        raise ConfigError("--timeout", "must be > 0")
    return target, agent_id, key, wallet


def _read_ca(path: str) -> bytes:
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError("--ca-cert", f"cannot read {path}: {exc.strerror}") from exc
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ConfigError("--ca-cert", f"{path} holds no PEM certificate")
    return pem


async def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    target, agent_id, key, wallet = _credentials(args, env)
    ca_pem = _read_ca(args.ca_cert) if args.tls and args.ca_cert else None
    metadata = auth_metadata(agent_id, key)
    replay = None
    if args.datadir:
        # LMDB loads only when a state is replayed.
        from ioswarm.agent.l4sync import StateFollower  # noqa: PLC0415

        replay = StateFollower(
            args.datadir, agent_id=agent_id, metadata=metadata, snapshot=args.snapshot
        )
    elif args.snapshot:
        raise ConfigError("--snapshot", "needs --datadir (the state it loads into)")
    try:
        async with probe_channel(target, tls=args.tls, ca_pem=ca_pem) as channel:
            probe = DiffStreamProbe(
                pb_grpc.IOSwarmStub(channel),
                agent_id=agent_id,
                wallet=wallet,
                metadata=metadata,
                blocks=args.blocks,
                timeout=args.timeout,
                from_height=args.from_height,
                replay=replay,
            )
            print(
                f"l4test coordinator={target} agent_id={agent_id} blocks={args.blocks}",
                flush=True,
            )
            verdict = await probe.run()
    finally:
        if replay is not None:
            replay.close()
    print(verdict.line(), flush=True)
    return 0 if verdict.passed else EXIT_FAIL
