"""The standard gRPC health service (``grpc.health.v1.Health``) on the agent port.

Load balancers, Kubernetes gRPC probes and ``grpc_health_probe`` ask it without agent
credentials (:class:`~ioswarm.coordinator.auth.AuthInterceptor` lets exactly its methods
through). Both the server as a whole (service ``""``) and ``ioswarm.IOSwarm`` are SERVING
while every coordinator loop runs, NOT_SERVING otherwise, and NOT_SERVING for good once the
server is shutting down. ``Check`` reads the loops at the moment it is asked; ``Watch``
subscribers hear of changes from :meth:`LoopHealth.run`, a small poller the gRPC server owns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

HEALTH_SERVICE = "grpc.health.v1.Health"
HEALTH_METHOD_PREFIX = f"/{HEALTH_SERVICE}/"
IOSWARM_SERVICE = "ioswarm.IOSwarm"
WATCH_POLL_SEC = 1.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class LoopHealth(health.aio.HealthServicer):  # type: ignore[misc]  # grpc_health ships no stubs
    """Health answers computed from ``healthy()`` (the coordinator's loop supervisor)."""

    def __init__(self, healthy: Callable[[], bool]) -> None:
        super().__init__()
        self._healthy = healthy

    async def refresh(self) -> None:
        """Set both services from ``healthy()`` now (ignored once shutting down)."""
        status = SERVING if self._healthy() else NOT_SERVING
        for service in ("", IOSWARM_SERVICE):
            await self.set(service, status)

    async def Check(  # noqa: N802 - gRPC method name
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        await self.refresh()
        return await super().Check(request, context)

    async def run(self, interval: float = WATCH_POLL_SEC) -> None:
        """Keep Watch subscribers current until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(interval)

    def add_to(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self, server)
