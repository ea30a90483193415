"""``ioswarm deploy | fund | claim | rewards`` against anvil and a small HTTP server."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from eth_account import Account
from eth_utils.crypto import keccak
from ioswarm_cli import rewards_cmds
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.providers.async_base import AsyncBaseProvider

from ioswarm.core.rewards import RewardPolicy
from ioswarm.errors import ConfigError, IoswarmError, ProtocolError
from ioswarm.rewards.epochs import EpochManager
from ioswarm.rewards.ledger import EpochLedger
from ioswarm.rewards.pool import RewardPool
from ioswarm.sim.anvil import AnvilProcess, free_loopback_port

pytestmark = pytest.mark.integration

IOTX = 10**18


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ioswarm")
    rewards_cmds.add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


async def cli(env: dict[str, str], *argv: str) -> int:
    args = parse(*argv)
    code: int = await args.run(args, env)
    return code


@pytest.fixture
async def node(anvil_manual: AnvilProcess) -> AsyncIterator[AnvilProcess]:
    """Anvil mining each transaction as it arrives."""
    await anvil_manual.rpc("evm_setAutomine", [True])
    yield anvil_manual


async def test_deploy_fund_claim(
    node: AnvilProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deploy prints the pool, fund pays gas money, claim shows then pays the claimable wei."""
    operator = {"IOSWARM_REWARD_SIGNER_KEY": node.private_keys[0]}
    assert await cli(operator, "deploy", "--rpc", node.url) == 0
    address = capsys.readouterr().out.strip()
    assert address.startswith("0x") and len(address) == 42

    agent = Account.from_key(keccak(text="cli-agent"))
    fund = ("fund", "--rpc", node.url, "--to", agent.address, "--amount", "1")
    assert await cli(operator, *fund) == 0
    assert f"funded {agent.address} 1 IOTX" in capsys.readouterr().out

    w3: AsyncWeb3[AsyncBaseProvider] = AsyncWeb3(AsyncHTTPProvider(node.url))
    try:
        pool = RewardPool(w3, address, Account.from_key(node.private_keys[0]))
        await pool.deposit_and_settle([agent.address], [1], IOTX // 10)
        key_file = tmp_path / "wallet.key"
        key_file.write_text(bytes(agent.key).hex() + "\n")
        env = {"IOSWARM_REWARD_CONTRACT": address}
        args = ("claim", "--rpc", node.url, "--key-file", str(key_file))
        assert await cli(env, *args, "--dry-run") == 0
        assert "can claim 0.1 IOTX (100000000000000000 wei)" in capsys.readouterr().out
        assert await pool.claimable(agent.address) == IOTX // 10
        assert await cli(env, *args) == 0
        assert "claimed 0.1 IOTX" in capsys.readouterr().out
        assert await pool.claimable(agent.address) == 0
        assert await cli(env, *args) == 0
        assert "nothing to claim" in capsys.readouterr().out
    finally:
        await w3.provider.disconnect()


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (("fund", "--to", "0x12", "--amount", "1", "--key", "11" * 32), "--to"),
        (("fund", "--to", "0x" + "12" * 20, "--amount", "-1", "--key", "11" * 32), "--amount"),
        (("fund", "--to", "0x" + "12" * 20, "--amount", "1e-19", "--key", "11" * 32), "--amount"),
        (("deploy",), "--key"),
        (("deploy", "--key", "xyz"), "--key"),
        (("deploy", "--key-file", "/nonexistent/key"), "--key-file"),
        (("deploy", "--key", "11" * 32, "--rpc", "ftp://x"), "--rpc"),
        (("claim", "--key", "11" * 32), "IOSWARM_REWARD_CONTRACT"),
        (("claim", "--key", "11" * 32, "--pool", "nope"), "--pool"),
        (("rewards", "--agent-id", "a"), "--coordinator"),
        (("rewards", "--coordinator", "http://127.0.0.1:1"), "--agent-id"),
    ],
)
async def test_bad_input_names_the_flag(argv: tuple[str, ...], flag: str) -> None:
    """Bad or missing input raises ConfigError naming the flag (or variable), before any I/O."""
    with pytest.raises(ConfigError) as info:
        await cli({}, *argv)
    assert info.value.key == flag
    assert "11" * 32 not in str(info.value)  # keys are never echoed


async def test_rewards_prints_the_coordinator_view(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """rewards GETs /api/rewards?agent=ID and prints a table, or the JSON with --json."""
    policy = RewardPolicy(min_tasks=1)
    manager = EpochManager(
        EpochLedger(tmp_path / "l"), policy, epoch_blocks=5, epoch_reward_wei=IOTX
    )
    manager.on_block(5)
    for _ in range(3):
        manager.on_result("agent-7", "0x" + "77" * 20)
        manager.on_comparison("agent-7", "0x" + "77" * 20, "matched")
    manager.on_block(10)

    async def rewards(request: web.Request) -> web.Response:
        return web.json_response(manager.rewards_view(request.query["agent"]))

    app = web.Application()
    app.router.add_get("/api/rewards", rewards)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_loopback_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    try:
        assert await cli({}, "rewards", "--coordinator", base, "--agent-id", "agent-7") == 0
        out = capsys.readouterr().out
        assert "agent agent-7" in out and "0.9" in out and "planned" in out
        args = ("rewards", "--coordinator", base, "--agent-id", "agent-7", "--json")
        assert await cli({}, *args) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["history"][0]["epoch"] == 1
        assert doc["totals"]["amount_wei"] == str(9 * IOTX // 10)
        with pytest.raises(ProtocolError):
            await rewards_cmds.fetch_rewards(base + "/missing", "agent-7")
    finally:
        await runner.cleanup()
        await manager.stop()
    with pytest.raises(IoswarmError):
        await rewards_cmds.fetch_rewards(base, "agent-7")  # nothing listens any more
