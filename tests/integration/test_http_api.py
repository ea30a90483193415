"""The HTTP monitoring API over a real socket, against a swarm that has done real work."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from ioswarm.coordinator.app import CoordinatorApp
from ioswarm.core.models import Level
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.swarm import (
    drive_until_compared,
    metadata,
    register_request,
    running_coordinator,
    start_agent,
    stub,
)

pytestmark = pytest.mark.integration

GWEI = 10**9
RECIPIENT = "0x" + "77" * 20
MIN_COMPARED = 4
NO_AGENTS = {"L1": 0, "L2": 0, "L3": 0, "L4": 0}
STATS_KEYS = {
    "active_agents": int,
    "agents_by_level": dict,
    "tasks_dispatched": int,
    "tasks_received": int,
    "shadow_accuracy": float,
    "shadow_compared": int,
    "shadow_matched": int,
    "current_epoch": int,
    "epoch_tasks": int,
    "epoch_accuracy": float,
    "task_level": str,
    "uptime": str,
    "updated_at": int,
}


@pytest.fixture
async def swarm(anvil: AnvilProcess) -> AsyncIterator[CoordinatorApp]:
    """A coordinator with an L1 and an L2 agent that have validated and been compared."""
    async with running_coordinator(anvil.url) as app:
        agents = [
            start_agent(app.grpc_port, "http-l1", Level.L1),
            start_agent(app.grpc_port, "http-l2", Level.L2),
        ]
        try:
            await eventually(
                lambda: app.coordinator.dispatcher.stream_count() == 2, 20, what="2 streams"
            )
            await drive_until_compared(anvil, app, MIN_COMPARED)
            yield app
        finally:
            for a in agents:
                await a.stop()


@pytest.fixture
async def http(swarm: CoordinatorApp) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{swarm.api_port}") as session:
        yield session


async def get_json(http: aiohttp.ClientSession, path: str) -> Any:
    async with http.get(path) as resp:
        assert resp.status == 200, path
        assert resp.content_type == "application/json", path
        return await resp.json()


async def test_stats_has_exactly_the_reference_keys_and_consistent_values(
    swarm: CoordinatorApp, http: aiohttp.ClientSession
) -> None:
    """/api/stats is the reference document: exact keys, exact types, the coordinator's numbers,
    public CORS and no caching (a cached copy showed a polling browser frozen numbers);
    ``updated_at`` is a unix time and ``uptime`` the reference's duration text."""
    c = swarm.coordinator
    async with http.get("/api/stats") as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert resp.headers["Cache-Control"] == "no-store"
        stats = await resp.json()
    assert set(stats) == set(STATS_KEYS)
    for key, kind in STATS_KEYS.items():
        assert type(stats[key]) is kind, key

    shadow = c.shadow.totals()
    assert stats["active_agents"] == 2
    assert stats["agents_by_level"] == {**NO_AGENTS, "L1": 1, "L2": 1}
    assert stats["tasks_dispatched"] == c.dispatcher.dispatched_total
    assert stats["tasks_received"] == c.totals.results_accepted > 0
    assert stats["tasks_dispatched"] >= stats["tasks_received"]
    assert stats["shadow_compared"] == shadow.compared >= MIN_COMPARED
    assert stats["shadow_matched"] == shadow.matched
    assert stats["shadow_accuracy"] == round(shadow.accuracy * 100, 4)
    assert stats["shadow_accuracy"] == 100.0  # honest agents validating plain transfers
    assert stats["epoch_tasks"] <= stats["tasks_received"]
    assert 0 <= stats["epoch_accuracy"] <= 100
    assert stats["current_epoch"] == c.views.stats()["current_epoch"]
    assert stats["task_level"] == "L2"
    assert re.fullmatch(r"(\d+h)?(\d{1,2}m)?\d{1,2}s", stats["uptime"])
    assert abs(stats["updated_at"] - time.time()) < 3600


async def test_swarm_views_agree_with_the_coordinator(
    anvil: AnvilProcess, swarm: CoordinatorApp, http: aiohttp.ClientSession
) -> None:
    """/swarm/status, /swarm/agents, /swarm/leaderboard and /swarm/shadow report the same swarm
    and their shadow counts add up."""
    c = swarm.coordinator
    total = c.shadow.totals()

    status = await get_json(http, "/swarm/status")
    assert set(status) == set(c.views.status())
    assert status["agents_total"] == status["agents_live"] == 2
    assert status["tasks_received"] == c.totals.results_accepted
    assert status["regions"] == {"": 2}
    assert status["chain_id"] == anvil.chain_id
    assert status["agents"] == status["streams"] == 2
    assert status["shadow_mode"] is True
    assert status["task_level"] == "L2"
    assert status["tasks_dispatched"] == c.dispatcher.dispatched_total
    assert status["results_accepted"] == c.totals.results_accepted
    assert status["open_tasks"] == status["queue_depth"] == 0
    assert status["head_block"] >= 1

    agents = await get_json(http, "/swarm/agents")
    assert agents["count"] == 2
    rows = agents["agents"]
    assert [(r["agent_id"], r["level"], r["connected"]) for r in rows] == [
        ("http-l1", "L1", True),
        ("http-l2", "L2", True),
    ]
    assert all(r["shadow"] is None or isinstance(r["shadow"], dict) for r in rows)
    assert sum(r["shadow"]["compared"] for r in rows if r["shadow"]) == total.compared
    assert sum(r["results_accepted"] for r in rows) == c.totals.results_accepted

    leaderboard = await get_json(http, "/swarm/leaderboard")
    assert leaderboard["agents"] == 2
    board = leaderboard["entries"]
    assert [r["rank"] for r in board] == [1, 2]
    assert all(r["tasks"] == r["results"] for r in board)
    assert {r["agent_id"] for r in board} == {"http-l1", "http-l2"}
    assert [r["matched"] for r in board] == sorted((r["matched"] for r in board), reverse=True)
    matched = {r["agent_id"]: (r["shadow"] or {}).get("matched", 0) for r in rows}
    assert {r["agent_id"]: r["matched"] for r in board} == matched

    shadow = await get_json(http, "/swarm/shadow")
    assert shadow["enabled"] is True
    assert shadow["pending"] == 0
    assert shadow["levels"]
    assert set(shadow["levels"]) <= {"L1", "L2"}
    for counts in [*shadow["levels"].values(), shadow["total"]]:
        assert counts["compared"] == (
            counts["matched"] + counts["mismatched"] + sum(counts["excluded"].values())
        )
    assert sum(lv["compared"] for lv in shadow["levels"].values()) == total.compared
    assert shadow["total"]["compared"] == total.compared >= MIN_COMPARED


async def test_health_and_dashboard(swarm: CoordinatorApp, http: aiohttp.ClientSession) -> None:
    """/healthz answers the reference's text with the live agents; /readyz (and /healthz asked
    for JSON) is 200 with ok true while the loops run; / serves the HTML dashboard."""
    async with http.get("/healthz") as resp:
        assert resp.status == 200
        assert await resp.text() == "ok (2 agents)"
    for path, headers in (
        ("/readyz", {}),
        ("/livez", {}),
        ("/healthz?format=json", {}),
        ("/healthz", {"Accept": "application/json"}),
    ):
        async with http.get(path, headers=headers) as resp:
            assert resp.status == 200, path
            health = await resp.json()
        assert health["ok"] is True, path
        assert health["loops_running"] is True
        assert health["live_agents"] == 2
    async with http.get("/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert "<html" in (await resp.text()).lower()


async def scrape(http: aiohttp.ClientSession, url: str = "/metrics") -> dict[str, Metric]:
    """The Prometheus families at ``url``; the parser names counter families without _total."""
    async with http.get(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    return {family.name: family for family in text_string_to_metric_families(text)}


def values(family: Metric, sample: str, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in family.samples if s.name == sample}


async def test_metrics_follow_prometheus_conventions(
    swarm: CoordinatorApp, http: aiohttp.ClientSession
) -> None:
    """/metrics parses as Prometheus text with the dispatch counter, the latency histogram, the
    per-level agent gauge, shadow comparisons and node errors, matching the coordinator."""
    c = swarm.coordinator
    families = await scrape(http)

    dispatched = families["ioswarm_tasks_dispatched"]
    assert dispatched.type == "counter"
    per_level = values(dispatched, "ioswarm_tasks_dispatched_total", "level")
    assert set(per_level) <= {"L1", "L2"}
    assert sum(per_level.values()) == c.dispatcher.dispatched_total

    latency = families["ioswarm_task_latency_seconds"]
    assert latency.type == "histogram"
    counts = values(latency, "ioswarm_task_latency_seconds_count", "level")
    assert sum(counts.values()) == c.totals.results_accepted
    for level, count in counts.items():
        buckets = {
            s.labels["le"]: s.value
            for s in latency.samples
            if s.name == "ioswarm_task_latency_seconds_bucket" and s.labels["level"] == level
        }
        assert len(buckets) > 2
        assert buckets["+Inf"] == count
        ordered = sorted(buckets.items(), key=lambda kv: float(kv[0]))
        assert [v for _, v in ordered] == sorted(buckets.values())

    agents = families["ioswarm_agents"]
    assert agents.type == "gauge"
    assert values(agents, "ioswarm_agents", "level") == {**NO_AGENTS, "L1": 1, "L2": 1}

    shadow = families["ioswarm_shadow_comparisons"]
    assert shadow.type == "counter"
    compared = sum(s.value for s in shadow.samples if s.name == "ioswarm_shadow_comparisons_total")
    assert compared == c.shadow.totals().compared
    assert {s.labels["level"] for s in shadow.samples} <= {"L1", "L2"}

    node_errors = families["ioswarm_node_errors"]
    assert node_errors.type == "counter"
    assert all(s.value >= 0 for s in node_errors.samples)


async def test_two_coordinators_in_one_process_keep_separate_metrics(
    anvil: AnvilProcess,
) -> None:
    """Two coordinators on one node each export only their own agents and refusals."""
    async with (
        running_coordinator(anvil.url) as first,
        running_coordinator(anvil.url) as second,
        aiohttp.ClientSession() as http,
    ):
        assert first.registry is not second.registry
        async with stub(first.grpc_port) as s:
            await s.Register(register_request("first-l1", Level.L1), metadata=metadata("first-l1"))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await s.Heartbeat(pb.HeartbeatRequest(agent_id="x"), metadata=metadata("x", "bad"))
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        async with stub(second.grpc_port) as s:
            for agent_id, level in (("second-l2", Level.L2), ("second-l3", Level.L3)):
                await s.Register(register_request(agent_id, level), metadata=metadata(agent_id))

        scraped = {
            name: await scrape(http, f"http://127.0.0.1:{app.api_port}/metrics")
            for name, app in (("first", first), ("second", second))
        }
        first_agents = values(scraped["first"]["ioswarm_agents"], "ioswarm_agents", "level")
        assert first_agents == {**NO_AGENTS, "L1": 1}
        second_agents = values(scraped["second"]["ioswarm_agents"], "ioswarm_agents", "level")
        assert second_agents == {**NO_AGENTS, "L2": 1, "L3": 1}
        rejected_first = values(
            scraped["first"]["ioswarm_rpc_rejected"], "ioswarm_rpc_rejected_total", "code"
        )
        assert rejected_first == {"UNAUTHENTICATED": 1}
        assert not scraped["second"]["ioswarm_rpc_rejected"].samples
        for name, app in (("first", first), ("second", second)):
            async with http.get(f"http://127.0.0.1:{app.api_port}/api/stats") as resp:
                stats = await resp.json()
            assert stats["active_agents"] == {"first": 1, "second": 2}[name]
