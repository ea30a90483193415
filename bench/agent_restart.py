"""Agent restart-to-ready: exec of ``ioswarm agent`` to its first result the coordinator accepted.

The coordinator is real and runs in this process: a ``Coordinator`` with its dispatcher loop and
the grpc.aio ``GrpcServer`` on 127.0.0.1, no node; a producer keeps a few hundred tasks of the
measured level queued (real signed EIP-1559 transfers; L2 tasks carry the sender's state), so
work is waiting whenever the agent asks. The agent is the real command, a new process each time
(the ``ioswarm`` script beside this interpreter, else ``python -m ioswarm_cli.main``), always
with the same agent id, as a restarted agent would be.

Each round: note the agent's accepted results, exec the agent, poll (every millisecond) until
the coordinator has accepted one more result from it, then stop it with SIGTERM and wait for it
to exit. The time from just before the exec to that acceptance is the restart-to-ready time: it
includes the interpreter start, imports, connect, Register, GetTasks, the first batch's
validation and the agent's SubmitResults. Prints p50 and max per level with the target, when
the agent's task stream opened, and the CPU time the agent process had used by then (user +
system, from /proc: a figure a busy machine does not inflate).

Run: ``python bench/agent_restart.py [--rounds N]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.coordinator_throughput import (
    BLOCK_GAS_LIMIT,
    CHAIN_ID,
    SECRET,
    WALLET,
    process_cpu_sec,
    signed_pool,
)
from ioswarm.config import parse_config
from ioswarm.coordinator.service import Coordinator
from ioswarm.coordinator.servicer import GrpcServer
from ioswarm.core.models import AccountSnapshot, Level, Task
from ioswarm.core.tokens import agent_token
from ioswarm.node.adapter import NodeClient

TARGET_MS = 200.0
ROUNDS = 8
QUEUED = 256  # tasks the producer keeps waiting
AGENT_ID = "bench-restart"
READY_TIMEOUT_SEC = 20.0  # one round gives up after this
STOP_TIMEOUT_SEC = 10.0


class _NoNode:
    """No chain loop starts, so the node is never called."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the restart benchmark does not use the node ({name})")


def agent_command() -> list[str]:
    """How ``ioswarm`` is run here: its script beside this interpreter, or the module."""
    script = Path(sys.executable).parent / "ioswarm"
    if script.exists():
        return [str(script)]
    found = shutil.which("ioswarm")
    return [found] if found else [sys.executable, "-m", "ioswarm_cli.main"]


def tasks_of(level: Level) -> Iterator[Task]:
    """Endless tasks of ``level`` with fresh ids over a small signed pool."""
    pool = signed_pool(16)
    for task_id, (raw, tx_hash, sender, nonce) in zip(
        itertools.count(1), itertools.cycle(pool), strict=False
    ):
        state = AccountSnapshot(sender, 10**21, nonce) if level >= Level.L2 else None
        yield Task(
            task_id,
            tx_hash,
            raw,
            level,
            sender,
            nonce,
            1,
            BLOCK_GAS_LIMIT,
            sender_state=state,
            max_cost=10**18,
        )


async def _produce(coordinator: Coordinator, tasks: Iterator[Task]) -> None:
    while True:
        for task in itertools.islice(tasks, max(0, QUEUED - coordinator.scheduler.queued)):
            coordinator.dispatcher.submit(task)
        await asyncio.sleep(0.005)


def _accepted(coordinator: Coordinator) -> int:
    rec = coordinator.registry.get(AGENT_ID)
    return rec.results_accepted if rec is not None else 0


async def _one_round(
    coordinator: Coordinator, port: int, level: Level, command: list[str]
) -> tuple[float, float, float]:
    """Exec the agent, return ms to its first accepted result and to its open task stream,
    then stop it."""
    before = _accepted(coordinator)
    argv = [
        *command,
        "agent",
        f"--coordinator=127.0.0.1:{port}",
        f"--agent-id={AGENT_ID}",
        f"--api-key={agent_token(SECRET, AGENT_ID)}",
        f"--wallet={WALLET}",
        f"--level={level.name}",
        "--no-tls",
        "--log-level=warning",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOSWARM_")}
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: ASYNC220 - the exec itself is what is timed
    try:
        deadline = started + READY_TIMEOUT_SEC
        stream_ms = 0.0
        while _accepted(coordinator) <= before:
            if proc.poll() is not None or time.perf_counter() > deadline:
                err = proc.stderr.read().decode()[-500:] if proc.stderr else ""
                raise RuntimeError(f"agent not ready (exit {proc.returncode}): {err}")
            if not stream_ms and coordinator.dispatcher.has_stream(AGENT_ID):
                stream_ms = (time.perf_counter() - started) * 1000
            await asyncio.sleep(0.001)
        ready_ms = (time.perf_counter() - started) * 1000
        return ready_ms, stream_ms, (process_cpu_sec(proc.pid) or 0.0) * 1000
    finally:
        proc.send_signal(signal.SIGTERM)
        if not await _until(lambda: proc.poll() is not None, STOP_TIMEOUT_SEC):
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        # The next round starts from a closed stream, as after a real restart.
        await _until(lambda: not coordinator.dispatcher.has_stream(AGENT_ID), STOP_TIMEOUT_SEC)


async def _until(condition: Callable[[], bool], limit_sec: float) -> bool:
    """Wait (polling) until ``condition()`` holds or ``limit_sec`` pass; returns it."""
    end = time.monotonic() + limit_sec
    while True:
        if condition():
            return True
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.01)


async def measure(
    level: Level, rounds: int, command: list[str]
) -> list[tuple[float, float, float]]:
    """``rounds`` restarts of one agent at ``level``: ms to ready and to the open stream."""
    config = parse_config(
        {
            "grpcHost": "127.0.0.1",
            "grpcPort": 0,
            "masterSecret": SECRET,
            "chainId": CHAIN_ID,
            "taskLevel": level.name,
            "maxAgents": 4,
            "heartbeatIntervalSec": 60,
        },
        {},
    )
    coordinator = Coordinator(config, cast(NodeClient, _NoNode()), CollectorRegistry())
    server = GrpcServer(coordinator)
    await server.start()
    dispatcher = asyncio.create_task(coordinator.dispatcher.run(), name="bench-dispatcher")
    producer = asyncio.create_task(_produce(coordinator, tasks_of(level)), name="bench-producer")
    try:
        return [await _one_round(coordinator, server.port, level, command) for _ in range(rounds)]
    finally:
        producer.cancel()
        coordinator.dispatcher.stop()
        await asyncio.gather(producer, dispatcher, return_exceptions=True)
        await server.stop(grace=1.0)


def run(rounds: int = ROUNDS, command: list[str] | None = None) -> dict[str, Any]:
    """Measure L1 and L2; print p50/max per level against the target and return the figures."""
    command = command or agent_command()
    results: dict[str, Any] = {"target_ms": TARGET_MS, "command": " ".join(command)}
    print(
        f"agent restart-to-ready: exec of `{results['command']} agent` to its first accepted "
        f"result, {rounds} restarts per level (coordinator in-process, loopback gRPC)"
    )
    for level in (Level.L1, Level.L2):
        rounds_ms = asyncio.run(measure(level, rounds, command))
        times = [ready for ready, _, _ in rounds_ms]
        p50, worst = statistics.median(times), max(times)
        stream_p50 = statistics.median(stream for _, stream, _ in rounds_ms)
        cpu_p50 = statistics.median(cpu for _, _, cpu in rounds_ms)
        met = p50 < TARGET_MS
        print(
            f"  {level.name}: p50 {p50:.0f} ms, max {worst:.0f} ms "
            f"(target p50 < {TARGET_MS:.0f} ms, ratio {TARGET_MS / p50:.2f}: "
            f"{'met' if met else 'MISSED'}); task stream open at p50 {stream_p50:.0f} ms; "
            f"agent CPU to ready p50 {cpu_p50:.0f} ms"
        )
        results[level.name] = {
            "p50_ms": round(p50, 1),
            "max_ms": round(worst, 1),
            "stream_open_p50_ms": round(stream_p50, 1),
            "agent_cpu_p50_ms": round(cpu_p50, 1),
            "met": met,
        }
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=ROUNDS, help="restarts per level")
    p.add_argument(
        "--command", help="how to run ioswarm, e.g. 'python -m ioswarm_cli.main' (compare builds)"
    )
    args = p.parse_args(argv)
    run(args.rounds, args.command.split() if args.command else None)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
