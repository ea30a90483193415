"""Watched loops: each named loop runs as a task; a crash is logged, counted and restarted with
capped exponential backoff, and too many crashes in a window end the process instead of
leaving it running with a dead loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ioswarm.errors import LoopFailed

log = logging.getLogger("ioswarm.supervisor")

__all__ = ["LoopFailed", "LoopReturned", "LoopSupervisor", "RestartPolicy"]

RUNNING = "running"
RESTARTING = "restarting"
FAILED = "failed"
STOPPED = "stopped"


@dataclass(frozen=True)
class RestartPolicy:
    """When a crashed loop is restarted, and when the supervisor gives up."""

    max_restarts: int = 5
    """Restarts allowed within ``window_sec``; one more crash in the window is fatal."""
    window_sec: float = 60.0
    """The sliding window the crashes are counted in."""
    backoff_base_sec: float = 0.5
    """Wait before the first restart in the window; doubled for each further crash in it."""
    backoff_max_sec: float = 10.0
    """Cap of the wait before a restart."""

    def backoff(self, crashes_in_window: int) -> float:
        """Seconds to wait before restarting after the n-th crash (n >= 1) in the window."""
        exponent = min(max(crashes_in_window - 1, 0), 16)
        return float(min(self.backoff_max_sec, self.backoff_base_sec * 2**exponent))


class LoopReturned(RuntimeError):
    """A loop returned although nobody asked it to stop."""


@dataclass
class _Loop:
    name: str
    factory: Callable[[], Awaitable[None]]
    state: str = STOPPED
    restarts: int = 0
    crashes: deque[float] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class LoopSupervisor:
    """Runs named loops until :meth:`stop`; :meth:`wait` raises :class:`LoopFailed` when one of
    them crashed past the policy (the first such failure wins)."""

    def __init__(
        self,
        policy: RestartPolicy | None = None,
        on_restart: Callable[[str], None] = lambda name: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``on_restart`` is called with the loop name each time a crashed loop is restarted
        (the coordinator counts it in ``ioswarm_loop_restarts_total``)."""
        self.policy = policy or RestartPolicy()
        self._on_restart = on_restart
        self._clock = clock
        self._loops: dict[str, _Loop] = {}
        self._stopping = asyncio.Event()
        self._failed: asyncio.Future[LoopFailed | None] | None = None

    def add(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Register a loop; ``factory`` makes a fresh coroutine for every (re)start."""
        if name in self._loops:
            raise ValueError(f"loop {name} is already supervised")
        self._loops[name] = _Loop(name, factory)

    def start(self) -> None:
        """Start every registered loop."""
        self._stopping.clear()
        self._failed = asyncio.get_running_loop().create_future()
        for loop in self._loops.values():
            loop.state = RUNNING
            loop.task = asyncio.create_task(self._watch(loop), name=f"ioswarm-{loop.name}")

    async def stop(self) -> None:
        """Cancel every loop and wait until all have ended; :meth:`wait` then returns."""
        self._stopping.set()
        tasks = [loop.task for loop in self._loops.values() if loop.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for loop in self._loops.values():
            loop.task = None
            if loop.state != FAILED:
                loop.state = STOPPED
        if self._failed is not None and not self._failed.done():
            self._failed.set_result(None)

    @property
    def failed(self) -> asyncio.Future[LoopFailed | None]:
        """Resolves with the fatal failure, or with None once stopped without one."""
        if self._failed is None:
            raise RuntimeError("supervisor not started")
        return self._failed

    async def wait(self) -> None:
        """Return when stopped; raise :class:`LoopFailed` as soon as a loop is given up on."""
        failure = await asyncio.shield(self.failed)
        if failure is not None:
            raise failure

    @property
    def healthy(self) -> bool:
        """Every loop started and running (not waiting to restart, not given up on)."""
        return bool(self._loops) and all(loop.state == RUNNING for loop in self._loops.values())

    def states(self) -> dict[str, dict[str, Any]]:
        """Each loop's state and how often it was restarted."""
        return {
            name: {"state": loop.state, "restarts": loop.restarts}
            for name, loop in self._loops.items()
        }

    async def _watch(self, loop: _Loop) -> None:
        while True:
            try:
                await loop.factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error: BaseException = exc
            else:
                error = LoopReturned(f"loop {loop.name} returned while the coordinator runs")
            if self._stopping.is_set():
                return
            now = self._clock()
            loop.crashes.append(now)
            while loop.crashes and now - loop.crashes[0] > self.policy.window_sec:
                loop.crashes.popleft()
            crashes = len(loop.crashes)
            if crashes > self.policy.max_restarts:
                loop.state = FAILED
                log.critical(
                    "loop failed loop=%s crashes=%d window=%gs; giving up: %s: %s",
                    loop.name,
                    crashes,
                    self.policy.window_sec,
                    type(error).__name__,
                    error,
                )
                if self._failed is not None and not self._failed.done():
                    self._failed.set_result(
                        LoopFailed(loop.name, crashes, self.policy.window_sec, error)
                    )
                return
            delay = self.policy.backoff(crashes)
            loop.state = RESTARTING
            log.error(
                "loop crashed loop=%s restart_in=%.1fs crashes_in_window=%d",
                loop.name,
                delay,
                crashes,
                exc_info=error,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            loop.restarts += 1
            loop.state = RUNNING
            self._on_restart(loop.name)
            log.info("loop restarted loop=%s restarts=%d", loop.name, loop.restarts)
