"""The Go reference agent's JSON wire on the coordinator's gRPC port, beside protobuf agents.

The JSON clients here speak the reference's exact messages: dicts with the Go structs' JSON
names (iotex-core ``ioswarm/proto/types.go``, ioswarm-agent ``types.go``), sent as raw bytes over
a grpc.aio channel with identity serializers, as the Go agent's JSON codec (registered under the
name ``proto``) sends them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
from eth_account import Account
from prometheus_client import CollectorRegistry
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.providers.async_base import AsyncBaseProvider

from ioswarm.coordinator.app import CoordinatorApp
from ioswarm.core.address import to_io
from ioswarm.core.models import AccountSnapshot, Level
from ioswarm.core.rules import Reject
from ioswarm.core.validation import Check, check_l1, check_l2
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.proto import ioswarm_pb2_grpc as pb_grpc
from ioswarm.rewards.epochs import EpochManager
from ioswarm.rewards.pool import RewardPool
from ioswarm.rewards.settler import SettlerOptions
from ioswarm.sim.anvil import AnvilProcess
from ioswarm.sim.workload import Workload
from tests.helpers import eventually
from tests.integration.swarm import coordinator_config, metadata, signed_transfer
from tests.integration.test_adversaries import confirmed_epochs, start_honest
from tests.integration.test_hostile import settled_coordinator

pytestmark = pytest.mark.integration

EPOCHS_WANTED = 2
SERVICE = "/ioswarm.IOSwarm/"
# Reference task levels: L1 is 0, L2 is 1 (ioswarm-agent main.go parseLevel).
REF_L1, REF_L2, REF_L3 = 0, 1, 2


def go_json(body: dict[str, Any]) -> bytes:
    """What Go's json.Marshal writes: compact, keys in struct order."""
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class JsonClient:
    """Raw calls in the reference agent's JSON, as its conn.Invoke / NewStream make them."""

    channel: grpc.aio.Channel
    agent_id: str

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return metadata(self.agent_id)

    async def raw(self, method: str, body: bytes) -> bytes:
        call = self.channel.unary_unary(
            SERVICE + method, request_serializer=None, response_deserializer=None
        )
        out: bytes = await call(body, metadata=self.md)
        return out

    async def call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = await self.raw(method, go_json(body))
        assert reply[:1] == b"{", reply[:40]  # answered in the caller's codec
        out: dict[str, Any] = json.loads(reply)
        return out

    def stream(self, method: str, body: dict[str, Any]) -> Any:
        call = self.channel.unary_stream(
            SERVICE + method, request_serializer=None, response_deserializer=None
        )
        return call(go_json(body), metadata=self.md)

    async def register(self, level: int, wallet: str) -> dict[str, Any]:
        return await self.call(
            "Register",
            {
                "agent_id": self.agent_id,
                "capability": level,
                "region": "test",
                "version": "v1.4.0-json",
                "wallet_address": wallet,
            },
        )

    def get_tasks(self, level: int) -> Any:
        return self.stream(
            "GetTasks", {"agent_id": self.agent_id, "max_level": level, "max_batch_size": 10}
        )

    async def heartbeat(self, processed: int = 0) -> dict[str, Any]:
        return await self.call(
            "Heartbeat",
            {
                "agent_id": self.agent_id,
                "tasks_processed": processed,
                "tasks_pending": 0,
                "cpu_usage": 0,
                "mem_usage": 0,
            },
        )

    async def submit(self, batch_id: str, results: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.call(
            "SubmitResults",
            {
                "agent_id": self.agent_id,
                "batch_id": batch_id,
                "results": results,
                "timestamp": int(time.time() * 1000),
            },
        )


def honest_answer(task: dict[str, Any], chain_id: int, with_sender: bool) -> dict[str, Any]:
    """Real L1/L2 checks with the project's own transaction decoding, written as the
    reference's TaskResult (plus the optional ``sender`` extension when asked)."""
    started = time.perf_counter()
    raw = base64.b64decode(task["tx_raw"])
    level = task["level"] + 1  # the reference numbers levels from 0
    sender = task["sender"]
    check: Check
    if level == Level.L1:
        check = check_l1(raw, chain_id)
    else:
        state = None
        if sender is not None:
            state = AccountSnapshot(b"", int(sender["balance"]), sender["nonce"])
        check = check_l2(raw, chain_id, state, task["block_gas_limit"])
    result: dict[str, Any] = {"task_id": task["task_id"], "valid": check.valid}
    if not check.valid:
        reason = check.reject_reason
        if reason == Reject.NONCE_TOO_LOW and check.tx is not None and sender is not None:
            # The reference's own text for this rule; the coordinator maps it.
            reason = f"nonce too low: tx={check.tx.nonce} account={sender['nonce']}"
        result["reject_reason"] = reason
    result["note"] = "checked"
    result["gas_estimate"] = check.gas_estimate
    result["latency_us"] = int((time.perf_counter() - started) * 1e6)
    if with_sender and check.sender:
        result["sender"] = "0x" + check.sender.hex()
    return result


def lazy_answer(task: dict[str, Any], chain_id: int, with_sender: bool) -> dict[str, Any]:
    """What an agent that checks nothing sends: valid, always."""
    return {"task_id": task["task_id"], "valid": True, "gas_estimate": 21000, "latency_us": 3}


Answer = Callable[[dict[str, Any], int, bool], dict[str, Any]]


@dataclass
class JsonAgent:
    """A reference-shaped agent loop: Register, GetTasks, SubmitResults per batch, Heartbeat."""

    port: int
    agent_id: str
    level: int
    answer: Answer
    with_sender: bool = False
    wallet: str = field(default_factory=lambda: Account.create().address)
    # Register the wallet in its io1 spelling, as an IoTeX operator's Go agent may.
    io1_wallet: bool = False
    batches: int = 0
    accepted: int = 0
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"json-agent-{self.agent_id}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            client = JsonClient(channel, self.agent_id)
            given = to_io(self.wallet) if self.io1_wallet else self.wallet
            reply = await client.register(self.level, given)
            assert reply["accepted"] is True, reply
            chain_id = reply["chain_id"]  # an ioswarm extension the Go agent ignores
            beats = asyncio.create_task(self._beat(client, reply["heartbeat_interval_sec"]))
            try:
                async for raw in client.get_tasks(self.level):
                    assert raw[:1] == b"{", raw[:40]
                    batch = json.loads(raw)
                    self.batches += 1
                    results = [self.answer(t, chain_id, self.with_sender) for t in batch["tasks"]]
                    done = await client.submit(batch["batch_id"], results)
                    assert done["accepted"] is True, done
                    self.accepted += done["accepted_count"]
            finally:
                beats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beats

    async def _beat(self, client: JsonClient, interval: int) -> None:
        while True:
            await asyncio.sleep(max(1, interval) / 2)
            reply = await client.heartbeat(self.accepted)
            assert reply["alive"] is True and reply["directive"] == "continue", reply


@dataclass
class BareProtobufAgent:
    """A protobuf agent that answers valid without the recovered sender: no waiver for it."""

    port: int
    agent_id: str
    wallet: str = field(default_factory=lambda: Account.create().address)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"bare-{self.agent_id}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        md = metadata(self.agent_id)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            s = pb_grpc.IOSwarmStub(channel)
            await s.Register(
                pb.RegisterRequest(
                    agent_id=self.agent_id,
                    capability=pb.L2,
                    region="test",
                    version="t",
                    wallet_address=self.wallet,
                ),
                metadata=md,
            )
            beat_due = time.monotonic()
            async for batch in s.GetTasks(pb.GetTasksRequest(agent_id=self.agent_id), metadata=md):
                results = [pb.TaskResult(task_id=t.task_id, valid=True) for t in batch.tasks]
                await s.SubmitResults(
                    pb.BatchResult(
                        agent_id=self.agent_id, batch_id=batch.batch_id, results=results
                    ),
                    metadata=md,
                )
                if time.monotonic() >= beat_due:
                    await s.Heartbeat(pb.HeartbeatRequest(agent_id=self.agent_id), metadata=md)
                    beat_due = time.monotonic() + 2


async def test_reference_json_agents_are_compared_and_paid_beside_protobuf_agents(
    anvil: AnvilProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """On one port: honest JSON agents at L1 and L2 (real checks, no sender evidence) are
    compared with the chain, pass their canaries and are paid on-chain; a lazy JSON agent
    fails canaries and earns nothing; a protobuf agent without sender evidence is incomplete
    and earns nothing; honest protobuf agents are paid as before."""
    signer_key = anvil.private_keys[2]
    w3: AsyncWeb3[AsyncBaseProvider] = AsyncWeb3(AsyncHTTPProvider(anvil.url))
    pool = await RewardPool.deploy(w3, Account.from_key(signer_key))
    config = coordinator_config(
        anvil.url,
        taskLevel="L2",
        taskTimeoutMs=3000,
        rewardContract=pool.address,
        rewardSignerKey=signer_key,
        rewardRpcUrl=anvil.url,
        epochRewardIOTX="1",
        # A canary at least every 4 tasks: a full epoch gives each agent about ten, so one
        # that checks nothing meets an invalid kind in every epoch it could earn in (three
        # canaries at least), unless all its canaries are of the valid kinds (a third or a
        # quarter of them: (1/3)^3 at worst, in a short epoch).
        canaryPct=50,
        reward={"epochBlocks": 12, "minTasksForReward": 2, "minCanaries": 3},
    )
    epochs = EpochManager.from_config(
        config, CollectorRegistry(), options=SettlerOptions(poll_interval_sec=0.2)
    )
    async with JsonRpcNode(anvil.url) as node, CoordinatorApp(config, epochs=epochs) as app:
        c = app.coordinator
        port = app.grpc_port
        proto = {
            agent_id: start_honest(port, agent_id, level)
            for agent_id, level in (("proto-l1", Level.L1), ("proto-l2", Level.L2))
        }
        json_agents = {
            "json-l1": JsonAgent(port, "json-l1", REF_L1, honest_answer, with_sender=True),
            "json-l2": JsonAgent(port, "json-l2", REF_L2, honest_answer, io1_wallet=True),
            "json-lazy": JsonAgent(port, "json-lazy", REF_L2, lazy_answer),
        }
        bare = BareProtobufAgent(port, "proto-bare")
        for agent in json_agents.values():
            agent.start()
        bare.start()
        await eventually(lambda: c.dispatcher.stream_count() == 6, 30, what="six task streams")
        wallets = {agent_id: wallet for agent_id, (_, wallet) in proto.items()}
        wallets |= {agent_id: a.wallet for agent_id, a in json_agents.items()}
        wallets[bare.agent_id] = bare.wallet

        load = Workload(node, anvil.private_keys[0], chain_id=anvil.chain_id, accounts=8, rate=8)
        await load.setup()
        running = asyncio.ensure_future(load.run(duration=90))
        try:
            start = confirmed_epochs(epochs)
            await eventually(
                lambda: confirmed_epochs(epochs) >= start + EPOCHS_WANTED,
                80,
                interval=0.5,
                what=f"{EPOCHS_WANTED} epochs settled on-chain",
            )
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        async with (
            aiohttp.ClientSession(f"http://127.0.0.1:{app.api_port}") as http,
            http.get("/swarm/agents") as resp,
        ):
            assert resp.status == 200
            rows = {row["agent_id"]: row for row in (await resp.json())["agents"]}
        for agent in json_agents.values():
            assert agent.task is not None and not agent.task.done(), agent.agent_id
            await agent.stop()
        await bare.stop()
        for runner, _ in proto.values():
            await runner.stop()
        await eventually(lambda: not epochs.ledger.unsettled(), 20, what="ledger settled")
        claimable = {a: await pool.claimable(w) for a, w in wallets.items()}
        history = {a: epochs.ledger.agent_history(a) for a in wallets}
        await w3.provider.disconnect()

    summary = {
        a: {k: rows[a][k] for k in ("shadow", "canaries", "incomplete", "earning")} for a in rows
    }
    mismatches = [m for r in caplog.records if "shadow mismatch" in (m := r.getMessage())]
    print(json.dumps({"rows": summary, "claimable": claimable, "mismatches": mismatches}, indent=1))

    for agent_id in ("json-l1", "json-l2"):
        row = rows[agent_id]
        assert row["level"] == ("L1" if agent_id == "json-l1" else "L2")
        shadow = row["shadow"]
        assert shadow is not None and shadow["matched"] > 0, (agent_id, shadow)
        assert shadow["mismatched"] == 0, (agent_id, shadow)
        assert row["incomplete"] == 0 and not row["refused"], (agent_id, row)
        assert row["canaries"]["matched"] > 0 and row["canaries"]["failed"] == 0, row["canaries"]
        assert any(e.payout.weight > 0 for e in history[agent_id]), history[agent_id]
        assert claimable[agent_id] > 0, (agent_id, claimable)
    # Protobuf agents beside them work as before (they answer slower than these in-process
    # JSON clients, so they get fewer tasks; their pay is pinned by the adversaries test).
    for agent_id in proto:
        row = rows[agent_id]
        assert row["shadow"]["matched"] > 0 and row["shadow"]["mismatched"] == 0, row
        assert row["incomplete"] == 0 and row["canaries"]["failed"] == 0, row

    lazy = rows["json-lazy"]
    assert lazy["canaries"]["failed"] > 0, lazy["canaries"]
    assert "canary_failed" in lazy["earning"]["reasons"], lazy["earning"]
    failed_epochs = [e for e in history["json-lazy"] if e.payout.canary_failed > 0]
    assert failed_epochs and all(e.payout.weight == 0 for e in failed_epochs), failed_epochs
    assert all(e.payout.reason == "canary_failed" for e in failed_epochs), failed_epochs
    assert claimable["json-lazy"] == 0, claimable

    bare_row = rows["proto-bare"]
    assert bare_row["incomplete"] > 0, bare_row  # no waiver without the JSON codec
    assert (bare_row["shadow"] or {}).get("matched", 0) == 0, bare_row["shadow"]
    assert all(e.payout.weight == 0 for e in history["proto-bare"]), history["proto-bare"]
    assert claimable["proto-bare"] == 0, claimable


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("ioswarm", "grpc"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@pytest.fixture
async def app(anvil_manual: AnvilProcess) -> AsyncIterator[CoordinatorApp]:
    # No canaries: these tests hand-answer one known task at a time.
    async with settled_coordinator(anvil_manual.url, taskTimeoutMs=60_000, canaryPct=0) as a:
        yield a


@contextlib.asynccontextmanager
async def json_client(app: CoordinatorApp, agent_id: str) -> AsyncIterator[JsonClient]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        yield JsonClient(channel, agent_id)


def refused_lines(caplog: pytest.LogCaptureFixture, method: str) -> list[str]:
    return [
        m
        for r in caplog.records
        if (m := r.getMessage()).startswith("call refused") and f"method={method} " in m
    ]


async def test_one_task_in_json_is_go_shaped_and_judged_without_sender(
    app: CoordinatorApp, anvil_manual: AnvilProcess
) -> None:
    """A JSON L2 agent gets a Go-shaped task (level 1, balance a decimal string, addresses as
    strings, no sender address), answers it valid without a sender, and the answer matches
    once the tx lands; the same bare answer in protobuf is incomplete."""
    c = app.coordinator
    async with (
        json_client(app, "go-l2") as client,
        JsonRpcNode(anvil_manual.url) as node,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel,
    ):
        reg = await client.register(REF_L2, "0x" + "42" * 20)
        assert list(reg) == ["accepted", "heartbeat_interval_sec", "chain_id"]
        assert reg["accepted"] is True and reg["chain_id"] == anvil_manual.chain_id
        rec = c.registry.get("go-l2")
        assert rec is not None and rec.level is Level.L2 and rec.codec == "json"
        stream = client.get_tasks(REF_L2)
        await eventually(lambda: c.dispatcher.stream_count() == 1, what="JSON stream open")
        key = anvil_manual.private_keys[0]
        await node.send_raw_transaction(signed_transfer(key, c.chain_id, 0))
        async with asyncio.timeout(30):  # a guard against hanging, not a performance bound
            raw = await stream.read()
        batch = json.loads(raw)
        assert list(batch) == ["batch_id", "tasks", "timestamp", "chain_id"]
        [task] = batch["tasks"]
        assert task["level"] == REF_L2
        assert task["sender"]["address"] == ""  # the task never names the sender
        assert isinstance(task["sender"]["balance"], str) and int(task["sender"]["balance"]) > 0
        assert isinstance(task["sender"]["nonce"], int)
        # The recipient's state rides along only when the coordinator already holds it (L2
        # checks the sender); the Go agent takes a null receiver as a plain transfer.
        receiver = task["receiver"]
        assert receiver is None or receiver["address"] == "0x" + "77" * 20, receiver
        assert base64.b64decode(task["tx_raw"]) == signed_transfer(key, c.chain_id, 0)
        done = await client.submit(
            batch["batch_id"],
            [{"task_id": task["task_id"], "valid": True, "gas_estimate": 21000, "latency_us": 5}],
        )
        assert done == {"accepted": True, "accepted_count": 1}

        # The same bare answer from a protobuf agent, to the next transaction.
        s = pb_grpc.IOSwarmStub(channel)
        md = metadata("pb-l2")
        await s.Register(
            pb.RegisterRequest(agent_id="pb-l2", capability=pb.L2, wallet_address="0x" + "42" * 20),
            metadata=md,
        )
        stream.cancel()
        await eventually(lambda: c.dispatcher.stream_count() == 0, what="JSON stream closed")
        pstream = s.GetTasks(pb.GetTasksRequest(agent_id="pb-l2"), metadata=md)
        await eventually(lambda: c.dispatcher.stream_count() == 1, what="protobuf stream open")
        await node.send_raw_transaction(signed_transfer(key, c.chain_id, 1))
        async with asyncio.timeout(30):
            pbatch = await pstream.read()
        assert isinstance(pbatch, pb.TaskBatch)
        await s.SubmitResults(
            pb.BatchResult(
                agent_id="pb-l2",
                batch_id=pbatch.batch_id,
                results=[pb.TaskResult(task_id=t.task_id, valid=True) for t in pbatch.tasks],
            ),
            metadata=md,
        )
        pstream.cancel()
        await anvil_manual.mine(1)

        def counts(agent_id: str) -> tuple[int, int, dict[str, int]]:
            sc = c.shadow.by_agent.get(agent_id)
            return (sc.matched, sc.mismatched, sc.mismatched_fields) if sc else (0, 0, {})

        await eventually(lambda: counts("go-l2") == (1, 0, {}), 30, what="JSON answer matched")
        assert counts("pb-l2") == (0, 1, {"incomplete": 1})


async def test_malformed_json_is_invalid_argument_and_logged(
    app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """Broken JSON, wrong field types, bodies past the bounds (results, depth, values) and an
    unknown level are INVALID_ARGUMENT naming the problem, each with a log line naming agent,
    method, codec and reason; the agent can still call afterwards."""
    async with json_client(app, "go-bad") as client:
        await client.register(REF_L1, "")
        cases = {
            b'{"agent_id":"go-bad","results":[{"task_id":1,"valid":tru': "not valid JSON",
            b'{"agent_id":"go-bad","results":[{"task_id":"7"}]}': (
                "field results[0].task_id: expected an integer (uint32), got string"
            ),
            b'{"agent_id":"go-bad","results":[{"task_id":1,"sender":"0xzz"}]}': (
                "field results[0].sender: expected a 0x-prefixed 20-byte hex address"
            ),
        }
        for body, named in cases.items():
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.raw("SubmitResults", body)
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            details = info.value.details() or ""
            assert details.startswith("malformed JSON request body: BatchResult: ")
            assert named in details, details
        # The bounds hold in JSON too: too many results, too deep, too many values.
        limit = app.coordinator.config.max_inflight_per_agent
        many = [{"task_id": i, "valid": True} for i in range(limit + 1)]
        deep = b'{"agent_id":"go-bad","note":' + b"[" * 50 + b"]" * 50 + b"}"
        wide = b'{"agent_id":"go-bad","note":[' + b",".join([b"0"] * 100_000) + b"]}"
        bounded = {
            go_json({"agent_id": "go-bad", "results": many}): (
                f"{limit + 1} results in one batch; at most {limit} (maxInflightPerAgent)"
            ),
            deep: "JSON nested deeper than 8 levels",
            wide: "JSON values; at most",
        }
        for body, named in bounded.items():
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.raw("SubmitResults", body)
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert named in (info.value.details() or ""), info.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.raw("Register", go_json({"agent_id": "go-bad", "capability": 9}))
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "9 is not a reference task level" in (info.value.details() or "")
        beat = await client.heartbeat()
        assert beat == {"alive": True, "directive": "continue"}
    lines = refused_lines(logs, "SubmitResults")
    assert len(lines) == 6, lines
    for line in lines[:3]:
        assert "agent_id=go-bad codec=json status=INVALID_ARGUMENT reason=malformed JSON" in line
    assert len(refused_lines(logs, "Register")) == 1


async def test_json_register_at_l3_or_l4_is_refused_with_the_reason(
    app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """The reference's L3 (2) and L4 (3) are refused in JSON, naming why; nothing registers.
    A protobuf agent may still register at L3."""
    c = app.coordinator
    async with json_client(app, "go-l3") as client:
        for level in (REF_L3, REF_L3 + 1):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.register(level, "")
            assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            details = info.value.details() or ""
            assert "not served in the reference JSON codec, only L1 and L2" in details
            assert "IoTeX-native state" in details and "EVM node" in details
        assert c.registry.get("go-l3") is None
        # The diff stream is protobuf-only too: refused before anything else.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stream("StreamStateDiffs", {"agent_id": "go-l3", "from_height": 0}).read()
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        s = pb_grpc.IOSwarmStub(channel)
        ok = await s.Register(
            pb.RegisterRequest(agent_id="pb-l3", capability=pb.L3), metadata=metadata("pb-l3")
        )
        assert ok.accepted
    lines = refused_lines(logs, "Register")
    assert len(lines) == 2 and all(
        "agent_id=go-l3 codec=json status=FAILED_PRECONDITION" in m for m in lines
    ), lines
    assert refused_lines(logs, "StreamStateDiffs")


async def test_codec_is_fixed_at_registration(
    app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """An agent registered in JSON cannot heartbeat, submit or re-register in protobuf while
    its stream is open; one registered in protobuf cannot submit in JSON (so it cannot claim
    the JSON waiver); after its stream closed, registering again changes the codec."""
    c = app.coordinator
    async with (
        json_client(app, "go-a") as go_a,
        json_client(app, "pb-b") as as_json,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel,
    ):
        s = pb_grpc.IOSwarmStub(channel)
        await go_a.register(REF_L2, "")
        stream = go_a.get_tasks(REF_L2)
        await eventually(lambda: c.dispatcher.stream_count() == 1, what="JSON stream open")
        md_a = metadata("go-a")
        calls = {
            "Heartbeat": lambda: s.Heartbeat(pb.HeartbeatRequest(agent_id="go-a"), metadata=md_a),
            "SubmitResults": lambda: s.SubmitResults(
                pb.BatchResult(agent_id="go-a", batch_id="b"), metadata=md_a
            ),
            "Register": lambda: s.Register(
                pb.RegisterRequest(agent_id="go-a", capability=pb.L2), metadata=md_a
            ),
        }
        for method, call in calls.items():
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call()
            assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION, method
            assert "registered in the json codec" in (info.value.details() or ""), method
        rec = c.registry.get("go-a")
        assert rec is not None and rec.codec == "json"

        # The other way round: registered in protobuf, results in JSON are refused.
        await s.Register(
            pb.RegisterRequest(agent_id="pb-b", capability=pb.L2), metadata=metadata("pb-b")
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await as_json.submit("b", [{"task_id": 1, "valid": True}])
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "registered in the protobuf codec; a call in json is refused" in (
            info.value.details() or ""
        )
        conduct = c.integrity.book.known("pb-b")
        assert conduct is not None and conduct.refused == {"FAILED_PRECONDITION": 1}

        # Once the JSON stream is gone, a protobuf Register registers it in protobuf.
        stream.cancel()
        await eventually(lambda: c.dispatcher.stream_count() == 0, what="JSON stream closed")
        again = await s.Register(
            pb.RegisterRequest(agent_id="go-a", capability=pb.L2), metadata=md_a
        )
        assert again.accepted and rec.codec == "protobuf"
        assert (await s.Heartbeat(pb.HeartbeatRequest(agent_id="go-a"), metadata=md_a)).alive
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await go_a.heartbeat()
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    for method in ("Heartbeat", "SubmitResults", "Register"):
        assert any("status=FAILED_PRECONDITION" in m for m in refused_lines(logs, method))


async def test_every_refusal_is_logged_in_protobuf_too(
    app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """A protobuf GetTasks before Register, once only a metric, now leaves a log line with the
    agent id, method, codec and reason."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        s = pb_grpc.IOSwarmStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.GetTasks(
                pb.GetTasksRequest(agent_id="late-1"), metadata=metadata("late-1")
            ).read()
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    [line] = refused_lines(logs, "GetTasks")
    assert "agent_id=late-1 codec=protobuf status=FAILED_PRECONDITION" in line
    assert "reason=agent is not registered; call Register first" in line
