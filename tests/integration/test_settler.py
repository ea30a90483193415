"""The Settler on anvil: in-order exactly-once settlement, RPC outages, stuck and reverted txs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from prometheus_client import CollectorRegistry
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.providers.async_base import AsyncBaseProvider

from ioswarm.core.rewards import EpochPlan, EpochTally, RewardPolicy, plan_epoch
from ioswarm.rewards.epochs import EpochManager
from ioswarm.rewards.ledger import EpochLedger, Settlement, SettlementState
from ioswarm.rewards.pool import RewardPool
from ioswarm.rewards.settler import Settler, SettlerOptions
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.swarm import TcpProxy

pytestmark = pytest.mark.integration

IOTX = 10**18
REWARD = IOTX // 2
POLICY = RewardPolicy(min_tasks=1, delegate_cut_pct=10)
FAST = SettlerOptions(
    poll_interval_sec=0.05,
    backoff_initial_sec=0.05,
    backoff_max_sec=0.2,
    idle_check_sec=0.1,
)


def wallets(count: int) -> list[str]:
    """Deterministic agent wallets (lowercase, as the ledger stores them)."""
    return [Account.from_key(keccak(text=f"settle-{i}")).address.lower() for i in range(count)]


@dataclass
class Chain:
    node: AnvilProcess
    w3: AsyncWeb3[AsyncBaseProvider]
    signer: LocalAccount
    pool: RewardPool


def web3_at(url: str) -> AsyncWeb3[AsyncBaseProvider]:
    return AsyncWeb3(AsyncHTTPProvider(url, exception_retry_configuration=None))


@pytest.fixture
async def chain(anvil_manual: AnvilProcess) -> AsyncIterator[Chain]:
    """Anvil with automine on and a fresh pool whose coordinator is anvil's first account."""
    await anvil_manual.rpc("evm_setAutomine", [True])
    w3 = web3_at(anvil_manual.url)
    signer = Account.from_key(anvil_manual.private_keys[0])
    try:
        pool = await RewardPool.deploy(w3, signer)
        yield Chain(anvil_manual, w3, signer, pool)
    finally:
        await w3.provider.disconnect()


def plan(ledger: EpochLedger, epoch: int, work: dict[str, tuple[str, int]]) -> EpochPlan:
    """Close ``epoch`` in the ledger with agent -> (wallet, matched tasks)."""
    tallies = [EpochTally(a, w, tasks=m, matched=m) for a, (w, m) in work.items()]
    latest = ledger.latest_epoch()
    prev = ledger.epoch(latest) if latest is not None else None
    previous = {p.agent_id: p.wallet for p in (prev.payouts if prev else ()) if p.weight}
    result = plan_epoch(epoch, tallies, previous, ledger.expected_weights(), POLICY, REWARD)
    assert ledger.plan(result, at=time.time())
    return result


@asynccontextmanager
async def running(settler: Settler) -> AsyncIterator[Settler]:
    """Run the settler's loop for the duration of the block."""
    task = asyncio.create_task(settler.run())
    try:
        yield settler
    finally:
        await settler.stop()
        await asyncio.wait_for(task, 10)


def state(ledger: EpochLedger, epoch: int) -> Settlement:
    s = ledger.settlement(epoch)
    assert s is not None
    return s


def settled(ledger: EpochLedger, *epochs: int) -> bool:
    return all(state(ledger, e).state is SettlementState.CONFIRMED for e in epochs)


@contextmanager
def ledger_at(path: Path) -> Iterator[EpochLedger]:
    with EpochLedger(path) as ledger:
        yield ledger


async def assert_chain_matches_ledger(chain: Chain, ledger: EpochLedger) -> None:
    """Every confirmed epoch has exactly one Settled event, with the ledger's deposit."""
    events = await chain.pool.settled_events()
    confirmed = [s for s in ledger.recent(1000) if s.state is SettlementState.CONFIRMED]
    sent = [s for s in confirmed if s.tx_hash is not None]
    assert sorted(e.tx_hash for e in events) == sorted(s.tx_hash or "" for s in sent)
    for s in sent:
        plan_ = ledger.epoch(s.epoch)
        assert plan_ is not None
        [event] = [e for e in events if e.tx_hash == s.tx_hash]
        assert event.amount == plan_.deposit_wei
    assert sum(e.amount for e in events) == await chain.pool.balance()


async def test_settles_epochs_in_order_exactly_once(chain: Chain, tmp_path: Path) -> None:
    """Three epochs settle in order, one transaction each; departed wallets are zeroed on chain."""
    w = wallets(3)
    registry = CollectorRegistry()
    with ledger_at(tmp_path / "l") as ledger:
        plans = [
            plan(ledger, 1, {"a": (w[0], 10), "b": (w[1], 10)}),
            plan(ledger, 2, {"a": (w[0], 30), "b": (w[1], 10), "c": (w[2], 5)}),
            plan(ledger, 3, {"a": (w[0], 10), "c": (w[2], 10)}),  # b departs
        ]
        settler = Settler(chain.pool, ledger, chain.signer, options=FAST, registry=registry)
        async with running(settler):
            await eventually(lambda: settled(ledger, 1, 2, 3), what="three epochs confirmed")
        states = [state(ledger, e) for e in (1, 2, 3)]
        blocks = [s.block or 0 for s in states]
        assert blocks == sorted(blocks)
        nonces = [s.nonce or 0 for s in states]
        assert nonces == sorted(nonces) and len(set(nonces)) == 3
        assert all(len(s.attempts) == 1 for s in states)
        await assert_chain_matches_ledger(chain, ledger)
        assert (await chain.pool.agent(w[1])).weight == 0
        assert w[1] in (states[2].call.wallets if states[2].call else ())
        for i, wallet in enumerate(w):
            expected = sum(p.amount_wei for pl in plans for p in pl.payouts if p.wallet == wallet)
            claimable = await chain.pool.claimable(wallet)
            assert abs(claimable - expected) <= 3, i  # floors and carried sub-wei remainders
        assert (
            registry.get_sample_value("ioswarm_reward_settlements_total", {"outcome": "confirmed"})
            == 3
        )
        assert registry.get_sample_value("ioswarm_reward_last_confirmed_epoch") == 3


async def test_pay_out_settles_and_pays_in_one_transaction(chain: Chain, tmp_path: Path) -> None:
    """With pay_out the weighted wallets receive their share in the settlement itself."""
    w = wallets(2)
    with ledger_at(tmp_path / "l") as ledger:
        p = plan(ledger, 1, {"a": (w[0], 3), "b": (w[1], 1)})
        options = SettlerOptions(
            poll_interval_sec=0.05, backoff_initial_sec=0.05, idle_check_sec=0.1, pay_out=True
        )
        settler = Settler(chain.pool, ledger, chain.signer, options=options)
        async with running(settler):
            await eventually(lambda: settled(ledger, 1))
        s = state(ledger, 1)
        assert s.call is not None and s.call.function == "depositSettleAndClaim"
        for payout in p.payouts:
            balance = int(
                await chain.w3.eth.get_balance(AsyncWeb3.to_checksum_address(payout.wallet))
            )
            assert abs(balance - payout.amount_wei) <= 1
        await assert_chain_matches_ledger_paid(chain, ledger, p)


async def assert_chain_matches_ledger_paid(chain: Chain, ledger: EpochLedger, p: EpochPlan) -> None:
    events = await chain.pool.settled_events()
    assert [e.amount for e in events] == [p.deposit_wei]
    paid = 0
    for payout in p.payouts:
        paid += int(await chain.w3.eth.get_balance(AsyncWeb3.to_checksum_address(payout.wallet)))
    assert paid + await chain.pool.balance() == p.deposit_wei


async def test_rpc_down_queues_epochs_and_settles_them_in_order(
    chain: Chain, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While the reward RPC is cut, epochs keep closing and queue; they settle in order later."""
    caplog.set_level(logging.INFO, logger="ioswarm.rewards")
    proxy = TcpProxy(chain.node.port)
    await proxy.start()
    w3 = web3_at(f"http://127.0.0.1:{proxy.port}")
    pool = RewardPool(w3, chain.pool.address, chain.signer)
    w = wallets(2)
    try:
        await proxy.cut()
        registry = CollectorRegistry()
        ledger = EpochLedger(tmp_path / "l")
        settler = Settler(pool, ledger, chain.signer, options=FAST, registry=registry)
        manager = EpochManager(
            ledger,
            POLICY,
            epoch_blocks=10,
            epoch_reward_wei=REWARD,
            settler=settler,
        )
        run = asyncio.create_task(manager.run())
        manager.on_block(10)
        for epoch in (1, 2, 3):
            for _ in range(epoch):
                manager.on_result("agent-a", w[0])
                manager.on_comparison("agent-a", w[0], "matched")
            manager.on_result("agent-b", w[1])
            manager.on_comparison("agent-b", w[1], "matched")
            assert manager.on_block((epoch + 1) * 10) == epoch  # never blocked by the outage
        await eventually(lambda: not settler.rpc_up, what="settler notices the outage")
        assert registry.get_sample_value("ioswarm_reward_rpc_up") == 0
        assert manager.ledger.unsettled() == [1, 2, 3]
        assert all(state(manager.ledger, e).state is SettlementState.PLANNED for e in (1, 2, 3))
        await asyncio.sleep(0.3)  # several failed retries while cut
        await proxy.start()
        await eventually(lambda: settled(manager.ledger, 1, 2, 3), what="queued epochs settled")
        blocks = [state(manager.ledger, e).block or 0 for e in (1, 2, 3)]
        assert blocks == sorted(blocks) and len(set(blocks)) == 3
        await assert_chain_matches_ledger(chain, manager.ledger)
        blocked = [r for r in caplog.records if "settlement blocked" in r.getMessage()]
        unblocked = [r for r in caplog.records if "settlement unblocked" in r.getMessage()]
        assert len(blocked) == 1 and len(unblocked) == 1
        assert manager.epoch_view()["settlement"]["rpc_up"] is True
        await manager.stop()
        await asyncio.wait_for(run, 10)
    finally:
        await proxy.cut()
        await w3.provider.disconnect()


async def test_stuck_transaction_is_replaced_with_same_nonce(chain: Chain, tmp_path: Path) -> None:
    """A pending settlement is re-signed with the same nonce and fees up >= 12.5 %; one lands."""
    await chain.node.rpc("evm_setAutomine", [False])
    options = SettlerOptions(
        poll_interval_sec=0.05, backoff_initial_sec=0.05, idle_check_sec=0.1, replace_after_sec=0.2
    )
    w = wallets(2)
    with ledger_at(tmp_path / "l") as ledger:
        plan(ledger, 1, {"a": (w[0], 4), "b": (w[1], 2)})
        registry = CollectorRegistry()
        settler = Settler(chain.pool, ledger, chain.signer, options=options, registry=registry)
        async with running(settler):
            await eventually(lambda: len(state(ledger, 1).attempts) >= 2, what="a replacement")
            await chain.node.mine()
            await eventually(lambda: settled(ledger, 1), what="confirmed after mining")
        s = state(ledger, 1)
        assert s.tx_hash in {a.tx_hash for a in s.attempts}
        assert len({a.nonce for a in s.attempts}) == 1
        for old, new in zip(s.attempts, s.attempts[1:], strict=False):
            assert new.max_fee_per_gas * 1000 >= old.max_fee_per_gas * 1125
            assert new.max_priority_fee_per_gas * 1000 >= old.max_priority_fee_per_gas * 1125
            assert new.gas == old.gas
        assert (registry.get_sample_value("ioswarm_reward_tx_replacements_total") or 0) >= 1
        await assert_chain_matches_ledger(chain, ledger)


async def test_revert_at_estimation_is_parked_loudly(
    chain: Chain, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A settlement the pool refuses (signer is not its coordinator) is parked with an ERROR."""
    other = Account.from_key(chain.node.private_keys[1])
    foreign = await RewardPool.deploy(chain.w3, other)  # coordinator: another account
    nonce_before = await chain.pool.nonce()
    w = wallets(1)
    registry = CollectorRegistry()
    with ledger_at(tmp_path / "l") as ledger:
        plan(ledger, 1, {"a": (w[0], 1)})
        plan(ledger, 2, {"a": (w[0], 1)})
        settler = Settler(foreign, ledger, chain.signer, options=FAST, registry=registry)
        async with running(settler):
            await eventually(lambda: ledger.unsettled() == [], what="both epochs parked")
        for epoch in (1, 2):
            s = state(ledger, epoch)
            assert s.state is SettlementState.REVERTED and not s.retry
            assert "NotCoordinator" in s.reason and s.tx_hash is None
    assert await chain.pool.nonce() == nonce_before  # nothing was sent
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert sum("SETTLEMENT REVERTED" in r.getMessage() for r in errors) == 2
    assert (
        registry.get_sample_value("ioswarm_reward_settlements_total", {"outcome": "reverted"}) == 2
    )


async def test_onchain_revert_is_surfaced_and_not_retried(
    chain: Chain, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A settlement mined with status 0 is recorded with its decoded reason and left alone."""
    await chain.node.rpc("evm_setAutomine", [False])
    w = wallets(1)
    with ledger_at(tmp_path / "l") as ledger:
        plan(ledger, 1, {"a": (w[0], 1)})
        settler = Settler(chain.pool, ledger, chain.signer, options=FAST)
        async with running(settler):
            await eventually(lambda: state(ledger, 1).state is SettlementState.SENT)
            # Take the coordinator role away (slot 0) before the pending settlement is mined.
            stranger = "0x" + "00" * 12 + "77" * 20
            await chain.node.rpc("anvil_setStorageAt", [chain.pool.address, "0x0", stranger])
            await chain.node.mine()
            await eventually(lambda: state(ledger, 1).state is SettlementState.REVERTED)
        s = state(ledger, 1)
        assert not s.retry and "NotCoordinator" in s.reason
        assert s.tx_hash == s.attempts[0].tx_hash and s.block is not None
        assert ledger.unsettled() == []
    assert await chain.pool.settled_events() == []
    assert any(
        r.levelno == logging.ERROR and "SETTLEMENT REVERTED" in r.getMessage()
        for r in caplog.records
    )


async def test_out_of_gas_is_retried_with_a_new_nonce(chain: Chain, tmp_path: Path) -> None:
    """An out-of-gas revert is the one safe retry: a new nonce, more gas, one deposit in the end."""
    options = SettlerOptions(
        poll_interval_sec=0.05, backoff_initial_sec=0.05, idle_check_sec=0.1, gas_margin_pct=-50
    )
    w = wallets(2)
    with ledger_at(tmp_path / "l") as ledger:
        plan(ledger, 1, {"a": (w[0], 2), "b": (w[1], 1)})
        settler = Settler(chain.pool, ledger, chain.signer, options=options)
        async with running(settler):
            await eventually(lambda: settled(ledger, 1))
        kinds = [(e["state"], e.get("retry")) for e in ledger.events(1)]
        assert kinds[:3] == [("planned", None), ("sent", None), ("reverted", True)]
        assert kinds[-1][0] == "confirmed"
        s = state(ledger, 1)
        assert s.bindings >= 2
        await assert_chain_matches_ledger(chain, ledger)


async def test_wrong_chain_halts_settlement(chain: Chain, tmp_path: Path) -> None:
    """A reward RPC on another chain than configured is refused; epochs stay queued."""
    with ledger_at(tmp_path / "l") as ledger:
        plan(ledger, 1, {"a": (wallets(1)[0], 1)})
        options = SettlerOptions(expected_chain_id=1, idle_check_sec=0.05)
        settler = Settler(chain.pool, ledger, chain.signer, options=options)
        assert not await settler.step()
        assert settler.halted is not None and "31337" in settler.halted
        assert ledger.unsettled() == [1]
        assert state(ledger, 1).state is SettlementState.PLANNED


async def test_stale_nonce_is_rebound_not_lost(
    chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh binding whose nonce turns out to be used already is bound again, not dropped."""
    w = wallets(1)
    with ledger_at(tmp_path / "l") as ledger:
        plan(ledger, 1, {"a": (w[0], 1)})
        plan(ledger, 2, {"a": (w[0], 2)})
        settler = Settler(chain.pool, ledger, chain.signer, options=FAST)
        pool = settler._pool
        real_nonce = pool.nonce
        stale = {"left": 1}

        async def nonce(block: Literal["latest", "pending"] = "latest") -> int:
            value = await real_nonce(block)
            if block == "pending" and settled(ledger, 1) and stale["left"]:
                stale["left"] -= 1
                return value - 1  # the nonce epoch 1 used
            return value

        monkeypatch.setattr(pool, "nonce", nonce)
        async with running(settler):
            await eventually(lambda: settled(ledger, 1, 2))
        kinds = [e["state"] for e in ledger.events(2)]
        assert kinds == ["planned", "sent", "reverted", "sent", "confirmed"]
        assert "already used" in ledger.events(2)[2]["reason"]
        assert state(ledger, 1).nonce != state(ledger, 2).nonce
        await assert_chain_matches_ledger(chain, ledger)
