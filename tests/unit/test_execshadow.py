"""Execution shadow rules (L3/L4) and next-block context prediction."""

from __future__ import annotations

from ioswarm.core.blockctx import blob_base_fee, fake_exponential, next_base_fee, predict_next
from ioswarm.core.execshadow import (
    AccountDiff,
    ExecEffects,
    Log,
    PredictedContext,
    effects_from_diff,
    first_difference,
    judge_execution,
)
from ioswarm.core.models import BlockHeader

SENDER, TOKEN, COINBASE = b"\x01" * 20, b"\x02" * 20, b"\x03" * 20
SLOT = b"\x00" * 31 + b"\x05"


def word(n: int) -> bytes:
    return n.to_bytes(32, "big")


def truth() -> ExecEffects:
    pre = {
        SENDER: AccountDiff(balance=10**18, nonce=4),
        TOKEN: AccountDiff(storage={SLOT: word(7)}),
        COINBASE: AccountDiff(balance=100),
    }
    post = {
        SENDER: AccountDiff(balance=10**18 - 50_000, nonce=5),
        TOKEN: AccountDiff(storage={SLOT: word(9)}),
        COINBASE: AccountDiff(balance=130),
    }
    return effects_from_diff(True, 40_000, [Log(TOKEN, (word(1),), b"x")], pre, post, COINBASE)


def ctx(**kw: object) -> PredictedContext:
    base: dict[str, object] = {
        "number": 10,
        "timestamp": 20,
        "gas_limit": 30_000_000,
        "base_fee": 7,
        "coinbase": COINBASE,
        "prev_randao": b"\x00" * 32,
        "blob_base_fee": 1,
    }
    base.update(kw)
    return PredictedContext(**base)  # type: ignore[arg-type]


def test_effects_from_diff_reduces_a_trace() -> None:
    """A diff-mode trace becomes storage writes, balance changes, nonces and the coinbase fee."""
    t = truth()
    assert t.storage == {(TOKEN, SLOT): word(9)}
    assert t.balances == {SENDER: -50_000}
    assert t.nonces == {SENDER: 5}
    assert t.coinbase_fee == 30
    assert (TOKEN, SLOT) in t.writes and (SENDER, b"balance") in t.writes


def test_cleared_slot_counts_as_written_zero() -> None:
    """A slot in pre but absent from post of a changed account was set to zero."""
    e = effects_from_diff(
        True,
        1,
        [],
        {TOKEN: AccountDiff(nonce=1, storage={SLOT: word(3)})},
        {TOKEN: AccountDiff(nonce=2)},
        COINBASE,
    )
    assert e.storage == {(TOKEN, SLOT): b"\x00" * 32}


def test_identical_effects_match_even_after_a_race() -> None:
    """Equal results are matched even when something was written in between."""
    t = truth()
    outcome = judge_execution(
        t, frozenset(), t, ctx(), ctx(), frozenset({(TOKEN, SLOT)}), frozenset({(TOKEN, SLOT)})
    )
    assert outcome == ("matched", "")


def test_first_difference_names_the_field() -> None:
    """A claim off by one gas unit is a mismatch on gas_used; a flipped slot on storage."""
    t = truth()
    gas = ExecEffects(
        t.success, t.gas_used + 1, t.logs, t.storage, t.balances, t.nonces, t.code, t.coinbase_fee
    )
    assert first_difference(gas, t) == "gas_used"
    flipped = ExecEffects(
        t.success,
        t.gas_used,
        t.logs,
        {(TOKEN, SLOT): word(8)},
        t.balances,
        t.nonces,
        t.code,
        t.coinbase_fee,
    )
    assert judge_execution(flipped, frozenset(), t, ctx(), ctx(), frozenset(), frozenset()) == (
        "mismatched",
        "storage",
    )


def test_read_write_race_and_block_context_exclusions() -> None:
    """A difference explained by an earlier write or a mispredicted context value is excluded."""
    t = truth()
    other = ExecEffects(
        t.success,
        t.gas_used,
        t.logs,
        {(TOKEN, SLOT): word(8)},
        t.balances,
        t.nonces,
        t.code,
        t.coinbase_fee,
    )
    reads = frozenset({(TOKEN, SLOT)})
    assert judge_execution(other, frozenset(), t, ctx(), ctx(), reads, reads) == (
        "excluded",
        "read_write_race",
    )
    assert judge_execution(
        other, frozenset({"TIMESTAMP"}), t, ctx(), ctx(timestamp=22), frozenset(), frozenset()
    ) == ("excluded", "block_context")
    # Reading a value the prediction got right is no excuse.
    assert judge_execution(
        other, frozenset({"NUMBER"}), t, ctx(), ctx(timestamp=22), frozenset(), frozenset()
    ) == ("mismatched", "storage")


def test_base_fee_follows_eip1559() -> None:
    """Full, empty and half-full parents move the base fee by +12.5%, -12.5% and 0."""
    assert next_base_fee(30_000_000, 30_000_000, 1_000_000_000) == 1_125_000_000
    assert next_base_fee(0, 30_000_000, 1_000_000_000) == 875_000_000
    assert next_base_fee(15_000_000, 30_000_000, 1_000_000_000) == 1_000_000_000


def test_blob_base_fee_minimum_and_growth() -> None:
    """No excess blob gas costs the minimum (1 wei); the fee grows with the excess."""
    assert blob_base_fee(0, "prague") == 1
    assert fake_exponential(1, 5_007_716 * 3, 5_007_716) in (20, 19)  # ~e**3
    assert blob_base_fee(10**8, "prague") > blob_base_fee(10**7, "prague")


def test_predict_next_block() -> None:
    """The prediction is head+1, head time + spacing, EIP-1559 base fee, last 256 hashes."""
    head = BlockHeader(
        number=300,
        hash=b"h" * 32,
        parent_hash=b"p" * 32,
        timestamp=1000,
        gas_limit=30_000_000,
        base_fee=1_000_000_000,
        coinbase=COINBASE,
        gas_used=0,
    )
    hashes = {n: n.to_bytes(32, "big") for n in range(0, 301)}
    p = predict_next(head, 2, "prague", hashes)
    assert (p.number, p.timestamp, p.base_fee) == (301, 1002, 875_000_000)
    assert min(p.block_hashes) == 301 - 256 and max(p.block_hashes) == 300


def test_a_cleared_delegation_is_compared_as_code() -> None:
    """Empty code after a delegation is a change on both sides; an agent that does not report
    the clearing mismatches on code, and empty code where there was none is no change."""
    delegation = b"\xef\x01\x00" + TOKEN
    pre = {SENDER: AccountDiff(balance=10, nonce=1, code=delegation), TOKEN: AccountDiff()}
    post = {SENDER: AccountDiff(nonce=2, code=b""), TOKEN: AccountDiff(balance=1, code=b"")}
    chain = effects_from_diff(True, 21_000, [], pre, post, COINBASE)
    assert chain.code == {SENDER: b""}
    cleared = ExecEffects(True, 21_000, (), {}, {TOKEN: 1}, {SENDER: 2}, {SENDER: b""}, 0)
    assert first_difference(cleared, chain) is None
    silent = ExecEffects(True, 21_000, (), {}, {TOKEN: 1}, {SENDER: 2}, {}, 0)
    assert first_difference(silent, chain) == "code"
