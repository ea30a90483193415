"""The grpc.aio servicer and server: gRPC in, AgentGateway calls, precise statuses out."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message

from ioswarm.coordinator.auth import (
    GRPC_MAX_METADATA_BYTES,
    AuthInterceptor,
    CredentialsRefused,
    authenticated_agent,
    log_refusal,
)
from ioswarm.coordinator.health import LoopHealth
from ioswarm.coordinator.service import Coordinator
from ioswarm.core.models import Level
from ioswarm.core.wirescan import WireFormatError, count_field
from ioswarm.errors import ConfigError, RequestRefused
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import MAX_WIRE_MESSAGE_BYTES
from ioswarm.state.broadcast import DiffsPruned, SubscriberDropped

log = logging.getLogger("ioswarm.grpc")

SERVICE = "ioswarm.IOSwarm"
# Requests other than SubmitResults carry a few ids and numbers; none needs more.
SMALL_REQUEST_BYTES = 64 * 1024
RESULTS_FIELD = pb.BatchResult.DESCRIPTOR.fields_by_name["results"].number
# Top-level fields a BatchResult may have besides its results (agent id, batch id, ...).
BATCH_OTHER_FIELDS = 8

M = TypeVar("M", bound=Message)
# grpc ships no type stubs, so its servicer context is untyped.
Ctx: TypeAlias = Any


@dataclass(frozen=True)
class _Refused:
    """Stands in for a request refused before it was decoded, so the handler (which checks
    the caller first) can answer with this status."""

    status: str
    message: str


MALFORMED = _Refused("INVALID_ARGUMENT", "malformed request body")


def _parser(
    cls: type[M], max_bytes: int, max_results: int | None = None
) -> Callable[[bytes], M | _Refused]:
    """The request deserializer: size first, then (for result batches) the number of results
    counted on the raw bytes, and only then the protobuf decode."""
    name = cls.DESCRIPTOR.name

    def parse(data: bytes) -> M | _Refused:
        if len(data) > max_bytes:
            return _Refused(
                "RESOURCE_EXHAUSTED", f"{name} of {len(data)} bytes; at most {max_bytes}"
            )
        if max_results is not None:
            try:
                found = count_field(data, RESULTS_FIELD, max_results + BATCH_OTHER_FIELDS)
            except WireFormatError:
                return MALFORMED
            if found.truncated or found.count > max_results:
                more = "more than " if found.truncated else ""
                return _Refused(
                    "INVALID_ARGUMENT",
                    f"{more}{found.count} results in one batch; at most {max_results} "
                    "(maxInflightPerAgent)",
                )
        try:
            msg: M = cls.FromString(data)
            return msg
        except (DecodeError, ValueError, RuntimeError):
            return MALFORMED

    return parse


class IOSwarmServicer:
    """Maps each RPC to the coordinator's gateway; every refusal is a gRPC status with a clear
    message."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._c = coordinator
        self._gateway = coordinator.gateway

    async def _refuse(self, context: Ctx, method: str, status: str, message: str) -> None:
        self._c.metrics.rpc_rejected.labels(method=method, code=status).inc()
        await context.abort(grpc.StatusCode[status], message)

    async def _check(self, request: object, context: Ctx, method: str) -> str:
        """Refuse calls without exactly one authenticated id, malformed bodies and bodies
        naming another agent (an empty ``agent_id`` too); return the authenticated agent id."""
        try:
            agent_id = authenticated_agent(context, self._c.config.master_secret)
        except CredentialsRefused as exc:
            # The interceptor refuses these first; this keeps a handler from ever serving an
            # id other than the one verified, should the two paths drift apart.
            log_refusal(method, exc)
            await self._refuse(context, method, "UNAUTHENTICATED", exc.reason)
            raise  # unreachable: abort raises
        if isinstance(request, _Refused):
            log.info(
                "request refused method=%s agent_id=%s status=%s reason=%s",
                method,
                agent_id,
                request.status,
                request.message,
            )
            await self._refuse(context, method, request.status, request.message)
        body_agent = getattr(request, "agent_id", None)
        if not isinstance(body_agent, str) or body_agent != agent_id:
            log.warning(
                "request refused method=%s agent_id=%s body_agent_id=%r status=PERMISSION_DENIED",
                method,
                agent_id,
                body_agent[:64] if isinstance(body_agent, str) else None,
            )
            self._gateway.note_refused(agent_id, "PERMISSION_DENIED")
            await self._refuse(
                context,
                method,
                "PERMISSION_DENIED",
                "agent_id in the request does not match the authenticated agent",
            )
        return agent_id

    async def Register(self, request: pb.RegisterRequest, context: Ctx) -> pb.RegisterResponse:  # noqa: N802
        agent_id = await self._check(request, context, "Register")
        try:
            return self._gateway.register(request)
        except RequestRefused as exc:
            log.info("register refused agent_id=%s status=%s reason=%s", agent_id, exc.status, exc)
            await self._refuse(context, "Register", exc.status, str(exc))
            raise  # unreachable: abort raises

    async def GetTasks(  # noqa: N802
        self, request: pb.GetTasksRequest, context: Ctx
    ) -> AsyncIterator[pb.TaskBatch]:
        agent_id = await self._check(request, context, "GetTasks")
        try:
            stream = self._gateway.open_stream(agent_id, request)
        except RequestRefused as exc:
            await self._refuse(context, "GetTasks", exc.status, str(exc))
            return
        log.info("task stream opened agent_id=%s level=%s", agent_id, stream.level.name)
        try:
            while True:
                batch = await stream.outbox.get()
                if batch is None:
                    break
                yield batch
        finally:
            self._gateway.close_stream(stream)
            log.info("task stream closed agent_id=%s batches=%d", agent_id, stream.batches_sent)

    async def SubmitResults(self, request: pb.BatchResult, context: Ctx) -> pb.SubmitResponse:  # noqa: N802
        agent_id = await self._check(request, context, "SubmitResults")
        try:
            return self._gateway.submit(agent_id, request)
        except RequestRefused as exc:
            log.info(
                "results refused agent_id=%s batch_id=%s status=%s reason=%s",
                agent_id,
                request.batch_id[:64],
                exc.status,
                exc,
            )
            await self._refuse(context, "SubmitResults", exc.status, str(exc))
            raise

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Ctx) -> pb.HeartbeatResponse:  # noqa: N802
        agent_id = await self._check(request, context, "Heartbeat")
        return self._gateway.heartbeat(agent_id, request)

    async def StreamStateDiffs(  # noqa: N802
        self, request: pb.StreamStateDiffsRequest, context: Ctx
    ) -> AsyncIterator[pb.StateDiff]:
        method = "StreamStateDiffs"
        agent_id = await self._check(request, context, method)
        sync = self._c.state_sync
        if sync is None:
            await self._refuse(
                context, method, "FAILED_PRECONDITION", "L4 state sync is not enabled here"
            )
            return
        rec = self._c.registry.get(agent_id)
        if rec is None or rec.level < Level.L4:
            await self._refuse(
                context, method, "FAILED_PRECONDITION", "register with capability L4 first"
            )
            return
        log.info("diff stream opened agent_id=%s from_height=%d", agent_id, request.from_height)
        sent = 0
        stream = sync.broadcaster.subscribe(request.from_height, sync.diffs)
        try:
            async for diff in stream:
                yield diff
                sent += 1
        except DiffsPruned as exc:
            await self._refuse(context, method, "OUT_OF_RANGE", str(exc))
        except SubscriberDropped as exc:
            log.warning("diff stream dropped agent_id=%s reason=%s", agent_id, exc)
            await self._refuse(context, method, "RESOURCE_EXHAUSTED", f"dropped: {exc}")
        finally:
            await stream.aclose()
            log.info("diff stream closed agent_id=%s diffs=%d", agent_id, sent)

    async def DownloadSnapshot(  # noqa: N802
        self, request: pb.DownloadSnapshotRequest, context: Ctx
    ) -> pb.DownloadSnapshotResponse:
        method = "DownloadSnapshot"
        await self._check(request, context, method)
        sync = self._c.state_sync
        if sync is None:
            await self._refuse(
                context, method, "FAILED_PRECONDITION", "L4 state sync is not enabled here"
            )
            raise AssertionError("unreachable")
        snap = await asyncio.to_thread(sync.latest_snapshot)
        if snap is None:
            await self._refuse(context, method, "NOT_FOUND", "no snapshot has been exported yet")
            raise AssertionError("unreachable")
        return pb.DownloadSnapshotResponse(
            url=sync.snapshot_url(snap.name), height=snap.height, sha256=snap.sha256, size=snap.size
        )


def _handlers(
    servicer: IOSwarmServicer, max_message_bytes: int, max_results: int
) -> grpc.GenericRpcHandler:
    def uu(
        fn: Callable[..., Awaitable[Any]],
        req: type[Message],
        resp: type[Message],
        parse: Callable[[bytes], Any] | None = None,
    ) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            fn,
            request_deserializer=parse or _parser(req, SMALL_REQUEST_BYTES),
            response_serializer=resp.SerializeToString,
        )

    def us(
        fn: Callable[..., Any], req: type[Message], resp: type[Message]
    ) -> grpc.RpcMethodHandler:
        return grpc.unary_stream_rpc_method_handler(
            fn,
            request_deserializer=_parser(req, SMALL_REQUEST_BYTES),
            response_serializer=resp.SerializeToString,
        )

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Register": uu(servicer.Register, pb.RegisterRequest, pb.RegisterResponse),
            "GetTasks": us(servicer.GetTasks, pb.GetTasksRequest, pb.TaskBatch),
            "SubmitResults": uu(
                servicer.SubmitResults,
                pb.BatchResult,
                pb.SubmitResponse,
                _parser(pb.BatchResult, max_message_bytes, max_results),
            ),
            "Heartbeat": uu(servicer.Heartbeat, pb.HeartbeatRequest, pb.HeartbeatResponse),
            "StreamStateDiffs": us(
                servicer.StreamStateDiffs, pb.StreamStateDiffsRequest, pb.StateDiff
            ),
            "DownloadSnapshot": uu(
                servicer.DownloadSnapshot, pb.DownloadSnapshotRequest, pb.DownloadSnapshotResponse
            ),
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
                    IOSwarmServicer(coordinator),
                    limits.max_message_bytes,
                    cfg.max_inflight_per_agent,
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
