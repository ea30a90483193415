"""Connection budgets: how many descriptors each listener may hold, and which HTTP connection
gives way when a listener is full.

The policy protects whoever is doing real work. A connection is *busy* while a request is being
served and *idle* otherwise (before its first request is complete too, so headers sent a byte at
a time stay idle). When a listener is full, its longest-idle connection is closed to admit the
new one; only when every connection is busy is the new one refused. An idle flood therefore
cannot lock out a health check, and a slow-headers client is cut after the idle timeout.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

from ioswarm.errors import ConfigError

# Below these, a listener cannot serve its purpose; refuse to start rather than limp.
MIN_GRPC_CONNECTIONS = 8
MIN_HTTP_CONNECTIONS = 8


@dataclass(frozen=True)
class FdBudget:
    """Connections each listener may hold, out of the process's open-file limit."""

    fd_limit: int
    grpc: int
    http: int


def split_fd_budget(fd_limit: int, reserve: int, grpc_want: int, http_want: int) -> FdBudget:
    """Share ``fd_limit - reserve`` descriptors: gRPC (the agents) first, up to two thirds, the
    HTTP API the rest, each no more than configured. Raises :class:`ConfigError` when the limit
    leaves either listener too little to serve."""
    available = fd_limit - reserve
    grpc = min(grpc_want, max(0, available * 2 // 3))
    http = min(http_want, max(0, available - grpc))
    if grpc < min(grpc_want, MIN_GRPC_CONNECTIONS) or http < min(http_want, MIN_HTTP_CONNECTIONS):
        raise ConfigError(
            "limits.fdReserve",
            f"the open-file limit {fd_limit} minus fdReserve {reserve} leaves {grpc} gRPC and "
            f"{http} HTTP connections; raise the hard limit (ulimit -Hn) or lower fdReserve",
        )
    return FdBudget(fd_limit, grpc, http)


@dataclass
class _Conn:
    peer: str
    since: float
    """When it last became idle (or opened), or started its current request."""
    requests: int = 0
    """Requests in progress (0 = idle)."""


@dataclass(frozen=True)
class Admission:
    """The answer to a new connection: admitted or not, and which connections to close."""

    admitted: bool
    evict: tuple[Hashable, ...] = ()
    reason: str = ""
    """Why the new one was refused: ``full`` or ``per_ip``."""


@dataclass
class ConnectionTable:
    """Open connections of one listener, by key, with their peer and idle/busy state.

    Time is passed in (monotonic seconds), so the policy is tested without a clock.
    """

    max_total: int
    max_per_peer: int
    idle_timeout: float
    request_timeout: float
    _conns: dict[Hashable, _Conn] = field(default_factory=dict)
    _idle: OrderedDict[Hashable, None] = field(default_factory=OrderedDict)
    _per_peer: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._conns)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._conns

    def peer_count(self, peer: str) -> int:
        return self._per_peer.get(peer, 0)

    def admit(self, key: Hashable, peer: str, now: float) -> Admission:
        """Take in a new connection, naming the idle ones to close to make room; refuse it
        when the room could only come from busy ones."""
        evict: list[Hashable] = []
        if self.peer_count(peer) >= self.max_per_peer:
            victim = self._oldest_idle(peer)
            if victim is None:
                return Admission(False, reason="per_ip")
            evict.append(victim)
        if len(self._conns) - len(evict) >= self.max_total:
            victim = self._oldest_idle(None, skip=evict)
            if victim is None:
                return Admission(False, reason="full")
            evict.append(victim)
        for victim in evict:
            self.release(victim)
        self._conns[key] = _Conn(peer, now)
        self._idle[key] = None
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        return Admission(True, tuple(evict))

    def request_started(self, key: Hashable, now: float) -> None:
        conn = self._conns.get(key)
        if conn is None:
            return
        if conn.requests == 0:
            self._idle.pop(key, None)
            conn.since = now
        conn.requests += 1

    def request_ended(self, key: Hashable, now: float) -> None:
        conn = self._conns.get(key)
        if conn is None or conn.requests == 0:
            return
        conn.requests -= 1
        if conn.requests == 0:
            conn.since = now
            self._idle[key] = None  # newest idle goes last

    def release(self, key: Hashable) -> None:
        """Forget a closed connection (unknown keys are ignored)."""
        conn = self._conns.pop(key, None)
        if conn is None:
            return
        self._idle.pop(key, None)
        left = self._per_peer[conn.peer] - 1
        if left:
            self._per_peer[conn.peer] = left
        else:
            del self._per_peer[conn.peer]

    def expired(self, now: float) -> list[tuple[Hashable, str]]:
        """Connections past their time, with why: ``idle`` or ``request``. The caller closes
        them and calls :meth:`release` when they are gone."""
        out: list[tuple[Hashable, str]] = []
        for key in self._idle:  # oldest idle first: stop at the first one still in time
            if now - self._conns[key].since < self.idle_timeout:
                break
            out.append((key, "idle"))
        for key, conn in self._conns.items():
            if conn.requests and now - conn.since >= self.request_timeout:
                out.append((key, "request"))
        return out

    def _oldest_idle(self, peer: str | None, skip: list[Hashable] | None = None) -> Hashable | None:
        for key in self._idle:
            if skip and key in skip:
                continue
            if peer is None or self._conns[key].peer == peer:
                return key
        return None
