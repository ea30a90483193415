"""The standard gRPC health service on the agent port: no credentials needed, SERVING while
the coordinator's loops run, NOT_SERVING when they do not; nothing else is exempt from auth."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ioswarm.proto import ioswarm_pb2_grpc as pb_grpc
from ioswarm.sim.anvil import AnvilProcess
from tests.integration.swarm import register_request, running_coordinator

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_needs_no_credentials_and_follows_the_loops(
    anvil_manual: AnvilProcess,
) -> None:
    """Check without metadata answers SERVING for the server and ioswarm.IOSwarm while the
    loops run, NOT_FOUND for an unknown service, NOT_SERVING once the loops stop."""
    async with (
        running_coordinator(anvil_manual.url) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ioswarm.IOSwarm"):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert resp.status == SERVING, service
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == SERVING

        await app.coordinator.loops.stop()
        resp = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert resp.status == NOT_SERVING
        assert (await asyncio.wait_for(watch.read(), 30)).status == NOT_SERVING  # the next change
        watch.cancel()


async def test_the_exemption_is_only_for_health(anvil_manual: AnvilProcess) -> None:
    """The agent service still refuses a call without credentials (UNAUTHENTICATED)."""
    async with (
        running_coordinator(anvil_manual.url) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await pb_grpc.IOSwarmStub(channel).Register(register_request("anon"), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
