"""L4 state sync on a real anvil: the coordinator's store follows the chain and streams diffs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path

import aiohttp
import grpc
import pytest

from ioswarm.core.models import Level
from ioswarm.core.statehash import StateHash
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.sim.anvil import AnvilProcess
from ioswarm.sim.l3workload import ContractWorkload
from ioswarm.sim.workload import Workload
from ioswarm.state.bootstrap import AnvilDumpSource
from ioswarm.state.store import ACCOUNT, decode_account, encode_account
from ioswarm.state.sync import StateSync
from tests.helpers import eventually
from tests.integration.swarm import metadata, register_request, running_coordinator, stub

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "ioswarm_cli.main"]
BLOCKS = 20


async def dump_hash(node: JsonRpcNode) -> tuple[int, bytes]:
    """(height, state hash) of a fresh anvil_dumpState bootstrap."""
    height, entries = await AnvilDumpSource(node.transport).dump()
    return height, StateHash.of(entries).digest()


async def stored_hash(sync: StateSync, height: int) -> bytes:
    """The post-state hash the coordinator recorded for ``height``, once it got there."""
    diff = await eventually(lambda: sync.diffs.get(height), 30, what=f"diff {height}")
    return bytes(diff.post_state_hash)


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_store_follows_chain_and_streams_contiguous_diffs(
    anvil: AnvilProcess, tmp_path: Path
) -> None:
    """Under a transfer and contract workload for 20+ blocks the store's hash equals a fresh
    dump's at several heights, and a raw L4 client streams contiguous, hash-chained diffs."""
    async with (
        JsonRpcNode(anvil.url) as node,
        running_coordinator(anvil.url, taskLevel="L4", diffStoreEnabled=True) as app,
    ):
        sync = app.state_sync
        assert sync is not None and sync.ready
        start = sync.store.height
        transfers = Workload(node, anvil.private_keys[1], chain_id=anvil.chain_id, seed=3, rate=8)
        contracts = ContractWorkload(
            node, anvil.private_keys[2], anvil.chain_id, accounts=6, seed=5, rate=6
        )
        load = [
            asyncio.create_task(transfers.run(duration=120)),
            asyncio.create_task(contracts.run(duration=120)),
        ]
        try:
            checked = []
            while len(checked) < 3 or sync.store.height < start + BLOCKS:
                await asyncio.sleep(2)
                height, expected = await dump_hash(node)
                assert await stored_hash(sync, height) == expected, f"height {height}"
                checked.append(height)
        finally:
            for t in load:
                t.cancel()
            await asyncio.gather(*load, return_exceptions=True)
        assert sync.rebootstraps == 0
        seen = {e.namespace for d in sync.diffs.range(start + 1) for e in d.entries}
        assert seen == {"Account", "Code", "Storage"}

        async with stub(app.grpc_port) as s:
            await s.Register(register_request("l4-raw", Level.L4), metadata=metadata("l4-raw"))
            call = s.StreamStateDiffs(
                pb.StreamStateDiffsRequest(agent_id="l4-raw", from_height=start + 1),
                metadata=metadata("l4-raw"),
            )
            heights: list[int] = []
            prev = b""
            async for d in call:
                if heights:
                    assert d.height == heights[-1] + 1
                    assert d.prev_state_hash == prev
                heights.append(d.height)
                prev = d.post_state_hash
                if len(heights) >= BLOCKS + 2:
                    break
            call.cancel()
            assert heights[0] == start + 1
        await eventually(lambda: sync.broadcaster.subscriber_count == 0, what="stream closed")

        # Snapshot CLI against the running coordinator's store.
        out_file = tmp_path / "state.snap.gz"
        store_dir = str(sync.store.path)
        code, out, err = await run_cli(
            "snapshot", "export", "--store", store_dir, "--output", str(out_file),
            "--namespaces", "Account,Code,Storage",
        )  # fmt: skip
        assert code == 0, err
        exported = json.loads(out)
        assert exported["entries"] > 0
        code, out, err = await run_cli("snapshot", "inspect", str(out_file))
        assert code == 0, err
        assert json.loads(out)["height"] == exported["height"]
        code, out, err = await run_cli("snapshot", "verify", str(out_file))
        assert code == 0, err
        assert json.loads(out)["sha256"] == exported["sha256"]


async def test_stream_refusals(anvil_manual: AnvilProcess) -> None:
    """StreamStateDiffs refuses without L4 sync, for non-L4 agents and below the window."""
    anvil = anvil_manual
    await anvil.mine(5)  # the store bootstraps at 5: height 1 is below its window
    async with running_coordinator(anvil.url) as app, stub(app.grpc_port) as s:
        await s.Register(register_request("plain", Level.L4), metadata=metadata("plain"))
        call = s.StreamStateDiffs(
            pb.StreamStateDiffsRequest(agent_id="plain", from_height=1), metadata=metadata("plain")
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    async with (
        running_coordinator(anvil.url, diffStoreEnabled=True) as app,
        stub(app.grpc_port) as s,
    ):
        await s.Register(register_request("l2", Level.L2), metadata=metadata("l2"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.StreamStateDiffs(
                pb.StreamStateDiffsRequest(agent_id="l2", from_height=1), metadata=metadata("l2")
            ).read()
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await s.Register(register_request("l4", Level.L4), metadata=metadata("l4"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.StreamStateDiffs(
                pb.StreamStateDiffsRequest(agent_id="l4", from_height=1), metadata=metadata("l4")
            ).read()
        assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.DownloadSnapshot(
                pb.DownloadSnapshotRequest(agent_id="l4"), metadata=metadata("l4")
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_heartbeat_state_hash_is_compared_per_height(
    anvil_manual: AnvilProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """An L4 agent's heartbeat hash is checked against the coordinator's at that height:
    equal and different hashes are counted once per new height, and a difference is logged."""
    anvil = anvil_manual
    await anvil.mine(3)
    async with (
        running_coordinator(anvil.url, diffStoreEnabled=True) as app,
        stub(app.grpc_port) as s,
    ):
        sync = app.state_sync
        assert sync is not None and sync.ready
        await s.Register(register_request("l4", Level.L4), metadata=metadata("l4"))
        await transfer(anvil)
        await anvil.mine(2)
        await eventually(lambda: sync.store.height == 5, what="store at 5")

        async def beat(height: int, state_hash: bytes) -> dict[str, int]:
            req = pb.HeartbeatRequest(agent_id="l4", state_height=height, state_hash=state_hash)
            assert (await s.Heartbeat(req, metadata=metadata("l4"))).alive
            (row,) = [a for a in app.coordinator.views.agents() if a["agent_id"] == "l4"]
            return dict(row["l4_state"])

        h4 = sync.hash_at(4)
        assert h4 is not None and h4 != sync.store.state_hash
        assert (await beat(4, h4))["heights_checked"] == 1
        assert (await beat(4, h4))["heights_checked"] == 1  # same height: not counted again
        state = await beat(5, sync.store.state_hash)
        assert (state["heights_checked"], state["mismatched"], state["first_checked"]) == (2, 0, 4)
        await anvil.mine(1)
        await eventually(lambda: sync.store.height == 6, what="store at 6")
        state = await beat(6, h4)  # the agent claims an old hash at the new height
        assert (state["heights_checked"], state["mismatched"], state["last_checked"]) == (3, 1, 6)
        assert any(
            "L4 state differs agent_id=l4 height=6" in r.getMessage() for r in caplog.records
        )
        state = await beat(99, h4)  # not reached yet: nothing to compare with
        assert (state["height"], state["heights_checked"]) == (99, 3)
        metrics = app.coordinator.metrics.l4_state_checks
        assert metrics.labels("equal")._value.get() == 2
        assert metrics.labels("different")._value.get() == 1


DEV0 = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"  # anvil's first development account


async def transfer(anvil: AnvilProcess, value: int = 1) -> None:
    await anvil.rpc(
        "eth_sendTransaction", [{"from": DEV0, "to": "0x" + "77" * 20, "value": hex(value)}]
    )


async def test_snapshot_download_gap_catch_up_and_divergence_rebootstrap(
    anvil_manual: AnvilProcess,
) -> None:
    """Periodic exports are advertised by DownloadSnapshot and served over HTTP; missed blocks
    are caught up; a store that disagrees with the chain is rebuilt from the node."""
    anvil = anvil_manual
    async with (
        JsonRpcNode(anvil.url) as node,
        running_coordinator(
            anvil.url, diffStoreEnabled=True, snapshotIntervalBlocks=2, taskLevel="L4"
        ) as app,
        stub(app.grpc_port) as s,
    ):
        sync = app.state_sync
        assert sync is not None
        for _ in range(4):
            await transfer(anvil)
            await anvil.mine(1)
        head = await node.block_number()
        await eventually(lambda: sync.store.height == head, 30, what="store at head")
        await eventually(lambda: sync.latest_snapshot() is not None, 30, what="an export")

        await s.Register(register_request("l4", Level.L4), metadata=metadata("l4"))
        resp = await s.DownloadSnapshot(
            pb.DownloadSnapshotRequest(agent_id="l4"), metadata=metadata("l4")
        )
        assert resp.url.endswith(".snap.gz") and resp.height % 2 == 0 and resp.size > 0
        async with aiohttp.ClientSession() as http, http.get(resp.url) as r:
            assert r.status == 200
            body = await r.read()
        assert len(body) == resp.size and hashlib.sha256(body).digest() == resp.sha256

        # A gap: blocks the sync never hears of are caught up when the next one arrives.
        await eventually(lambda: sync._export is None, 30, what="export done")
        sync.ready = False
        for _ in range(3):
            await transfer(anvil)
            await anvil.mine(1)
        await eventually(lambda: app.coordinator.head.number == head + 3, 30, what="watcher")
        assert sync.store.height == head
        sync.ready = True
        await transfer(anvil)
        await anvil.mine(1)
        await eventually(lambda: sync.store.height == head + 4, 30, what="caught up")
        height, expected = await dump_hash(node)
        assert height == head + 4 and sync.store.state_hash == expected
        assert [d.height for d in sync.diffs.range(head + 1)] == list(range(head + 1, head + 5))

        # An L4 task names the store height it was prepared at and ships no state.
        tasks = s.GetTasks(pb.GetTasksRequest(agent_id="l4"), metadata=metadata("l4"))
        await eventually(lambda: app.coordinator.dispatcher.stream_count() == 1, what="stream")
        await transfer(anvil)
        async with asyncio.timeout(30):  # a guard against hanging, not a performance bound
            batch = await tasks.read()
        assert isinstance(batch, pb.TaskBatch)
        task = batch.tasks[0]
        assert task.level == pb.TaskLevel.Value("L4") and not task.accounts
        assert task.state_height == sync.store.height == head + 4
        tasks.cancel()

        # Divergence: the store's idea of DEV0's balance is wrong; the next block rebuilds it.
        address = bytes.fromhex(DEV0[2:])
        raw = sync.store._read(lambda v: v.get(ACCOUNT, address))
        assert raw is not None
        acct = decode_account(address, raw)
        bogus = encode_account(acct.nonce, acct.balance + 1, acct.code_hash)
        # No public API writes without moving the height, which is the point: reach inside.
        sync.store._write(lambda txn: txn.put(address, bogus, db=sync.store._dbs[ACCOUNT]))
        await transfer(anvil)
        await anvil.mine(1)
        await eventually(lambda: sync.rebootstraps == 1, 30, what="re-bootstrap")
        await anvil.mine(2)
        head = await node.block_number()
        await eventually(lambda: sync.store.height == head, 30, what="store at head again")
        height, expected = await dump_hash(node)
        assert height == head and sync.store.state_hash == expected


async def test_reorg_rebuilds_the_store(anvil_manual: AnvilProcess) -> None:
    """When blocks the store followed are replaced (revert and re-mine), the store is rebuilt
    from the node and ends equal to a fresh dump."""
    anvil = anvil_manual
    async with (
        JsonRpcNode(anvil.url) as node,
        running_coordinator(anvil.url, diffStoreEnabled=True) as app,
    ):
        sync = app.state_sync
        assert sync is not None
        snap = await anvil.rpc("evm_snapshot", [])
        for _ in range(2):
            await transfer(anvil, 5)
            await anvil.mine(1)
        head = await node.block_number()
        await eventually(lambda: sync.store.height == head, 30, what="store at head")
        await anvil.rpc("evm_revert", [snap])
        await transfer(anvil, 9)
        await anvil.mine(1)
        await eventually(lambda: app.coordinator.head.number < head, 30, what="watcher rewound")
        for _ in range(3):
            await transfer(anvil, 7)
            await anvil.mine(1)
        await eventually(lambda: sync.rebootstraps >= 1, 30, what="re-bootstrap")
        final = await node.block_number()
        await eventually(lambda: sync.store.height == final, 30, what="store at new head")
        height, expected = await dump_hash(node)
        assert height == final and sync.store.state_hash == expected
