"""The agent supervises one link per coordinator: a link that dies is restarted, a permanent
failure ends only its link, and the agent fails only when every coordinator refused it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from ioswarm.agent import runtime
from ioswarm.agent.levels import validator_for
from ioswarm.agent.runtime import Agent
from ioswarm.config import AgentConfig
from ioswarm.core.linkfailure import FailureKind, PermanentFailure
from ioswarm.core.models import Level
from ioswarm.errors import AuthError, ConfigError
from ioswarm.proto import ioswarm_pb2 as pb

KEY = "iosw_" + "ab" * 32


def agent(coordinators: str) -> Agent:
    cfg = AgentConfig(
        coordinator=coordinators, agent_id="a", api_key=KEY, wallet="0x" + "11" * 20, tls=False
    )
    return Agent(cfg, validator_for(Level.L1))


def test_one_link_per_coordinator_each_with_its_key() -> None:
    """Comma-separated coordinators become independent links; per-position keys go with them."""
    other = "iosw_" + "cd" * 32
    cfg = AgentConfig(
        coordinator="a:1,b:2", agent_id="x", api_key=f"{KEY},{other}", wallet="0x" + "11" * 20
    )
    links = Agent(cfg, validator_for(Level.L1)).links
    assert [(link.coordinator, link.config.api_key) for link in links] == [
        ("a:1", KEY),
        ("b:2", other),
    ]
    assert links[0].budget is not links[1].budget and links[0].stats is not links[1].stats


async def test_a_dead_link_is_restarted_and_a_refused_one_leaves_the_others(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A link that raises an unexpected error is logged and run again; a link whose
    coordinator refuses the agent is given up while the other keeps running to its end."""
    monkeypatch.setattr(runtime, "RESTART_PAUSE_SEC", 0.01)
    a = agent("a:1,b:2")
    first, second = a.links
    runs = {"a:1": 0, "b:2": 0}

    async def flaky() -> None:
        runs["a:1"] += 1
        if runs["a:1"] == 1:
            raise RuntimeError("a bug in one link")

    async def refused() -> None:
        runs["b:2"] += 1
        second.failure = PermanentFailure(FailureKind.CREDENTIALS, "not this agent")
        raise AuthError("not this agent")

    first.run = flaky  # type: ignore[method-assign]
    second.run = refused  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="ioswarm.agent"):
        await a.run()  # one link ended normally: no error
    assert runs == {"a:1": 2, "b:2": 1}
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("link failed; restarting") and "a:1" in line for line in lines)
    assert any(
        line.startswith("coordinator given up") and "b:2" in line and "kind=credentials" in line
        for line in lines
    )


async def test_the_agent_fails_when_every_coordinator_refuses_it() -> None:
    """When every link ends on a permanent failure, run() raises the first one."""
    a = agent("a:1,b:2")

    async def tls() -> None:
        raise ConfigError("--ca-cert", "wrong CA")

    async def auth() -> None:
        raise AuthError("refused")

    a.links[0].run = tls  # type: ignore[method-assign]
    a.links[1].run = auth  # type: ignore[method-assign]
    with pytest.raises(ConfigError):
        await a.run()
    assert "wrong CA" in a.exit_reason


async def test_shutdown_ends_every_link() -> None:
    """shutdown() ends run() with no error even while links are connecting."""
    a = agent("127.0.0.1:1,127.0.0.1:2")
    a.shutdown("test")
    await a.run()
    assert a.exit_reason == "test" and a.stats.connects == 0


async def test_a_huge_batch_from_one_coordinator_does_not_starve_the_other_links() -> None:
    """While one link answers a 200-task batch, the event loop gets turns (the other links'
    heartbeats and submits run) well before the batch is done."""
    a = agent("a:1,b:2")
    link = a.links[0]
    batch = pb.TaskBatch(batch_id="big")
    for i in range(200):
        batch.tasks.add(task_id=i + 1, tx_raw=b"\x02", level=pb.L1)

    class Stub:
        def GetTasks(self, request: pb.GetTasksRequest, metadata: object) -> object:  # noqa: N802 - the stub method's name
            async def stream() -> AsyncIterator[pb.TaskBatch]:
                yield batch

            return stream()

    seen: list[int] = []

    async def other_link() -> None:
        while len(link._results) < 200:
            seen.append(len(link._results))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(other_link())
    with pytest.raises(grpc.aio.AioRpcError):  # the stream ended after its one batch
        await link._stream(Stub())  # type: ignore[arg-type]
    await watcher
    assert any(0 < n < 200 for n in seen)
