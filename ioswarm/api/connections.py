"""The HTTP API's door: a connection budget in front of aiohttp.

Every accepted connection goes through a :class:`ConnectionGovernor` before aiohttp sees it.
The policy (:class:`ioswarm.core.connbudget.ConnectionTable`) decides which idle connection
gives way when the listener is full and which connections have run out of time; this module
only applies its answers to transports, so an idle or slow-headers flood is bounded in
descriptors and never locks out a health check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from ioswarm.core.connbudget import ConnectionTable

log = logging.getLogger("ioswarm.api")

SWEEP_INTERVAL_SEC = 1.0


class ConnectionGovernor:
    """Admits, times and closes the HTTP API's connections (one per listener)."""

    def __init__(
        self,
        table: ConnectionTable,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self._clock = clock
        self._transports: dict[int, asyncio.Transport] = {}
        self.open = Gauge(
            "ioswarm_http_connections", "Open HTTP API connections.", registry=registry
        )
        self.closed = Counter(
            "ioswarm_http_connections_closed",
            "HTTP API connections closed by the budget, by reason "
            "(idle, request, probation, evicted, full, per_ip).",
            ["reason"],
            registry=registry,
        )

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` that puts this door before ``factory``."""
        return lambda: _Door(factory(), self)

    def opened(self, transport: asyncio.Transport) -> bool:
        """A new connection: admitted, established or on probation; True when on probation
        (its door then reports its request head)."""
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        key = id(transport)
        ans = self.table.admit(key, host, self._clock())
        self._transports[key] = transport
        self._apply(ans.evict, "evicted")
        self.open.set(len(self.table))
        return ans.probation

    def head(self, transport: asyncio.Transport, complete: bool) -> tuple[bool, bool]:
        """Bytes arrived on a probationer: (may stay, still on probation)."""
        key = id(transport)
        ans = self.table.head_received(key, complete, self._clock())
        self._apply(ans.evict, "evicted")
        if not ans.admitted:
            self.closed.labels(reason=ans.reason or "full").inc()
            self._abort(key)
            return False, False
        return True, ans.probation

    def _apply(self, victims: tuple[Any, ...], reason: str) -> None:
        for victim in victims:
            self.closed.labels(reason=reason).inc()
            self._abort(victim)

    def gone(self, transport: asyncio.Transport) -> None:
        key = id(transport)
        if self._transports.pop(key, None) is not None:
            self.table.release(key)
            self.open.set(len(self.table))

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Marks the connection busy while a request is served, so it is neither evicted nor
        timed out as idle meanwhile."""
        key = id(request.transport)
        self.table.request_started(key, self._clock())
        try:
            return await handler(request)
        finally:
            self.table.request_ended(key, self._clock())

    def sweep(self) -> int:
        """Close every connection past its time; return how many."""
        expired = self.table.expired(self._clock())
        for key, reason in expired:
            self.closed.labels(reason=reason).inc()
            self._abort(key)
        return len(expired)

    async def run(self) -> None:
        """The sweeping loop (supervised by the coordinator)."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SEC)
            self.sweep()

    def _abort(self, key: Any) -> None:
        transport = self._transports.pop(key, None)
        self.table.release(key)
        if transport is not None:
            transport.abort()
        self.open.set(len(self.table))


class _Door(asyncio.Protocol):
    """Forwards every event to aiohttp's protocol. While its connection is on probation it
    watches the bytes for the end of a request head and tells the governor, which may close
    it instead; the bytes of a closed connection never reach aiohttp."""

    __slots__ = ("_admitted", "_governor", "_inner", "_probation", "_tail", "_transport")

    def __init__(self, inner: asyncio.Protocol, governor: ConnectionGovernor) -> None:
        self._inner = inner
        self._governor = governor
        self._admitted = False
        self._probation = False
        self._tail = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a TCP listener's
        self._transport = transport
        self._probation = self._governor.opened(transport)
        self._admitted = True
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._governor.gone(self._transport)
        if self._admitted:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._probation and self._transport is not None:
            seen = self._tail + data
            complete = b"\r\n\r\n" in seen or b"\n\n" in seen
            self._tail = seen[-3:]
            stay, self._probation = self._governor.head(self._transport, complete)
            if not stay:
                return
        if self._admitted:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()
