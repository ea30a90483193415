"""Results go back as soon as they are ready, inside the coordinator's SubmitResults limit: an
honest agent is never refused at the default limit, while an agent that floods is still
throttled."""

from __future__ import annotations

import asyncio
import time

import grpc
import grpc.aio
import pytest

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

FLOOD_CALLS = 400


async def test_a_flooding_agent_is_throttled_and_an_honest_one_is_not(
    anvil: AnvilProcess,
) -> None:
    """At the default limit, an agent firing SubmitResults calls back to back gets
    RESOURCE_EXHAUSTED past its bucket, while honest agents running the real runtime beside it
    have every result accepted and no call refused."""
    async with running_coordinator(anvil.url, canaryPct=0) as app:
        honest = [start_agent(app.grpc_port, f"honest-{i}", Level.L2) for i in range(2)]
        await eventually(lambda: app.coordinator.dispatcher.stream_count() == 2, 30)
        async with stub(app.grpc_port) as s:
            md = metadata("flooder")
            await s.Register(register_request("flooder"), metadata=md)
            started = time.monotonic()

            gate = asyncio.Semaphore(8)  # under the coordinator's streams per connection

            async def one() -> grpc.StatusCode:
                try:
                    async with gate:
                        await s.SubmitResults(
                            pb.BatchResult(agent_id="flooder", batch_id="f"), metadata=md
                        )
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

            codes = await asyncio.gather(*(one() for _ in range(FLOOD_CALLS)))
            elapsed = time.monotonic() - started
            ok = codes.count(grpc.StatusCode.OK)
            limit = (
                app.coordinator.config.submit_burst
                + app.coordinator.config.submit_rate_per_sec * elapsed
            )
            assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == FLOOD_CALLS - ok > 0
            assert ok <= limit + 1
            await drive_until_compared(anvil, app, 6)
        for a in honest:
            await a.stop()
            assert a.agent.stats.submit_refusals == 0
        assert sum(a.agent.stats.submitted for a in honest) >= 6
