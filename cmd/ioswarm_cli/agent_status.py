"""``ioswarm agent status``: an agent operator's view of one agent, read from its coordinator.

Connection (is the coordinator reachable, is the agent registered and live, at which level),
results (tasks, matched, accuracy), payouts per epoch, and what the wallet can claim: from the
AgentRewardPool contract when an RPC URL is given, else as the coordinator last read it.
Everything comes from the coordinator's public HTTP API; nothing needs the agent's key.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ioswarm.core.address import address_problem, canonical_address
from ioswarm.errors import ConfigError, IoswarmError, ProtocolError

if TYPE_CHECKING:
    import aiohttp

# aiohttp, web3 and the pool reader load when a status is asked for, not whenever the agent
# command's parser is built: `ioswarm agent` starts without them.

HTTP_TIMEOUT_SEC = 10.0
MAX_BODY = 4 << 20
"""A coordinator answer larger than this is refused (a status never needs that much)."""
WEI_PER_IOTX = 10**18
ENV = {
    "coordinator_http": "IOSWARM_COORDINATOR_HTTP",
    "agent_id": "IOSWARM_AGENT_ID",
    "wallet": "IOSWARM_WALLET",
    "rpc": "IOSWARM_REWARD_RPC_URL",
    "pool": "IOSWARM_REWARD_CONTRACT",
}
_URL = re.compile(r"^https?://[^\s/]+")


def add_parser(sub: Any) -> None:
    """Register ``status`` under ``ioswarm agent``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "status",
        help="show one agent's connection, results, payouts and claimable rewards",
        description="Ask a coordinator's HTTP API how one agent is doing: whether the "
        "coordinator is reachable and the agent live, its results and accuracy, its payouts "
        "per epoch, and what its wallet can claim (from the reward pool contract with --rpc, "
        "else as the coordinator last read it). Flags default to IOSWARM_COORDINATOR_HTTP, "
        "IOSWARM_AGENT_ID, IOSWARM_WALLET, IOSWARM_REWARD_RPC_URL and IOSWARM_REWARD_CONTRACT.",
    )
    p.add_argument(
        "--coordinator-http", metavar="URL", help="the coordinator's HTTP API, http(s)://host:port"
    )
    p.add_argument("--agent-id", help="the agent's id")
    p.add_argument(
        "--wallet", help="the agent's reward wallet, 0x or io1 (default: the coordinator's record)"
    )
    p.add_argument("--rpc", metavar="URL", help="JSON-RPC URL to read claimable from the pool")
    p.add_argument("--pool", help="AgentRewardPool address (needed with --rpc)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(run=run)


def _option(args: argparse.Namespace, env: Mapping[str, str], name: str) -> str:
    value = getattr(args, name, None) or env.get(ENV[name], "")
    return str(value).strip()


async def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    base = _option(args, env, "coordinator_http")
    if not _URL.match(base):
        raise ConfigError(
            "--coordinator-http",
            f"must be the coordinator's http(s) API URL (or {ENV['coordinator_http']}), "
            f"got {base!r}",
        )
    agent_id = _option(args, env, "agent_id")
    if not agent_id:
        raise ConfigError("--agent-id", f"is required (or {ENV['agent_id']})")
    wallet = _address(_option(args, env, "wallet"), "--wallet")
    rpc, pool = _option(args, env, "rpc"), _address(_option(args, env, "pool"), "--pool")
    if rpc and not pool:
        raise ConfigError("--pool", f"is required with --rpc (or {ENV['pool']})")
    report = await agent_status(base.rstrip("/"), agent_id, wallet, rpc, pool)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def _address(value: str, flag: str) -> str:
    """A typed 0x or io1 address as EIP-55 0x ("" stays "")."""
    if not value:
        return ""
    if problem := address_problem(value):
        raise ConfigError(flag, f"{problem}, got {value!r}")
    return canonical_address(value)


async def agent_status(
    base: str, agent_id: str, wallet: str, rpc: str, pool: str
) -> dict[str, Any]:
    """The status document of ``agent_id`` at the coordinator ``base``.

    Raises :class:`IoswarmError` when the coordinator cannot be reached or does not know the
    agent (neither registered now nor ever paid), :class:`ProtocolError` on a malformed answer.
    """
    import aiohttp  # noqa: PLC0415 - see the imports

    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SEC)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        status = await _get(http, base, "/swarm/status")
        rows = (await _get(http, base, "/swarm/agents")).get("agents")
        if not isinstance(rows, list):
            raise ProtocolError(f"{base}/swarm/agents: no agents list")
        row = next((r for r in rows if isinstance(r, dict) and r.get("agent_id") == agent_id), None)
        rewards = await _get(http, base, "/api/rewards", {"agent": agent_id})
        history = rewards.get("history") or []
        if row is None and not history:
            raise IoswarmError(
                f"agent {agent_id!r} is unknown to the coordinator at {base}: not registered "
                "now and never paid (check --agent-id, and that the agent connects there)"
            )
        paid_to = wallet or str((row or {}).get("wallet") or "")
        console_claimable = None
        if not rpc and row is not None:
            console = await _get(http, base, "/api/console")
            mine = [a for a in console.get("agents") or [] if a.get("agent_id") == agent_id]
            console_claimable = mine[0].get("claimable_iotx") if mine else None
    return {
        "agent_id": agent_id,
        "coordinator": {
            "url": base,
            "reachable": True,
            "task_level": status.get("task_level"),
            "head_block": status.get("head_block"),
            "agents_live": status.get("agents_live"),
        },
        "connection": _connection(row, wallet),
        "results": _results(row, rewards.get("current")),
        "payouts": {
            "history": [_payout(h) for h in history],
            "totals": rewards.get("totals") or {},
        },
        "claimable": await _claimable(paid_to, rpc, pool, console_claimable, rewards),
    }


async def _get(
    http: aiohttp.ClientSession, base: str, path: str, params: Mapping[str, str] | None = None
) -> dict[str, Any]:
    import aiohttp  # noqa: PLC0415 - see the imports

    url = base + path
    try:
        async with http.get(url, params=params) as resp:
            body = bytearray()
            async for chunk in resp.content.iter_chunked(1 << 16):
                body += chunk
                if len(body) > MAX_BODY:
                    break
            if resp.status != 200:
                raise ProtocolError(f"GET {url}: HTTP {resp.status}: {bytes(body[:200])!r}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise IoswarmError(
            f"coordinator at {base} unreachable: GET {path}: {type(exc).__name__}: {exc}"
        ) from exc
    if len(body) > MAX_BODY:
        raise ProtocolError(f"GET {url}: answer larger than {MAX_BODY} bytes")
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"GET {url}: not JSON (is this the coordinator's HTTP API?)") from exc
    if not isinstance(doc, dict):
        raise ProtocolError(f"GET {url}: not a JSON object")
    return doc


def _connection(row: Mapping[str, Any] | None, wallet: str) -> dict[str, Any]:
    from ioswarm.api.compat import LIVE_WINDOW_SEC  # noqa: PLC0415 - see the imports

    if row is None:
        return {"registered": False, "live": False, "connected": False}
    ago = float(row.get("last_heartbeat_sec_ago") or 0.0)
    known = str(row.get("wallet") or "")
    return {
        "registered": True,
        "live": ago <= LIVE_WINDOW_SEC,
        "connected": bool(row.get("connected")),
        "level": row.get("level"),
        "region": row.get("region"),
        "version": row.get("version"),
        "last_heartbeat_sec_ago": ago,
        "uptime": row.get("uptime"),
        "wallet": known,
        "wallet_matches": None if not wallet else wallet.lower() == known.lower(),
        "earning": row.get("earning"),
    }


def _results(row: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> dict[str, Any]:
    shadow = (row or {}).get("shadow") or {}
    matched, mismatched = int(shadow.get("matched", 0)), int(shadow.get("mismatched", 0))
    judged = matched + mismatched
    return {
        "tasks": int((row or {}).get("results_accepted", 0)),
        "tasks_reported": int((row or {}).get("tasks_processed", 0)),
        "inflight": int((row or {}).get("inflight", 0)),
        "matched": matched,
        "mismatched": mismatched,
        "excluded": sum(int(v) for v in (shadow.get("excluded") or {}).values()),
        "accuracy_pct": round(100 * matched / judged, 2) if judged else None,
        "open_epoch": dict(current) if current else None,
    }


def _payout(h: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("epoch", "amount_iotx", "amount_wei", "tasks", "accuracy_pct", "rank")
    return {
        **{k: h.get(k) for k in keys},
        "total_agents": h.get("total_agents"),
        "bonus_applied": h.get("bonus_applied"),
        "status": h.get("status"),
        "reason": h.get("reason"),
        "tx_hash": h.get("tx_hash"),
    }


async def _claimable(
    wallet: str,
    rpc: str,
    pool: str,
    console_iotx: float | None,
    rewards: Mapping[str, Any],
) -> dict[str, Any]:
    totals = rewards.get("totals") or {}
    paid = totals.get("paid_iotx")
    if not rpc:
        return {
            "source": "coordinator",
            "wallet": wallet,
            "iotx": console_iotx,
            "paid_into_pool_iotx": paid,
        }
    if not wallet:
        raise ConfigError("--wallet", "is required to read the pool (the agent is not registered)")
    from web3 import AsyncHTTPProvider, AsyncWeb3  # noqa: PLC0415 - see the imports
    from web3.providers.async_base import AsyncBaseProvider  # noqa: PLC0415

    from ioswarm.rewards.pool import PoolReader  # noqa: PLC0415

    w3: AsyncWeb3[AsyncBaseProvider] = AsyncWeb3(
        AsyncHTTPProvider(rpc, exception_retry_configuration=None)
    )
    try:
        wei = await PoolReader(w3, pool).claimable(wallet)
    finally:
        await w3.provider.disconnect()
    return {
        "source": "contract",
        "pool": pool,
        "wallet": wallet,
        "wei": str(wei),
        "iotx": float(Decimal(wei) / WEI_PER_IOTX),
        "paid_into_pool_iotx": paid,
    }


def render(report: Mapping[str, Any]) -> str:
    """The status as a few lines for people."""
    coord, conn, res = report["coordinator"], report["connection"], report["results"]
    lines = [
        f"agent {report['agent_id']}",
        f"coordinator  {coord['url']} reachable, task level {coord['task_level']}, "
        f"head {coord['head_block']}, {coord['agents_live']} agents live",
    ]
    if conn["registered"]:
        state = "live" if conn["live"] else "silent"
        stream = "task stream open" if conn["connected"] else "no task stream"
        lines.append(
            f"connection   registered, {state} (last heartbeat {conn['last_heartbeat_sec_ago']} s "
            f"ago), {stream}, level {conn['level']}, wallet {conn['wallet'] or '-'}"
        )
        if conn["wallet_matches"] is False:
            lines.append("             warning: the coordinator pays another wallet than --wallet")
    else:
        lines.append("connection   not registered now (seen before: it has payouts)")
    accuracy = "-" if res["accuracy_pct"] is None else f"{res['accuracy_pct']} %"
    lines.append(
        f"results      {res['tasks']} tasks, {res['matched']} matched, {res['mismatched']} "
        f"mismatched, {res['excluded']} excluded, accuracy {accuracy}"
    )
    history = report["payouts"]["history"]
    lines.append(f"payouts      {len(history)} epoch(s)" + (":" if history else ""))
    for h in history:
        lines.append(
            f"  epoch {h['epoch']:>6} {h['amount_iotx']:>14.6f} IOTX  {h['tasks']:>5} tasks  "
            f"{h['accuracy_pct']:>7.2f} %  rank {h['rank']}/{h['total_agents']}  {h['status']}"
        )
    claim = report["claimable"]
    if claim["source"] == "contract":
        lines.append(
            f"claimable    {claim['iotx']} IOTX ({claim['wei']} wei) for {claim['wallet']} "
            f"in pool {claim['pool']}"
        )
    else:
        shown = "unknown" if claim["iotx"] is None else f"{claim['iotx']} IOTX"
        lines.append(
            f"claimable    {shown} (as the coordinator last read it; --rpc and --pool read the "
            f"pool), {claim['paid_into_pool_iotx'] or 0} IOTX paid into the pool so far"
        )
    return "\n".join(lines)
