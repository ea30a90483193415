"""Hostile clients against a real coordinator: each gets a precise status and changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest

from ioswarm.coordinator import auth
from ioswarm.coordinator.app import CoordinatorApp
from ioswarm.coordinator.auth import AGENT_ID_KEY, TOKEN_KEY
from ioswarm.core.models import Level
from ioswarm.core.tokens import agent_token
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.proto import ioswarm_pb2_grpc as pb_grpc
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.swarm import (
    SECRET,
    metadata,
    register_request,
    running_coordinator,
    signed_transfer,
    stub,
)

pytestmark = pytest.mark.integration

GWEI = 10**9
WRONG_TOKEN = agent_token("not-the-master-secret", "agent-a")
RECIPIENT = "0x" + "77" * 20
# Fields that move with the clock alone, not with anything a client does.
CLOCK_FIELDS = frozenset({"uptime", "updated_at", "uptime_sec"})
AGENT_REFUSAL_FIELDS = frozenset({"last_heartbeat_sec_ago", "refused", "earning"})
REJECTED = "ioswarm_rpc_rejected_total"
REJECTED_FAMILY = "ioswarm_rpc_rejected"  # the registry names counter families without _total
# Moves with the server's own work (gRPC's tasks, the node's WebSocket connecting after the
# start), not with what a client is allowed to do.
LOOP_FAMILIES = frozenset({REJECTED_FAMILY, "ioswarm_asyncio_tasks", "ioswarm_mempool_push_up"})
# The process's own CPU, memory and descriptors, which move by themselves.
PROCESS_PREFIXES = ("process_", "python_")
# Table sizes stay in the snapshot (a refused call grows no table) but for the two that hold
# a registered agent's refusal counts and its submit rate bucket.
REFUSAL_TABLES = frozenset({"integrity_conduct", "submit_buckets"})

Snapshot = dict[str, Any]


def snapshot(app: CoordinatorApp) -> Snapshot:
    """Every counter a client could move: the API views, the totals, and all other metrics."""
    c = app.coordinator
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in app.registry.collect()
        if family.name not in LOOP_FAMILIES and not family.name.startswith(PROCESS_PREFIXES)
        for s in family.samples
        if not s.name.endswith("_created")
        and not (s.name == "ioswarm_table_entries" and s.labels["table"] in REFUSAL_TABLES)
    }
    return {
        "stats": {k: v for k, v in c.views.stats().items() if k not in CLOCK_FIELDS},
        "status": {k: v for k, v in c.views.status().items() if k not in CLOCK_FIELDS},
        "shadow": c.views.shadow_view(),
        # Refusals are counted per agent on purpose (``refused``, and ``earning`` names them);
        # everything else about the agent must stay as it was.
        "agents": [
            {k: v for k, v in a.items() if k not in AGENT_REFUSAL_FIELDS | CLOCK_FIELDS}
            for a in c.views.agents()
        ],
        "totals": dataclasses.asdict(c.totals),
        "metrics": samples,
    }


def rejected(app: CoordinatorApp, method: str, code: str) -> float:
    return app.registry.get_sample_value(REJECTED, {"method": method, "code": code}) or 0.0


def all_rejections(app: CoordinatorApp) -> dict[tuple[str, str], float]:
    return {
        (s.labels["method"], s.labels["code"]): s.value
        for family in app.registry.collect()
        if family.name == REJECTED_FAMILY
        for s in family.samples
        if s.name == REJECTED
    }


def token(agent_id: str) -> str:
    return agent_token(SECRET, agent_id)


async def refused(
    app: CoordinatorApp, call: Callable[[], Awaitable[object]], method: str, code: str
) -> str:
    """Run ``call``, expect ``code``, and check that only the refusal counter moved."""
    before, count = snapshot(app), rejected(app, method, code)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call()
    assert info.value.code() is grpc.StatusCode[code], info.value.details()
    assert snapshot(app) == before
    assert rejected(app, method, code) == count + 1
    return info.value.details() or ""


def assert_no_secrets(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    messages = [r.getMessage() for r in caplog.records]
    assert messages, "log capture saw nothing, so it proves nothing"
    for secret in secrets:
        assert not [m for m in messages if secret in m], "a token reached the logs"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("ioswarm", "grpc"):  # in case either logger was given a level of its own
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@contextlib.asynccontextmanager
async def settled_coordinator(node_url: str, **overrides: Any) -> AsyncIterator[CoordinatorApp]:
    """A coordinator whose block watcher has anchored, so only clients can move its state."""
    async with running_coordinator(node_url, **overrides) as app:
        await eventually(lambda: app.coordinator.head.number >= 0, what="head anchored")
        yield app


@pytest.fixture
async def app(anvil_manual: AnvilProcess) -> AsyncIterator[CoordinatorApp]:
    # No canaries: these tests hand-answer one known task at a time.
    async with settled_coordinator(
        anvil_manual.url, maxAgents=2, taskTimeoutMs=60_000, canaryPct=0
    ) as a:
        yield a


def results(*task_ids: int, agent_id: str = "agent-a") -> pb.BatchResult:
    return pb.BatchResult(
        agent_id=agent_id,
        batch_id="b-1",
        results=[pb.TaskResult(task_id=t, valid=True, latency_us=10) for t in task_ids],
    )


async def test_bad_credentials_are_unauthenticated(
    app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """A missing token, a wrong token and a missing agent id are UNAUTHENTICATED before any
    handler runs, and the server keeps serving the next good call."""
    valid = token("agent-a")
    cases = {
        "missing token": ((AGENT_ID_KEY, "agent-a"),),
        "wrong token": metadata("agent-a", WRONG_TOKEN),
        "missing agent id": ((TOKEN_KEY, valid),),
    }
    async with stub(app.grpc_port) as s:
        for name, md in cases.items():
            for method, call in {
                "Register": lambda md=md: s.Register(register_request("agent-a"), metadata=md),
                "Heartbeat": lambda md=md: s.Heartbeat(
                    pb.HeartbeatRequest(agent_id="agent-a"), metadata=md
                ),
                "SubmitResults": lambda md=md: s.SubmitResults(results(), metadata=md),
            }.items():
                details = await refused(app, call, method, "UNAUTHENTICATED")
                assert details, name
        assert app.coordinator.registry.get("agent-a") is None
        ok = await s.Register(register_request("agent-a"), metadata=metadata("agent-a"))
        assert ok.accepted
    assert any("auth rejected" in r.getMessage() for r in logs.records)
    assert_no_secrets(logs, valid, WRONG_TOKEN)


async def test_oversized_metadata_is_resource_exhausted_and_counted(app: CoordinatorApp) -> None:
    """Call metadata past 8 KiB (up to gRPC's own 16 KiB cap) is RESOURCE_EXHAUSTED before
    authentication, counted, and changes nothing else."""
    padded = (*metadata("agent-a"), ("x-padding", "p" * 10_000))
    async with stub(app.grpc_port) as s:
        details = await refused(
            app,
            lambda: s.Register(register_request("agent-a"), metadata=padded),
            "Register",
            "RESOURCE_EXHAUSTED",
        )
        assert "metadata" in details
        assert app.coordinator.registry.get("agent-a") is None
        ok = await s.Register(register_request("agent-a"), metadata=metadata("agent-a"))
        assert ok.accepted


async def test_an_unauthenticated_body_is_never_decoded(
    app: CoordinatorApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forged call is refused from its headers: its body, here a million empty results and
    then bytes that are no protobuf at all, is dropped unread."""
    seen: list[int] = []
    real = auth._unread

    def counting(data: bytes) -> None:
        seen.append(len(data))
        return real(data)

    monkeypatch.setattr(auth, "_unread", counting)
    huge = pb.BatchResult(agent_id="agent-a", results=[pb.TaskResult()] * 1_000_000)
    forged = metadata("agent-a", WRONG_TOKEN)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        for body in (huge.SerializeToString(), b"\xff" * 4096):
            call = channel.unary_unary(
                "/ioswarm.IOSwarm/SubmitResults",
                request_serializer=lambda b: b,
                response_deserializer=pb.SubmitResponse.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(body, metadata=forged)
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert seen == [len(huge.SerializeToString()), 4096]  # handed over as bytes, never parsed
    assert rejected(app, "SubmitResults", "UNAUTHENTICATED") == 2


@pytest.mark.parametrize("method", ["Register", "Heartbeat", "SubmitResults"])
async def test_body_agent_id_differing_from_metadata_is_permission_denied(
    app: CoordinatorApp, logs: pytest.LogCaptureFixture, method: str
) -> None:
    """A valid token for agent-a with agent_id agent-b in the body is PERMISSION_DENIED."""
    md = metadata("agent-a")
    async with stub(app.grpc_port) as s:
        await s.Register(register_request("agent-a"), metadata=md)
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "Register": lambda: s.Register(register_request("agent-b"), metadata=md),
            "Heartbeat": lambda: s.Heartbeat(pb.HeartbeatRequest(agent_id="agent-b"), metadata=md),
            "SubmitResults": lambda: s.SubmitResults(results(agent_id="agent-b"), metadata=md),
        }
        await refused(app, calls[method], method, "PERMISSION_DENIED")
        assert app.coordinator.registry.get("agent-b") is None
        beat = await s.Heartbeat(pb.HeartbeatRequest(agent_id="agent-a"), metadata=md)
        assert beat.alive
    assert_no_secrets(logs, token("agent-a"))


async def test_registration_beyond_max_agents_is_resource_exhausted(
    app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """With maxAgents=2 a third id is RESOURCE_EXHAUSTED while a known id may re-register."""
    async with stub(app.grpc_port) as s:
        for agent_id in ("agent-a", "agent-b"):
            await s.Register(register_request(agent_id), metadata=metadata(agent_id))
        md = metadata("agent-c")
        await refused(
            app,
            lambda: s.Register(register_request("agent-c"), metadata=md),
            "Register",
            "RESOURCE_EXHAUSTED",
        )
        assert app.coordinator.registry.get("agent-c") is None
        before = snapshot(app)
        again = await s.Register(register_request("agent-b"), metadata=metadata("agent-b"))
        assert again.accepted
        assert snapshot(app) == before
    assert_no_secrets(logs, token("agent-a"), token("agent-b"), token("agent-c"))


async def test_submitting_faster_than_the_burst_is_resource_exhausted(
    anvil_manual: AnvilProcess, logs: pytest.LogCaptureFixture
) -> None:
    """The fourth SubmitResults inside a burst of three is RESOURCE_EXHAUSTED; other calls and
    other agents are unaffected."""
    async with (
        settled_coordinator(anvil_manual.url, submitBurst=3, submitRatePerSec=0.001) as app,
        stub(app.grpc_port) as s,
    ):
        md = metadata("agent-a")
        await s.Register(register_request("agent-a"), metadata=md)
        for _ in range(3):
            ok = await s.SubmitResults(results(), metadata=md)
            assert ok.accepted and ok.accepted_count == 0
        details = await refused(
            app,
            lambda: s.SubmitResults(results(), metadata=md),
            "SubmitResults",
            "RESOURCE_EXHAUSTED",
        )
        assert "rate limit" in details
        assert (await s.Heartbeat(pb.HeartbeatRequest(agent_id="agent-a"), metadata=md)).alive
        other = metadata("agent-b")
        await s.Register(register_request("agent-b"), metadata=other)
        assert (await s.SubmitResults(results(agent_id="agent-b"), metadata=other)).accepted
    assert_no_secrets(logs, token("agent-a"), token("agent-b"))


async def test_batch_larger_than_max_inflight_is_invalid_argument(
    anvil_manual: AnvilProcess, logs: pytest.LogCaptureFixture
) -> None:
    """More results in one batch than maxInflightPerAgent is INVALID_ARGUMENT."""
    async with (
        settled_coordinator(anvil_manual.url, maxInflightPerAgent=4) as app,
        stub(app.grpc_port) as s,
    ):
        md = metadata("agent-a")
        await s.Register(register_request("agent-a"), metadata=md)
        details = await refused(
            app,
            lambda: s.SubmitResults(results(1, 2, 3, 4, 5), metadata=md),
            "SubmitResults",
            "INVALID_ARGUMENT",
        )
        assert "maxInflightPerAgent" in details
        assert (await s.SubmitResults(results(), metadata=md)).accepted
    assert_no_secrets(logs, token("agent-a"))


async def test_results_for_an_unknown_task_id_are_not_found(
    app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """Results for a task id the coordinator never issued are NOT_FOUND."""
    md = metadata("agent-a")
    async with stub(app.grpc_port) as s:
        await s.Register(register_request("agent-a"), metadata=md)
        details = await refused(
            app,
            lambda: s.SubmitResults(results(424242), metadata=md),
            "SubmitResults",
            "NOT_FOUND",
        )
        assert "424242" in details
        assert (await s.SubmitResults(results(), metadata=md)).accepted
    assert_no_secrets(logs, token("agent-a"))


@contextlib.asynccontextmanager
async def live_task(
    anvil: AnvilProcess, app: CoordinatorApp
) -> AsyncIterator[tuple[pb_grpc.IOSwarmStub, int]]:
    """Registers "owner" and "thief"; yields a stub and the id of a task in flight at "owner"."""
    c = app.coordinator
    owner = metadata("owner")
    async with JsonRpcNode(anvil.url) as node, stub(app.grpc_port) as s:
        await s.Register(register_request("owner"), metadata=owner)
        await s.Register(register_request("thief"), metadata=metadata("thief"))
        stream = s.GetTasks(pb.GetTasksRequest(agent_id="owner"), metadata=owner)
        await eventually(lambda: c.dispatcher.stream_count() == 1, what="owner's stream open")
        await node.send_raw_transaction(signed_transfer(anvil.private_keys[0], c.chain_id))
        async with asyncio.timeout(30):  # a guard against hanging, not a performance bound
            batch = await stream.read()
        assert isinstance(batch, pb.TaskBatch) and len(batch.tasks) == 1
        await eventually(lambda: c.scheduler.inflight("owner") == 1, what="task in flight")
        try:
            yield s, batch.tasks[0].task_id
        finally:
            stream.cancel()


async def owner_answers(app: CoordinatorApp, s: pb_grpc.IOSwarmStub, task_id: int) -> None:
    """The owner's valid answer is accepted and counted: the refusals left the task intact."""
    c = app.coordinator
    accepted_before = c.totals.results_accepted
    ok = await s.SubmitResults(results(task_id, agent_id="owner"), metadata=metadata("owner"))
    assert ok.accepted and ok.accepted_count == 1
    assert c.totals.results_accepted == accepted_before + 1
    assert c.views.stats()["tasks_received"] == accepted_before + 1
    assert c.scheduler.inflight("owner") == 0


async def test_results_for_another_agents_task_are_permission_denied(
    anvil_manual: AnvilProcess, app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """Another agent's result for a live task is PERMISSION_DENIED, a batch mixing it with an
    unknown id is refused whole, and the owner's answer is accepted afterwards."""
    owner, thief = metadata("owner"), metadata("thief")
    async with live_task(anvil_manual, app) as (s, task_id):
        await refused(
            app,
            lambda: s.SubmitResults(results(task_id, agent_id="thief"), metadata=thief),
            "SubmitResults",
            "PERMISSION_DENIED",
        )
        await refused(
            app,
            lambda: s.SubmitResults(results(task_id, 424242, agent_id="owner"), metadata=owner),
            "SubmitResults",
            "NOT_FOUND",
        )
        await owner_answers(app, s, task_id)
    assert_no_secrets(logs, token("owner"), token("thief"))


async def test_resubmitting_an_answered_task_is_already_exists_and_not_credited(
    anvil_manual: AnvilProcess, app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """A replay of an accepted answer is ALREADY_EXISTS, counted against the agent, and credits
    nothing more: results, shadow comparisons and epoch tasks stay where the first copy left
    them."""
    owner = metadata("owner")
    c = app.coordinator
    async with live_task(anvil_manual, app) as (s, task_id):
        await owner_answers(app, s, task_id)
        before = snapshot(app)
        details = await refused(
            app,
            lambda: s.SubmitResults(results(task_id, agent_id="owner"), metadata=owner),
            "SubmitResults",
            "ALREADY_EXISTS",
        )
        assert str(task_id) in details
        assert snapshot(app) == before
        [row] = [a for a in c.views.agents() if a["agent_id"] == "owner"]
        assert row["refused"] == {"ALREADY_EXISTS": 1} and "refused" in row["earning"]["reasons"]
    assert_no_secrets(logs, token("owner"))


async def test_duplicate_task_id_in_one_batch_is_invalid_argument(
    anvil_manual: AnvilProcess, app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """A batch naming the same live task twice is INVALID_ARGUMENT and accepts neither copy."""
    owner = metadata("owner")
    async with live_task(anvil_manual, app) as (s, task_id):
        details = await refused(
            app,
            lambda: s.SubmitResults(results(task_id, task_id, agent_id="owner"), metadata=owner),
            "SubmitResults",
            "INVALID_ARGUMENT",
        )
        assert "twice" in details
        await owner_answers(app, s, task_id)
    assert_no_secrets(logs, token("owner"))


async def test_undecodable_body_is_invalid_argument_and_unknown_method_unimplemented(
    app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """Bytes that are not a protobuf message are INVALID_ARGUMENT; an unknown method path is
    UNIMPLEMENTED and counted nowhere."""
    md = metadata("agent-a")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        s = pb_grpc.IOSwarmStub(channel)
        await s.Register(register_request("agent-a"), metadata=md)
        raw = channel.unary_unary(
            "/ioswarm.IOSwarm/SubmitResults", request_serializer=None, response_deserializer=None
        )
        details = await refused(
            app, lambda: raw(b"\xff\xff\xff\xff", metadata=md), "SubmitResults", "INVALID_ARGUMENT"
        )
        assert "malformed" in details

        unknown = channel.unary_unary(
            "/ioswarm.IOSwarm/StealRewards", request_serializer=None, response_deserializer=None
        )
        before, rejections = snapshot(app), all_rejections(app)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unknown(b"", metadata=md)
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert snapshot(app) == before
        assert all_rejections(app) == rejections

        assert (await s.SubmitResults(results(), metadata=md)).accepted
    assert_no_secrets(logs, token("agent-a"))


async def test_get_tasks_before_register_is_failed_precondition(
    app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """Opening a task stream without registering first is FAILED_PRECONDITION."""
    md = metadata("agent-a")
    async with stub(app.grpc_port) as s:

        async def open_stream() -> object:
            return await s.GetTasks(pb.GetTasksRequest(agent_id="agent-a"), metadata=md).read()

        await refused(app, open_stream, "GetTasks", "FAILED_PRECONDITION")
        assert app.coordinator.dispatcher.stream_count() == 0
        assert (await s.Register(register_request("agent-a"), metadata=md)).accepted
    assert_no_secrets(logs, token("agent-a"))


async def test_state_diffs_and_snapshots_need_l4_sync(
    app: CoordinatorApp, logs: pytest.LogCaptureFixture
) -> None:
    """Without L4 sync, StreamStateDiffs and DownloadSnapshot are FAILED_PRECONDITION."""
    md = metadata("agent-a")
    async with stub(app.grpc_port) as s:
        await s.Register(register_request("agent-a", Level.L4), metadata=md)

        async def diffs() -> object:
            req = pb.StreamStateDiffsRequest(agent_id="agent-a")
            return await s.StreamStateDiffs(req, metadata=md).read()

        async def snap() -> object:
            return await s.DownloadSnapshot(
                pb.DownloadSnapshotRequest(agent_id="agent-a"), metadata=md
            )

        await refused(app, diffs, "StreamStateDiffs", "FAILED_PRECONDITION")
        await refused(app, snap, "DownloadSnapshot", "FAILED_PRECONDITION")
        assert (await s.Heartbeat(pb.HeartbeatRequest(agent_id="agent-a"), metadata=md)).alive
    assert_no_secrets(logs, token("agent-a"))
