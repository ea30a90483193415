"""The LMDB epoch ledger and the EpochManager on top of it: records, state machine, restarts."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ioswarm.config import parse_config
from ioswarm.core.rewards import EpochPlan, EpochTally, RewardPolicy, plan_epoch
from ioswarm.errors import ConfigError, StoreError
from ioswarm.rewards.epochs import EpochManager
from ioswarm.rewards.ledger import (
    EpochLedger,
    OpenEpoch,
    SettlementCall,
    SettlementState,
    TxAttempt,
)

pytestmark = pytest.mark.integration

IOTX = 10**18
W1 = "0x" + "11" * 20
W2 = "0x" + "22" * 20
POLICY = RewardPolicy(min_tasks=2, delegate_cut_pct=10)


def make_plan(epoch: int, ledger: EpochLedger | None = None) -> EpochPlan:
    tallies = [
        EpochTally("agent-1", W1, tasks=10, matched=10),
        EpochTally("agent-2", W2, tasks=10, matched=9, mismatched=1),
    ]
    previous = ledger.expected_weights() if ledger else {}
    return plan_epoch(epoch, tallies, {}, previous, POLICY, IOTX)


def attempt(nonce: int, tx: str, max_fee: int = 100, at: float = 1.0) -> TxAttempt:
    return TxAttempt(
        tx_hash=tx,
        nonce=nonce,
        gas=90_000,
        max_fee_per_gas=max_fee,
        max_priority_fee_per_gas=max_fee // 10,
        sent_at=at,
        raw="0x02",
    )


def call_for(ledger: EpochLedger, epoch: int) -> SettlementCall:
    plan = ledger.epoch(epoch)
    assert plan is not None
    return SettlementCall(
        "depositAndSettle",
        tuple(w.wallet for w in plan.wallets),
        tuple(w.weight for w in plan.wallets),
        plan.deposit_wei,
    )


def test_plan_survives_reopen(tmp_path: Path) -> None:
    """A planned epoch, its agents' rows and the checkpoint read back after reopening."""
    with EpochLedger(tmp_path / "l") as ledger:
        plan = make_plan(4)
        tally = EpochTally("agent-3", W1, tasks=1)
        assert ledger.plan(plan, at=10.0, next_open=OpenEpoch(5, {"agent-3": tally}))
    with EpochLedger(tmp_path / "l") as ledger:
        assert ledger.epoch(4) == plan
        assert ledger.planned_at(4) == 10.0
        s = ledger.settlement(4)
        assert s is not None and s.state is SettlementState.PLANNED and not s.terminal
        assert ledger.unsettled() == [4]
        assert ledger.latest_epoch() == 4
        [row] = ledger.agent_history("agent-1")
        assert row.epoch == 4 and row.payout.amount_wei > 0 and row.total_agents == 2
        checkpoint = ledger.load_checkpoint()
        assert checkpoint is not None and checkpoint.epoch == 5
        assert checkpoint.tallies["agent-3"].tasks == 1
        assert ledger.expected_weights() == {w.wallet: w.weight for w in plan.wallets}
        assert ledger.onchain_weights() == {}


def test_planning_twice_writes_nothing(tmp_path: Path) -> None:
    """Planning an epoch already in the ledger is refused without touching the first record."""
    with EpochLedger(tmp_path / "l") as ledger:
        assert ledger.plan(make_plan(1), at=1.0)
        assert not ledger.plan(make_plan(1), at=2.0)
        assert ledger.planned_at(1) == 1.0
        assert len(ledger.events(1)) == 1


def test_state_machine_replacement_then_confirmed(tmp_path: Path) -> None:
    """sent -> replaced (same nonce) -> confirmed keeps every attempt and updates chain weights."""
    with EpochLedger(tmp_path / "l") as ledger:
        ledger.plan(make_plan(1), at=1.0)
        call = call_for(ledger, 1)
        ledger.record_sent(1, call, attempt(7, "0xaa"), at=2.0)
        ledger.record_sent(1, call, attempt(7, "0xbb", max_fee=113), at=3.0)
        with pytest.raises(StoreError):
            ledger.record_sent(1, call, attempt(8, "0xcc"), at=3.5)  # another nonce: refused
        s = ledger.settlement(1)
        assert s is not None and s.state is SettlementState.SENT
        assert s.nonce == 7 and [a.tx_hash for a in s.attempts] == ["0xaa", "0xbb"]
        assert s.bindings == 1
        ledger.record_confirmed(1, "0xbb", 12, 80_000, 80_000 * 113, at=4.0)
    with EpochLedger(tmp_path / "l") as ledger:
        s = ledger.settlement(1)
        assert s is not None and s.state is SettlementState.CONFIRMED and s.terminal
        assert (s.tx_hash, s.block, s.gas_used) == ("0xbb", 12, 80_000)
        assert ledger.unsettled() == []
        assert ledger.onchain_weights() == {W1: call.weights[0], W2: call.weights[1]}
        assert [e["state"] for e in ledger.events(1)] == ["planned", "sent", "sent", "confirmed"]
        [row] = ledger.agent_history("agent-2")
        assert row.state is SettlementState.CONFIRMED and row.tx_hash == "0xbb"


def test_invalid_transitions_are_refused(tmp_path: Path) -> None:
    """A planned epoch cannot be confirmed, a confirmed one cannot be re-sent or reverted."""
    with EpochLedger(tmp_path / "l") as ledger:
        ledger.plan(make_plan(1), at=1.0)
        with pytest.raises(StoreError):
            ledger.record_confirmed(1, "0xaa", 1, 1, 1, at=2.0)
        with pytest.raises(StoreError):
            ledger.record_sent(9, call_for(ledger, 1), attempt(1, "0xaa"), at=2.0)
        ledger.record_sent(1, call_for(ledger, 1), attempt(1, "0xaa"), at=2.0)
        ledger.record_confirmed(1, "0xaa", 1, 1, 1, at=3.0)
        with pytest.raises(StoreError):
            ledger.record_sent(1, call_for(ledger, 1), attempt(2, "0xbb"), at=4.0)
        with pytest.raises(StoreError):
            ledger.record_reverted(1, "late", False, at=4.0)


def test_safe_retry_and_requeue(tmp_path: Path) -> None:
    """A retryable revert stays queued for a new nonce; a parked one waits for a requeue."""
    with EpochLedger(tmp_path / "l") as ledger:
        ledger.plan(make_plan(1), at=1.0)
        call = call_for(ledger, 1)
        ledger.record_sent(1, call, attempt(1, "0xaa"), at=2.0)
        ledger.record_reverted(1, "out of gas", True, at=3.0, tx_hash="0xaa", block=5)
        assert ledger.unsettled() == [1]
        ledger.record_sent(1, call, attempt(2, "0xbb"), at=4.0)
        s = ledger.settlement(1)
        assert s is not None and s.bindings == 2 and s.nonce == 2
        ledger.record_reverted(1, "NotCoordinator()", False, at=5.0, tx_hash="0xbb", block=6)
        assert ledger.unsettled() == []
        ledger.requeue(1, at=6.0)
        s = ledger.settlement(1)
        assert s is not None and s.state is SettlementState.PLANNED and ledger.unsettled() == [1]
        ledger.record_skipped(1, "nothing", at=7.0)
        assert ledger.unsettled() == []


def test_agent_history_newest_first_and_isolated(tmp_path: Path) -> None:
    """History is per agent, newest first, limited on request; ids that share a prefix don't mix."""
    with EpochLedger(tmp_path / "l") as ledger:
        for epoch in range(1, 6):
            tallies = [
                EpochTally("a", W1, tasks=5, matched=epoch),
                EpochTally("ab", W2, tasks=5, matched=1),
            ]
            ledger.plan(plan_epoch(epoch, tallies, {}, [], POLICY, IOTX), at=float(epoch))
        assert [r.epoch for r in ledger.agent_history("a")] == [5, 4, 3, 2, 1]
        assert [r.epoch for r in ledger.agent_history("a", 2)] == [5, 4]
        assert all(r.payout.agent_id == "ab" for r in ledger.agent_history("ab"))
        assert ledger.agent_history("nobody") == []
        assert [s.epoch for s in ledger.recent(3)] == [5, 4, 3]
        assert ledger.last_announced("a") == -1
        ledger.mark_announced("a", 3)
        assert ledger.last_announced("a") == 3


def test_map_grows_when_full(tmp_path: Path) -> None:
    """A ledger that outgrows its map is grown instead of failing."""
    with EpochLedger(tmp_path / "l", map_size=64 << 10) as ledger:
        for epoch in range(60):
            tallies = [EpochTally(f"agent-{i}", W1, tasks=5, matched=5) for i in range(20)]
            ledger.plan(plan_epoch(epoch, tallies, {}, [], POLICY, IOTX), at=1.0)
        assert len(ledger.unsettled()) == 60


def test_lmdb_errors_become_store_errors(tmp_path: Path) -> None:
    """An unusable path and a closed ledger raise StoreError, not lmdb's own errors."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError):
        EpochLedger(blocker)
    ledger = EpochLedger(tmp_path / "l")
    ledger.close()
    with pytest.raises(StoreError):
        ledger.unsettled()


def manager(path: Path) -> EpochManager:
    return EpochManager(
        EpochLedger(path), POLICY, epoch_blocks=10, epoch_reward_wei=IOTX, clock=lambda: 100.0
    )


async def test_manager_closes_epochs_and_survives_restart(tmp_path: Path) -> None:
    """Tallies are checkpointed across a restart and the epoch closes when the block crosses."""
    m = manager(tmp_path / "l")
    m.on_block(20)
    for _ in range(3):
        m.on_result("agent-1", W1)
        m.on_comparison("agent-1", W1, "matched")
    m.on_result("agent-2", W2)
    assert m.current_epoch_stats() == (2, 4, 1.0)
    m.on_block(21)
    await m.stop()

    m = manager(tmp_path / "l")
    assert m.current_epoch_stats() == (2, 4, 1.0)
    m.on_comparison("agent-2", W2, "mismatched")
    assert m.on_block(29) is None
    assert m.on_block(30) == 2
    plan = m.ledger.epoch(2)
    assert plan is not None
    by_id = {p.agent_id: p for p in plan.payouts}
    assert by_id["agent-1"].amount_wei == plan.deposit_wei  # agent-2 is under the minimum
    assert by_id["agent-2"].weight == 0
    assert m.current_epoch_stats() == (3, 0, 0.0)  # nothing judged yet
    view = m.epoch_view()
    assert view["epoch"] == 3 and view["blocks_left"] == 9
    assert view["settlement"]["queued"] == [2] and not view["settlement"]["enabled"]
    await m.stop()


async def test_manager_notices_and_rewards_view(tmp_path: Path) -> None:
    """A confirmed payout is announced once, and the rewards view reports history and totals."""
    m = manager(tmp_path / "l")
    m.on_block(10)
    for _ in range(4):
        m.on_result("agent-1", W1)
        m.on_comparison("agent-1", W1, "matched")
    m.on_block(20)
    assert m.payout_notice("agent-1") is None  # planned, not paid yet
    s = m.ledger.settlement(1)
    assert s is not None
    plan = m.ledger.epoch(1)
    assert plan is not None
    call = SettlementCall("depositAndSettle", (W1,), (plan.wallets[0].weight,), plan.deposit_wei)
    m.ledger.record_sent(1, call, attempt(3, "0xfeed"), at=1.0)
    m.ledger.record_confirmed(1, "0xfeed", 99, 50_000, 1, at=2.0)
    notice = m.payout_notice("agent-1")
    assert notice is not None
    assert (notice.epoch, notice.amount_wei, notice.rank, notice.total_agents) == (
        1,
        IOTX - IOTX // 10,
        1,
        1,
    )
    assert notice.proto_fields()["amount_wei"] == str(IOTX - IOTX // 10)
    assert notice.proto_fields()["tx_hash"] == "0xfeed"
    assert m.payout_notice("agent-1") is None  # announced once
    view = m.rewards_view("agent-1")
    [row] = view["history"]
    assert row["epoch"] == 1 and row["status"] == "confirmed" and row["bonus_applied"]
    assert row["accuracy_pct"] == 100.0 and row["rank"] == 1 and row["tasks"] == 4
    assert row["amount_iotx"] == pytest.approx(0.9)
    assert view["totals"]["paid_wei"] == str(IOTX - IOTX // 10)
    assert view["totals"]["pending_wei"] == "0"
    assert m.rewards_view("nobody")["history"] == []
    await m.stop()


async def test_from_config_builds_ledger_and_settler(tmp_path: Path) -> None:
    """from_config opens the ledger under dataDir and needs a signer key for a reward contract."""
    base = {
        "masterSecret": "0123456789abcdef0",
        "dataDir": str(tmp_path),
        "rewardContract": "0x" + "12" * 20,
        "chainId": 31337,
        "reward": {"bonusAccuracyPct": 97.5, "bonusMultiplier": 1.5, "epochBlocks": 30},
    }
    with pytest.raises(ConfigError) as info:
        EpochManager.from_config(parse_config(base), CollectorRegistry())
    assert info.value.key == "rewardSignerKey"

    config = parse_config({**base, "rewardSignerKey": "0x" + "42" * 32})
    m = EpochManager.from_config(config, CollectorRegistry())
    assert m.settler is not None and m.settler.options.expected_chain_id == 31337
    assert m.policy.bonus_accuracy_ppm == 975_000 and m.policy.bonus_multiplier_ppm == 1_500_000
    assert m.epoch_blocks == 30 and m.epoch_reward_wei == config.epoch_reward_wei
    assert (tmp_path / "rewards").is_dir()
    await m.stop()

    m = EpochManager.from_config(parse_config({**base, "rewardContract": ""}), CollectorRegistry())
    assert m.settler is None and m.epoch_view()["settlement"]["enabled"] is False
    await m.stop()


def test_included_reorged_resent_final_survive_a_reopen(tmp_path: Path) -> None:
    """Inclusion, a reorg, the re-send and finality are durable; a final one is not watched."""
    with EpochLedger(tmp_path / "l") as ledger:
        ledger.plan(make_plan(1), at=1.0)
        call = call_for(ledger, 1)
        ledger.record_sent(1, call, attempt(7, "0xaa"), at=2.0)
        ledger.record_confirmed(1, "0xaa", 12, 80_000, 1, at=3.0, block_hash="0xb1")
        assert ledger.included() == [1] and ledger.unsettled() == []
        with pytest.raises(StoreError):
            ledger.record_resent(1, "0xaa", at=3.5)  # only a reorged epoch is re-sent
        ledger.record_reorged(1, "receipt gone", at=4.0, head=11)
    with EpochLedger(tmp_path / "l") as ledger:
        s = ledger.settlement(1)
        assert s is not None and s.state is SettlementState.REORGED and s.reorgs == 1
        assert ledger.included() == [] and ledger.unsettled() == [1]
        assert ledger.events(1)[-1]["lost_block_hash"] == "0xb1"
        with pytest.raises(StoreError):
            ledger.record_sent(1, call, attempt(8, "0xcc"), at=4.5)  # no new nonce after a reorg
        ledger.record_resent(1, "0xaa", at=5.0)
        ledger.record_confirmed(1, "0xaa", 13, 80_000, 1, at=6.0, block_hash="0xb2")
        ledger.record_final(1, 12, at=7.0)
        with pytest.raises(StoreError):
            ledger.record_reorged(1, "too late", at=8.0)  # final is final
    with EpochLedger(tmp_path / "l") as ledger:
        s = ledger.settlement(1)
        assert s is not None and s.status == "final" and s.block_hash == "0xb2"
        assert s.bindings == 1 and ledger.included() == [] and ledger.unsettled() == []


def test_chain_identity_is_recorded_once(tmp_path: Path) -> None:
    """The ledger keeps the first chain id and genesis hash it is given, across reopens."""
    with EpochLedger(tmp_path / "l") as ledger:
        assert ledger.chain_identity() is None
        ledger.record_chain_identity(4689, "0x" + "ab" * 32)
        with pytest.raises(StoreError):
            ledger.record_chain_identity(1, "0x" + "cd" * 32)
    with EpochLedger(tmp_path / "l") as ledger:
        assert ledger.chain_identity() == (4689, "0x" + "ab" * 32)
