"""gRPC authentication: every RPC carries ``x-ioswarm-agent-id`` and ``x-ioswarm-token``.

The interceptor checks the HMAC token before any handler runs; the servicer then checks that
the authenticated id equals the ``agent_id`` in the request body (``authenticated_agent``).
Tokens never reach a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from ioswarm.core.tokens import verify_token

AGENT_ID_KEY = "x-ioswarm-agent-id"
TOKEN_KEY = "x-ioswarm-token"  # noqa: S105 - a metadata key name, not a secret
MAX_AGENT_ID_LEN = 64

log = logging.getLogger("ioswarm.auth")


def _metadata(details: grpc.HandlerCallDetails) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in details.invocation_metadata or ():
        if isinstance(value, str):
            out[key] = value
    return out


def _abort_handler(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            streaming,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no stubs
    """Rejects any RPC whose token is not HMAC-SHA256(masterSecret, agent id)."""

    def __init__(
        self, master_secret: str, on_reject: Callable[[str, str], None] | None = None
    ) -> None:
        self._secret = master_secret.encode()
        self._on_reject = on_reject

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        meta = _metadata(handler_call_details)
        agent_id = meta.get(AGENT_ID_KEY, "")
        token = meta.get(TOKEN_KEY, "")
        method = handler_call_details.method.rsplit("/", 1)[-1]
        problem = ""
        if not agent_id or len(agent_id) > MAX_AGENT_ID_LEN:
            problem = f"missing or invalid {AGENT_ID_KEY} metadata"
        elif not token:
            problem = f"missing {TOKEN_KEY} metadata"
        elif not verify_token(self._secret, agent_id, token):
            problem = "invalid token for agent"
        if not problem:
            return handler
        log.warning("auth rejected method=%s agent_id=%s reason=%r", method, agent_id[:64], problem)
        if self._on_reject is not None:
            self._on_reject(method, "UNAUTHENTICATED")
        return _abort_handler(handler, grpc.StatusCode.UNAUTHENTICATED, problem)


def authenticated_agent(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The agent id the interceptor verified for this call."""
    for key, value in context.invocation_metadata() or ():
        if key == AGENT_ID_KEY and isinstance(value, str):
            return value
    return ""
