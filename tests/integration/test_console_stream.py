"""The console's server-sent events over a real socket: pushed snapshots, a cap on streams,
no caching, and streams that end when the coordinator stops."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from ioswarm.coordinator.app import CoordinatorApp
from ioswarm.sim.anvil import AnvilProcess
from tests.integration.swarm import coordinator_config

pytestmark = pytest.mark.integration

MAX_STREAMS = 2


async def next_event(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """The next ``data:`` event of an event stream, decoded."""
    while True:
        line = await asyncio.wait_for(resp.content.readline(), 30)
        assert line, "stream ended"
        if line.startswith(b"data: "):
            return dict(json.loads(line[6:]))


async def test_events_push_snapshots_cap_streams_and_end_at_shutdown(anvil: AnvilProcess) -> None:
    """GET /api/events pushes a snapshot at once and again without a new request (accuracy
    null with nothing compared, never 100), uncached; past consoleMaxStreams it answers 503
    and counts the refusal; stopping the coordinator ends every open stream."""
    config = coordinator_config(anvil.url, limits={"consoleMaxStreams": MAX_STREAMS})
    app = CoordinatorApp(config)
    await app.start()
    stopped = False
    try:
        base = f"http://127.0.0.1:{app.api_port}"
        async with aiohttp.ClientSession(base) as http:
            streams = [await http.get("/api/events") for _ in range(MAX_STREAMS)]
            for resp in streams:
                assert resp.status == 200
                assert resp.content_type == "text/event-stream"
                assert resp.headers["Cache-Control"] == "no-store"
            first = await next_event(streams[0])
            assert first["status"]["chain_id"] == anvil.chain_id
            assert first["agents"] == []
            assert first["shadow"]["total"]["compared"] == 0
            assert first["shadow"]["total"]["accuracy_pct"] is None
            assert set(first["trends"]) >= {"t", "results_per_sec", "latency_ms", "accuracy_pct"}
            assert first["health"]["loops"]["console"]["state"] == "running"
            pushed = await next_event(streams[0])
            assert pushed["seq"] > first["seq"]
            assert (await next_event(streams[1]))["seq"] >= first["seq"]

            async with http.get("/api/events") as refused:
                assert refused.status == 503
                assert "full" in (await refused.json())["error"]
            refusals = app.registry.get_sample_value("ioswarm_console_streams_refused_total")
            assert refusals == 1
            assert app.registry.get_sample_value("ioswarm_console_streams") == MAX_STREAMS

            async with http.get("/api/console") as resp:
                assert resp.status == 200
                assert resp.headers["Cache-Control"] == "no-store"
                assert (await resp.json())["shadow"]["total"]["accuracy_pct"] is None
            async with http.get("/") as resp:
                assert resp.content_type == "text/html"
                assert 'new EventSource("/api/events")' in await resp.text()

            await app.stop()
            stopped = True
            for resp in streams:
                rest = await asyncio.wait_for(resp.content.read(), 30)
                assert resp.content.at_eof()
                assert b"data: " not in rest or rest.endswith(b"\n\n")
                resp.release()
    finally:
        if not stopped:
            await app.stop()
