"""Agent lifecycle against a real coordinator: directives, eviction, reconnect after a restart."""

from __future__ import annotations

import pytest

from ioswarm.core.models import Level
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import Directive
from ioswarm.sim.anvil import AnvilProcess, free_loopback_port
from tests.helpers import eventually
from tests.integration.swarm import (
    metadata,
    register_request,
    running_coordinator,
    start_agent,
    stub,
)

pytestmark = pytest.mark.integration


async def test_shutdown_directive_stops_the_agent(anvil_manual: AnvilProcess) -> None:
    """An agent told 'shutdown' in a heartbeat leaves cleanly and does not reconnect."""
    async with running_coordinator(anvil_manual.url, heartbeatIntervalSec=1) as app:
        a = start_agent(app.grpc_port, "directive-1", Level.L1)
        await eventually(lambda: app.coordinator.dispatcher.stream_count() == 1, 20)
        assert app.coordinator.gateway.request_shutdown("directive-1")
        await eventually(a.task.done, 20, what="agent exits")
        assert a.task.exception() is None
        assert a.agent.exit_reason == "coordinator directive"
        assert a.agent.stats.connects == 1


async def test_silent_agent_is_evicted(anvil_manual: AnvilProcess) -> None:
    """An agent that stops heartbeating is evicted after heartbeatMissLimit intervals."""
    async with running_coordinator(
        anvil_manual.url, heartbeatIntervalSec=1, heartbeatMissLimit=2
    ) as app:
        c = app.coordinator
        async with stub(app.grpc_port) as s:
            await s.Register(register_request("silent-1", Level.L1), metadata=metadata("silent-1"))
            assert len(c.registry) == 1
            await eventually(lambda: len(c.registry) == 0, 20, what="eviction")
            resp = await s.Heartbeat(
                pb.HeartbeatRequest(agent_id="silent-1"), metadata=metadata("silent-1")
            )
            assert (resp.alive, resp.directive) == (False, Directive.REREGISTER)


async def test_agent_reconnects_after_coordinator_restart(anvil_manual: AnvilProcess) -> None:
    """When the coordinator restarts on the same port, the agent registers again by itself."""
    port = free_loopback_port()
    async with running_coordinator(anvil_manual.url, grpcPort=port) as app:
        a = start_agent(port, "reconnect-1", Level.L2)
        await eventually(lambda: app.coordinator.dispatcher.stream_count() == 1, 20)
    async with running_coordinator(anvil_manual.url, grpcPort=port) as app2:
        await eventually(
            lambda: app2.coordinator.dispatcher.stream_count() == 1,
            30,
            what="agent back on the new coordinator",
        )
        assert a.agent.stats.connects == 2
        await a.stop()
