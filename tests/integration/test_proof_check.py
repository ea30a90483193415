"""eth_getProof answers are checked against the block's state root (real anvil).

anvil, while it mines a block, can answer a read of the previous block with the new state.
That race cannot be triggered on demand, so a transport here answers every proof request with
the state of the newest block instead of the one asked for: real proofs, of the wrong block.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from ioswarm.errors import NodeError
from ioswarm.node import JsonRpcNode, JsonRpcTransport
from ioswarm.node.execution import ExecutionReader
from ioswarm.node.rpc import JsonRpcCall, RpcResult
from ioswarm.sim.anvil import AnvilProcess

pytestmark = pytest.mark.integration

DEV0 = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
FRESH = bytes.fromhex("ab" * 20)


class LatestStateTransport(JsonRpcTransport):
    """Sends eth_getProof for "latest" whatever block it names (the header read is untouched)."""

    async def batch(
        self, calls: Sequence[JsonRpcCall], *, attempts: int | None = None
    ) -> list[RpcResult]:
        moved = [(m, [*p[:2], "latest"]) if m == "eth_getProof" else (m, p) for m, p in calls]
        return await super().batch(moved, attempts=attempts)


async def test_a_proof_of_another_block_is_not_used(
    anvil_manual: AnvilProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """The same read passes at the block it names and is refused when answered from a later one."""
    anvil = anvil_manual
    await anvil.mine(1)
    before = int(str(await anvil.rpc("eth_blockNumber")), 16)
    await anvil.rpc(
        "eth_sendTransaction", [{"from": DEV0, "to": "0x" + FRESH.hex(), "value": "0x5"}]
    )
    await anvil.mine(1)
    async with JsonRpcTransport(anvil.url) as honest:
        got = await ExecutionReader(honest).account_data({FRESH: []}, before)
        assert got[FRESH].snapshot.balance == 0  # the real state at that block
        latest = await ExecutionReader(honest).account_data({FRESH: []}, before + 1)
        assert latest[FRESH].snapshot.balance == 5
    async with LatestStateTransport(anvil.url) as racy:
        with caplog.at_level(logging.WARNING):
            got = await ExecutionReader(racy).account_data({FRESH: []}, before)
        assert got == {}  # the answer had balance 5: another block's state, refused
        assert any("another block's state" in r.getMessage() for r in caplog.records)
        # At the newest block the substitution changes nothing and the proof checks out.
        got = await ExecutionReader(racy).account_data({FRESH: []}, before + 1)
        assert got[FRESH].snapshot.balance == 5


class LatestBalanceTransport(JsonRpcTransport):
    """Answers eth_getBalance for "latest" whatever block it names: a node whose plain reads
    are off by a block (the proofs are honest)."""

    async def batch(
        self, calls: Sequence[JsonRpcCall], *, attempts: int | None = None
    ) -> list[RpcResult]:
        moved = [(m, [p[0], "latest"]) if m == "eth_getBalance" else (m, p) for m, p in calls]
        return await super().batch(moved, attempts=attempts)


async def test_account_reads_retry_then_refuse_another_blocks_state(
    anvil_manual: AnvilProcess,
) -> None:
    """The adapter's proof check (L2 sender state) fails with a clear error rather than use a
    proof of another block; at the block the answer really is from, it passes."""
    anvil = anvil_manual
    await anvil.mine(1)
    before = int(str(await anvil.rpc("eth_blockNumber")), 16)
    await anvil.rpc(
        "eth_sendTransaction", [{"from": DEV0, "to": "0x" + FRESH.hex(), "value": "0x5"}]
    )
    await anvil.mine(1)
    async with JsonRpcNode(anvil.url) as honest:
        assert (await honest.accounts([FRESH], before))[FRESH].balance == 0
    racy_transport = LatestStateTransport(anvil.url)
    async with JsonRpcNode(anvil.url, transport=racy_transport, proof_check_sample=1.0) as racy:
        with pytest.raises(NodeError, match="another block's state"):
            await racy.accounts([FRESH], before)
        assert (await racy.accounts([FRESH], before + 1))[FRESH].balance == 5


async def test_sampled_proofs_catch_plain_reads_of_another_block(
    anvil_manual: AnvilProcess,
) -> None:
    """Plain reads are pinned to the block's hash; a node whose plain answers come from another
    block passes unchecked without proofs, and is refused once the sampled proof covers the
    address (after reading again: a node mid-block answers right the next time)."""
    anvil = anvil_manual
    await anvil.mine(1)
    before = int(str(await anvil.rpc("eth_blockNumber")), 16)
    block = await anvil.rpc("eth_getBlockByNumber", [hex(before), False])
    assert isinstance(block, dict)
    block_hash = bytes.fromhex(block["hash"][2:])
    await anvil.rpc(
        "eth_sendTransaction", [{"from": DEV0, "to": "0x" + FRESH.hex(), "value": "0x5"}]
    )
    await anvil.mine(1)
    async with JsonRpcNode(anvil.url) as honest:
        # By hash: the state of that block, however far the chain has moved since.
        assert (await honest.accounts([FRESH], before, block_hash))[FRESH].balance == 0
        assert honest.account_reader.proofs_checked == 0  # the default samples none here
    unchecked = JsonRpcNode(anvil.url, transport=LatestBalanceTransport(anvil.url))
    async with unchecked:
        assert (await unchecked.accounts([FRESH], before, block_hash))[FRESH].balance == 5
    checked = JsonRpcNode(
        anvil.url, transport=LatestBalanceTransport(anvil.url), proof_check_sample=1.0
    )
    async with checked:
        with pytest.raises(NodeError, match="proven as"):
            await checked.accounts([FRESH], before, block_hash)
        # Read and proven again each time, in case the node was mid-block; then refused.
        assert checked.account_reader.proof_mismatches == 3
