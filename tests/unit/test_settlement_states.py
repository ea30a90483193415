"""The settlement state machine folded from ledger events: inclusion, finality, reorgs."""

from __future__ import annotations

from typing import Any

from ioswarm.rewards.ledger import SettlementState, fold_settlement

CALL = {"function": "depositAndSettle", "wallets": ["0xa"], "weights": [1], "value": 5}


def attempt(tx: str, nonce: int = 7) -> dict[str, Any]:
    return {
        "tx_hash": tx,
        "nonce": nonce,
        "gas": 100_000,
        "max_fee_per_gas": 10,
        "max_priority_fee_per_gas": 1,
        "sent_at": 1.0,
        "raw": "0x00",
    }


SENT = {"state": "sent", "at": 1.0, "call": CALL, "attempt": attempt("0x1")}
INCLUDED = {"state": "confirmed", "at": 2.0, "tx_hash": "0x1", "block": 10, "block_hash": "0xb1"}


def test_included_is_terminal_for_sending_but_not_settled() -> None:
    """A mined settlement needs nothing sent but is not settled until its final event."""
    s = fold_settlement(1, [{"state": "planned"}, SENT, INCLUDED])
    assert s.state is SettlementState.CONFIRMED and s.status == "included"
    assert s.terminal and not s.final and not s.settled
    assert s.block == 10 and s.block_hash == "0xb1"
    done = fold_settlement(1, [{"state": "planned"}, SENT, INCLUDED, {"state": "final"}])
    assert done.status == "final" and done.final and done.settled and done.block == 10


def test_reorg_keeps_the_nonce_and_attempts_and_drops_the_inclusion() -> None:
    """A reorged settlement keeps its one binding and signed bytes; only the inclusion goes."""
    events = [{"state": "planned"}, SENT, INCLUDED, {"state": "reorged", "reason": "gone"}]
    s = fold_settlement(1, events)
    assert s.state is SettlementState.REORGED and s.status == "reorged"
    assert not s.terminal and not s.settled
    assert s.nonce == 7 and s.bindings == 1 and [a.tx_hash for a in s.attempts] == ["0x1"]
    assert s.tx_hash is None and s.block is None and s.block_hash is None and s.reorgs == 1


def test_resent_then_mined_again_counts_the_reorg_and_one_binding() -> None:
    """After re-sending, the epoch is ``re-sent``, then included at the new block, still once."""
    events = [{"state": "planned"}, SENT, INCLUDED, {"state": "reorged"}, {"state": "resent"}]
    s = fold_settlement(1, events)
    assert s.state is SettlementState.SENT and s.status == "re-sent" and s.nonce == 7
    again = {"state": "confirmed", "tx_hash": "0x1", "block": 11, "block_hash": "0xb2"}
    s = fold_settlement(1, [*events, again])
    assert s.status == "included" and s.block_hash == "0xb2" and s.reorgs == 1
    assert s.bindings == 1 and len(s.attempts) == 1


def test_replacement_after_resend_shares_the_nonce() -> None:
    """A fee replacement of a re-sent transaction is another attempt on the same nonce."""
    bump = {"state": "sent", "call": CALL, "attempt": attempt("0x2")}
    events = [{"state": "planned"}, SENT, INCLUDED, {"state": "reorged"}, {"state": "resent"}]
    s = fold_settlement(1, [*events, bump])
    assert s.bindings == 1 and [a.tx_hash for a in s.attempts] == ["0x1", "0x2"]
    assert s.status == "re-sent"
