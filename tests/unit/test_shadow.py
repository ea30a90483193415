"""Shadow comparison rules and bookkeeping at L1/L2."""

from __future__ import annotations

from ioswarm.core.models import AccountSnapshot, IncludedTx, Level, Task, Verdict
from ioswarm.core.shadow import Outcome, ShadowBook

SENDER = b"\x01" * 20


def task(
    tid: int, tx_hash: bytes, nonce: int = 0, level: Level = Level.L2, state_nonce: int = 0
) -> Task:
    state = AccountSnapshot(SENDER, 10**18, state_nonce)
    return Task(
        tid, tx_hash, b"", level, SENDER, nonce, 1, 30_000_000, sender_state=state, max_cost=21000
    )


def inc(tx_hash: bytes, nonce: int = 0, block: int = 2, status: int = 1) -> IncludedTx:
    return IncludedTx(tx_hash, SENDER, nonce, block, status)


def test_valid_verdict_for_included_tx_matches_later() -> None:
    """A valid verdict is pending until its tx lands, then matched."""
    book = ShadowBook(expiry_blocks=5)
    assert book.record("a", task(1, b"h1"), Verdict(1, True, sender=SENDER)) is None
    [c] = book.on_block(2, [inc(b"h1")])
    assert c.outcome is Outcome.MATCHED
    assert book.by_level[Level.L2].matched == 1 and book.pending == 0


def test_verdict_after_inclusion_is_judged_at_once() -> None:
    """A result arriving after its block landed is compared immediately."""
    book = ShadowBook(expiry_blocks=5)
    book.on_block(2, [inc(b"h1")])
    c = book.record("a", task(1, b"h1"), Verdict(1, True, sender=SENDER))
    assert c is not None and c.outcome is Outcome.MATCHED


def test_reverted_tx_is_still_valid() -> None:
    """Receipt status 0 does not make an L1/L2 'valid' verdict wrong."""
    book = ShadowBook(expiry_blocks=5)
    book.record("a", task(1, b"h1"), Verdict(1, True, sender=SENDER))
    [c] = book.on_block(2, [inc(b"h1", status=0)])
    assert c.outcome is Outcome.MATCHED


def test_invalid_verdict_for_included_tx_is_mismatch() -> None:
    """Calling a landed tx invalid, on correct state, is a mismatch on 'valid'."""
    book = ShadowBook(expiry_blocks=5)
    book.record("a", task(1, b"h1"), Verdict(1, False, "bad_signature"))
    [c] = book.on_block(2, [inc(b"h1")])
    assert (c.outcome, c.detail) == (Outcome.MISMATCHED, "valid")


def test_wrong_sender_is_mismatch() -> None:
    """A recovered sender that differs from the chain's is a mismatch on 'sender'."""
    book = ShadowBook(expiry_blocks=5)
    book.record("a", task(1, b"h1"), Verdict(1, True, sender=b"\x02" * 20))
    [c] = book.on_block(2, [inc(b"h1")])
    assert (c.outcome, c.detail) == (Outcome.MISMATCHED, "sender")


def test_nonce_race_is_excluded() -> None:
    """A nonce rejection made on state that changed before inclusion is excluded, not wrong."""
    book = ShadowBook(expiry_blocks=5)
    book.record(
        "a",
        task(1, b"h1", nonce=3, state_nonce=2),
        Verdict(1, False, "nonce_too_high", sender=SENDER),
    )
    [c] = book.on_block(2, [inc(b"h1", nonce=3)])
    assert (c.outcome, c.detail) == (Outcome.EXCLUDED, "nonce_race")


def test_replaced_tx_is_excluded_as_replaced() -> None:
    """A tx whose nonce went to a replacement seen in the mempool is excluded as 'replaced'."""
    book = ShadowBook(expiry_blocks=5)
    book.record("a", task(1, b"old", nonce=4), Verdict(1, True, sender=SENDER))
    book.note_replaced(b"old")
    [c] = book.on_block(2, [inc(b"new", nonce=4)])
    assert (c.outcome, c.detail) == (Outcome.EXCLUDED, "replaced")


def test_nonce_consumed_without_seen_replacement() -> None:
    """A tx whose nonce was used by an unseen tx is excluded as 'nonce_consumed'."""
    book = ShadowBook(expiry_blocks=5)
    book.on_block(2, [inc(b"other", nonce=4)])
    c = book.record("a", task(1, b"mine", nonce=4), Verdict(1, True, sender=SENDER))
    assert c is not None and (c.outcome, c.detail) == (Outcome.EXCLUDED, "nonce_consumed")


def test_dropped_tx_expires_without_verdict() -> None:
    """A verdict whose tx never lands expires and is never counted as compared."""
    book = ShadowBook(expiry_blocks=3)
    book.on_block(1, [])
    book.record("a", task(1, b"h1"), Verdict(1, True, sender=SENDER))
    for n in range(2, 6):
        book.on_block(n, [])
        book.expire(n)
    assert book.pending == 0 and book.expired == 1
    assert book.totals().compared == 0


def test_counts_add_up_per_agent_and_level() -> None:
    """compared == matched + mismatched + excluded, per agent and per level."""
    book = ShadowBook(expiry_blocks=5)
    book.record("a", task(1, b"h1"), Verdict(1, True, sender=SENDER))
    book.record("b", task(2, b"h1", level=Level.L1), Verdict(2, False, "x"))
    book.record(
        "a",
        task(3, b"h2", nonce=1, state_nonce=0),
        Verdict(3, False, "nonce_too_high", sender=SENDER),
    )
    book.on_block(2, [inc(b"h1"), inc(b"h2", nonce=1)])
    for counts in [*book.by_agent.values(), *book.by_level.values()]:
        assert counts.compared == counts.matched + counts.mismatched + counts.excluded_total
    assert book.by_agent["a"].matched == 1 and book.by_agent["a"].excluded == {"nonce_race": 1}
    assert book.by_agent["b"].mismatched == 1
    assert book.totals().compared == 3
