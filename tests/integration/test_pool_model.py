"""The ledger's pool model replays the contract's arithmetic to the wei."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.providers.async_base import AsyncBaseProvider

from ioswarm.core.rewards import PoolModel
from ioswarm.rewards.pool import RewardPool
from ioswarm.sim.anvil import AnvilProcess

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(anvil_manual: AnvilProcess) -> AsyncIterator[RewardPool]:
    """A fresh pool on an automining anvil, settled by anvil's first account."""
    await anvil_manual.rpc("evm_setAutomine", [True])
    w3: AsyncWeb3[AsyncBaseProvider] = AsyncWeb3(AsyncHTTPProvider(anvil_manual.url))
    try:
        yield await RewardPool.deploy(w3, Account.from_key(anvil_manual.private_keys[0]))
    finally:
        await w3.provider.disconnect()


async def test_model_matches_chain_over_uneven_epochs(pool: RewardPool) -> None:
    """After epochs with odd amounts, joins, leaves and zero-weight deposits, every agent's
    on-chain claimable equals the model's, though per-epoch floors would be short."""
    rng = random.Random(7)
    wallets = [Account.create().address for _ in range(6)]
    model = PoolModel()
    floors = dict.fromkeys(wallets, 0)
    for epoch in range(6):
        active = rng.sample(wallets, rng.randint(0, 5))
        listed = wallets if epoch % 2 else active  # sometimes departed agents are sent 0
        weights = [rng.randint(1, 10**6) if w in active else 0 for w in listed]
        value = rng.randint(10**15, 10**18) + 7  # never a round number
        await pool.deposit_and_settle(listed, weights, value)
        model.settle(listed, weights, value)
        total = sum(weights)
        for w, weight in zip(listed, weights, strict=True):
            if total:
                floors[w] += value * weight // total
    exact = 0
    for w in wallets:
        on_chain = await pool.claimable(w)
        assert on_chain == model.claimable(w)
        exact += on_chain != floors[w]
    assert exact >= 1  # the floors really differ: the model is needed, not a coincidence
