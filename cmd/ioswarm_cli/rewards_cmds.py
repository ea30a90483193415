"""``ioswarm deploy | fund | claim | rewards``: the reward pool from the command line.

``deploy`` and ``fund`` are the operator's (signer key: ``--key``, ``--key-file`` or
``IOSWARM_REWARD_SIGNER_KEY``); ``claim`` is the agent's (wallet key: ``--key``,
``--key-file`` or ``IOSWARM_WALLET_KEY``); ``rewards`` reads a coordinator's HTTP API.
Keys are never printed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import aiohttp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.providers.async_base import AsyncBaseProvider

from ioswarm.core.address import address_problem, canonical_address
from ioswarm.errors import ConfigError, IoswarmError, ProtocolError
from ioswarm.rewards.pool import RewardPool, transfer

WEI_PER_IOTX = 10**18
DEFAULT_RPC = "http://127.0.0.1:8545"
HTTP_TIMEOUT_SEC = 15.0
SIGNER_KEY_ENV = "IOSWARM_REWARD_SIGNER_KEY"
WALLET_KEY_ENV = "IOSWARM_WALLET_KEY"
REFERENCE_KEY_ENV = "IOSWARM_PRIVATE_KEY"  # the reference agent's name for the wallet key
_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")

Runner = Callable[[argparse.Namespace, dict[str, str]], Coroutine[Any, Any, int]]


def add_parsers(sub: Any) -> None:
    """Register ``deploy``, ``fund``, ``claim`` and ``rewards``."""
    p = _parser(sub, "deploy", run_deploy, "deploy an AgentRewardPool and print its address")
    _rpc_flags(p)
    _key_flags(p, SIGNER_KEY_ENV, "the deployer's key")
    p.add_argument("--coordinator", help="address allowed to settle (default: the deployer)")

    p = _parser(sub, "fund", run_fund, "send IOTX from the signer to wallets (or to the pool)")
    _rpc_flags(p)
    _key_flags(p, SIGNER_KEY_ENV, "the sender's key")
    p.add_argument(
        "--to", action="append", required=True, help="receiving address (repeat for several)"
    )
    p.add_argument("--amount", required=True, help="IOTX per receiver, e.g. 1.5")

    p = _parser(sub, "claim", run_claim, "claim an agent's rewards from the pool")
    _rpc_flags(p)
    _key_flags(p, WALLET_KEY_ENV, "the agent wallet's key")
    p.add_argument("--pool", help="pool address (else IOSWARM_REWARD_CONTRACT)")
    p.add_argument("--dry-run", action="store_true", help="show what can be claimed, send nothing")

    p = _parser(sub, "rewards", run_rewards, "show an agent's rewards from a coordinator")
    p.add_argument(
        "--coordinator",
        help="coordinator HTTP API URL, e.g. http://host:14690 (else IOSWARM_COORDINATOR_HTTP)",
    )
    p.add_argument("--agent-id", help="the agent id (else IOSWARM_AGENT_ID)")
    p.add_argument("--json", action="store_true", help="print the API's JSON as is")


add_parser = add_parsers
"""Alias so the module fits ``main.COMMANDS`` (each module has ``add_parser(sub)``)."""


def _parser(sub: Any, name: str, run: Runner, text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text + ".")
    p.set_defaults(run=run)
    return p


def _rpc_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rpc",
        help=f"JSON-RPC URL (else IOSWARM_REWARD_RPC_URL, IOSWARM_NODE_RPC_URL, {DEFAULT_RPC})",
    )


def _key_flags(p: argparse.ArgumentParser, env_name: str, what: str) -> None:
    p.add_argument("--key", help=f"{what} as hex (prefer --key-file or {env_name})")
    p.add_argument("--key-file", help=f"file holding {what} as hex")


# -- input --------------------------------------------------------------------------------


def _rpc_url(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    url = args.rpc or env.get("IOSWARM_REWARD_RPC_URL") or env.get("IOSWARM_NODE_RPC_URL")
    url = url or DEFAULT_RPC
    if not re.match(r"^https?://[^\s/]+", url):
        raise ConfigError("--rpc", f"must be an http:// or https:// URL, got {url!r}")
    return str(url)


def _key(
    args: argparse.Namespace, env: Mapping[str, str], env_name: str, alias: str = ""
) -> LocalAccount:
    if args.key:
        source, text = "--key", args.key
    elif args.key_file:
        source = "--key-file"
        try:
            text = Path(args.key_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(source, f"cannot read {args.key_file}: {exc.strerror}") from exc
    elif env.get(env_name):
        source, text = env_name, env[env_name]
    elif alias and env.get(alias):
        source, text = alias, env[alias]
    elif env.get(env_name + "_FILE"):
        source = env_name + "_FILE"
        try:
            text = Path(env[source]).read_text().strip()
        except OSError as exc:
            raise ConfigError(source, f"cannot read {env[source]}: {exc.strerror}") from exc
    else:
        raise ConfigError("--key", f"no key given (use --key, --key-file or {env_name})")
    if not _KEY.fullmatch(text.strip()):
        raise ConfigError(source, "must be a 32-byte hex private key")
    account: LocalAccount = Account.from_key(text.strip())
    return account


def _address(value: str | None, flag: str) -> str:
    if not value:
        raise ConfigError(flag, "is required: a 0x-prefixed 20-byte hex address")
    if problem := address_problem(value):
        raise ConfigError(flag, problem if "EIP-55" in problem else f"{problem}, got {value!r}")
    return canonical_address(value)


def _wei(amount: str, flag: str) -> int:
    try:
        value = Decimal(amount)
    except InvalidOperation as exc:
        raise ConfigError(flag, f"not a number: {amount!r}") from exc
    wei = value * WEI_PER_IOTX
    if not value.is_finite() or value <= 0 or wei != wei.to_integral_value():
        raise ConfigError(
            flag, f"must be a positive IOTX amount with at most 18 decimals: {amount}"
        )
    return int(wei)


def iotx(wei: int) -> str:
    """Exact decimal IOTX for display."""
    text = f"{Decimal(wei) / WEI_PER_IOTX:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@asynccontextmanager
async def _web3(url: str) -> AsyncIterator[AsyncWeb3[AsyncBaseProvider]]:
    w3: AsyncWeb3[AsyncBaseProvider] = AsyncWeb3(
        AsyncHTTPProvider(url, exception_retry_configuration=None)
    )
    try:
        yield w3
    finally:
        await w3.provider.disconnect()


def _say(text: str) -> None:
    """Progress goes to stderr, so stdout carries only the result."""
    print(text, file=sys.stderr)


# -- commands -----------------------------------------------------------------------------


async def run_deploy(args: argparse.Namespace, env: dict[str, str]) -> int:
    url = _rpc_url(args, env)
    signer = _key(args, env, SIGNER_KEY_ENV)
    coordinator = _address(args.coordinator, "--coordinator") if args.coordinator else None
    async with _web3(url) as w3:
        _say(f"deploying AgentRewardPool from {signer.address} via {url}")
        pool = await RewardPool.deploy(w3, signer, coordinator=coordinator)
        _say(f"coordinator {await pool.coordinator()}")
    print(pool.address)
    return 0


async def run_fund(args: argparse.Namespace, env: dict[str, str]) -> int:
    url = _rpc_url(args, env)
    signer = _key(args, env, SIGNER_KEY_ENV)
    targets = [_address(t, "--to") for t in args.to]
    wei = _wei(args.amount, "--amount")
    async with _web3(url) as w3:
        for i, target in enumerate(targets, 1):
            receipt = await transfer(w3, signer, target, wei)
            print(f"funded {target} {iotx(wei)} IOTX tx={receipt.tx_hash} ({i}/{len(targets)})")
    return 0


async def run_claim(args: argparse.Namespace, env: dict[str, str]) -> int:
    url = _rpc_url(args, env)
    wallet = _key(args, env, WALLET_KEY_ENV, alias=REFERENCE_KEY_ENV)
    flag = "--pool" if args.pool else "IOSWARM_REWARD_CONTRACT"
    address = _address(args.pool or env.get("IOSWARM_REWARD_CONTRACT"), flag)
    async with _web3(url) as w3:
        pool = RewardPool(w3, address, wallet)
        claimable = await pool.claimable(wallet.address)
        print(f"wallet {wallet.address} can claim {iotx(claimable)} IOTX ({claimable} wei)")
        if args.dry_run or claimable == 0:
            if claimable == 0:
                print("nothing to claim")
            return 0
        receipt = await pool.claim()
        paid = sum(p.amount for p in receipt.claimed)
        print(
            f"claimed {iotx(paid)} IOTX ({paid} wei) tx={receipt.tx_hash} "
            f"block={receipt.block_number} fee={iotx(receipt.fee)} IOTX"
        )
    return 0


async def fetch_rewards(base_url: str, agent_id: str) -> dict[str, Any]:
    """GET ``/api/rewards?agent=ID`` from a coordinator's HTTP API."""
    url = base_url.rstrip("/") + "/api/rewards"
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SEC)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, params={"agent": agent_id}) as resp,
        ):
            body = await resp.text()
            if resp.status != 200:
                raise ProtocolError(f"GET {url}: HTTP {resp.status}: {body[:200]}")
            doc = json.loads(body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise IoswarmError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"GET {url}: not JSON: {exc}") from exc
    if not isinstance(doc, dict) or "history" not in doc:
        raise ProtocolError(f"GET {url}: not a rewards document")
    return doc


def _amount(doc: Mapping[str, Any], wei_key: str, iotx_key: str) -> str:
    """Exact IOTX from ``wei_key``; a coordinator without it (the reference's) sends only the
    float ``iotx_key``."""
    if wei_key in doc:
        return iotx(int(doc[wei_key]))
    return f"{float(doc.get(iotx_key, 0.0)):.6f}"


def render_rewards(doc: Mapping[str, Any]) -> str:
    """A table of the history, newest first, and the totals (also of a reference coordinator's
    document, which has no wei amounts, settlement status or paid / pending totals)."""
    lines = [f"agent {doc.get('agent_id', '?')}"]
    header = f"{'epoch':>7} {'IOTX':>22} {'tasks':>7} {'accuracy':>9} {'rank':>6} bonus status"
    lines.append(header)
    history = doc.get("history") or []
    for row in history:
        amount = _amount(row, "amount_wei", "amount_iotx")
        rank = f"{row.get('rank', 0)}/{row.get('total_agents', '?')}"
        lines.append(
            f"{row.get('epoch', 0):>7} {amount:>22} {row.get('tasks', 0):>7} "
            f"{row.get('accuracy_pct', 0.0):>8.2f}% {rank:>6} "
            f"{'yes' if row.get('bonus_applied') else 'no':>5} {row.get('status', '')}"
        )
    totals = doc.get("totals") or {}
    epochs = totals.get("epochs", len(history))
    tasks = totals.get("tasks", totals.get("total_tasks", 0))
    earned = _amount(totals, "amount_wei", "earned_iotx")
    line = f"total {earned} IOTX over {epochs} epochs ({tasks} tasks)"
    if "paid_wei" in totals:
        line += (
            f"; paid {iotx(int(totals['paid_wei']))}"
            f", pending {iotx(int(totals.get('pending_wei', 0)))}"
        )
    lines.append(line)
    return "\n".join(lines)


async def run_rewards(args: argparse.Namespace, env: dict[str, str]) -> int:
    base = (
        args.coordinator
        or env.get("IOSWARM_COORDINATOR_HTTP")  # the reference agent's name
        or env.get("IOSWARM_COORDINATOR_API")
    )
    if not base or not re.match(r"^https?://[^\s/]+", base):
        raise ConfigError(
            "--coordinator", f"must be the coordinator's http(s) API URL, got {base!r}"
        )
    agent_id = args.agent_id or env.get("IOSWARM_AGENT_ID")
    if not agent_id:
        raise ConfigError("--agent-id", "is required (or IOSWARM_AGENT_ID)")
    doc = await fetch_rewards(base, agent_id)
    print(json.dumps(doc, indent=2) if args.json else render_rewards(doc))
    return 0
