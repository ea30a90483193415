"""Connection budgets: how many descriptors each listener may hold, and which HTTP connection
gives way when a listener is full.

The policy protects whoever is doing real work. A connection is *busy* while a request is being
served and *idle* otherwise (before its first request is complete too, so headers sent a byte at
a time stay idle). While the listener has room, a new connection is *established* at once. When
it is full, a new connection waits on *probation*: it evicts nobody until it has sent a complete
request head, and only then takes the place of the longest-idle established connection (of its
own address when that address is at its cap). A probationer that stalls is closed after the
probation timeout, or sooner when newer ones need its place (stalled ones first).

So a flood of idle or slow-headers connections, however fast it reconnects, only ever churns
probation and the idle slots; a client that sends a whole request, a health check say, always
gets in while any connection is idle. Only when every established connection is busy is it
refused.
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
    """When it opened, last became idle, or started its current request."""
    requests: int = 0
    """Requests in progress (0 = idle)."""


@dataclass
class _Probationer:
    peer: str
    since: float
    stalled: bool = False
    """It has sent bytes that were not yet a whole request head."""


@dataclass(frozen=True)
class Admission:
    """The answer to a connection event: whether it may stay, which others to close, and why
    it may not (``full``: every established connection is busy; ``per_ip``: every one of its
    address is)."""

    admitted: bool
    evict: tuple[Hashable, ...] = ()
    reason: str = ""
    probation: bool = False
    """The connection waits on probation (it should report its request head)."""


@dataclass
class ConnectionTable:
    """Open connections of one listener, by key, with their peer and state.

    At most ``max_total`` are established (``max_per_peer`` per address) and at most
    ``max_probation`` on probation, so the listener never holds more than their sum. Time is
    passed in (monotonic seconds), so the policy is tested without a clock.
    """

    max_total: int
    max_per_peer: int
    max_probation: int
    idle_timeout: float
    request_timeout: float
    probation_timeout: float = 2.0
    _conns: dict[Hashable, _Conn] = field(default_factory=dict)
    _idle: OrderedDict[Hashable, None] = field(default_factory=OrderedDict)
    _per_peer: dict[str, int] = field(default_factory=dict)
    _probation: OrderedDict[Hashable, _Probationer] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._conns) + len(self._probation)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._conns or key in self._probation

    @property
    def established(self) -> int:
        return len(self._conns)

    @property
    def on_probation(self) -> int:
        return len(self._probation)

    def peer_count(self, peer: str) -> int:
        return self._per_peer.get(peer, 0)

    def admit(self, key: Hashable, peer: str, now: float) -> Admission:
        """A new connection: established when there is room, else on probation (closing the
        probationer that stalled or waited longest when probation is full)."""
        if len(self._conns) < self.max_total and self.peer_count(peer) < self.max_per_peer:
            self._establish(key, peer, now)
            return Admission(True)
        evict: tuple[Hashable, ...] = ()
        if len(self._probation) >= self.max_probation:
            victim = next((k for k, p in self._probation.items() if p.stalled), None)
            if victim is None:
                victim = next(iter(self._probation))
            del self._probation[victim]
            evict = (victim,)
        self._probation[key] = _Probationer(peer, now)
        return Admission(True, evict, probation=True)

    def head_received(self, key: Hashable, complete: bool, now: float) -> Admission:
        """Bytes arrived on ``key``; ``complete`` says a whole request head has. A probationer
        with a complete head is established in the place of the longest-idle connection (of
        its own address when that one is at its cap), or refused when all of those are busy;
        one without is marked stalled. Established connections are always admitted."""
        prob = self._probation.get(key)
        if prob is None:
            return Admission(key in self._conns)
        if not complete:
            prob.stalled = True
            return Admission(True, probation=True)
        evict: list[Hashable] = []
        if self.peer_count(prob.peer) >= self.max_per_peer:
            victim = self._oldest_idle(prob.peer)
            if victim is None:
                del self._probation[key]
                return Admission(False, reason="per_ip")
            evict.append(victim)
        if len(self._conns) - len(evict) >= self.max_total:
            victim = self._oldest_idle(None, skip=evict)
            if victim is None:
                del self._probation[key]
                return Admission(False, reason="full")
            evict.append(victim)
        for victim in evict:
            self.release(victim)
        del self._probation[key]
        self._establish(key, prob.peer, now)
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
        if self._probation.pop(key, None) is not None:
            return
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
        """Connections past their time, with why: ``idle``, ``request`` or ``probation``. The
        caller closes them and calls :meth:`release` when they are gone."""
        out: list[tuple[Hashable, str]] = []
        for key in self._idle:  # oldest idle first: stop at the first one still in time
            if now - self._conns[key].since < self.idle_timeout:
                break
            out.append((key, "idle"))
        for key, conn in self._conns.items():
            if conn.requests and now - conn.since >= self.request_timeout:
                out.append((key, "request"))
        for key, prob in self._probation.items():
            if now - prob.since < self.probation_timeout:
                break
            out.append((key, "probation"))
        return out

    def _establish(self, key: Hashable, peer: str, now: float) -> None:
        self._conns[key] = _Conn(peer, now)
        self._idle[key] = None
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1

    def _oldest_idle(self, peer: str | None, skip: list[Hashable] | None = None) -> Hashable | None:
        for key in self._idle:
            if skip and key in skip:
                continue
            if peer is None or self._conns[key].peer == peer:
                return key
        return None
