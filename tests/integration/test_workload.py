"""The simulated workload against a real anvil: every category lands as expected."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from ioswarm.node import JsonRpcNode, RetryPolicy
from ioswarm.sim.anvil import AnvilProcess
from ioswarm.sim.workload import Workload, WorkloadMix
from tests.helpers import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def manual_node(anvil_manual: AnvilProcess) -> AsyncIterator[JsonRpcNode]:
    """An adapter on the manually mined anvil."""
    async with JsonRpcNode(anvil_manual.url) as node:
        yield node


async def test_scenario_txs_are_included_with_expected_statuses(
    anvil_manual: AnvilProcess, manual_node: JsonRpcNode
) -> None:
    """Transfers of each type, a replacement, a filled nonce gap and a reverting call are
    included with status 1, 1, 1 and 0; the replaced tx never is."""
    wl = Workload(
        manual_node,
        anvil_manual.private_keys[0],
        chain_id=31337,
        accounts=3,
        seed=7,
        mine=anvil_manual.mine,
    )
    await wl.setup()
    assert wl.reverter is not None
    code = await manual_node.call("eth_getCode", ["0x" + wl.reverter.hex(), "latest"])
    assert code == "0x60006000fd"

    transfers = [await wl.send_transfer(kind=k) for k in ("eip1559", "legacy", "eip2930")]
    replaced, replacement = await wl.send_replacement(kind="legacy", sender=1)
    later, filler = await wl.send_gap_pair(sender=2, delay=0.05)
    revert = await wl.send_reverting_call(kind="eip2930")

    pool = {p.tx_hash for p in await manual_node.pending_transactions()}
    assert {*transfers, replacement, later, filler, revert} <= pool
    assert replaced not in pool

    statuses = await wl.wait_included([*transfers, replacement, later, filler, revert])
    assert [statuses[h] for h in transfers] == [1, 1, 1]
    assert statuses[replacement] == statuses[later] == statuses[filler] == 1
    assert statuses[revert] == 0
    assert await manual_node.call("eth_getTransactionByHash", ["0x" + replaced.hex()]) is None
    assert wl.counters.as_dict() == {
        "sent": 3 + 1 + 3 + 2 + 2 + 1,  # setup (3 fundings + deploy) + the scenarios
        "transfers": 3,
        "replacements": 1,
        "gaps": 1,
        "reverts": 1,
        "errors": 0,
    }


async def test_run_sends_every_category_and_all_get_included(anvil: AnvilProcess) -> None:
    """The random loop sends each category at the given rate and leaves nothing stuck."""
    mix = WorkloadMix(transfer=1, replacement=1, gap=1, revert=1)
    async with JsonRpcNode(anvil.url) as node:
        wl = Workload(
            node,
            anvil.private_keys[1],
            chain_id=31337,
            accounts=4,
            rate=40,
            mix=mix,
            seed=3,
            gap_delay=0.05,
        )
        counters = await wl.run(count=40)
        assert counters.sent + counters.errors >= 40
        assert min(counters.transfers, counters.replacements, counters.gaps, counters.reverts) > 0
        await eventually(_pool_empty(node), timeout=30, what="every sent tx included")
        for address in wl.addresses:
            latest = await node.call("eth_getTransactionCount", ["0x" + address.hex(), "latest"])
            pending = await node.call("eth_getTransactionCount", ["0x" + address.hex(), "pending"])
            assert latest == pending


def _pool_empty(node: JsonRpcNode) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await node.pending_transactions() == []

    return check


async def test_node_errors_are_counted_not_raised(anvil_manual: AnvilProcess) -> None:
    """When the node goes away the loop counts and logs each failure and still returns."""
    async with JsonRpcNode(anvil_manual.url, retry=RetryPolicy(attempts=1)) as node:
        wl = Workload(
            node,
            anvil_manual.private_keys[2],
            chain_id=31337,
            accounts=2,
            rate=100,
            mine=anvil_manual.mine,
        )
        await wl.setup()
        sent_before = wl.counters.sent
        await anvil_manual.stop()
        counters = await wl.run(count=5)
    assert counters.errors == 5
    assert counters.sent == sent_before
