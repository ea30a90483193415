"""Every kind of adversary beside honest L1/L2/L3 agents on a real anvil and reward pool."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import pytest
from eth_account import Account
from prometheus_client import CollectorRegistry
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.providers.async_base import AsyncBaseProvider

from ioswarm.agent.levels import validator_for
from ioswarm.agent.runtime import Agent
from ioswarm.config import AgentConfig
from ioswarm.coordinator.app import CoordinatorApp
from ioswarm.core.models import Level
from ioswarm.core.tokens import agent_token
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.rewards.epochs import EpochManager
from ioswarm.rewards.ledger import SettlementState
from ioswarm.rewards.pool import RewardPool
from ioswarm.rewards.settler import SettlerOptions
from ioswarm.sim.adversaries import KINDS, TappedHonestAgent, build_adversaries
from ioswarm.sim.anvil import AnvilProcess
from ioswarm.sim.demo import DEMO_CONTRACT_WEIGHTS, adversaries_report, rewards_report
from ioswarm.sim.l3workload import ContractWorkload
from ioswarm.sim.workload import Workload
from tests.helpers import eventually
from tests.integration.swarm import SECRET, RunningAgent, coordinator_config

pytestmark = pytest.mark.integration

TASK_TIMEOUT_MS = 1500
EPOCHS_WANTED = 3
VICTIM = "honest-l1"


def start_honest(port: int, agent_id: str, level: Level) -> tuple[RunningAgent, str]:
    """An honest in-process agent with the real validator of its level and its own wallet."""
    wallet = Account.create().address
    cfg = AgentConfig(
        coordinator=f"127.0.0.1:{port}",
        agent_id=agent_id,
        api_key=agent_token(SECRET, agent_id),
        wallet=wallet,
        level=level.name,
        tls=False,
        reconnect_max_sec=1.0,
    )
    agent = Agent(cfg, validator_for(level))
    return RunningAgent(agent, asyncio.create_task(agent.run())), wallet


def confirmed_epochs(epochs: EpochManager) -> int:
    return sum(1 for s in epochs.ledger.recent(10_000) if s.state is SettlementState.CONFIRMED)


async def test_adversaries_earn_nothing_while_honest_agents_are_paid_exactly(
    anvil: AnvilProcess,
) -> None:
    """Over three settled epochs, honest agents are paid exactly the ledger's pool model and
    every adversary kind ends with nothing claimable, a reason, and its refusals counted."""
    signer_key = anvil.private_keys[2]
    w3: AsyncWeb3[AsyncBaseProvider] = AsyncWeb3(AsyncHTTPProvider(anvil.url))
    pool = await RewardPool.deploy(w3, Account.from_key(signer_key))
    config = coordinator_config(
        anvil.url,
        taskLevel="L3",
        taskTimeoutMs=TASK_TIMEOUT_MS,
        rewardContract=pool.address,
        rewardSignerKey=signer_key,
        rewardRpcUrl=anvil.url,
        epochRewardIOTX="1",
        # Five-block epochs give each agent a dozen tasks or so: a canary at least every 8
        # tasks (25 %) lets every epoch ask each agent for one (minCanaries 1).
        canaryPct=25,
        reward={"epochBlocks": 5, "minTasksForReward": 2, "minCanaries": 1},
    )
    epochs = EpochManager.from_config(
        config, CollectorRegistry(), options=SettlerOptions(poll_interval_sec=0.2)
    )
    async with JsonRpcNode(anvil.url) as node, CoordinatorApp(config, epochs=epochs) as app:
        c = app.coordinator
        port = app.grpc_port
        honest: dict[str, tuple[RunningAgent, str]] = {
            agent_id: start_honest(port, agent_id, level)
            for agent_id, level in (
                (VICTIM, Level.L1),
                ("honest-l2", Level.L2),
                ("honest-l3", Level.L3),
            )
        }
        tapped = TappedHonestAgent("honest-tapped-l2", port, SECRET)
        await tapped.start()
        wallets = {agent_id: wallet for agent_id, (_, wallet) in honest.items()}
        wallets[tapped.agent_id] = tapped.wallet
        advs = build_adversaries(
            list(KINDS), port, SECRET, TASK_TIMEOUT_MS / 1000, tapped.tap, victim=VICTIM, seed=5
        )
        for adv in advs:
            await adv.start()
        # Every agent but the impersonator (which never asks for tasks) opens a task stream.
        streams = len(wallets) + len(advs) - 1
        await eventually(lambda: c.dispatcher.stream_count() == streams, 30, what="streams")

        transfers = Workload(
            node, anvil.private_keys[0], chain_id=anvil.chain_id, accounts=12, rate=10, seed=3
        )
        contracts = ContractWorkload(
            node,
            anvil.private_keys[1],
            anvil.chain_id,
            accounts=24,
            rate=4,
            weights=DEMO_CONTRACT_WEIGHTS,
            fresh_recipients=True,
            round_robin=True,
            seed=3,
        )
        await transfers.setup()
        await contracts.setup()
        load = asyncio.ensure_future(
            asyncio.gather(transfers.run(duration=45), contracts.run(duration=45))
        )
        try:
            start_epoch = confirmed_epochs(epochs)
            await eventually(
                lambda: confirmed_epochs(epochs) >= start_epoch + EPOCHS_WANTED,
                50,
                interval=0.5,
                what=f"{EPOCHS_WANTED} epochs settled on-chain",
            )
        finally:
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
        # What the coordinator says about every agent, read while all of them are registered.
        async with (
            aiohttp.ClientSession(f"http://127.0.0.1:{app.api_port}") as http,
            http.get("/swarm/agents") as resp,
        ):
            assert resp.status == 200
            rows = {row["agent_id"]: row for row in (await resp.json())["agents"]}
        for adv in advs:
            await adv.stop()
        await tapped.stop()
        for running, _ in honest.values():
            await running.stop()
        await eventually(lambda: not epochs.ledger.unsettled(), 20, what="ledger settled")

        all_wallets = {**wallets, **{a.agent_id: a.wallet for a in advs}}
        rewards = (await rewards_report(c, epochs, pool, all_wallets))["agents"]
        report = adversaries_report(c, advs, rewards)
        await w3.provider.disconnect()

    honest_paid = {agent_id: rewards[agent_id] for agent_id in wallets}
    summary: dict[str, Any] = {
        "honest": {
            agent_id: {
                "claimable_wei": r["claimable_wei"],
                "ledger_claimable_wei": r["ledger_claimable_wei"],
                "registered_wallet": rows[agent_id]["wallet"],
                "own_wallet": r["wallet"],
            }
            for agent_id, r in honest_paid.items()
        },
        "adversaries": report,
    }
    summary["canaries_made"] = dict(c.integrity.book.canaries_made)
    print(json.dumps(summary, indent=1, sort_keys=True))  # what each one got, when a check fails

    for agent_id, r in honest_paid.items():
        assert r["claimable_equals_ledger"], (agent_id, r)
    # Canaries never cost an honest agent: all right, and real traffic all matched or excluded.
    honest_rows = {agent_id: rows[agent_id] for agent_id in wallets}
    for agent_id, row in honest_rows.items():
        assert row["canaries"]["failed"] == 0, (agent_id, row["canaries"])
        assert row["incomplete"] == 0 and not row["refused"] and not row["throttled"], row
        # The open epoch may have just begun (too few tasks yet); no misconduct is flagged.
        misconduct = {"canary_failed", "incomplete", "refused", "throttled", "declines", "late"}
        assert not misconduct & set(row["earning"]["reasons"]), (agent_id, row["earning"])
        shadow = row["shadow"]
        assert shadow is not None and shadow["mismatched"] == 0, (agent_id, shadow)
    assert sum(row["canaries"]["matched"] for row in honest_rows.values()) > 0, honest_rows
    # Executed L3 canaries (truth traced by the node) went out; none was failed by an honest agent.
    assert summary["canaries_made"].get("executed", 0) > 0, summary["canaries_made"]
    # The adversaries did cheat, and were answered: what they sent and got back is counted.
    by_kind = {a["kind"]: a for a in report.values()}
    assert all(a["counters"]["sent"] for a in report.values()), report
    replayer = next(a for a in advs if a.kind == "replayer")
    assert replayer.stats.sent["copied"] > 0, replayer.counters
    assert replayer.stats.refused("replay_foreign") > 0, replayer.counters  # PERMISSION_DENIED

    # From here on, the coordinator's integrity defences decide.
    assert rows[VICTIM]["wallet"] == wallets[VICTIM], "the impersonator took the victim's wallet"
    for agent_id, r in honest_paid.items():
        assert int(r["claimable_wei"]) > 0, (agent_id, r)
    assert by_kind["late"]["shadow"] is None, by_kind["late"]  # late: never judged or credited
    adversary_rows = {a.kind: rows[a.agent_id] for a in advs}  # as /swarm/agents shows them
    for kind, row in adversary_rows.items():
        earning = row.get("earning") or {}
        assert earning.get("eligible") is False and earning.get("reasons"), (kind, earning)
    assert adversary_rows["decline"].get("throttled"), adversary_rows["decline"]
    for kind in ("impersonator", "replayer"):
        assert sum((adversary_rows[kind].get("refused") or {}).values()) > 0, adversary_rows[kind]
    impersonator = next(a for a in advs if a.kind == "impersonator")
    for call in ("register_two_ids", "submit_as_victim", "heartbeat_as_victim"):
        assert impersonator.stats.refused(call) > 0, (call, impersonator.counters)
    for call in ("replay_own", "replay_foreign", "replay_duplicate_id"):
        assert replayer.stats.refused(call) > 0, (call, replayer.counters)

    claimable = {agent_id: int(a["claimable_wei"]) for agent_id, a in report.items()}
    assert all(v == 0 for v in claimable.values()), claimable
