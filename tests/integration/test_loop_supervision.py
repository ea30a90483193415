"""A coordinator never runs on with a dead loop: crashes are logged, counted and restarted, and
one that keeps crashing ends the coordinator."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from ioswarm.coordinator.app import CoordinatorApp
from ioswarm.coordinator.supervisor import RestartPolicy
from ioswarm.errors import LoopFailed
from ioswarm.rewards.epochs import EpochManager
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.swarm import coordinator_config, running_coordinator

pytestmark = pytest.mark.integration

LOOPS = (
    "dispatcher",
    "blocks",
    "mempool",
    "evictor",
    "settler",
    "http-connections",
    "reverify",
    "console",
)
FAST = RestartPolicy(max_restarts=2, window_sec=60.0, backoff_base_sec=0.01, backoff_max_sec=0.05)


class Faults:
    """Wraps one callable per loop so a test can make its next call raise once, and counts the
    calls that follow (proof the loop runs again)."""

    def __init__(self) -> None:
        self.armed: set[str] = set()
        self.fired: Counter[str] = Counter()
        self.calls_after: Counter[str] = Counter()

    def wrap(self, loop: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                self._maybe_fail(loop)
                return await fn(*args, **kwargs)

            return async_wrapper

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._maybe_fail(loop)
            return fn(*args, **kwargs)

        return wrapper

    def _maybe_fail(self, loop: str) -> None:
        if loop in self.armed:
            self.armed.discard(loop)
            self.fired[loop] += 1
            raise RuntimeError(f"injected fault in {loop}")
        if self.fired[loop]:
            self.calls_after[loop] += 1


def restarts(app: CoordinatorApp, loop: str) -> float:
    value = app.registry.get_sample_value("ioswarm_loop_restarts_total", {"loop": loop})
    return value or 0.0


async def test_each_loop_that_raises_is_logged_counted_and_restarted(
    anvil: AnvilProcess, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-node exception in each of the dispatcher, block watcher, mempool poller, evictor,
    settler, HTTP connection sweeper, re-verifier and console loops is logged at ERROR with the
    loop name and traceback, counted in ioswarm_loop_restarts_total{loop} and the loop runs
    again; /readyz shows each restart."""
    caplog.set_level(logging.INFO)
    faults = Faults()
    # The settler loop is entered once per (re)start, so its fault fires at start.
    monkeypatch.setattr(EpochManager, "run", faults.wrap("settler", EpochManager.run))
    faults.armed.add("settler")
    async with running_coordinator(anvil.url, heartbeatIntervalSec=1) as app:
        c = app.coordinator
        monkeypatch.setattr(c.dispatcher, "step", faults.wrap("dispatcher", c.dispatcher.step))
        monkeypatch.setattr(app.node, "block_number", faults.wrap("blocks", app.node.block_number))
        monkeypatch.setattr(c.poller, "step", faults.wrap("mempool", c.poller.step))
        monkeypatch.setattr(c.gateway, "evict_stale", faults.wrap("evictor", c.gateway.evict_stale))
        gov = app.api.governor
        monkeypatch.setattr(gov, "sweep", faults.wrap("http-connections", gov.sweep))
        assert c.reverifier is not None
        rv = c.reverifier
        monkeypatch.setattr(rv, "step", faults.wrap("reverify", rv.step))
        feed = app.api.console
        monkeypatch.setattr(feed, "step", faults.wrap("console", feed.step))
        assert {name for name, v in c.views.health()[1]["loops"].items()} == set(LOOPS)
        for loop in LOOPS:
            if loop != "settler":
                faults.armed.add(loop)
            await eventually(lambda loop=loop: faults.calls_after[loop] >= 1, 20, what=loop)
            assert restarts(app, loop) == 1
            assert c.views.health()[1]["loops"][loop] == {"state": "running", "restarts": 1}
            logged = [
                r
                for r in caplog.records
                if r.levelno == logging.ERROR and f"loop={loop} " in r.getMessage()
            ]
            assert len(logged) == 1, loop
            assert logged[0].exc_info is not None
            assert str(logged[0].exc_info[1]) == f"injected fault in {loop}"
        ok, detail = c.views.health()
        assert ok and detail["loops_running"] is True
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{app.api_port}/readyz") as resp,
        ):
            assert resp.status == 200
            body = await resp.json()
        assert {name: s["restarts"] for name, s in body["loops"].items()} == dict.fromkeys(LOOPS, 1)
    assert not [r for r in caplog.records if r.levelno >= logging.CRITICAL]


async def test_a_loop_failing_past_the_limit_fails_the_coordinator(
    anvil: AnvilProcess, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop that keeps raising is restarted up to the limit, then ``wait()`` raises
    LoopFailed, one CRITICAL line is logged and /readyz is 503 naming the failed loop."""
    caplog.set_level(logging.INFO)
    async with running_coordinator(anvil.url) as app:
        c = app.coordinator
        c.loops.policy = FAST

        def broken() -> None:
            raise RuntimeError("dispatcher bug")

        monkeypatch.setattr(c.dispatcher, "step", broken)
        with pytest.raises(LoopFailed) as failure:
            await asyncio.wait_for(c.wait(), 20)
        assert failure.value.loop == "dispatcher"
        assert str(failure.value.cause) == "dispatcher bug"
        assert restarts(app, "dispatcher") == FAST.max_restarts
        critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
        assert len(critical) == 1 and "loop=dispatcher" in critical[0].getMessage()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{app.api_port}/readyz") as resp,
        ):
            assert resp.status == 503
            body = await resp.json()
        assert body["ok"] is False and body["loops_running"] is False
        assert body["loops"]["dispatcher"] == {"state": "failed", "restarts": FAST.max_restarts}
        assert body["loops"]["blocks"]["state"] == "running"
    assert {s["state"] for s in c.views.health()[1]["loops"].values()} == {"failed", "stopped"}


async def test_serve_forever_shuts_down_and_raises_when_a_loop_is_given_up(
    anvil: AnvilProcess,
) -> None:
    """The process path (what ``ioswarm coordinator`` runs) stops every part in order and
    raises LoopFailed, which the CLI maps to exit code 70, instead of serving on."""
    app = CoordinatorApp(coordinator_config(anvil.url, heartbeatIntervalSec=1), restart_policy=FAST)

    def broken() -> int:
        raise RuntimeError("evictor bug")

    app.coordinator.gateway.evict_stale = broken  # type: ignore[method-assign]
    with pytest.raises(LoopFailed) as failure:
        await asyncio.wait_for(app.serve_forever(), 60)
    assert failure.value.loop == "evictor"
    assert {s["state"] for s in app.coordinator.views.health()[1]["loops"].values()} == {
        "failed",
        "stopped",
    }
    with pytest.raises(aiohttp.ClientConnectionError):
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{app.api_port}/healthz"),
        ):
            pass
