"""Every HTTP key the reference deployment serves, with its JSON type, on a coordinator whose
agents did real work and were paid for at least one settled epoch.

The tables are the reference's Go documents (its ``swarm_api.go`` maps and structs, and its
shadow stats struct, whose untagged fields are serialised under their Go names). A Go
``float64`` may encode as ``1`` or ``1.5``, so ``NUMBER`` accepts both; Go integers must be
JSON integers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from eth_account import Account
from prometheus_client import CollectorRegistry
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.providers.async_base import AsyncBaseProvider

from ioswarm.coordinator.app import CoordinatorApp
from ioswarm.core.models import Level
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.rewards.epochs import EpochManager
from ioswarm.rewards.ledger import SettlementState
from ioswarm.rewards.pool import RewardPool
from ioswarm.rewards.settler import SettlerOptions
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.swarm import (
    RunningAgent,
    coordinator_config,
    drive_until_compared,
    metadata,
    register_request,
    running_coordinator,
    start_agent,
    stub,
)

pytestmark = pytest.mark.integration

INT, NUMBER, STR, BOOL, OBJECT, ARRAY = "int", "number", "str", "bool", "object", "array"
AGENTS = {"ref-l1": Level.L1, "ref-l2": Level.L2}

STATS = {
    "active_agents": INT,
    "agents_by_level": OBJECT,
    "tasks_dispatched": INT,
    "tasks_received": INT,
    "shadow_accuracy": NUMBER,
    "shadow_compared": INT,
    "shadow_matched": INT,
    "current_epoch": INT,
    "epoch_tasks": INT,
    "epoch_accuracy": NUMBER,
    "task_level": STR,
    "uptime": STR,
    "updated_at": INT,
}
STATUS = {
    "uptime": STR,
    "agents_total": INT,
    "agents_live": INT,
    "tasks_dispatched": INT,
    "tasks_received": INT,
    "shadow_mode": BOOL,
    "shadow_accuracy": NUMBER,
    "task_level": STR,
    "regions": OBJECT,
    # Not served by the reference coordinator, read from it by the reference agent's delegate
    # chooser (openclaw/ioswarm.sh greps them out of the compact JSON).
    "agent_count": INT,
    "epoch_reward_iotx": NUMBER,
    "delegate_cut_pct": NUMBER,
}
AGENTS_DOC = {"count": INT, "agents": ARRAY}
AGENT_ROW = {
    "id": STR,
    "region": STR,
    "version": STR,
    "level": STR,
    "tasks_processed": INT,
    "tasks_pending": INT,
    "cpu_usage": NUMBER,
    "mem_usage": NUMBER,
    "last_heartbeat": STR,
    "uptime": STR,
}
LEADERBOARD = {"epoch": INT, "agents": INT, "entries": ARRAY}
LEADERBOARD_ENTRY = {
    "rank": INT,
    "agent_id": STR,
    "tasks": INT,
    "accuracy": NUMBER,
    "avg_latency_us": NUMBER,
    "wallet": STR,
}
EPOCH = {
    "epoch": INT,
    "agents": INT,
    "total_tasks": INT,
    "total_correct": INT,
    "accuracy": NUMBER,
    "elapsed": STR,
}
SHADOW = {
    name: INT
    for name in (
        "TotalCompared",
        "TotalMatched",
        "TotalMismatched",
        "FalsePositives",
        "FalseNegatives",
        "NonceRaceExcluded",
        "EVMGasMatches",
        "EVMGasMismatches",
        "EVMStateMatches",
        "EVMStateMismatches",
    )
}
REWARDS = {"agent_id": STR, "history": ARRAY, "totals": OBJECT}
REWARD_ENTRY = {
    "epoch": INT,
    "amount_iotx": NUMBER,
    "tasks": INT,
    "accuracy_pct": NUMBER,
    "rank": INT,
    "bonus_applied": BOOL,
}
REWARD_TOTALS = {"earned_iotx": NUMBER, "total_tasks": INT, "avg_accuracy": NUMBER}

JSON_ROUTES = (
    "/api/stats",
    "/swarm/status",
    "/swarm/agents",
    "/swarm/leaderboard",
    "/swarm/epoch",
    "/swarm/shadow",
    "/api/rewards?agent=ref-l2",
    "/api/rewards/ref-l2",
)
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
}
DURATION = re.compile(r"(\d+h)?(\d{1,2}m)?\d{1,2}s")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def kind(value: Any) -> str:
    """The JSON type of a decoded value, integers apart from other numbers."""
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return NUMBER
    if isinstance(value, str):
        return STR
    if isinstance(value, dict):
        return OBJECT
    if isinstance(value, list):
        return ARRAY
    return "null"


def assert_keys(doc: Mapping[str, Any], table: Mapping[str, str], where: str) -> None:
    """Every key of ``table`` is in ``doc`` with its type (an integer is also a NUMBER)."""
    for key, want in table.items():
        assert key in doc, f"{where}: missing {key}"
        got = kind(doc[key])
        ok = got == want or (want == NUMBER and got == INT)
        assert ok, f"{where}.{key}: {got}, the reference has {want}"


@dataclass
class SettledSwarm:
    app: CoordinatorApp
    epochs: EpochManager
    pool: RewardPool
    rpc_url: str

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.app.api_port}"


def confirmed_payout(epochs: EpochManager, agent_id: str) -> bool:
    """Whether an epoch that paid ``agent_id`` is confirmed on chain."""
    rows = epochs.rewards_view(agent_id)["history"]
    return any(r["status"] == SettlementState.CONFIRMED.value and r["weight"] != "0" for r in rows)


@pytest.fixture
async def settled_swarm(anvil: AnvilProcess) -> AsyncIterator[SettledSwarm]:
    """An L1 and an L2 agent that validated transfers and were paid for a confirmed epoch."""
    signer_key = anvil.private_keys[2]
    w3: AsyncWeb3[AsyncBaseProvider] = AsyncWeb3(AsyncHTTPProvider(anvil.url))
    pool = await RewardPool.deploy(w3, Account.from_key(signer_key))
    config = coordinator_config(
        anvil.url,
        rewardContract=pool.address,
        rewardSignerKey=signer_key,
        rewardRpcUrl=anvil.url,
        epochRewardIOTX="1",
        canaryPct=0,
        reward={"epochBlocks": 4, "minTasksForReward": 1},
    )
    epochs = EpochManager.from_config(
        config, CollectorRegistry(), options=SettlerOptions(poll_interval_sec=0.2)
    )
    try:
        async with CoordinatorApp(config, epochs=epochs) as app:
            agents: list[RunningAgent] = [
                start_agent(app.grpc_port, name, level) for name, level in AGENTS.items()
            ]
            try:
                await eventually(
                    lambda: app.coordinator.dispatcher.stream_count() == len(AGENTS),
                    20,
                    what="agent streams",
                )
                await drive_until_compared(anvil, app, 6)
                await eventually(
                    lambda: all(confirmed_payout(epochs, a) for a in AGENTS),
                    60,
                    interval=0.5,
                    what="a confirmed epoch paying both agents",
                )
                yield SettledSwarm(app, epochs, pool, anvil.url)
            finally:
                for a in agents:
                    await a.stop()
    finally:
        await w3.provider.disconnect()


async def get(http: aiohttp.ClientSession, path: str) -> Any:
    async with http.get(path) as resp:
        assert resp.status == 200, path
        assert resp.content_type == "application/json", path
        for header, value in CORS.items():
            assert resp.headers.get(header) == value, f"{path}: {header}"
        return await resp.json()


async def test_every_reference_key_has_the_reference_type(settled_swarm: SettledSwarm) -> None:
    """Each reference endpoint carries every reference key with the reference's JSON type,
    beside ioswarm's own fields, with values that agree with the coordinator."""
    c = settled_swarm.app.coordinator
    async with aiohttp.ClientSession(settled_swarm.api) as http:
        stats = await get(http, "/api/stats")
        assert_keys(stats, STATS, "/api/stats")
        assert stats["active_agents"] == len(AGENTS)
        assert DURATION.fullmatch(stats["uptime"])

        status = await get(http, "/swarm/status")
        assert_keys(status, STATUS, "/swarm/status")
        assert status["agents_live"] == status["agents_total"] == len(AGENTS)
        assert sum(status["regions"].values()) == len(AGENTS)
        assert "results_accepted" in status  # ioswarm's own fields stay
        async with http.get("/swarm/status") as resp:
            compact = await resp.text()
        assert re.search(r'"agent_count":2[,}]', compact)
        assert re.search(r'"epoch_reward_iotx":1(\.0)?[,}]', compact)

        agents = await get(http, "/swarm/agents")
        assert_keys(agents, AGENTS_DOC, "/swarm/agents")
        assert agents["count"] == len(agents["agents"]) == len(AGENTS)
        for row in agents["agents"]:
            assert_keys(row, AGENT_ROW, "/swarm/agents[]")
            assert row["id"] == row["agent_id"]
            assert RFC3339.fullmatch(row["last_heartbeat"])
            assert DURATION.fullmatch(row["uptime"])

        board = await get(http, "/swarm/leaderboard")
        assert_keys(board, LEADERBOARD, "/swarm/leaderboard")
        assert board["agents"] == len(board["entries"]) == len(AGENTS)
        for entry in board["entries"]:
            assert_keys(entry, LEADERBOARD_ENTRY, "/swarm/leaderboard.entries[]")
            assert 0 <= entry["accuracy"] <= 1
            assert entry["avg_latency_us"] > 0  # measured dispatch-to-result time
        assert [e["rank"] for e in board["entries"]] == [1, 2]

        epoch = await get(http, "/swarm/epoch")
        assert_keys(epoch, EPOCH, "/swarm/epoch")
        assert epoch["agents"] == len(epoch["agent_list"])
        assert epoch["total_tasks"] == sum(t["tasks"] for t in epoch["agent_list"])
        assert epoch["total_correct"] == sum(t["matched"] for t in epoch["agent_list"])
        assert DURATION.fullmatch(epoch["elapsed"])
        assert epoch["settlement"]["confirmed"]

        shadow = await get(http, "/swarm/shadow")
        assert_keys(shadow, SHADOW, "/swarm/shadow")
        total = c.shadow.totals()
        assert shadow["TotalCompared"] == shadow["total"]["compared"] >= total.compared > 0
        assert shadow["TotalMatched"] >= total.matched > 0

        for path in ("/api/rewards?agent=ref-l2", "/api/rewards/ref-l2"):
            rewards = await get(http, path)
            assert_keys(rewards, REWARDS, path)
            assert rewards["agent_id"] == "ref-l2"
            assert rewards["history"], path
            for entry in rewards["history"]:
                assert_keys(entry, REWARD_ENTRY, f"{path}.history[]")
            assert_keys(rewards["totals"], REWARD_TOTALS, f"{path}.totals")
            earned = sum(e["amount_iotx"] for e in rewards["history"])
            assert rewards["totals"]["earned_iotx"] == pytest.approx(earned)
            assert rewards["totals"]["total_tasks"] == sum(e["tasks"] for e in rewards["history"])

        async with http.get("/healthz") as resp:
            assert resp.status == 200
            assert await resp.text() == f"ok ({len(AGENTS)} agents)"


async def test_fresh_coordinator_preflights_and_health(anvil: AnvilProcess) -> None:
    """Without agents, ``/healthz`` is the reference's 503 ``no live agents`` while ``/readyz``
    (what probes ask) is 200; ``OPTIONS`` on every JSON route is 204 with the reference's
    Access-Control headers."""
    async with (
        running_coordinator(anvil.url) as app,
        aiohttp.ClientSession(f"http://127.0.0.1:{app.api_port}") as http,
    ):
        async with http.get("/healthz") as resp:
            assert resp.status == 503
            assert await resp.text() == "no live agents"
        async with http.get("/readyz") as resp:
            assert resp.status == 200
            ready = await resp.json()
        assert ready["ok"] is True and ready["live_agents"] == 0
        stats = await get(http, "/api/stats")
        assert stats["shadow_accuracy"] == stats["epoch_accuracy"] == 0  # nothing compared
        for path in (*JSON_ROUTES, "/healthz", "/readyz", "/api/console", "/api/events"):
            headers = {"Origin": "http://dashboard.example", "Access-Control-Request-Method": "GET"}
            async with http.options(path, headers=headers) as resp:
                assert resp.status == 204, path
                for header, value in CORS.items():
                    assert resp.headers.get(header) == value, f"{path}: {header}"


def strict_json(text: str) -> Any:
    """JSON as a browser's ``JSON.parse`` reads it: NaN and Infinity are errors."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


async def test_hostile_heartbeat_figures_stay_valid_json(anvil: AnvilProcess) -> None:
    """An agent reporting NaN and infinite CPU and memory use and the largest task counts
    leaves /swarm/agents valid JSON with those figures as 0, and counts as live."""
    async with (
        running_coordinator(anvil.url) as app,
        aiohttp.ClientSession(f"http://127.0.0.1:{app.api_port}") as http,
    ):
        async with stub(app.grpc_port) as s:
            md = metadata("liar")
            await s.Register(register_request("liar"), metadata=md)
            beat = pb.HeartbeatRequest(
                agent_id="liar",
                tasks_processed=2**32 - 1,
                tasks_pending=2**32 - 1,
                cpu_usage=math.nan,
                mem_usage=-math.inf,
            )
            assert (await s.Heartbeat(beat, metadata=md)).alive
        async with http.get("/swarm/agents") as resp:
            doc = strict_json(await resp.text())
        (row,) = doc["agents"]
        assert_keys(row, AGENT_ROW, "/swarm/agents[]")
        assert row["cpu_usage"] == row["mem_usage"] == 0.0
        assert row["tasks_processed"] == 2**32 - 1
        async with http.get("/healthz") as resp:
            assert (resp.status, await resp.text()) == (200, "ok (1 agents)")
