"""Tokens, token bucket, registry and mempool planning."""

from __future__ import annotations

import pytest

from ioswarm.core.mempool import plan_dispatch
from ioswarm.core.models import AccountSnapshot, Level, PendingTx
from ioswarm.core.ratelimit import TokenBucket
from ioswarm.core.registry import AgentRegistry, RegistryFull
from ioswarm.core.tokens import agent_token, verify_token


def test_token_matches_reference_formula() -> None:
    """The key is iosw_ + hex(HMAC-SHA256(secret, id)) — a known vector."""
    import hashlib
    import hmac

    expected = "iosw_" + hmac.new(b"s3cret", b"agent-1", hashlib.sha256).hexdigest()
    assert agent_token("s3cret", "agent-1") == expected
    assert verify_token("s3cret", "agent-1", expected)
    assert not verify_token("s3cret", "agent-2", expected)
    assert not verify_token("other", "agent-1", expected)
    assert not verify_token("s3cret", "agent-1", "")


def test_token_bucket_burst_then_rate() -> None:
    """A bucket allows its burst at once, then refills at its rate."""
    b = TokenBucket(rate=10, burst=20)
    assert all(b.try_take(0.0) for _ in range(20))
    assert not b.try_take(0.0)
    assert b.try_take(0.1)  # one token after 100 ms at 10/s
    assert not b.try_take(0.1)
    assert sum(b.try_take(100.0) for _ in range(50)) == 20  # never above burst


def test_token_bucket_ignores_clock_going_back() -> None:
    """A clock that goes backwards neither adds nor removes tokens."""
    b = TokenBucket(rate=10, burst=2)
    assert b.try_take(5.0) and b.try_take(5.0)
    assert not b.try_take(4.0)


def test_registry_full_and_slot_reuse() -> None:
    """maxAgents refuses a new id but lets a registered id register again."""
    r = AgentRegistry(max_agents=2, heartbeat_interval=10, miss_limit=6)
    r.register("a", Level.L1, "", "", "", 0.0)
    r.register("b", Level.L2, "", "", "", 0.0)
    with pytest.raises(RegistryFull):
        r.register("c", Level.L1, "", "", "", 0.0)
    r.register("a", Level.L2, "", "", "", 1.0)
    assert len(r) == 2 and r.get("a") is not None and r.get("a").level is Level.L2  # type: ignore[union-attr]


def test_registry_stale_after_missed_beats() -> None:
    """An agent is stale only after interval x miss_limit without a heartbeat."""
    r = AgentRegistry(max_agents=5, heartbeat_interval=10, miss_limit=6)
    r.register("a", Level.L1, "", "", "", 0.0)
    assert r.stale(59.0) == []
    assert r.stale(61.0) == ["a"]
    r.touch("a", 61.0)
    assert r.stale(100.0) == []


def ptx(sender: bytes, nonce: int, value: int = 1, h: int | None = None) -> PendingTx:
    tx_hash = bytes([h if h is not None else nonce]) * 32
    return PendingTx(tx_hash, sender, nonce, b"\x09" * 20, value, 21000, 10)


def test_plan_chains_predecessors_and_holds_gaps() -> None:
    """A tx after pending predecessors sees their cost deducted; one behind a gap is held."""
    s = b"\x01" * 20
    pending = [ptx(s, 5), ptx(s, 6), ptx(s, 8)]
    head = {s: AccountSnapshot(s, 1_000_000, 5)}
    plan = plan_dispatch(pending, pending, head)
    ready = {p.tx.nonce: p.sender_state for p in plan.ready}
    assert set(ready) == {5, 6}
    assert ready[5].balance == 1_000_000 and ready[5].nonce == 5
    assert ready[6].balance == 1_000_000 - (1 + 21000 * 10) and ready[6].nonce == 6
    assert [t.nonce for t in plan.held] == [8]


def test_plan_marks_used_nonces_stale() -> None:
    """A pending tx whose nonce the head already used is stale."""
    s = b"\x01" * 20
    plan = plan_dispatch([ptx(s, 3)], [ptx(s, 3)], {s: AccountSnapshot(s, 10, 4)})
    assert [t.nonce for t in plan.stale] == [3] and not plan.ready
