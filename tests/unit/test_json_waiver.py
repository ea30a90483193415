"""The sender-evidence waiver for answers received in the reference JSON codec."""

from __future__ import annotations

import pytest

from ioswarm.coordinator.wire import verdict_from_pb
from ioswarm.core.canary import CanaryTruth, judge_canary
from ioswarm.core.evidence import INCOMPLETE, missing_evidence
from ioswarm.core.models import AccountSnapshot, IncludedTx, Level, Outcome, Task, Verdict
from ioswarm.core.rules import Reject
from ioswarm.core.shadow import ShadowBook, judge_included
from ioswarm.proto import ioswarm_pb2 as pb

SENDER, OTHER = b"\x01" * 20, b"\x09" * 20


def task(level: Level, tid: int = 1) -> Task:
    return Task(
        tid,
        b"h%d" % tid,
        b"",
        level,
        SENDER,
        0,
        1,
        30_000_000,
        sender_state=AccountSnapshot(b"", 10**18, 0),
    )


def waived(valid: bool, reason: str = "", sender: bytes = b"") -> Verdict:
    return Verdict(1, valid, reason, sender=sender, sender_waived=True)


@pytest.mark.parametrize("level", [Level.L1, Level.L2])
def test_waived_answers_need_no_sender_at_l1_and_l2(level: Level) -> None:
    """A waived valid answer, or a nonce/balance reject, is complete without a sender; the
    same answers not waived are incomplete."""
    t = task(level)
    assert missing_evidence(t, waived(True)) == ""
    assert missing_evidence(t, waived(False, Reject.NONCE_TOO_LOW)) == ""
    assert missing_evidence(t, waived(False, Reject.INSUFFICIENT_BALANCE)) == ""
    assert missing_evidence(t, Verdict(1, True)) == "sender"
    assert missing_evidence(t, Verdict(1, False, Reject.NONCE_TOO_LOW)) == "sender"
    assert missing_evidence(t, waived(False)) == "reject_reason"  # a reason is still needed


@pytest.mark.parametrize("level", [Level.L3, Level.L4])
def test_waiver_never_applies_at_executing_levels(level: Level) -> None:
    """At L3/L4 a waived answer is held to the full evidence."""
    assert missing_evidence(task(level), waived(True)) == "sender"


def test_a_sender_sent_under_the_waiver_must_be_whole_and_right() -> None:
    """A truncated sender is incomplete; a wrong one is a mismatch against the chain."""
    t = task(Level.L1)
    assert missing_evidence(t, waived(True, sender=SENDER[:19])) == "sender"
    truth = IncludedTx(t.tx_hash, SENDER, 0, 5, 1)
    assert judge_included("a", t, waived(True, sender=OTHER), truth).detail == "sender"
    assert judge_included("a", t, waived(True, sender=SENDER), truth).outcome is Outcome.MATCHED
    assert judge_included("a", t, waived(True), truth).outcome is Outcome.MATCHED


def test_canaries_judge_waived_answers_on_validity_and_reason() -> None:
    """A waived answer to a valid canary matches without a sender and fails with a wrong one;
    an invalid canary is judged on its reason; unwaived, the missing sender fails it."""
    valid = CanaryTruth(True, "", SENDER)
    assert judge_canary(valid, Level.L2, waived(True)) == ""
    assert judge_canary(valid, Level.L2, waived(True, sender=OTHER)) == "sender"
    assert judge_canary(valid, Level.L2, Verdict(1, True)) == "sender"
    low = CanaryTruth(False, Reject.NONCE_TOO_LOW, SENDER)
    assert judge_canary(low, Level.L2, waived(False, Reject.NONCE_TOO_LOW)) == ""
    assert judge_canary(low, Level.L2, waived(False, "nonce too low: tx=1 account=2")) == (
        "reject_reason"
    )
    assert judge_canary(CanaryTruth(False, Reject.HIGH_S, b""), Level.L1, waived(True)) == "valid"
    assert judge_canary(valid, Level.L3, waived(True)) == "sender"


def test_shadow_book_counts_a_bare_protobuf_answer_incomplete_and_a_waived_one_pending() -> None:
    """Through the book: without the waiver a bare valid answer is an incomplete mismatch at
    once; with it, the answer waits for the chain and then matches."""
    book = ShadowBook(expiry_blocks=10)
    bare = book.record("p", task(Level.L2, 1), Verdict(1, True))
    assert bare is not None and (bare.outcome, bare.detail) == (Outcome.MISMATCHED, INCOMPLETE)
    t = task(Level.L2, 2)
    assert book.record("j", t, waived(True)) is None
    [c] = book.on_block(5, [IncludedTx(t.tx_hash, SENDER, 0, 5, 1)])
    assert (c.agent_id, c.outcome) == ("j", Outcome.MATCHED)


def test_verdict_from_pb_sets_the_waiver_only_when_asked_and_below_l3() -> None:
    """The waiver comes from the coordinator's argument (the codec it saw), never from the
    message, and not at L3/L4."""
    msg = pb.TaskResult(task_id=1, valid=True)
    assert not verdict_from_pb(msg, Level.L1).sender_waived
    assert verdict_from_pb(msg, Level.L1, sender_waived=True).sender_waived
    assert verdict_from_pb(msg, Level.L2, sender_waived=True).sender_waived
    assert not verdict_from_pb(msg, Level.L3, sender_waived=True).sender_waived
