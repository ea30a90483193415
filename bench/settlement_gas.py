"""Settlement gas of AgentRewardPool for 1, 10, 100 and 500 agents on a local anvil (prague).

Scenarios, each on a fresh pool per agent count:

- ``settle_first``: ``depositAndSettle`` listing agents the pool has never seen.
- ``settle_first_accrual``: the next epoch, when each agent's pending slot is first written.
- ``settle_steady``: later epochs, agents known, every weight changing.
- ``claim_first``: ``depositSettleAndClaim`` for new agents paying each one (recipient accounts
  are empty, so each payout also pays the 25,000 gas new-account surcharge).
- ``claim_steady``: ``depositSettleAndClaim`` with known agents, changing weights, all paid.

Marginal gas per agent is (gas at 500 - gas at 100) / 400; the target for ``settle_steady`` is
at most 30,000 (the reference pool needs about 37,000). Printed, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_account import Account
from eth_utils.crypto import keccak
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.providers.async_base import AsyncBaseProvider

from ioswarm.rewards.pool import RewardPool
from ioswarm.sim.anvil import AnvilProcess

AGENT_COUNTS = (1, 10, 100, 500)
TARGET_MARGINAL_GAS = 30_000
EPOCH_DEPOSIT = 45 * 10**16
# A 500-agent first-time depositSettleAndClaim needs ~30M gas, above anvil's default block.
BLOCK_GAS_LIMIT = 300_000_000
SCENARIOS = ("settle_first", "settle_first_accrual", "settle_steady", "claim_first", "claim_steady")


def _agents(count: int, tag: str) -> list[str]:
    return [Account.from_key(keccak(text=f"{tag}-{count}-{i}")).address for i in range(count)]


def _weights(count: int, epoch: int) -> list[int]:
    # Differ from epoch to epoch for every agent, never zero.
    return [1 + (i + epoch) % 7 + epoch for i in range(count)]


async def _measure_count(
    w3: AsyncWeb3[AsyncBaseProvider], coordinator: Any, count: int
) -> dict[str, int]:
    gas: dict[str, int] = {}
    pool = await RewardPool.deploy(w3, coordinator)
    agents = _agents(count, "settle")
    settle = pool.deposit_and_settle
    gas["settle_first"] = (await settle(agents, _weights(count, 0), EPOCH_DEPOSIT)).gas_used
    gas["settle_first_accrual"] = (await settle(agents, _weights(count, 1), EPOCH_DEPOSIT)).gas_used
    await settle(agents, _weights(count, 2), EPOCH_DEPOSIT)
    gas["settle_steady"] = (await settle(agents, _weights(count, 3), EPOCH_DEPOSIT)).gas_used

    pool = await RewardPool.deploy(w3, coordinator)
    agents = _agents(count, "claim")
    both = pool.deposit_settle_and_claim
    receipt = await both(agents, _weights(count, 0), agents, EPOCH_DEPOSIT)
    assert len(receipt.claimed) == count, "every new agent is paid"
    gas["claim_first"] = receipt.gas_used
    for epoch in (1, 2):
        await both(agents, _weights(count, epoch), agents, EPOCH_DEPOSIT)
    receipt = await both(agents, _weights(count, 3), agents, EPOCH_DEPOSIT)
    assert len(receipt.claimed) == count, "every known agent is paid"
    gas["claim_steady"] = receipt.gas_used
    return gas


async def _measure() -> dict[str, Any]:
    extra = ("--gas-limit", str(BLOCK_GAS_LIMIT))
    async with AnvilProcess(env=os.environ, block_time=None, extra_args=extra) as node:
        await node.rpc("evm_setAutomine", [True])
        w3: AsyncWeb3[AsyncBaseProvider] = AsyncWeb3(AsyncHTTPProvider(node.url))
        try:
            coordinator = Account.from_key(node.private_keys[0])
            by_count = {n: await _measure_count(w3, coordinator, n) for n in AGENT_COUNTS}
        finally:
            await w3.provider.disconnect()
    low, high = AGENT_COUNTS[-2], AGENT_COUNTS[-1]
    marginal = {
        name: (by_count[high][name] - by_count[low][name]) // (high - low) for name in SCENARIOS
    }
    return {
        "gas": {str(n): values for n, values in by_count.items()},
        "marginal_gas_per_agent": marginal,
        "target_marginal_gas": TARGET_MARGINAL_GAS,
        "steady_marginal_within_target": marginal["settle_steady"] <= TARGET_MARGINAL_GAS,
    }


def _print(results: dict[str, Any]) -> None:
    print("== AgentRewardPool settlement gas (anvil, prague) ==")
    print(f"{'agents':>7} " + " ".join(f"{name:>21}" for name in SCENARIOS))
    for count, values in results["gas"].items():
        print(f"{count:>7} " + " ".join(f"{values[name]:>21,}" for name in SCENARIOS))
    marginal = results["marginal_gas_per_agent"]
    print(f"{'/agent':>7} " + " ".join(f"{marginal[name]:>21,}" for name in SCENARIOS))
    verdict = "within" if results["steady_marginal_within_target"] else "ABOVE"
    print(
        f"steady-state depositAndSettle: {marginal['settle_steady']:,} gas per agent, "
        f"{verdict} the {results['target_marginal_gas']:,} target"
    )


def run() -> dict[str, Any]:
    """Measure every scenario; returns gas per agent count and marginal gas per agent."""
    results = asyncio.run(_measure())
    _print(results)
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
