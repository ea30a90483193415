"""The grpc.aio servicer and server: gRPC in, AgentGateway calls, precise statuses out.

Every method is registered with identity (bytes) serializers: a handler decodes its request in
the codec the caller speaks (protobuf, or the Go reference agent's JSON, told apart by the first
byte; :mod:`ioswarm.coordinator.wirecodec`) and answers every message of the call in that codec.
Every refused call is logged (method, agent id when known, codec, status, reason) and counted.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import grpc.aio

from ioswarm.coordinator.auth import (
    GRPC_MAX_METADATA_BYTES,
    AuthInterceptor,
    CredentialsRefused,
    authenticated_agent,
    log_refusal,
)
from ioswarm.coordinator.health import LoopHealth
from ioswarm.coordinator.service import Coordinator
from ioswarm.coordinator.wirecodec import Decoded, MethodWire, Refused, methods
from ioswarm.core.models import Level
from ioswarm.core.refjson import Codec
from ioswarm.errors import ConfigError, RequestRefused
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import MAX_WIRE_MESSAGE_BYTES
from ioswarm.state.broadcast import DiffsPruned, SubscriberDropped

log = logging.getLogger("ioswarm.grpc")

SERVICE = "ioswarm.IOSwarm"

# grpc ships no type stubs, so its servicer context is untyped.
Ctx: TypeAlias = Any

L4_ONLY_IN_PROTOBUF = (
    "state diffs and snapshots (L4) are not served in the reference JSON codec, only L1 and L2"
)


@dataclass(frozen=True)
class _Call:
    """Who made a call (authenticated) and the codec it came in."""

    method: str
    agent_id: str
    codec: Codec


class IOSwarmServicer:
    """Maps each RPC to the coordinator's gateway; every refusal is a gRPC status with a clear
    message, logged and counted."""

    def __init__(self, coordinator: Coordinator, wire: dict[str, MethodWire]) -> None:
        self._c = coordinator
        self._gateway = coordinator.gateway
        self._wire = wire

    async def _refuse(
        self,
        context: Ctx,
        method: str,
        status: str,
        message: str,
        agent_id: str = "",
        codec: Codec | None = None,
        batch_id: str | None = None,
    ) -> None:
        """Log, count and answer a refusal (``abort`` raises, so this never returns)."""
        log.log(
            logging.WARNING if status == "PERMISSION_DENIED" else logging.INFO,
            "call refused method=%s agent_id=%s codec=%s%s status=%s reason=%s",
            method,
            agent_id or "-",
            codec or "-",
            "" if batch_id is None else f" batch_id={batch_id[:64]!r}",
            status,
            message,
        )
        self._c.metrics.rpc_rejected.labels(method=method, code=status).inc()
        await context.abort(grpc.StatusCode[status], message)

    async def _refuse_call(self, context: Ctx, call: _Call, status: str, message: str) -> None:
        """:meth:`_refuse` for a call whose caller and codec are known."""
        await self._refuse(context, call.method, status, message, call.agent_id, call.codec)

    def _decode(self, method: str, raw: bytes) -> Decoded:
        """The request body decoded (or its refusal). Handlers drop ``raw`` right after: a
        refusal raises through their frames, and an exception's traceback keeps those frames
        (and a body of up to maxMessageBytes) alive until the cycle collector runs."""
        return self._wire[method].decode(raw)

    async def _check(self, decoded: Decoded, context: Ctx, method: str) -> tuple[_Call, Any]:
        """Refuse calls without exactly one authenticated id, malformed bodies, bodies naming
        another agent (an empty ``agent_id`` too) and calls in another codec than the one
        the agent registered in; return the call and its decoded request."""
        try:
            agent_id = authenticated_agent(context, self._c.config.master_secret)
        except CredentialsRefused as exc:
            # The interceptor refuses these first; this keeps a handler from ever serving an
            # id other than the one verified, should the two paths drift apart.
            log_refusal(method, exc)
            self._c.metrics.rpc_rejected.labels(method=method, code="UNAUTHENTICATED").inc()
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.reason)
            raise  # unreachable: abort raises
        call = _Call(method, agent_id, decoded.codec)
        request = decoded.message
        if isinstance(request, Refused):
            await self._refuse(
                context, method, request.status, request.message, agent_id, decoded.codec
            )
        body_agent = getattr(request, "agent_id", None)
        if not isinstance(body_agent, str) or body_agent != agent_id:
            self._gateway.note_refused(agent_id, "PERMISSION_DENIED")
            shown = body_agent[:64] if isinstance(body_agent, str) else None
            await self._refuse(
                context,
                method,
                "PERMISSION_DENIED",
                f"agent_id in the request does not match the authenticated agent (body {shown!r})",
                agent_id,
                decoded.codec,
            )
        if method != "Register":
            try:
                self._gateway.check_codec(agent_id, decoded.codec)
            except RequestRefused as exc:
                self._gateway.note_refused(agent_id, exc.status)
                await self._refuse_call(context, call, exc.status, str(exc))
        return call, request

    def _out(self, call: _Call, msg: Any) -> bytes:
        return self._wire[call.method].encode(call.codec, msg)

    async def Register(self, raw: bytes, context: Ctx) -> bytes:  # noqa: N802
        decoded = self._decode("Register", raw)
        del raw
        call, request = await self._check(decoded, context, "Register")
        try:
            return self._out(call, self._gateway.register(request, call.codec))
        except RequestRefused as exc:
            await self._refuse_call(context, call, exc.status, str(exc))
            raise  # unreachable: abort raises

    async def GetTasks(self, raw: bytes, context: Ctx) -> AsyncIterator[bytes]:  # noqa: N802
        decoded = self._decode("GetTasks", raw)
        del raw
        call, request = await self._check(decoded, context, "GetTasks")
        agent_id = call.agent_id
        try:
            stream = self._gateway.open_stream(agent_id, request)
        except RequestRefused as exc:
            await self._refuse_call(context, call, exc.status, str(exc))
            return
        log.info(
            "task stream opened agent_id=%s level=%s codec=%s",
            agent_id,
            stream.level.name,
            call.codec,
        )
        try:
            while True:
                batch = await stream.outbox.get()
                if batch is None:
                    break
                yield self._out(call, batch)
        finally:
            self._gateway.close_stream(stream)
            log.info("task stream closed agent_id=%s batches=%d", agent_id, stream.batches_sent)

    async def SubmitResults(self, raw: bytes, context: Ctx) -> bytes:  # noqa: N802
        decoded = self._decode("SubmitResults", raw)
        del raw
        call, request = await self._check(decoded, context, "SubmitResults")
        try:
            return self._out(call, self._gateway.submit(call.agent_id, request, call.codec))
        except RequestRefused as exc:
            await self._refuse(
                context,
                call.method,
                exc.status,
                str(exc),
                call.agent_id,
                call.codec,
                request.batch_id,
            )
            raise  # unreachable: abort raises

    async def Heartbeat(self, raw: bytes, context: Ctx) -> bytes:  # noqa: N802
        decoded = self._decode("Heartbeat", raw)
        del raw
        call, request = await self._check(decoded, context, "Heartbeat")
        return self._out(call, self._gateway.heartbeat(call.agent_id, request))

    async def StreamStateDiffs(self, raw: bytes, context: Ctx) -> AsyncIterator[bytes]:  # noqa: N802
        decoded = self._decode("StreamStateDiffs", raw)
        del raw
        call, request = await self._check(decoded, context, "StreamStateDiffs")
        method, agent_id = call.method, call.agent_id
        sync = self._c.state_sync
        if call.codec is Codec.JSON:
            await self._refuse_call(context, call, "FAILED_PRECONDITION", L4_ONLY_IN_PROTOBUF)
        if sync is None:
            await self._refuse_call(
                context, call, "FAILED_PRECONDITION", "L4 state sync is not enabled here"
            )
            return
        rec = self._c.registry.get(agent_id)
        if rec is None or rec.level < Level.L4:
            await self._refuse_call(
                context, call, "FAILED_PRECONDITION", "register with capability L4 first"
            )
            return
        log.info("diff stream opened agent_id=%s from_height=%d", agent_id, request.from_height)
        sent = 0
        stream = sync.broadcaster.subscribe(request.from_height, sync.diffs)
        try:
            async for diff in stream:
                yield self._out(call, diff)
                sent += 1
        except DiffsPruned as exc:
            await self._refuse_call(context, call, "OUT_OF_RANGE", str(exc))
        except SubscriberDropped as exc:
            log.warning("diff stream dropped agent_id=%s reason=%s", agent_id, exc)
            await self._refuse(
                context, method, "RESOURCE_EXHAUSTED", f"dropped: {exc}", agent_id, call.codec
            )
        finally:
            await stream.aclose()
            log.info("diff stream closed agent_id=%s diffs=%d", agent_id, sent)

    async def DownloadSnapshot(self, raw: bytes, context: Ctx) -> bytes:  # noqa: N802
        decoded = self._decode("DownloadSnapshot", raw)
        del raw
        call, _ = await self._check(decoded, context, "DownloadSnapshot")
        sync = self._c.state_sync
        if call.codec is Codec.JSON:
            await self._refuse_call(context, call, "FAILED_PRECONDITION", L4_ONLY_IN_PROTOBUF)
        if sync is None:
            await self._refuse_call(
                context, call, "FAILED_PRECONDITION", "L4 state sync is not enabled here"
            )
            raise AssertionError("unreachable")
        snap = await asyncio.to_thread(sync.latest_snapshot)
        if snap is None:
            await self._refuse_call(context, call, "NOT_FOUND", "no snapshot has been exported yet")
            raise AssertionError("unreachable")
        return self._out(
            call,
            pb.DownloadSnapshotResponse(
                url=sync.snapshot_url(snap.name),
                height=snap.height,
                sha256=snap.sha256,
                size=snap.size,
            ),
        )


def _handlers(servicer: IOSwarmServicer) -> grpc.GenericRpcHandler:
    """Every method with identity serializers: the handlers decode and encode per call."""

    def uu(fn: Callable[..., Awaitable[Any]]) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(fn)

    def us(fn: Callable[..., Any]) -> grpc.RpcMethodHandler:
        return grpc.unary_stream_rpc_method_handler(fn)

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Register": uu(servicer.Register),
            "GetTasks": us(servicer.GetTasks),
            "SubmitResults": uu(servicer.SubmitResults),
            "Heartbeat": uu(servicer.Heartbeat),
            "StreamStateDiffs": us(servicer.StreamStateDiffs),
            "DownloadSnapshot": uu(servicer.DownloadSnapshot),
        },
    )


def server_credentials(cert_file: str, key_file: str) -> grpc.ServerCredentials:
    """TLS credentials from PEM files; a missing or unreadable file names its config key."""
    try:
        cert = Path(cert_file).read_bytes()
    except OSError as exc:
        raise ConfigError("tlsCertFile", f"cannot read {cert_file}: {exc.strerror}") from exc
    try:
        key = Path(key_file).read_bytes()
    except OSError as exc:
        raise ConfigError("tlsKeyFile", f"cannot read {key_file}: {exc.strerror}") from exc
    try:
        # gRPC would only log garbage PEM in several lines and fail the bind; check it here.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            cert_file, key_file, password=lambda: b""
        )
    except ssl.SSLError as exc:
        raise ConfigError(
            "tlsCertFile",
            f"{cert_file} and tlsKeyFile {key_file} are not a PEM certificate and its key: "
            f"{exc.reason or exc}",
        ) from exc
    return grpc.ssl_server_credentials([(key, cert)])


class GrpcServer:
    """The agent-facing gRPC server of one coordinator."""

    def __init__(self, coordinator: Coordinator, max_connections: int | None = None) -> None:
        """``max_connections`` (default ``limits.grpcMaxConnections``) is the connection
        budget left by the open-file limit."""
        self._c = coordinator
        cfg = coordinator.config
        limits = cfg.limits
        self.max_connections = max_connections or limits.grpc_max_connections
        self.server = grpc.aio.server(
            interceptors=[
                AuthInterceptor(
                    cfg.master_secret,
                    on_reject=lambda m, code: coordinator.metrics.rpc_rejected.labels(
                        method=m, code=code
                    ).inc(),
                )
            ],
            options=[
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.max_send_message_length", MAX_WIRE_MESSAGE_BYTES),
                ("grpc.max_allowed_incoming_connections", self.max_connections),
                ("grpc.max_concurrent_streams", limits.grpc_max_streams_per_connection),
                ("grpc.max_metadata_size", GRPC_MAX_METADATA_BYTES),
                ("grpc.server_handshake_timeout_ms", limits.grpc_handshake_timeout_sec * 1000),
                ("grpc.max_connection_idle_ms", limits.grpc_idle_timeout_sec * 1000),
                # Without BDP probing a stream's receive window stays small, so a body refused
                # for its size is never buffered whole (with it, eight refused 6 MB bodies cost
                # the process ~15 MB; without, ~2 MB).
                ("grpc.http2.bdp_probe", 0),
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ],
        )
        self.server.add_generic_rpc_handlers(
            (
                _handlers(
                    IOSwarmServicer(
                        coordinator,
                        methods(limits.max_message_bytes, cfg.max_inflight_per_agent),
                    )
                ),
            )
        )
        self.health = LoopHealth(lambda: coordinator.loops.healthy)
        self.health.add_to(self.server)
        self._health_task: asyncio.Task[None] | None = None
        address = f"{cfg.grpc_host}:{cfg.grpc_port}"
        try:
            if cfg.tls_enabled:
                self.port = self.server.add_secure_port(
                    address, server_credentials(cfg.tls_cert_file, cfg.tls_key_file)
                )
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError("grpcPort", f"cannot bind {address}: {exc}") from exc
        if self.port == 0:
            raise ConfigError("grpcPort", f"cannot bind {address}")

    async def start(self) -> None:
        await self.server.start()
        self._health_task = asyncio.create_task(self.health.run(), name="ioswarm-grpc-health")
        log.info(
            "grpc listening port=%d tls=%s max_connections=%d",
            self.port,
            self._c.config.tls_enabled,
            self.max_connections,
        )

    async def stop(self, grace: float = 1.0) -> None:
        await self.health.enter_graceful_shutdown()
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
        await self.server.stop(grace)
