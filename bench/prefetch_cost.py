"""The coordinator's L3 prefetch cost per task: node round trips, RPC calls and milliseconds.

Starts anvil without mining, fills its mempool with contract-workload transactions, then runs
the coordinator's StatePrefetcher over them in rounds the size of a poll (a fresh cache each
round, as after a new block) and reports the cost per task.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ioswarm.coordinator.prefetch import StatePrefetcher
from ioswarm.core.mempool import plan_dispatch
from ioswarm.core.tx import decode_tx
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.node.execution import ExecutionReader
from ioswarm.sim.anvil import AnvilProcess
from ioswarm.sim.l3workload import ContractWorkload


async def _run(txs: int, round_size: int) -> dict[str, Any]:
    async with (
        AnvilProcess(env=os.environ, block_time=None) as anvil,
        JsonRpcNode(anvil.url) as node,
    ):
        wl = ContractWorkload(
            node, anvil.private_keys[1], anvil.chain_id, accounts=64, mine=anvil.mine, seed=5
        )
        await wl.setup()
        for i in range(txs):
            await wl.send("erc20_transfer" if i % 2 else "storage_heavy", sender=i % 64)
        pending = await node.pending_transactions()
        head = await node.get_block("latest")
        states = await node.accounts({p.sender for p in pending}, head.number)
        plan = plan_dispatch(pending, pending, states)
        raws = await node.raw_transactions([p.tx.tx_hash for p in plan.ready])
        items = [
            (decode_tx(raws[p.tx.tx_hash]), p.tx.sender, p.sender_state)
            for p in plan.ready
            if p.tx.tx_hash in raws
        ]
        total_ms = 0.0
        calls = trips = done = 0
        for start in range(0, len(items), round_size):
            prefetcher = StatePrefetcher(ExecutionReader(node.transport))
            chunk = items[start : start + round_size]
            t0 = time.perf_counter()
            results = await prefetcher.prefetch(chunk, head.number, head.coinbase)
            total_ms += (time.perf_counter() - t0) * 1000
            calls += prefetcher.stats.rpc_calls
            trips += prefetcher.stats.round_trips
            done += sum(1 for r in results if r is not None)
        tasks = len(items)
        return {
            "tasks": tasks,
            "prefetched": done,
            "round_size": round_size,
            "round_trips_per_round": round(trips / max(1, -(-tasks // round_size)), 2),
            "rpc_calls_per_task": round(calls / max(tasks, 1), 2),
            "ms_per_task": round(total_ms / max(tasks, 1), 3),
        }


def run(txs: int = 200, round_size: int = 20) -> dict[str, Any]:
    """Measure and print the L3 prefetch cost per task (bounded: ``txs`` transactions)."""
    result = asyncio.run(_run(txs, round_size))
    print(
        f"L3 prefetch: {result['tasks']} tasks in rounds of {round_size}: "
        f"{result['round_trips_per_round']} round trips per round, "
        f"{result['rpc_calls_per_task']} RPC calls and {result['ms_per_task']} ms per task"
    )
    return result


if __name__ == "__main__":
    run()
