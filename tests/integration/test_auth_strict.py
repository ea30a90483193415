"""Strict authentication on every RPC, and wallet changes that wait for the epoch boundary.

A real coordinator on anvil; raw stubs send hand-made metadata. Every refusal must leave the
coordinator exactly as it was (``refused`` compares every view and metric before and after).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from ioswarm.coordinator.app import CoordinatorApp
from ioswarm.coordinator.auth import MAX_AGENT_ID_LEN
from ioswarm.core.models import Level
from ioswarm.core.rewards import RewardPolicy
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.proto import ioswarm_pb2_grpc as pb_grpc
from ioswarm.protocol import AGENT_ID_KEY, TOKEN_KEY, Directive
from ioswarm.rewards.epochs import EpochManager
from ioswarm.rewards.ledger import EpochLedger
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.swarm import metadata, signed_transfer, stub
from tests.integration.test_hostile import (
    assert_no_secrets,
    refused,
    rejected,
    settled_coordinator,
    snapshot,
    token,
)

pytestmark = pytest.mark.integration

WALLET_A = "0x" + "aa" * 20
WALLET_B = "0x" + "bb" * 20
WALLET_C = "0x" + "cc" * 20
METHODS = (
    "Register",
    "GetTasks",
    "SubmitResults",
    "Heartbeat",
    "StreamStateDiffs",
    "DownloadSnapshot",
)
Metadata = tuple[tuple[str, str], ...]
Call = Callable[[], Awaitable[object]]


def register_request(agent_id: str, wallet: str, level: Level = Level.L2) -> pb.RegisterRequest:
    return pb.RegisterRequest(
        agent_id=agent_id, capability=int(level), region="test", version="t", wallet_address=wallet
    )


def rpc(s: pb_grpc.IOSwarmStub, method: str, md: Metadata, body_agent: str) -> Call:
    """One call of ``method`` whose body names ``body_agent``; a stream is read once, which is
    where a streaming call's refusal surfaces."""

    async def call() -> object:
        if method == "Register":
            return await s.Register(register_request(body_agent, WALLET_C), metadata=md)
        if method == "GetTasks":
            return await s.GetTasks(pb.GetTasksRequest(agent_id=body_agent), metadata=md).read()
        if method == "SubmitResults":
            body = pb.BatchResult(agent_id=body_agent, batch_id="b-1")
            return await s.SubmitResults(body, metadata=md)
        if method == "Heartbeat":
            return await s.Heartbeat(pb.HeartbeatRequest(agent_id=body_agent), metadata=md)
        if method == "StreamStateDiffs":
            req = pb.StreamStateDiffsRequest(agent_id=body_agent)
            return await s.StreamStateDiffs(req, metadata=md).read()
        assert method == "DownloadSnapshot"
        req_s = pb.DownloadSnapshotRequest(agent_id=body_agent)
        return await s.DownloadSnapshot(req_s, metadata=md)

    return call


def ids(*agent_ids: str) -> Metadata:
    return tuple((AGENT_ID_KEY, a) for a in agent_ids)


# Each entry: (metadata, the id the body names, a phrase the refusal must contain).
FORGED: dict[str, tuple[Metadata, str, str]] = {
    "two ids, attacker's token": (
        (*ids("victim", "attacker"), (TOKEN_KEY, token("attacker"))),
        "victim",
        f"duplicated {AGENT_ID_KEY}",
    ),
    "two ids, victim's token": (
        (*ids("victim", "attacker"), (TOKEN_KEY, token("victim"))),
        "victim",
        f"duplicated {AGENT_ID_KEY}",
    ),
    "two ids, attacker first": (
        (*ids("attacker", "victim"), (TOKEN_KEY, token("attacker"))),
        "victim",
        f"duplicated {AGENT_ID_KEY}",
    ),
    "missing id": (((TOKEN_KEY, token("victim")),), "victim", f"missing {AGENT_ID_KEY}"),
    "empty id": ((*ids(""), (TOKEN_KEY, token(""))), "", f"empty {AGENT_ID_KEY}"),
    "id too long": (
        (*ids("v" * (MAX_AGENT_ID_LEN + 1)), (TOKEN_KEY, token("v" * (MAX_AGENT_ID_LEN + 1)))),
        "v" * (MAX_AGENT_ID_LEN + 1),
        f"{AGENT_ID_KEY} metadata too long",
    ),
    "two tokens": (
        (*ids("victim"), (TOKEN_KEY, token("attacker")), (TOKEN_KEY, token("victim"))),
        "victim",
        f"duplicated {TOKEN_KEY}",
    ),
}


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("ioswarm", "grpc"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@pytest.fixture
async def app(anvil_manual: AnvilProcess) -> AsyncIterator[CoordinatorApp]:
    """A coordinator where "victim" registered with wallet A and "attacker" with wallet C."""
    async with settled_coordinator(anvil_manual.url, taskTimeoutMs=60_000) as a:
        async with stub(a.grpc_port) as s:
            await s.Register(register_request("victim", WALLET_A), metadata=metadata("victim"))
            await s.Register(register_request("attacker", WALLET_C), metadata=metadata("attacker"))
        yield a


def assert_victim_untouched(app: CoordinatorApp) -> None:
    rec = app.coordinator.registry.get("victim")
    assert rec is not None
    assert (rec.wallet, rec.pending_wallet, rec.level) == (WALLET_A, None, Level.L2)


async def test_forged_credentials_are_unauthenticated_on_every_method(
    app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """Duplicated ids (either token, either order), a missing, empty or over-long id and
    duplicated tokens are UNAUTHENTICATED with the problem named, on all six methods, and change
    nothing; a stream's refusal surfaces on its first read."""
    async with stub(app.grpc_port) as s:
        for case, (md, body_agent, phrase) in FORGED.items():
            for method in METHODS:
                details = await refused(
                    app, rpc(s, method, md, body_agent), method, "UNAUTHENTICATED"
                )
                assert phrase in details, (case, method, details)
                assert_victim_untouched(app)
        assert app.coordinator.dispatcher.stream_count() == 0
    rejected = [r.getMessage() for r in logs.records if "auth rejected" in r.getMessage()]
    assert len(rejected) == len(FORGED) * len(METHODS)
    assert any("agent_id=victim,attacker" in m for m in rejected)
    assert_no_secrets(logs, token("victim"), token("attacker"))


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def _literal(name: str, value: str) -> bytes:
    """An HPACK literal header, not indexed, no Huffman (names and values under 127 bytes)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


async def raw_grpc_status(port: int, method: str, headers: Metadata, body: bytes) -> int | None:
    """Send one gRPC call over hand-written HTTP/2, so header names go out exactly as given
    (grpc-python itself refuses upper-case keys); returns the grpc-status of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    pseudo = (
        (":method", "POST"),
        (":scheme", "http"),
        (":path", f"/ioswarm.IOSwarm/{method}"),
        (":authority", f"127.0.0.1:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    )
    block = b"".join(_literal(k, v) for k, v in (*pseudo, *headers))
    message = b"\x00" + len(body).to_bytes(4, "big") + body
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0))
    writer.write(_frame(1, 0x4, 1, block) + _frame(0, 0x1, 1, message))  # END_HEADERS; END_STREAM
    try:
        async with asyncio.timeout(10):  # a guard against hanging, not a performance bound
            while True:
                head = await reader.readexactly(9)
                kind, flags = head[3], head[4]
                stream = int.from_bytes(head[5:], "big") & 0x7FFFFFFF
                payload = await reader.readexactly(int.from_bytes(head[:3], "big"))
                if kind == 4 and not flags & 0x1:
                    writer.write(_frame(4, 0x1, 0))  # acknowledge the server's settings
                if stream == 1 and kind == 1 and flags & 0x1:  # trailers
                    found = re.search(rb"grpc-status.(\d+)", payload, re.DOTALL)
                    return int(found.group(1)) if found else None
                if (stream == 1 and kind == 3) or kind == 7:  # RST_STREAM or GOAWAY
                    return None
    finally:
        writer.close()


BODIES = {
    "Register": register_request("victim", WALLET_C),
    "GetTasks": pb.GetTasksRequest(agent_id="victim"),
    "SubmitResults": pb.BatchResult(agent_id="victim", batch_id="b-1"),
    "Heartbeat": pb.HeartbeatRequest(agent_id="victim"),
    "StreamStateDiffs": pb.StreamStateDiffsRequest(agent_id="victim"),
    "DownloadSnapshot": pb.DownloadSnapshotRequest(agent_id="victim"),
}


async def test_mixed_case_duplicate_keys_are_refused_on_every_method(
    app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """A second agent id or token under an upper-case key is a duplicate and never serves a call.

    gRPC keys are lower case: grpc-python will not send an upper-case key at all, and grpc's
    server does not lowercase one that arrives on the wire but passes it to Python as sent and
    then answers INTERNAL "Illegal header key". So this test writes HTTP/2 by hand, and asserts
    that the interceptor saw the duplicate and refused it (counted as UNAUTHENTICATED), that the
    caller got no OK, and that nothing changed.
    """
    cases: dict[str, Metadata] = {
        "upper-case second id": (
            *ids("victim"),
            ("X-IOSWARM-AGENT-ID", "attacker"),
            (TOKEN_KEY, token("attacker")),
        ),
        "upper-case first id": (
            ("X-IoSwarm-Agent-Id", "attacker"),
            *ids("victim"),
            (TOKEN_KEY, token("victim")),
        ),
        "upper-case second token": (
            *ids("victim"),
            (TOKEN_KEY, token("victim")),
            ("X-IOSWARM-TOKEN", token("victim")),
        ),
    }
    for case, md in cases.items():
        for method in METHODS:
            before, count = snapshot(app), rejected(app, method, "UNAUTHENTICATED")
            body = BODIES[method].SerializeToString()
            status = await raw_grpc_status(app.grpc_port, method, md, body)
            refusals = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INTERNAL)
            assert status in [code.value[0] for code in refusals], (case, method, status)
            assert rejected(app, method, "UNAUTHENTICATED") == count + 1, (case, method)
            assert snapshot(app) == before
            assert_victim_untouched(app)
    messages = [r.getMessage() for r in logs.records]
    assert sum("auth rejected" in m and "duplicated" in m for m in messages) == 3 * len(METHODS)
    assert_no_secrets(logs, token("victim"), token("attacker"))


async def test_body_naming_another_agent_is_permission_denied_on_every_method(
    app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """With the attacker's own valid credentials, a body naming the victim, or naming nobody,
    is PERMISSION_DENIED on all six methods and changes nothing."""
    md = metadata("attacker")
    async with stub(app.grpc_port) as s:
        for body_agent in ("victim", ""):
            for method in METHODS:
                details = await refused(
                    app, rpc(s, method, md, body_agent), method, "PERMISSION_DENIED"
                )
                assert "does not match" in details
                assert_victim_untouched(app)
    assert any("status=PERMISSION_DENIED" in r.getMessage() for r in logs.records)
    assert_no_secrets(logs, token("attacker"))


async def test_duplicate_header_trick_cannot_redirect_the_victims_wallet(
    app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """The reported attack end to end: the attacker's re-registration of the victim with its own
    wallet is refused, the victim keeps wallet A and goes on working normally."""
    c = app.coordinator
    forged = (*ids("victim", "attacker"), (TOKEN_KEY, token("attacker")))
    async with stub(app.grpc_port) as s:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.Register(register_request("victim", WALLET_C), metadata=forged)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert_victim_untouched(app)
        [row] = [a for a in c.views.agents() if a["agent_id"] == "victim"]
        assert (row["wallet"], row["pending_wallet"]) == (WALLET_A, None)
        beat = await s.Heartbeat(
            pb.HeartbeatRequest(agent_id="victim"), metadata=metadata("victim")
        )
        assert beat.alive and beat.directive == Directive.CONTINUE
    assert not any("wallet change requested" in r.getMessage() for r in logs.records)
    assert_no_secrets(logs, token("victim"), token("attacker"))


async def test_new_wallet_is_paid_from_the_next_epoch(
    anvil_manual: AnvilProcess, logs: pytest.LogCaptureFixture
) -> None:
    """An agent that re-registers with wallet B mid-epoch is paid to A for that epoch's work
    (done before and after the change) and to B for the next epoch's."""
    epoch_blocks = 10
    # No canaries: each step hand-answers the one task its transaction makes.
    overrides: dict[str, Any] = {
        "taskTimeoutMs": 60_000,
        "canaryPct": 0,
        "reward": {"epochBlocks": epoch_blocks, "minTasksForReward": 1},
    }
    async with (
        settled_coordinator(anvil_manual.url, **overrides) as app,
        stub(app.grpc_port) as s,
        JsonRpcNode(anvil_manual.url) as node,
    ):
        c = app.coordinator
        assert c.epochs is not None
        # The anchor block opens no epoch; the first block the watcher follows does.
        await anvil_manual.mine(1)
        await eventually(lambda: c.epochs is not None and c.epochs.open_epoch >= 0, what="epoch")
        md = metadata("worker")
        await s.Register(register_request("worker", WALLET_A), metadata=md)
        stream = s.GetTasks(pb.GetTasksRequest(agent_id="worker"), metadata=md)
        await eventually(lambda: c.dispatcher.stream_count() == 1, what="stream open")
        key = anvil_manual.private_keys[0]
        nonce = 0

        async def work_once() -> None:
            nonlocal nonce
            await node.send_raw_transaction(signed_transfer(key, c.chain_id, nonce))
            nonce += 1
            async with asyncio.timeout(30):  # a guard against hanging, not a performance bound
                batch = await stream.read()
            assert isinstance(batch, pb.TaskBatch) and len(batch.tasks) == 1
            result = pb.TaskResult(task_id=batch.tasks[0].task_id, valid=True, latency_us=10)
            done = await s.SubmitResults(
                pb.BatchResult(agent_id="worker", batch_id=batch.batch_id, results=[result]),
                metadata=md,
            )
            assert done.accepted_count == 1

        async def close_epoch() -> int:
            """Mine to the next epoch's first block; the epoch that was open is returned."""
            epoch = c.epochs.open_epoch if c.epochs is not None else -1
            blocks = (epoch + 1) * epoch_blocks - c.head.number
            await anvil_manual.mine(blocks)
            await eventually(
                lambda: c.epochs is not None and c.epochs.open_epoch == epoch + 1,
                what=f"epoch {epoch} closed",
            )
            return epoch

        try:
            first = c.epochs.open_epoch
            await work_once()
            await s.Register(register_request("worker", WALLET_B), metadata=md)
            [row] = c.views.agents()
            assert (row["wallet"], row["pending_wallet"]) == (WALLET_A, WALLET_B)
            await work_once()  # after the change, still in the first epoch: paid to A
            assert await close_epoch() == first
            [row] = c.views.agents()
            assert (row["wallet"], row["pending_wallet"]) == (WALLET_B, None)
            await work_once()
            assert await close_epoch() == first + 1
        finally:
            stream.cancel()
        history = {r.epoch: r.payout for r in c.epochs.ledger.agent_history("worker")}
        assert history[first].wallet == WALLET_A and history[first].tasks == 2
        assert history[first + 1].wallet == WALLET_B and history[first + 1].tasks == 1
    requested = [r for r in logs.records if "wallet change requested" in r.getMessage()]
    assert len(requested) == 1 and requested[0].levelno == logging.WARNING
    assert (
        f"agent_id=worker old={WALLET_A} new={WALLET_B} effective_epoch={first + 1}"
        in requested[0].getMessage()
    )
    assert_no_secrets(logs, token("worker"))


async def test_open_tally_keeps_the_wallet_it_began_with(tmp_path: Path) -> None:
    """EpochManager pays an epoch to the wallet its tally began with, even when later work in
    that epoch names another wallet, and the next epoch's tally starts with the new one."""
    policy = RewardPolicy(min_tasks=1, delegate_cut_pct=10)
    m = EpochManager(
        EpochLedger(tmp_path / "ledger"),
        policy,
        epoch_blocks=10,
        epoch_reward_wei=10**18,
        clock=lambda: 100.0,
    )
    m.on_block(20)
    m.on_result("agent-1", WALLET_A)
    m.on_result("agent-1", WALLET_B)
    m.on_comparison("agent-1", WALLET_B, "matched")
    assert m.open_epoch == 2
    assert m.on_block(30) == 2 and m.open_epoch == 3
    m.on_result("agent-1", WALLET_B)
    assert m.on_block(40) == 3
    await m.stop()
    with EpochLedger(tmp_path / "ledger") as ledger:
        rows = {r.epoch: r.payout for r in ledger.agent_history("agent-1")}
    assert (rows[2].wallet, rows[2].tasks, rows[2].matched) == (WALLET_A, 2, 1)
    assert (rows[3].wallet, rows[3].tasks) == (WALLET_B, 1)
