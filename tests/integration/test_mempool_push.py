"""Pending txs pushed over WebSocket (real anvil): seen by push, nothing lost across a dropped
connection (the poll fills the gap), and a node without WebSocket served by polling alone."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web

from ioswarm.core.models import Level
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.swarm import TcpProxy, running_coordinator, signed_transfer, start_agent

pytestmark = pytest.mark.integration


async def test_txs_are_pushed_and_a_dropped_push_loses_nothing(
    anvil_manual: AnvilProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """With the WebSocket up, new txs become tasks without a txpool listing; while it is cut,
    the poll lists the pool every round and finds what was sent; once it is back, pushes resume.
    Every one of the nine txs is dispatched exactly once."""
    caplog.set_level(logging.INFO)
    anvil = anvil_manual  # nothing is mined: every tx stays pending and listed
    key = anvil.private_keys[3]
    ws = TcpProxy(anvil.port)
    await ws.start()
    async with (
        JsonRpcNode(anvil.url) as node,
        running_coordinator(
            anvil.url, nodeWsUrl=f"ws://127.0.0.1:{ws.port}", mempoolGapFillMs=600_000
        ) as app,
    ):
        c = app.coordinator
        poller = c.poller
        made: list[bytes] = []
        make_tasks = poller._make_tasks

        async def counting(items: list[tuple[object, bytes]], header: object) -> int:
            made.extend(
                getattr(item, "tx", item).tx_hash  # type: ignore[attr-defined]
                for item, _ in items
            )
            return await make_tasks(items, header)  # type: ignore[arg-type]

        poller._make_tasks = counting  # type: ignore[assignment]
        agent = start_agent(app.grpc_port, "push-l1", Level.L1)
        await eventually(lambda: c.dispatcher.stream_count() == 1, 20, what="agent stream")
        await eventually(lambda: poller.push_live and poller.gap_filled, 20, what="push up")
        listings = poller.listings

        pushed = [
            await node.send_raw_transaction(signed_transfer(key, anvil.chain_id, n))
            for n in range(3)
        ]
        await eventually(lambda: all(map(poller.was_dispatched, pushed)), 20, what="pushed")
        assert poller.listings == listings  # no listing was needed to see them
        assert poller.seen["push"] >= 3

        await ws.cut()
        await eventually(lambda: not poller.push_live, 20, what="push down")
        polled_before = poller.seen["poll"]
        gap = [
            await node.send_raw_transaction(signed_transfer(key, anvil.chain_id, n))
            for n in range(3, 6)
        ]
        await eventually(lambda: all(map(poller.was_dispatched, gap)), 20, what="gap filled")
        assert poller.seen["poll"] >= polled_before + 3

        await ws.start()  # same port again
        await eventually(lambda: poller.push_live and poller.gap_filled, 20, what="push back")
        assert poller.push is not None and poller.push.connects == 2
        pushed_before = poller.seen["push"]
        after = [
            await node.send_raw_transaction(signed_transfer(key, anvil.chain_id, n))
            for n in range(6, 9)
        ]
        await eventually(lambda: all(map(poller.was_dispatched, after)), 20, what="pushed again")
        assert poller.seen["push"] >= pushed_before + 3
        assert sorted(made) == sorted([*pushed, *gap, *after])  # each once, none lost

        # Each result's stages are observed from the moment its tx was seen.
        def stage(name: str, sample: str) -> float:
            labels = {"stage": name, "level": "L1"}
            value = app.registry.get_sample_value(f"ioswarm_task_stage_seconds_{sample}", labels)
            return value or 0.0

        await eventually(lambda: stage("seen_to_result", "count") >= 9, 20, what="9 results")
        assert stage("seen_to_queued", "count") == stage("seen_to_result", "count")
        assert stage("seen_to_result", "sum") >= stage("dispatched_to_result", "sum")
        assert stage("seen_to_result", "sum") >= stage("seen_to_queued", "sum")
        push_up = app.registry.get_sample_value("ioswarm_mempool_push_up")
        assert push_up == 1.0
        requests = app.registry.get_sample_value("ioswarm_mempool_node_requests_total")
        assert requests is not None and requests > 0
        await agent.stop()
    await ws.cut()
    assert any("mempool push dropped" in r.getMessage() for r in caplog.records)


async def test_a_node_without_websocket_is_polled(
    anvil_manual: AnvilProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A URL that answers plain HTTP, not WebSocket, is reported once; the poll does the work."""
    caplog.set_level(logging.INFO)
    anvil = anvil_manual

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="no websocket here")

    plain = web.Application()
    plain.router.add_get("/", page)
    runner = web.AppRunner(plain)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with (
            JsonRpcNode(anvil.url) as node,
            running_coordinator(anvil.url, nodeWsUrl=f"ws://127.0.0.1:{port}") as app,
        ):
            c = app.coordinator
            agent = start_agent(app.grpc_port, "poll-l1", Level.L1)
            await eventually(lambda: c.dispatcher.stream_count() == 1, 20, what="agent stream")
            sent = await node.send_raw_transaction(
                signed_transfer(anvil.private_keys[4], anvil.chain_id)
            )
            await eventually(lambda: c.poller.was_dispatched(sent), 20, what="dispatched")
            assert c.poller.push is not None and not c.poller.push.supported
            assert c.poller.seen == {"push": 0, "poll": 1}
            await agent.stop()
    finally:
        await runner.cleanup()
    said = [
        r.getMessage() for r in caplog.records if "no pending-tx subscription" in r.getMessage()
    ]
    assert len(said) == 1 and "polling only" in said[0]
