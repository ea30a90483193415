"""Prefetch and chain truth for accounts that come, go and delegate, against a real anvil."""

from __future__ import annotations

import pytest

from ioswarm.coordinator.prefetch import Prefetched, StatePrefetcher
from ioswarm.core.mempool import plan_dispatch
from ioswarm.core.models import AccountState
from ioswarm.core.touchset import authority_of, delegation_target
from ioswarm.core.tx import DecodedTx, decode_tx
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.node.execution import ExecutionReader
from ioswarm.sim.anvil import AnvilProcess
from ioswarm.sim.l3workload import ContractWorkload

pytestmark = pytest.mark.integration


async def _prefetch_pending(
    node: JsonRpcNode, trace: bool
) -> dict[bytes, tuple[DecodedTx, Prefetched]]:
    """Every pending tx's prefetched state, by hash, as the coordinator builds it; without
    ``trace`` as for a node that lacks ``debug_traceCall`` (access lists only)."""
    pending = await node.pending_transactions()
    head = await node.get_block("latest")
    states = await node.accounts({p.sender for p in pending}, head.number)
    plan = plan_dispatch(pending, pending, states)
    raws = await node.raw_transactions([p.tx.tx_hash for p in plan.ready])
    items = [(decode_tx(raws[p.tx.tx_hash]), p.tx.sender, p.sender_state) for p in plan.ready]
    reader = ExecutionReader(node.transport)
    reader._trace_call_ok = trace
    results = await StatePrefetcher(reader).prefetch(items, head.number, head.coinbase)
    out = {}
    for (tx, _, _), got in zip(items, results, strict=True):
        assert got is not None, f"prefetch failed for 0x{tx.tx_hash.hex()}"
        out[tx.tx_hash] = (tx, got)
    return out


def _account(got: Prefetched, address: bytes) -> AccountState:
    found = [a for a in got.accounts if a.snapshot.address == address]
    assert found, f"0x{address.hex()} not prefetched"
    return found[0]


@pytest.mark.parametrize("trace", [True, False], ids=["traced", "access_list_only"])
async def test_prefetch_covers_authorities_targets_and_delegated_code(
    anvil_manual: AnvilProcess, trace: bool
) -> None:
    """A fresh authority (absent) and its target, a delegated account's current target with
    its code, and an existing code-less account (exists) are all in the tasks' state, whether
    or not the node can trace the simulation (an access list leaves delegation targets out)."""
    anvil = anvil_manual
    async with JsonRpcNode(anvil.url) as node:
        wl = ContractWorkload(
            node, anvil.private_keys[1], anvil.chain_id, accounts=3, seed=9, mine=anvil.mine
        )
        await wl.setup()
        await wl.wait_included([await wl.send("setcode_existing", sender=0)])
        delegated = next(a for a in wl.book.pools[0] if a.target is not None)

        call_in = await wl.send("delegated_call", sender=0)
        fresh = await wl.send("setcode_fresh", sender=1)
        probe = await wl.send("probe_empty", sender=2)
        tasks = await _prefetch_pending(node, trace)

        _, got = tasks[call_in]
        mine = _account(got, delegated.address)
        assert delegation_target(mine.code) == delegated.target and mine.exists
        assert delegated.target is not None
        assert _account(got, delegated.target).code  # the code the call runs
        assert (delegated.address, b"code") in got.read_set

        tx, got = tasks[fresh]
        authority = authority_of(tx.authorization_list[0])
        assert authority is not None and authority == tx.to
        absent = _account(got, authority)
        assert not absent.exists and absent.snapshot.nonce == 0 and not absent.code
        assert _account(got, tx.authorization_list[0].address).code

        _, got = tasks[probe]
        emptied = _account(got, wl.book.emptied[2].address)
        assert emptied.exists and emptied.snapshot.nonce == 1 and emptied.snapshot.balance == 0
        await anvil.mine(1)


async def test_anvil_counts_absent_accounts_and_a_cleared_delegation_reaches_the_truth(
    anvil_manual: AnvilProcess,
) -> None:
    """anvil grants absent authorities the existing-account refund (detected once), and a
    delegation cleared to the zero address shows in the block's diff as empty code."""
    anvil = anvil_manual
    async with JsonRpcNode(anvil.url) as node:
        reader = ExecutionReader(node.transport)
        assert await reader.absent_accounts_exist(anvil.chain_id)
        wl = ContractWorkload(
            node, anvil.private_keys[1], anvil.chain_id, accounts=2, seed=4, mine=anvil.mine
        )
        await wl.setup()
        await wl.wait_included([await wl.send("setcode_existing", sender=0)])
        authority = next(a for a in wl.book.pools[0] if a.target is not None)
        receipts = await wl.wait_receipts([await wl.send("setcode_clear", sender=0)])
        (receipt,) = receipts.values()
        number = int(receipt["blockNumber"], 16)
        block = await node.get_block(number, full=True)
        diffs = await reader.block_diffs(number, [t.hash for t in block.txs])
        cleared = [d for d in diffs if authority.address in d.post]
        assert cleared and cleared[0].post[authority.address].code == b""
        assert delegation_target(cleared[0].pre[authority.address].code or b"") is not None
