"""The coordinator outlives its node: it keeps serving while the node is down and resumes."""

from __future__ import annotations

import logging

import pytest

from ioswarm.core.models import Level
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.sim.anvil import AnvilProcess
from ioswarm.sim.workload import Workload
from tests.helpers import eventually
from tests.integration.swarm import TcpProxy, running_coordinator, start_agent

pytestmark = pytest.mark.integration


async def test_node_outage_is_survived(
    anvil: AnvilProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """While the node is unreachable the coordinator logs it, counts node errors and keeps its
    servers up; when the node returns, polling and shadow comparison resume where they left."""
    caplog.set_level(logging.INFO)
    proxy = TcpProxy(anvil.port)
    await proxy.start()
    async with (
        JsonRpcNode(anvil.url) as node,
        running_coordinator(f"http://127.0.0.1:{proxy.port}") as app,
    ):
        c = app.coordinator
        wl = Workload(node, anvil.private_keys[0], chain_id=anvil.chain_id, accounts=3, seed=3)
        await wl.setup()
        agent = start_agent(app.grpc_port, "outage-l2", Level.L2)
        await eventually(lambda: c.dispatcher.stream_count() == 1, 20)
        first = [await wl.send_transfer() for _ in range(3)]
        await wl.wait_included(first)
        await eventually(lambda: c.shadow.totals().compared >= 3, 20, what="verdicts before")

        await proxy.cut()
        head_before = c.head.number
        await eventually(
            lambda: any("node unreachable" in r.getMessage() for r in caplog.records),
            20,
            what="unreachable log line",
        )
        await eventually(
            lambda: (
                sum(
                    s.value
                    for m in app.registry.collect()
                    if m.name == "ioswarm_node_errors"
                    for s in m.samples
                    if s.name.endswith("_total")
                )
                >= 1
            ),
            20,
            what="node errors counted",
        )
        during = [await wl.send_transfer() for _ in range(3)]  # straight to anvil, not via proxy
        await wl.wait_included(during)
        assert c.head.number == head_before  # the coordinator cannot see the chain move
        ok, _ = c.views.health()
        assert ok

        await proxy.start()  # same port again
        after = [await wl.send_transfer() for _ in range(3)]
        await wl.wait_included(after)
        await eventually(lambda: c.head.number > head_before + 1, 20, what="head resumes")
        await eventually(lambda: c.shadow.totals().compared >= 6, 20, what="verdicts after")
        assert c.shadow.totals().mismatched == 0
        await agent.stop()
    await proxy.cut()
