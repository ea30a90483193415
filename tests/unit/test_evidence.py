"""Evidence of work per level, and what shadow mode makes of incomplete or unfounded answers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ioswarm.core.evidence import INCOMPLETE, missing_evidence
from ioswarm.core.execshadow import AccountDiff, ExecEffects, PredictedContext, effects_from_diff
from ioswarm.core.execution import MISSING_STATE
from ioswarm.core.models import AccountSnapshot, AccountState, IncludedTx, Level, Task, Verdict
from ioswarm.core.shadow import Outcome, ShadowBook
from tests.unit.test_execshadow import ctx as execshadow_ctx

SENDER, TOKEN, COINBASE = b"\x01" * 20, b"\x02" * 20, b"\x03" * 20
SLOT, SLOT2 = b"\x00" * 31 + b"\x05", b"\x00" * 31 + b"\x06"


def task(
    level: Level, tid: int = 1, read_set: frozenset[tuple[bytes, bytes]] = frozenset()
) -> Task:
    state = AccountSnapshot(b"", 10**18, 0)
    return Task(
        tid,
        b"h%d" % tid,
        b"",
        level,
        SENDER,
        0,
        1,
        30_000_000,
        sender_state=state,
        read_set=read_set,
    )


def effects(nonces: dict[bytes, int] | None = None, gas: int = 40_000) -> ExecEffects:
    return ExecEffects(True, gas, (), {}, {}, {SENDER: 1} if nonces is None else nonces, {}, 0)


@pytest.mark.parametrize("level", [Level.L1, Level.L2, Level.L3, Level.L4])
def test_bare_valid_is_incomplete_at_every_level(level: Level) -> None:
    """``valid=True`` with nothing else names no sender: incomplete at every level."""
    assert missing_evidence(task(level), Verdict(1, True)) == "sender"


@pytest.mark.parametrize("level", [Level.L1, Level.L2])
def test_valid_with_recovered_sender_is_complete_below_l3(level: Level) -> None:
    """At L1/L2 the recovered sender is the whole evidence of a valid answer."""
    assert missing_evidence(task(level), Verdict(1, True, sender=SENDER)) == ""
    assert missing_evidence(task(level), Verdict(1, True, sender=SENDER[:19])) == "sender"


def test_invalid_needs_a_reason_and_state_reasons_need_the_sender() -> None:
    """An invalid answer names its reason; a nonce or balance reason comes after recovery."""
    t = task(Level.L2)
    assert missing_evidence(t, Verdict(1, False)) == "reject_reason"
    assert missing_evidence(t, Verdict(1, False, "high_s")) == ""
    assert missing_evidence(t, Verdict(1, False, "nonce_too_low")) == "sender"
    assert missing_evidence(t, Verdict(1, False, "insufficient_balance")) == "sender"
    assert missing_evidence(t, Verdict(1, False, "nonce_too_low", sender=SENDER)) == ""


@pytest.mark.parametrize("level", [Level.L3, Level.L4])
def test_execution_needs_status_gas_and_the_senders_nonce_step(level: Level) -> None:
    """An executing level's valid answer is an execution: status, gas >= 21000, nonce step."""
    t = task(level)
    assert missing_evidence(t, Verdict(1, True, sender=SENDER)) == "status"
    low = Verdict(1, True, sender=SENDER, effects=effects(gas=20_999))
    assert missing_evidence(t, low) == "gas_used"
    fake = Verdict(1, True, sender=SENDER, effects=effects(nonces={}))
    assert missing_evidence(t, fake) == "state_changes"
    assert missing_evidence(t, Verdict(1, True, sender=SENDER, effects=effects())) == ""


def test_a_decline_is_not_held_to_the_rules() -> None:
    """A decline is not an answer; it is counted elsewhere and earns nothing."""
    assert missing_evidence(task(Level.L3), Verdict(1, False, declined=True)) == ""


def test_incomplete_answer_is_mismatched_at_once_even_if_the_tx_never_lands() -> None:
    """Shadow mode judges an incomplete answer wrong immediately, never pending or excluded."""
    book = ShadowBook(expiry_blocks=5)
    c = book.record("lazy", task(Level.L2), Verdict(1, True))
    assert c is not None and (c.outcome, c.detail, c.note) == (
        Outcome.MISMATCHED,
        INCOMPLETE,
        "sender",
    )
    assert book.pending == 0 and book.by_agent["lazy"].mismatched_fields == {INCOMPLETE: 1}


def ctx(**kw: object) -> PredictedContext:
    return execshadow_ctx(**{"number": 2, **kw})


def landed(writes_slot: bytes) -> IncludedTx:
    pre = {
        SENDER: AccountDiff(balance=10**18, nonce=0),
        TOKEN: AccountDiff(storage={writes_slot: b"\x00" * 32}),
    }
    post = {
        SENDER: AccountDiff(balance=10**18 - 1, nonce=1),
        TOKEN: AccountDiff(storage={writes_slot: b"\x00" * 31 + b"\x01"}),
    }
    eff = effects_from_diff(True, 40_000, (), pre, post, COINBASE)
    return IncludedTx(b"h1", SENDER, 0, 2, 1, 40_000, 0, eff)


SENT = frozenset({(SENDER, b"balance"), (SENDER, b"nonce"), (TOKEN, b"code"), (TOKEN, SLOT)})


def judge_missing_state(
    level: Level, truth: IncludedTx, predicted: PredictedContext
) -> tuple[Outcome, str]:
    book = ShadowBook(expiry_blocks=5)
    named = f"storage 0x{TOKEN.hex()} slot 0x{SLOT2.hex()}"  # as the honest engine names it
    claim = Verdict(1, False, MISSING_STATE, sender=SENDER, declined=True, detail=named)
    assert book.record("a", task(level, read_set=SENT), claim, predicted) is None
    [c] = book.on_block(2, [truth], ctx())
    return c.outcome, c.detail


def test_missing_state_claim_is_mismatched_when_the_chain_touched_only_what_was_sent() -> None:
    """The tx wrote only keys the task carried, nothing raced it, the context was as sent."""
    assert judge_missing_state(Level.L3, landed(SLOT), ctx()) == (Outcome.MISMATCHED, MISSING_STATE)


def test_missing_state_claim_is_excluded_when_the_chain_wrote_an_unsent_key() -> None:
    """A write to a slot the task did not carry means state may really have been missing."""
    assert judge_missing_state(Level.L3, landed(SLOT2), ctx()) == (Outcome.EXCLUDED, MISSING_STATE)


def test_missing_state_claim_is_excluded_when_the_context_was_not_the_real_one() -> None:
    """Under another block context the agent's path may have differed from the chain's."""
    got = judge_missing_state(Level.L3, landed(SLOT), ctx(timestamp=21))
    assert got == (Outcome.EXCLUDED, MISSING_STATE)


def test_missing_state_claim_at_l4_is_the_agents_own_fault() -> None:
    """An L4 agent executes on its own full state: missing state is never the coordinator's."""
    assert judge_missing_state(Level.L4, landed(SLOT2), ctx()) == (
        Outcome.MISMATCHED,
        MISSING_STATE,
    )


def l3_task_carrying_slot() -> Task:
    return replace(
        task(Level.L3, read_set=SENT),
        accounts=(
            AccountState(AccountSnapshot(SENDER, 10**18, 0)),
            AccountState(AccountSnapshot(TOKEN, 0, 1), b"\x60", ((SLOT, b"\x00" * 32),)),
        ),
    )


@pytest.mark.parametrize(
    ("detail", "why"),
    [
        ("", "names no missing key"),
        ("I could not be bothered", "names no missing key"),
        (f"account 0x{TOKEN.hex()}", "named account was sent"),
        (f"storage 0x{TOKEN.hex()} slot 0x{SLOT.hex()}", "named slot was sent"),
        ("block_hash 1", "named block hash was sent"),
    ],
)
def test_a_missing_state_claim_naming_nothing_or_what_was_sent_is_wrong_at_once(
    detail: str, why: str
) -> None:
    """A claim is checked against the task itself before the chain says anything."""
    book = ShadowBook(expiry_blocks=5)
    claim = Verdict(1, False, MISSING_STATE, sender=SENDER, declined=True, detail=detail)
    c = book.record("a", l3_task_carrying_slot(), claim, ctx(block_hashes={1: b"\x11" * 32}))
    assert c is not None and (c.outcome, c.detail, c.note) == (
        Outcome.MISMATCHED,
        MISSING_STATE,
        why,
    )


def test_a_claim_naming_an_unsent_key_waits_for_the_chain() -> None:
    """Naming a slot or a block hash the task did not carry may be true: judged at inclusion."""
    book = ShadowBook(expiry_blocks=5)
    for detail in (f"storage 0x{TOKEN.hex()} slot 0x{SLOT2.hex()}", "block_hash 0"):
        claim = Verdict(1, False, MISSING_STATE, sender=SENDER, declined=True, detail=detail)
        assert (
            book.record("a", l3_task_carrying_slot(), claim, ctx(block_hashes={1: b"\x11" * 32}))
            is None
        )
    assert book.pending == 2
