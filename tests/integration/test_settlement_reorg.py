"""Settlement on a node that does not stay still: reorgs re-send, another chain halts."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ioswarm.coordinator.app import CoordinatorApp
from ioswarm.core.rewards import PoolModel
from ioswarm.rewards.epochs import LEDGER_DIR, EpochManager
from ioswarm.rewards.ledger import EpochLedger, SettlementState
from ioswarm.rewards.pool import RewardPool
from ioswarm.rewards.settler import HOOK_REORGED, Settler, SettlerOptions
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.swarm import coordinator_config
from tests.integration.test_settler import (
    FAST,
    POLICY,
    REWARD,
    Chain,
    assert_chain_matches_ledger,
    chain,
    plan,
    running,
    state,
    wallets,
    web3_at,
)

pytestmark = pytest.mark.integration

__all__ = ["chain"]  # the fixture, re-used

DEEP = SettlerOptions(
    poll_interval_sec=0.05,
    backoff_initial_sec=0.05,
    backoff_max_sec=0.2,
    idle_check_sec=0.1,
    confirmations=3,
)


class Crash(BaseException):
    """Stands in for the process dying at a hook point (not caught by the settler's loop)."""


def included(ledger: EpochLedger, epoch: int) -> bool:
    s = state(ledger, epoch)
    return s.state is SettlementState.CONFIRMED and not s.final


def final(ledger: EpochLedger, epoch: int) -> bool:
    s = state(ledger, epoch)
    return s.state is SettlementState.CONFIRMED and s.final


async def assert_claimable_matches_model(chain: Chain, ledger: EpochLedger, count: int) -> None:
    """Every wallet's claimable on chain equals the ledger's exact pool model, to the wei."""
    model = PoolModel()
    for s in sorted(ledger.recent(1000), key=lambda s: s.epoch):
        if s.state is SettlementState.CONFIRMED and s.call is not None:
            model.settle(s.call.wallets, s.call.weights, s.call.value)
    for wallet in wallets(count):
        assert await chain.pool.claimable(wallet) == model.claimable(wallet)


@pytest.mark.parametrize("crash", [False, True], ids=["running", "restarted"])
async def test_reorged_settlement_is_resent_and_paid_once(
    chain: Chain, tmp_path: Path, crash: bool
) -> None:
    """A settlement reverted away before it is final is re-sent with its own nonce and bytes,
    also across a restart right after the reorg is recorded, and is paid exactly once."""
    w = wallets(2)
    snapshot = await chain.node.rpc("evm_snapshot")
    with EpochLedger(tmp_path / "l") as ledger:
        plan(ledger, 1, {"a": (w[0], 3), "b": (w[1], 1)})
        registry = CollectorRegistry()
        crashed = asyncio.Event()

        def hook(point: str, epoch: int) -> None:
            if crash and point == HOOK_REORGED and not crashed.is_set():
                crashed.set()
                raise Crash

        settler = Settler(
            chain.pool, ledger, chain.signer, options=DEEP, registry=registry, hook=hook
        )
        task = asyncio.create_task(settler.run())
        await eventually(lambda: included(ledger, 1), what="epoch 1 included")
        first = state(ledger, 1)
        assert first.status == "included" and first.block is not None and first.block_hash
        assert await chain.node.rpc("evm_revert", [snapshot]) is True
        await chain.node.mine(2)
        if crash:
            await eventually(crashed.is_set, what="crash at the reorg")
            with pytest.raises(Crash):
                await asyncio.wait_for(task, 10)
            assert state(ledger, 1).state is SettlementState.REORGED
            assert registry.get_sample_value(
                "ioswarm_reward_settlements_total", {"outcome": "reorged"}
            )
            registry = CollectorRegistry()  # a new process
            settler = Settler(chain.pool, ledger, chain.signer, options=DEEP, registry=registry)
            task = asyncio.create_task(settler.run())
        await eventually(
            lambda: state(ledger, 1).reorgs == 1,
            what="reorg recorded",
        )
        await eventually(lambda: included(ledger, 1) or final(ledger, 1), what="included again")
        for _ in range(20):  # bounded: mine until the settler calls it final
            if final(ledger, 1):
                break
            await chain.node.mine()
            await asyncio.sleep(0.05)
        await eventually(lambda: final(ledger, 1), what="epoch 1 final")
        await settler.stop()
        await asyncio.wait_for(task, 10)

        s = state(ledger, 1)
        kinds = [e["state"] for e in ledger.events(1)]
        assert kinds == ["planned", "sent", "confirmed", "reorged", "resent", "confirmed", "final"]
        assert s.status == "final" and s.reorgs == 1 and s.bindings == 1
        assert s.nonce == first.nonce and s.tx_hash == first.tx_hash  # the same bytes again
        assert len(s.attempts) == 1
        reorged = ledger.events(1)[3]
        assert reorged["lost_tx_hash"] == first.tx_hash
        assert reorged["lost_block_hash"] == first.block_hash
        assert s.block_hash != first.block_hash
        assert await chain.w3.eth.get_block(s.block or 0) is not None
        assert ledger.included() == [] and ledger.unsettled() == []
        await assert_chain_matches_ledger(chain, ledger)
        assert len(await chain.pool.settled_events()) == 1
        assert await chain.pool.nonce() == (first.nonce or 0) + 1
        await assert_claimable_matches_model(chain, ledger, 2)
        outcomes = (
            {"final": 1.0, "confirmed": 1.0}
            if crash
            else {"reorged": 1.0, "final": 1.0, "confirmed": 2.0}
        )
        for outcome, count in outcomes.items():
            sample = registry.get_sample_value(
                "ioswarm_reward_settlements_total", {"outcome": outcome}
            )
            assert sample == count, outcome


async def test_included_settlement_waits_for_confirmations_in_the_view(
    chain: Chain, tmp_path: Path
) -> None:
    """``/swarm/epoch`` shows an included settlement with its confirmations until it is final."""
    w = wallets(1)
    ledger = EpochLedger(tmp_path / "l")
    settler = Settler(chain.pool, ledger, chain.signer, options=DEEP)
    manager = EpochManager(
        ledger, POLICY, epoch_blocks=10, epoch_reward_wei=REWARD, settler=settler
    )
    try:
        plan(ledger, 1, {"a": (w[0], 2)})
        async with running(settler):
            await eventually(lambda: included(ledger, 1), what="included")
            await eventually(lambda: settler.head is not None, what="head seen")
            [row] = manager.epoch_view()["settlement"]["confirmed"]
            assert row["status"] == "included" and row["final"] is False
            assert row["confirmations"] == 1
            await chain.node.mine(2)
            await eventually(lambda: final(ledger, 1), what="final after 3 confirmations")
        view = manager.epoch_view()["settlement"]
        [row] = view["confirmed"]
        assert row["status"] == "final" and row["confirmations"] >= 3
        assert view["confirmations_required"] == 3 and view["halted"] is None
    finally:
        ledger.close()


@pytest.fixture
async def other_chain() -> AsyncIterator[AnvilProcess]:
    """A second anvil with another chain id and no pool."""
    async with AnvilProcess(env=os.environ, block_time=None, chain_id=4690) as node:
        yield node


async def test_swapped_chain_halts_settlement_and_planning_goes_on(
    chain: Chain, other_chain: AnvilProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind the same settings another chain answers: settlement halts with one ERROR line, a
    metric and view detail; epochs keep being planned, nothing is sent."""
    caplog.set_level(logging.INFO, logger="ioswarm.rewards")
    w = wallets(1)
    path = tmp_path / "l"
    with EpochLedger(path) as ledger:
        plan(ledger, 1, {"a": (w[0], 1)})
        options = SettlerOptions(poll_interval_sec=0.05, confirmations=1)
        first = Settler(chain.pool, ledger, chain.signer, options=options)
        assert await first.step()
        assert state(ledger, 1).state is SettlementState.CONFIRMED
        identity = ledger.chain_identity()
        assert identity is not None and identity[0] == 31337

    w3 = web3_at(other_chain.url)
    registry = CollectorRegistry()
    ledger = EpochLedger(path)
    try:
        pool = RewardPool(w3, chain.pool.address, chain.signer)
        settler = Settler(pool, ledger, chain.signer, options=FAST, registry=registry)
        manager = EpochManager(
            ledger, POLICY, epoch_blocks=10, epoch_reward_wei=REWARD, settler=settler
        )
        run = asyncio.create_task(manager.run())
        manager.on_block(20)
        manager.on_result("agent-a", w[0])
        manager.on_comparison("agent-a", w[0], "matched")
        assert manager.on_block(30) == 2  # planning is never blocked
        await eventually(lambda: settler.halted is not None, what="halted")
        await asyncio.sleep(0.3)  # several passes while halted
        assert settler.halt_reason == "chain_id" and "4690" in (settler.halted or "")
        view = manager.epoch_view()["settlement"]
        assert view["halted"] == settler.halted and view["halt_reason"] == "chain_id"
        assert view["last_error"] == settler.halted and view["queued"] == [2]
        assert state(ledger, 2).state is SettlementState.PLANNED
        labels = {"reason": "chain_id"}
        assert registry.get_sample_value("ioswarm_settlement_halted", labels) == 1
        assert registry.get_sample_value("ioswarm_settlement_halted", {"reason": "no_code"}) == 0
        assert await pool.nonce("pending") == 0  # nothing reached the other chain
        halts = [r for r in caplog.records if "SETTLEMENT HALTED" in r.getMessage()]
        assert len(halts) == 1 and halts[0].levelno == logging.ERROR
        await manager.stop()
        await asyncio.wait_for(run, 10)
    finally:
        await w3.provider.disconnect()


async def test_pool_without_code_halts_settlement(
    chain: Chain, other_chain: AnvilProcess, tmp_path: Path
) -> None:
    """A fresh ledger on a chain where the pool address has no code halts, records no chain."""
    w3 = web3_at(other_chain.url)
    registry = CollectorRegistry()
    try:
        with EpochLedger(tmp_path / "l") as ledger:
            plan(ledger, 1, {"a": (wallets(1)[0], 1)})
            pool = RewardPool(w3, chain.pool.address, chain.signer)
            settler = Settler(pool, ledger, chain.signer, options=FAST, registry=registry)
            assert not await settler.step()
            assert settler.halt_reason == "no_code" and chain.pool.address in (settler.halted or "")
            assert registry.get_sample_value("ioswarm_settlement_halted", {"reason": "no_code"})
            assert ledger.chain_identity() is None
            assert state(ledger, 1).state is SettlementState.PLANNED
            assert await pool.nonce("pending") == 0
    finally:
        await w3.provider.disconnect()


async def test_same_chain_id_other_genesis_halts_settlement(chain: Chain, tmp_path: Path) -> None:
    """A node with the recorded chain id but another genesis block is refused as another chain."""
    with EpochLedger(tmp_path / "l") as ledger:
        ledger.record_chain_identity(31337, "0x" + "00" * 32)  # recorded for another genesis
        plan(ledger, 1, {"a": (wallets(1)[0], 1)})
        registry = CollectorRegistry()
        settler = Settler(chain.pool, ledger, chain.signer, options=FAST, registry=registry)
        assert not await settler.step()
        assert settler.halt_reason == "genesis"
        assert registry.get_sample_value("ioswarm_settlement_halted", {"reason": "genesis"}) == 1
        assert state(ledger, 1).state is SettlementState.PLANNED
        assert await chain.pool.settled_events() == []


async def test_swapped_reward_chain_shows_in_readyz_while_the_api_keeps_serving(
    chain: Chain, other_chain: AnvilProcess, tmp_path: Path
) -> None:
    """A coordinator whose ledger was settled on one chain, started with another chain behind
    the reward RPC, serves its API and reports the halted settlement in /readyz."""
    w = wallets(1)
    data_dir = tmp_path / "data"
    with EpochLedger(data_dir / LEDGER_DIR) as ledger:
        plan(ledger, 1, {"a": (w[0], 1)})
        first = Settler(chain.pool, ledger, chain.signer, options=FAST)
        assert await first.step()
        assert ledger.chain_identity() is not None
    config = coordinator_config(
        chain.node.url,
        dataDir=str(data_dir),
        rewardContract=chain.pool.address,
        rewardSignerKey=chain.node.private_keys[0],
        rewardRpcUrl=other_chain.url,  # the node behind the reward URL was swapped
    )
    epochs = EpochManager.from_config(config, CollectorRegistry(), options=FAST)
    async with CoordinatorApp(config, epochs=epochs) as app:
        settler = epochs.settler
        assert settler is not None
        await eventually(lambda: settler.halt_reason == "chain_id", 20, what="settlement halted")
        async with aiohttp.ClientSession(f"http://127.0.0.1:{app.api_port}") as http:
            async with http.get("/readyz") as resp:
                health = await resp.json()
            assert health["settlement_halted"] == "chain_id"
            assert "4690" in health["settlement_halt_detail"]
            for path in ("/api/stats", "/swarm/status", "/swarm/epoch"):
                async with http.get(path) as resp:
                    assert resp.status == 200, path
            async with http.get("/swarm/epoch") as resp:
                assert (await resp.json())["settlement"]["halt_reason"] == "chain_id"
