"""gRPC authentication: every RPC carries exactly one ``x-ioswarm-agent-id`` and one
``x-ioswarm-token``, except the methods of the standard health service
(:mod:`ioswarm.coordinator.health`), which probes call without credentials.

The interceptor checks both before any handler runs; the servicer gets the id from
:func:`authenticated_agent`, which runs the same pure check (:mod:`ioswarm.core.credentials`)
over the same metadata, so the id a handler serves is the id whose token was verified. The
servicer then checks that id against the ``agent_id`` in the request body. Tokens never reach a
log line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from ioswarm.coordinator.health import HEALTH_METHOD_PREFIX
from ioswarm.core.credentials import MAX_AGENT_ID_LEN, CredentialsRefused, authenticate
from ioswarm.protocol import AGENT_ID_KEY, TOKEN_KEY

__all__ = [
    "AGENT_ID_KEY",
    "MAX_AGENT_ID_LEN",
    "TOKEN_KEY",
    "AuthInterceptor",
    "CredentialsRefused",
    "authenticated_agent",
    "log_refusal",
]

log = logging.getLogger("ioswarm.auth")

MAX_METADATA_BYTES = 8 * 1024
"""Call metadata an agent needs is two short headers; more is refused (and counted) here.
gRPC itself refuses metadata past ``GRPC_MAX_METADATA_BYTES`` before any handler runs."""
GRPC_MAX_METADATA_BYTES = 16 * 1024


def log_refusal(method: str, exc: CredentialsRefused) -> None:
    """One warning per refused call: the method, the ids it claimed and why (never a token)."""
    claimed = ",".join(exc.claimed) if exc.claimed else "-"
    log.warning("auth rejected method=%s agent_id=%s reason=%r", method, claimed, exc.reason)


def _abort_handler(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    # The body of a refused call is never parsed: an unauthenticated caller costs no more than
    # reading its bytes (a body of a million empty results would cost far more to decode).
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            streaming,
            request_deserializer=_unread,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=_unread,
        response_serializer=handler.response_serializer,
    )


def _unread(data: bytes) -> None:
    """The deserializer of a refused call: the bytes are dropped undecoded."""


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no stubs
    """Rejects any RPC without exactly one agent id and one token equal to
    HMAC-SHA256(masterSecret, agent id)."""

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
        method = handler_call_details.method.rsplit("/", 1)[-1]
        metadata = handler_call_details.invocation_metadata or ()
        size = sum(len(str(k)) + len(v) for k, v in metadata)
        if size > MAX_METADATA_BYTES:
            log.warning(
                "metadata refused method=%s bytes=%d limit=%d", method, size, MAX_METADATA_BYTES
            )
            if self._on_reject is not None:
                self._on_reject(method, "RESOURCE_EXHAUSTED")
            return _abort_handler(
                handler,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"call metadata of {size} bytes; at most {MAX_METADATA_BYTES}",
            )
        if handler_call_details.method.startswith(HEALTH_METHOD_PREFIX):
            return handler  # health probes carry no agent credentials; nothing else is exempt
        try:
            authenticate(self._secret, metadata)
        except CredentialsRefused as exc:
            log_refusal(method, exc)
            if self._on_reject is not None:
                self._on_reject(method, "UNAUTHENTICATED")
            return _abort_handler(handler, grpc.StatusCode.UNAUTHENTICATED, exc.reason)
        return handler


def authenticated_agent(context: grpc.aio.ServicerContext[Any, Any], master_secret: str) -> str:
    """The agent id of this call, by the same check the interceptor made.

    Raises :class:`CredentialsRefused` unless the metadata holds exactly one id and its valid
    token; the servicer refuses the call then, so a handler never runs without one id.
    """
    return authenticate(master_secret, context.invocation_metadata() or ())
