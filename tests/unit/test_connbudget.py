"""Connection budgets: the fd split and which HTTP connection gives way."""

from __future__ import annotations

import pytest

from ioswarm.core.connbudget import ConnectionTable, split_fd_budget
from ioswarm.errors import ConfigError


def table(total: int = 4, per_peer: int = 3, probation: int = 2) -> ConnectionTable:
    return ConnectionTable(
        total, per_peer, probation, idle_timeout=10.0, request_timeout=100.0, probation_timeout=2.0
    )


def test_fd_budget_fits_under_the_limit_and_favours_agents() -> None:
    """Both listeners together stay under the limit minus the reserve; gRPC gets its share first."""
    budget = split_fd_budget(1024, 128, grpc_want=1024, http_want=256)
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


def test_room_means_established_at_once() -> None:
    """While there is room a connection is established without probation."""
    t = table(total=2)
    assert t.admit("a", "p", now=0.0).admitted
    assert t.established == 1 and t.on_probation == 0


def test_a_full_listener_puts_newcomers_on_probation_evicting_nobody() -> None:
    """A newcomer to a full listener evicts nobody until it has sent a whole request head."""
    t = table(total=2)
    t.admit(1, "p", now=0.0)
    t.admit(2, "p", now=0.0)
    ans = t.admit(3, "p", now=1.0)
    assert ans.admitted and ans.evict == () and t.on_probation == 1 and t.established == 2


def test_a_complete_head_takes_the_place_of_the_longest_idle() -> None:
    """A probationer with a whole request head replaces the longest-idle connection."""
    t = table(total=2)
    t.admit(1, "p", now=0.0)
    t.admit(2, "p", now=0.5)
    t.request_started(1, now=1.0)
    t.request_ended(1, now=1.5)  # 1 is now the most recently idle
    t.admit(3, "q", now=2.0)
    ans = t.head_received(3, complete=True, now=2.0)
    assert ans.admitted and ans.evict == (2,)
    assert 2 not in t and t.established == 2 and t.on_probation == 0


def test_busy_connections_are_never_evicted() -> None:
    """When every established connection is busy, a complete head is refused as ``full``."""
    t = table(total=2)
    for i in range(2):
        t.admit(i, "a", now=0.0)
        t.request_started(i, now=0.0)
    t.admit(5, "b", now=1.0)
    ans = t.head_received(5, complete=True, now=1.0)
    assert not ans.admitted and ans.reason == "full" and 5 not in t


def test_partial_heads_stall_and_stalled_probationers_go_first() -> None:
    """Probation keeps its size; the stalled probationer gives way before a silent one."""
    t = table(total=1, probation=2)
    t.admit("est", "a", now=0.0)
    t.admit("slow", "a", now=1.0)
    t.admit("silent", "a", now=1.1)
    t.head_received("slow", complete=False, now=1.2)
    ans = t.admit("new", "a", now=1.3)
    assert ans.evict == ("slow",) and t.on_probation == 2 and "silent" in t


def test_a_reconnect_storm_cannot_push_out_a_waiting_whole_request() -> None:
    """However many slow-headers connections arrive, a probationer that sends a whole head
    next is established, as long as probation holds more than one storm step."""
    t = table(total=4, per_peer=4, probation=8)
    for i in range(4):
        t.admit(("idle", i), "x", now=0.0)
    t.admit("health", "x", now=1.0)
    for i in range(6):  # a storm step smaller than probation, each sending a partial head
        t.admit(("storm", i), "x", now=1.0)
        t.head_received(("storm", i), complete=False, now=1.0)
    ans = t.head_received("health", complete=True, now=1.0)
    assert ans.admitted and ans.evict == (("idle", 0),)


def test_per_peer_cap_takes_that_peers_own_idle_connection() -> None:
    """A peer at its cap replaces its own oldest idle connection, never another peer's."""
    t = table(total=10, per_peer=2)
    t.admit("other", "b", now=0.0)
    t.admit("a1", "a", now=1.0)
    t.admit("a2", "a", now=2.0)
    t.admit("a3", "a", now=3.0)
    ans = t.head_received("a3", complete=True, now=3.0)
    assert ans.admitted and ans.evict == ("a1",)
    assert "other" in t and t.peer_count("a") == 2


def test_per_peer_cap_refuses_when_the_peer_is_all_busy() -> None:
    """A peer whose connections are all busy gets no more; other peers still do."""
    t = table(total=10, per_peer=1)
    t.admit("a1", "a", now=0.0)
    t.request_started("a1", now=0.0)
    t.admit("a2", "a", now=1.0)
    assert t.head_received("a2", complete=True, now=1.0).reason == "per_ip"
    assert t.admit("b1", "b", now=1.0).admitted and t.established == 2


def test_timeouts_idle_request_and_probation() -> None:
    """Idle past idleTimeout, requests past requestTimeout and probation past its timeout expire."""
    t = table(total=2)
    t.admit("slow-headers", "a", now=0.0)
    t.admit("download", "a", now=0.0)
    t.request_started("download", now=1.0)
    t.admit("waiting", "a", now=5.0)
    assert ("waiting", "probation") in t.expired(now=7.0)
    assert t.expired(now=10.5) == [("slow-headers", "idle"), ("waiting", "probation")]
    assert ("download", "request") in t.expired(now=101.0)


def test_release_forgets_and_unknown_keys_are_ignored() -> None:
    """Released connections free their peer's slot; releasing twice is harmless."""
    t = table(total=2, per_peer=1)
    t.admit(1, "a", now=0.0)
    t.release(1)
    t.release(1)
    t.request_ended(1, now=1.0)
    assert len(t) == 0 and t.peer_count("a") == 0
    assert t.admit(2, "a", now=1.0).evict == () and t.established == 1
