"""A whole coordinator process: node adapter, coordinator loops, gRPC server, HTTP API."""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import CollectorRegistry

from ioswarm.api.console import ConsoleFeed
from ioswarm.api.server import ApiServer, http_connection_table
from ioswarm.config import CoordinatorConfig
from ioswarm.coordinator.budgets import connection_budget, return_large_buffers
from ioswarm.coordinator.service import Coordinator
from ioswarm.coordinator.servicer import GrpcServer
from ioswarm.coordinator.supervisor import RestartPolicy
from ioswarm.node.adapter import JsonRpcNode, NodeClient
from ioswarm.node.execution import ExecutionReader
from ioswarm.rewards.epochs import EpochManager
from ioswarm.state.bootstrap import AnvilDumpSource
from ioswarm.state.sync import StateSync

log = logging.getLogger("ioswarm.app")


class CoordinatorApp:
    """Starts and stops every part of one coordinator in the right order."""

    def __init__(
        self,
        config: CoordinatorConfig,
        node: NodeClient | None = None,
        registry: CollectorRegistry | None = None,
        epochs: EpochManager | None = None,
        restart_policy: RestartPolicy | None = None,
    ) -> None:
        """``restart_policy`` (default :class:`RestartPolicy`) bounds crashed-loop restarts."""
        self.config = config
        self.registry = registry or CollectorRegistry()
        self._owns_node = node is None
        self.node: NodeClient = node or JsonRpcNode(
            config.node_rpc_url, proof_check_sample=config.proof_check_pct / 100
        )
        execution = (
            ExecutionReader(self.node.transport) if isinstance(self.node, JsonRpcNode) else None
        )
        self.epochs = (
            epochs if epochs is not None else EpochManager.from_config(config, self.registry)
        )
        self.state_sync = (
            StateSync(config, self.node, execution, AnvilDumpSource(execution.transport))
            if config.diff_store_enabled and execution is not None
            else None
        )
        self.coordinator = Coordinator(
            config,
            self.node,
            self.registry,
            execution=execution,
            epochs=self.epochs,
            state_sync=self.state_sync,
            restart_policy=restart_policy,
        )
        limits = config.limits
        self.budget = connection_budget(limits)
        return_large_buffers()
        self.grpc = GrpcServer(self.coordinator, max_connections=self.budget.grpc)
        settler = self.epochs.settler if self.epochs is not None else None
        console = ConsoleFeed(
            self.coordinator.views,
            self.registry,
            max_streams=limits.console_max_streams,
            claimable=settler.claimable if settler is not None else None,
        )
        self.api = ApiServer(
            self.coordinator.views,
            self.registry,
            config.swarm_api_host,
            config.swarm_api_port,
            snapshot_dir=self.state_sync.snapshot_dir if self.state_sync is not None else None,
            table=http_connection_table(
                self.budget.http,
                limits.http_max_connections_per_ip,
                idle_timeout=float(limits.http_idle_timeout_sec),
                request_timeout=float(limits.http_request_timeout_sec),
            ),
            console=console,
        )
        self.coordinator.loops.add("http-connections", self.api.governor.run)

        self.coordinator.loops.add("console", console.run)

    @property
    def grpc_port(self) -> int:
        return int(self.grpc.port)

    @property
    def api_port(self) -> int:
        return self.api.port

    async def start(self) -> None:
        await self.coordinator.start()
        await self.grpc.start()
        await self.api.start()
        if self.state_sync is not None:
            host = self.config.swarm_api_host
            if host in ("", "0.0.0.0", "::"):
                host = "127.0.0.1"  # set snapshotBaseUrl when agents run elsewhere
            self.state_sync.api_base_url = f"http://{host}:{self.api.port}/snapshots"

    async def stop(self) -> None:
        await self.grpc.stop(grace=0.5)
        await self.coordinator.stop()
        await self.api.stop()
        if self._owns_node:
            await self.node.close()

    async def __aenter__(self) -> CoordinatorApp:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM, then shut down in order; raises
        :class:`~ioswarm.coordinator.supervisor.LoopFailed` (after shutting down) when a loop
        crashed more often than the restart policy allows."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self._serve(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _serve(self, stop: asyncio.Event) -> None:
        async with self:
            log.info(
                "coordinator serving grpc_port=%d api_port=%d node=%s",
                self.grpc_port,
                self.api_port,
                self.config.node_rpc_url,
            )
            stopping = asyncio.create_task(stop.wait(), name="ioswarm-signal")
            failing = asyncio.create_task(self.coordinator.wait(), name="ioswarm-loops")
            try:
                done, _ = await asyncio.wait(
                    {stopping, failing}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopping.cancel()
                failing.cancel()
                await asyncio.gather(stopping, failing, return_exceptions=True)
            if failing in done and not failing.cancelled():
                # A loop was given up on: shut down in order, then raise LoopFailed so the
                # process exits non-zero instead of serving agents it no longer feeds.
                failing.result()
            log.info("coordinator shutting down")
