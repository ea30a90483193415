"""The loop supervisor on its own: restarts, backoff, giving up, draining, exit codes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
from ioswarm_cli.main import EXIT_CONFIG, EXIT_ERROR, EXIT_SOFTWARE, exit_code

from ioswarm.coordinator.chainwatch import ErrorBackoff, retry_node_errors
from ioswarm.coordinator.supervisor import LoopReturned, LoopSupervisor, RestartPolicy
from ioswarm.errors import ConfigError, LoopFailed, NodeError, StoreError
from tests.helpers import eventually

FAST = RestartPolicy(max_restarts=3, window_sec=60.0, backoff_base_sec=0.001, backoff_max_sec=0.01)


def test_backoff_doubles_per_crash_in_the_window_up_to_the_cap() -> None:
    """The wait before a restart doubles with each crash in the window and stops at the cap."""
    policy = RestartPolicy(backoff_base_sec=0.5, backoff_max_sec=10.0)
    assert [policy.backoff(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.backoff(10_000) == 10.0


async def test_a_crashed_loop_is_logged_counted_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A loop that raises is logged at ERROR with its name and traceback, reported to
    ``on_restart`` and run again, while the other loops keep running."""
    caplog.set_level(logging.INFO, logger="ioswarm.supervisor")
    runs = 0
    restarted: list[str] = []
    forever = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("boom")
        await forever.wait()

    sup = LoopSupervisor(FAST, on_restart=restarted.append)
    sup.add("flaky", flaky)
    sup.add("steady", forever.wait)
    sup.start()
    await eventually(lambda: runs == 2 and sup.healthy, 5)
    assert restarted == ["flaky"]
    assert sup.states() == {
        "flaky": {"state": "running", "restarts": 1},
        "steady": {"state": "running", "restarts": 0},
    }
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "loop=flaky" in errors[0].getMessage()
    assert errors[0].exc_info is not None and str(errors[0].exc_info[1]) == "boom"
    await sup.stop()
    assert sup.failed.result() is None
    await sup.wait()  # returns once stopped without a failure


async def test_past_the_restart_limit_the_supervisor_gives_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One crash more than ``max_restarts`` in the window logs one CRITICAL line and makes
    ``wait`` raise LoopFailed naming the loop and the cause."""
    caplog.set_level(logging.INFO, logger="ioswarm.supervisor")
    restarted: list[str] = []

    async def broken() -> None:
        raise ValueError("always")

    sup = LoopSupervisor(FAST, on_restart=restarted.append)
    sup.add("broken", broken)
    sup.add("steady", asyncio.Event().wait)
    sup.start()
    with pytest.raises(LoopFailed) as failure:
        await asyncio.wait_for(sup.wait(), 10)
    assert failure.value.loop == "broken" and isinstance(failure.value.cause, ValueError)
    assert "broken" in str(failure.value) and "always" in str(failure.value)
    assert restarted == ["broken"] * FAST.max_restarts
    assert sup.states()["broken"] == {"state": "failed", "restarts": FAST.max_restarts}
    assert not sup.healthy
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "loop=broken" in critical[0].getMessage()
    await sup.stop()
    assert sup.states()["steady"]["state"] == "stopped"


async def test_a_loop_returning_while_not_stopping_is_a_failure() -> None:
    """A loop that returns by itself counts as a crash (LoopReturned) and is restarted."""
    runs = 0

    async def quits() -> None:
        nonlocal runs
        runs += 1
        if runs > 1:
            await asyncio.Event().wait()

    sup = LoopSupervisor(FAST)
    sup.add("quits", quits)
    sup.start()
    await eventually(lambda: sup.states()["quits"]["restarts"] == 1 and sup.healthy, 5)
    await sup.stop()

    sup = LoopSupervisor(FAST)
    sup.add("quits", lambda: asyncio.sleep(0))
    sup.start()
    with pytest.raises(LoopFailed) as failure:
        await asyncio.wait_for(sup.wait(), 10)
    assert isinstance(failure.value.cause, LoopReturned)
    await sup.stop()


async def test_stop_cancels_and_drains_every_loop() -> None:
    """``stop`` cancels loops (also one waiting to restart), waits for them, and no crash or
    return during the stop counts."""
    cancelled = asyncio.Event()

    async def blocks() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def broken() -> None:
        raise RuntimeError("x")

    restarted: list[str] = []
    slow = RestartPolicy(backoff_base_sec=30.0, backoff_max_sec=30.0)
    sup = LoopSupervisor(slow, on_restart=restarted.append)
    sup.add("blocks", blocks)
    sup.add("broken", broken)
    sup.start()
    await eventually(lambda: sup.states()["broken"]["state"] == "restarting", 5)
    await asyncio.wait_for(sup.stop(), 10)
    assert cancelled.is_set() and restarted == []
    assert {s["state"] for s in sup.states().values()} == {"stopped"}
    await asyncio.wait_for(sup.wait(), 1)


async def test_retry_node_errors_waits_out_node_errors_and_lets_bugs_through() -> None:
    """The node readers' shared loop retries NodeError (counting it), and raises anything else
    (counting it too) so the supervisor sees it."""
    errors: list[str] = []
    calls = 0
    stop = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise NodeError("eth_blockNumber", "flaky")
        if calls == 3:
            raise KeyError("bug")

    with pytest.raises(KeyError):
        await asyncio.wait_for(
            retry_node_errors("blocks", "w", step, stop, 0.001, ErrorBackoff(0.001), errors.append),
            5,
        )
    assert calls == 3 and errors == ["blocks"] * 3

    backoff = ErrorBackoff(0.001)
    await asyncio.wait_for(
        retry_node_errors("mempool", "p", stop_after(stop, 4), stop, 0.001, backoff, errors.append),
        5,
    )
    assert backoff.failures == 0


def stop_after(stop: asyncio.Event, n: int) -> Callable[[], Awaitable[None]]:
    """A step that sets ``stop`` on its n-th call."""
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls >= n:
            stop.set()

    return step


def test_cli_exit_codes_by_error() -> None:
    """The CLI exits 2 on config errors, 70 when a loop was given up on, 1 otherwise."""
    assert exit_code(ConfigError("swarmApiPort", "in use")) == EXIT_CONFIG == 2
    assert exit_code(LoopFailed("dispatcher", 6, 60.0, RuntimeError("x"))) == EXIT_SOFTWARE == 70
    assert exit_code(StoreError("disk")) == EXIT_ERROR == 1
