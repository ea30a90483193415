"""Connection budgets: the fd split and which HTTP connection gives way."""

from __future__ import annotations

import pytest

from ioswarm.core.connbudget import ConnectionTable, split_fd_budget
from ioswarm.errors import ConfigError


def table(total: int = 4, per_peer: int = 3) -> ConnectionTable:
    return ConnectionTable(total, per_peer, idle_timeout=10.0, request_timeout=100.0)


def test_fd_budget_fits_under_the_limit_and_favours_agents() -> None:
    """Both listeners together stay under the limit minus the reserve; gRPC gets its share first."""
    budget = split_fd_budget(1024, 128, grpc_want=1024, http_want=256)
    assert budget.grpc + budget.http <= 1024 - 128
    assert (budget.grpc, budget.http) == (597, 256)


def test_fd_budget_keeps_configured_values_when_they_fit() -> None:
    """A generous limit leaves the configured budgets untouched."""
    budget = split_fd_budget(20000, 128, grpc_want=1024, http_want=256)
    assert (budget.grpc, budget.http) == (1024, 256)


def test_fd_budget_refuses_a_limit_that_leaves_nothing() -> None:
    """A limit below the reserve is a config error naming fdReserve and the limit."""
    with pytest.raises(ConfigError) as info:
        split_fd_budget(100, 128, grpc_want=1024, http_want=256)
    assert info.value.key == "limits.fdReserve" and "100" in str(info.value)


def test_full_table_closes_the_longest_idle_connection() -> None:
    """When full, the connection idle longest makes room for the new one."""
    t = table(total=3)
    for i in range(3):
        assert t.admit(i, f"10.0.0.{i}", now=float(i)).admitted
    t.request_started(0, now=5.0)
    t.request_ended(0, now=6.0)  # connection 0 is now the most recently idle
    ans = t.admit(9, "10.0.0.9", now=7.0)
    assert ans.admitted and ans.evict == (1,)
    assert 1 not in t and len(t) == 3


def test_busy_connections_are_never_evicted() -> None:
    """When every connection is serving a request, the newcomer is refused instead."""
    t = table(total=2)
    for i in range(2):
        t.admit(i, "a", now=0.0)
        t.request_started(i, now=0.0)
    ans = t.admit(5, "b", now=1.0)
    assert not ans.admitted and ans.reason == "full" and len(t) == 2


def test_per_peer_cap_evicts_that_peers_own_idle_connection() -> None:
    """A peer at its cap loses its own oldest idle connection, never another peer's."""
    t = table(total=10, per_peer=2)
    t.admit("other", "b", now=0.0)
    t.admit("a1", "a", now=1.0)
    t.admit("a2", "a", now=2.0)
    ans = t.admit("a3", "a", now=3.0)
    assert ans.admitted and ans.evict == ("a1",)
    assert "other" in t and t.peer_count("a") == 2


def test_per_peer_cap_refuses_when_the_peer_is_all_busy() -> None:
    """A peer whose connections are all busy gets no more; other peers still do."""
    t = table(total=10, per_peer=1)
    t.admit("a1", "a", now=0.0)
    t.request_started("a1", now=0.0)
    assert t.admit("a2", "a", now=1.0).reason == "per_ip"
    assert t.admit("b1", "b", now=1.0).admitted


def test_idle_connections_expire_but_busy_ones_wait_for_the_request_timeout() -> None:
    """Idle (headers never finished) past idleTimeout and requests past requestTimeout expire."""
    t = table(total=10)
    t.admit("slow-headers", "a", now=0.0)
    t.admit("download", "a", now=0.0)
    t.request_started("download", now=1.0)
    t.admit("fresh", "a", now=8.0)
    assert t.expired(now=10.5) == [("slow-headers", "idle")]
    assert ("download", "request") in t.expired(now=101.0)
    assert ("fresh", "idle") in t.expired(now=18.0)


def test_release_forgets_and_unknown_keys_are_ignored() -> None:
    """Released connections free their peer's slot; releasing twice is harmless."""
    t = table(total=2, per_peer=1)
    t.admit(1, "a", now=0.0)
    t.release(1)
    t.release(1)
    t.request_ended(1, now=1.0)
    assert len(t) == 0 and t.peer_count("a") == 0
    assert t.admit(2, "a", now=1.0).evict == ()
