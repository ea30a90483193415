"""JSON-RPC over HTTP: single calls, real batches, retries, and the one place errors are translated.

Every aiohttp or JSON failure becomes :class:`~ioswarm.errors.NodeUnreachable` (the node could
not be reached: refused, reset, timed out, gateway down) or :class:`~ioswarm.errors.NodeError`
(the node answered, but with an error object or something that is not JSON-RPC). A
"method not found" answer becomes :class:`~ioswarm.errors.MethodNotSupported` so adapters can
switch to a fallback method.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ioswarm.errors import MethodNotSupported, NodeError, NodeUnreachable

log = logging.getLogger("ioswarm.node")

JsonRpcCall = tuple[str, Sequence[Any]]

# EIP-1474: -32601 method not found, -32004 method not supported.
_METHOD_MISSING_CODES = frozenset({-32601, -32004})
# Clients word it differently: geth "the method x does not exist/is not available",
# Hardhat/Nethermind "Method x is not supported", others "unsupported method".
_METHOD_MISSING_TEXT = re.compile(
    r"method\b.*\b(not found|does not exist|not supported|not available|unsupported)"
    r"|unsupported method|unknown method",
    re.IGNORECASE,
)
# Statuses worth another attempt: the node (or a proxy in front of it) is overloaded or restarting.
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# A proxy answering these means the node behind it is not there.
_GATEWAY_STATUSES = frozenset({502, 503, 504})
_SNIPPET = 120


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a request is retried on connection errors, timeouts and 5xx."""

    attempts: int = 4
    """Total tries per request, including the first; 1 disables retries."""
    base_delay: float = 0.1
    """Delay before the second try in seconds; doubles each time."""
    max_delay: float = 2.0
    """Cap of a single delay in seconds."""
    jitter: float = 0.5
    """Fraction of each delay that is randomised, so many clients do not retry in lockstep."""


def backoff_delay(policy: RetryPolicy, retry: int, rand: float) -> float:
    """Seconds to wait before retry number ``retry`` (1-based), for ``rand`` in [0, 1)."""
    capped = min(policy.max_delay, policy.base_delay * 2.0 ** (retry - 1))
    return capped * (1.0 - policy.jitter + policy.jitter * rand)


def redact_url(url: str) -> str:
    """``scheme://host:port`` only: paths and user info often carry API keys."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def is_method_missing(code: int | None, message: str) -> bool:
    """Whether a JSON-RPC error says the method itself is not implemented by this node."""
    return code in _METHOD_MISSING_CODES or bool(_METHOD_MISSING_TEXT.search(message))


@dataclass
class CallStats:
    """Node requests and the time spent waiting for their answers."""

    requests: int = 0
    """JSON-RPC calls (each item of a batch counts)."""
    round_trips: int = 0
    """HTTP exchanges (a batch is one, each retry another)."""
    seconds: float = 0.0
    """Wall time from sending a request to having its answer, summed over round trips."""

    def add(self, requests: int, round_trips: int, seconds: float) -> None:
        self.requests += requests
        self.round_trips += round_trips
        self.seconds += seconds


_COUNTING: ContextVar[CallStats | None] = ContextVar("ioswarm_node_calls", default=None)


@contextmanager
def counting_calls(stats: CallStats) -> Iterator[CallStats]:
    """Count every node request made in this context (and in tasks it starts) in ``stats``,
    on top of the transport's own totals: how a loop learns what its work costs the node."""
    token = _COUNTING.set(stats)
    try:
        yield stats
    finally:
        _COUNTING.reset(token)


def _count(requests: int, round_trips: int, seconds: float, own: CallStats) -> None:
    own.add(requests, round_trips, seconds)
    extra = _COUNTING.get()
    if extra is not None:
        extra.add(requests, round_trips, seconds)


@dataclass(frozen=True, slots=True)
class RpcResult:
    """One answer of a batch: a value, or the error the node gave for that item alone."""

    method: str
    value: Any = None
    error: NodeError | None = None

    def unwrap(self) -> Any:
        """The value, or raise the item's error."""
        if self.error is not None:
            raise self.error
        return self.value


def _snippet(body: bytes) -> str:
    text = body[:_SNIPPET].decode("utf-8", "replace")
    return text + ("..." if len(body) > _SNIPPET else "")


def _error_from_object(method: str, err: Any) -> NodeError:
    """Turn a JSON-RPC error object into the matching NodeError subclass."""
    if not isinstance(err, dict):
        return NodeError(method, f"malformed error object: {str(err)[:_SNIPPET]}")
    raw_code = err.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    message = str(err.get("message", "")) or "error without a message"
    data = err.get("data")
    if isinstance(data, str) and data:
        # Revert data and similar details are what a caller needs to understand the error.
        message = f"{message} data={data[:200]}"
    if is_method_missing(code, message):
        return MethodNotSupported(method, message, code)
    return NodeError(method, message, code)


def _parse_item(method: str, item: Any) -> RpcResult:
    """Validate one JSON-RPC response object (result or error, never neither)."""
    if not isinstance(item, dict):
        return RpcResult(method, error=NodeError(method, "answer is not a JSON-RPC object"))
    if item.get("error") is not None:
        return RpcResult(method, error=_error_from_object(method, item["error"]))
    if "result" not in item:
        return RpcResult(method, error=NodeError(method, "answer has neither result nor error"))
    return RpcResult(method, value=item["result"])


class JsonRpcTransport:
    """JSON-RPC 2.0 over HTTP POST with one aiohttp session, retries and error translation.

    The session is created on first use (it must live on the running loop) and closed by
    :meth:`close` or ``async with``.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        max_batch: int = 100,
        log_reachability: bool = True,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.url = url
        self.safe_url = redact_url(url)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.max_batch = max_batch
        self._log_reachability = log_reachability
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._reachable = True
        self._batch_ok = True
        self._closed = False
        self.stats = CallStats()

    async def __aenter__(self) -> JsonRpcTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session; further calls raise NodeUnreachable."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def reachable(self) -> bool:
        """False from the first failed request (after its retries) until one succeeds."""
        return self._reachable

    async def call(
        self, method: str, params: Sequence[Any] = (), *, attempts: int | None = None
    ) -> Any:
        """Send one request and return its ``result``; raise NodeError/NodeUnreachable."""
        req_id = next(self._ids)
        payload = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": list(params)}
        body = await self._post(method, payload, attempts)
        answer = self._decode(method, body)
        if isinstance(answer, dict) and answer.get("error") is None and answer.get("id") != req_id:
            raise NodeError(
                method, f"answer id {answer.get('id')!r} does not match request {req_id}"
            )
        return _parse_item(method, answer).unwrap()

    async def batch(
        self, calls: Sequence[JsonRpcCall], *, attempts: int | None = None
    ) -> list[RpcResult]:
        """Send the calls as JSON-RPC batches (``max_batch`` per POST), answers in call order.

        Errors of single items come back inside their :class:`RpcResult`; a failure of the whole
        exchange (unreachable, not JSON) raises. The POSTs of one call go out together (up to
        the session's connection limit), so a large read costs about one round trip.
        """
        chunks = [calls[s : s + self.max_batch] for s in range(0, len(calls), self.max_batch)]
        if len(chunks) == 1:
            return await self._chunk(chunks[0], attempts)
        parts = await asyncio.gather(*(self._chunk(c, attempts) for c in chunks))
        return [r for part in parts for r in part]

    async def _chunk(self, calls: Sequence[JsonRpcCall], attempts: int | None) -> list[RpcResult]:
        if self._batch_ok:
            return await self._batch_chunk(calls, attempts)
        return await self._one_by_one(calls, attempts)

    async def _batch_chunk(
        self, calls: Sequence[JsonRpcCall], attempts: int | None
    ) -> list[RpcResult]:
        ids = [next(self._ids) for _ in calls]
        payload = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)}
            for i, (m, p) in zip(ids, calls, strict=True)
        ]
        label = _batch_label(calls)
        answer = self._decode(label, await self._post(label, payload, attempts))
        if isinstance(answer, dict) and answer.get("error") is not None:
            # Some nodes and proxies refuse batches outright; calls still work one by one.
            self._batch_ok = False
            log.warning(
                "node refused a JSON-RPC batch, sending calls one by one url=%s error=%r",
                self.safe_url,
                str(_error_from_object(label, answer["error"])),
            )
            return await self._one_by_one(calls, attempts)
        if not isinstance(answer, list):
            raise NodeError(label, "batch answer is not a JSON array")
        by_id: dict[int, Any] = {}
        for item in answer:
            if isinstance(item, dict) and isinstance(item.get("id"), int):
                by_id.setdefault(item["id"], item)
        out: list[RpcResult] = []
        for req_id, (method, _) in zip(ids, calls, strict=True):
            if req_id in by_id:
                out.append(_parse_item(method, by_id[req_id]))
            else:
                out.append(RpcResult(method, error=NodeError(method, "no answer in the batch")))
        return out

    async def _one_by_one(
        self, calls: Sequence[JsonRpcCall], attempts: int | None
    ) -> list[RpcResult]:
        sem = asyncio.Semaphore(8)

        async def one(method: str, params: Sequence[Any]) -> RpcResult:
            async with sem:
                try:
                    return RpcResult(
                        method, value=await self.call(method, params, attempts=attempts)
                    )
                except NodeUnreachable:
                    raise
                except NodeError as exc:
                    return RpcResult(method, error=exc)

        return list(await asyncio.gather(*(one(m, p) for m, p in calls)))

    def _decode(self, label: str, body: bytes) -> Any:
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NodeError(label, f"answer is not JSON: {_snippet(body)!r}") from exc

    def _session_now(self, label: str) -> aiohttp.ClientSession:
        if self._closed:
            raise NodeUnreachable(label, "transport is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=16),
                headers={"Content-Type": "application/json"},
            )
        return self._session

    async def _post(self, label: str, payload: Any, attempts: int | None) -> bytes:
        """POST with retries; return the body of the first answer that is worth decoding."""
        tries = max(1, attempts if attempts is not None else self.retry.attempts)
        data = json.dumps(payload, separators=(",", ":")).encode()
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        failure: NodeError = NodeUnreachable(label, "no attempt made")
        requests = len(payload) if isinstance(payload, list) else 1
        for attempt in range(1, tries + 1):
            session = self._session_now(label)
            started = time.perf_counter()
            try:
                async with session.post(self.url, data=data, timeout=timeout) as resp:
                    status = resp.status
                    body = await resp.read()
            except aiohttp.InvalidURL as exc:
                raise NodeError(label, f"invalid node URL {self.safe_url}") from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                _count(requests, 1, time.perf_counter() - started, self.stats)
                failure = NodeUnreachable(label, _describe(exc))
                failure.__cause__ = exc
            else:
                _count(requests, 1, time.perf_counter() - started, self.stats)
                if 200 <= status < 300 or not _retry_status(status, body):
                    self._mark_reachable()
                    if 200 <= status < 300 or _looks_like_jsonrpc(body):
                        return body
                    raise NodeError(label, f"HTTP {status}: {_snippet(body)!r}")
                kind = NodeUnreachable if status in _GATEWAY_STATUSES else NodeError
                failure = kind(label, f"HTTP {status}: {_snippet(body)!r}")
            if attempt < tries:
                delay = backoff_delay(self.retry, attempt, self._rng.random())
                log.debug(
                    "node request failed, retrying method=%s attempt=%d delay=%.2f error=%r",
                    label,
                    attempt,
                    delay,
                    failure.detail,
                )
                await self._sleep(delay)
        if isinstance(failure, NodeUnreachable):
            self._mark_unreachable(failure)
        raise failure

    def _mark_unreachable(self, failure: NodeError) -> None:
        if self._reachable:
            self._reachable = False
            if self._log_reachability:
                log.warning("node unreachable url=%s error=%r", self.safe_url, failure.detail)

    def _mark_reachable(self) -> None:
        if not self._reachable:
            self._reachable = True
            if self._log_reachability:
                log.info("node reachable again url=%s", self.safe_url)


def _batch_label(calls: Sequence[JsonRpcCall]) -> str:
    methods = sorted({m for m, _ in calls})
    return f"batch[{','.join(methods)}]"


def _looks_like_jsonrpc(body: bytes) -> bool:
    """A non-2xx answer whose body is JSON-RPC (some nodes send errors with HTTP 400/500)."""
    try:
        answer = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    items = answer if isinstance(answer, list) else [answer]
    return bool(items) and all(
        isinstance(i, dict) and ("error" in i or "result" in i) for i in items
    )


def _retry_status(status: int, body: bytes) -> bool:
    """Retry overload/gateway statuses, unless the body is a JSON-RPC answer (deterministic)."""
    return status in _RETRY_STATUSES and not _looks_like_jsonrpc(body)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, TimeoutError) and not text:
        return "timed out"
    return text or type(exc).__name__
