"""Dispatch → result latency through real agents: how long results wait on the agent side.

The server side is the real coordinator (``Coordinator``, its ``Dispatcher`` loop, the grpc.aio
``GrpcServer`` with auth) on 127.0.0.1 with its default SubmitResults rate limit; no node is
involved. The agents are the real agent runtime (``ioswarm.agent.runtime.Agent`` with the L1
validator) in a separate process, so server and agents each get a core. A producer trickles
L1 tasks (real signed EIP-1559 transfers) in at a fixed rate, one every few milliseconds, as a
push mempool would.

For each accepted result the coordinator's dispatcher reports the seconds since the task's
batch was put on the agent's stream; the benchmark prints p50/p99 of those per load. The
light load leaves each agent's submit budget full (results go back at once); the busy load
sends each agent more batches per second than its budget has calls, so results coalesce.

Everything is bounded: a fixed number of seconds per load, a time cap on setup, and the agent
process stops on its own deadline.

Run: ``python -m bench.agent_submit [--help]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from prometheus_client import CollectorRegistry

from bench.coordinator_throughput import signed_pool, task_stream
from ioswarm.agent.levels import validator_for
from ioswarm.agent.runtime import Agent
from ioswarm.config import AgentConfig, parse_config
from ioswarm.coordinator.service import Coordinator
from ioswarm.coordinator.servicer import GrpcServer
from ioswarm.core.models import Level
from ioswarm.core.tokens import agent_token
from ioswarm.node.adapter import NodeClient

SECRET = "bench-agent-submit-master-secret"  # noqa: S105 - a throwaway secret on loopback
WALLET = "0x" + "42" * 20
CHAIN_ID = 4689
TICK_SEC = 0.005
CONNECT_TIMEOUT_SEC = 30.0
TARGET_P99_SEC = 0.1  # issue target for seen → result at L1/L2; dispatch → result is a part


@dataclass(frozen=True)
class Load:
    name: str
    tasks_per_sec: float


LOADS = (Load("light", 40.0), Load("busy", 600.0))


class _NoNode:
    """No chain loop runs, so the node is never called."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the agent submit benchmark does not use the node ({name})")


# -- agent process ----------------------------------------------------------------------------


async def _agents(port: int, count: int, deadline: float, stop: Any) -> None:
    agents = [
        Agent(
            AgentConfig(
                coordinator=f"127.0.0.1:{port}",
                agent_id=f"bench-{i}",
                api_key=agent_token(SECRET, f"bench-{i}"),
                wallet=WALLET,
                level="L1",
                tls=False,
                reconnect_max_sec=1.0,
            ),
            validator_for(Level.L1),
        )
        for i in range(count)
    ]
    jobs = [asyncio.create_task(a.run()) for a in agents]
    await asyncio.to_thread(stop.wait, max(0.0, deadline - time.time()))
    for a in agents:
        a.shutdown("bench over")
    await asyncio.wait(jobs, timeout=5)


def agent_process(port: int, count: int, deadline: float, stop: Any) -> None:
    """Entry point of the agent process: run the agents until ``stop`` is set or the
    deadline."""
    logging.getLogger("ioswarm").setLevel(logging.ERROR)
    with contextlib.suppress(Exception):
        asyncio.run(_agents(port, count, deadline, stop))


# -- coordinator side -------------------------------------------------------------------------


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _wait_until(condition: Callable[[], bool], limit: float, what: str) -> None:
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"benchmark setup: {what} not reached in {limit:.0f}s")
        await asyncio.sleep(0.05)


async def measure(agents: int, seconds: float) -> dict[str, Any]:
    """Every load in turn against one coordinator and one agent process."""
    config = parse_config(
        {
            "grpcHost": "127.0.0.1",
            "grpcPort": 0,
            "masterSecret": SECRET,
            "chainId": CHAIN_ID,
            "taskLevel": "L1",
            "shadowMode": False,
            "canaryPct": 0,
            "maxAgents": agents,
            "taskTimeoutMs": 5_000,
            "heartbeatIntervalSec": 60,
        },
        {},
    )
    coordinator = Coordinator(config, cast(NodeClient, _NoNode()), CollectorRegistry())
    latencies: list[float] = []
    finish = coordinator.dispatcher.finish

    def timed_finish(agent_id: str, task_id: int) -> Any:
        done = finish(agent_id, task_id)
        if done is not None:
            latencies.append(done[1])
        return done

    coordinator.dispatcher.finish = timed_finish  # type: ignore[method-assign]
    server = GrpcServer(coordinator)
    await server.start()
    dispatcher = asyncio.create_task(coordinator.dispatcher.run(), name="bench-dispatcher")
    ctx = multiprocessing.get_context("spawn")
    planned = CONNECT_TIMEOUT_SEC + len(LOADS) * (seconds + 3.0)
    stop = ctx.Event()
    proc = ctx.Process(
        target=agent_process,
        args=(server.port, agents, time.time() + planned, stop),
        name="bench-agents",
        daemon=True,
    )
    proc.start()
    tasks = task_stream(signed_pool())
    figures: dict[str, Any] = {"agents": agents, "seconds": seconds}
    try:
        await _wait_until(
            lambda: coordinator.dispatcher.stream_count() == agents,
            CONNECT_TIMEOUT_SEC,
            f"{agents} agent streams",
        )
        for load in LOADS:
            latencies.clear()
            refused_before = _refused(coordinator)
            submitted, start = 0, time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds:
                while submitted < load.tasks_per_sec * elapsed:
                    coordinator.dispatcher.submit(next(tasks))
                    submitted += 1
                await asyncio.sleep(TICK_SEC)
            await asyncio.sleep(1.0)  # the last results come back
            figures[load.name] = {
                "tasks_per_sec": load.tasks_per_sec,
                "results": len(latencies),
                "p50_ms": round(1000 * _quantile(latencies, 0.5), 1),
                "p99_ms": round(1000 * _quantile(latencies, 0.99), 1),
                "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else None,
                "submit_refusals": _refused(coordinator) - refused_before,
            }
    finally:
        stop.set()
        await asyncio.to_thread(proc.join, 10)
        coordinator.dispatcher.stop()
        await asyncio.gather(dispatcher, return_exceptions=True)
        await server.stop(grace=1.0)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
    return figures


def _refused(coordinator: Coordinator) -> float:
    """SubmitResults calls refused RESOURCE_EXHAUSTED so far (from the coordinator's metric)."""
    total = 0.0
    for metric in coordinator.metrics.registry.collect():
        for sample in metric.samples:
            labels = sample.labels
            if (
                sample.name == "ioswarm_rpc_rejected_total"
                and labels.get("method") == "SubmitResults"
                and labels.get("code") == "RESOURCE_EXHAUSTED"
            ):
                total += sample.value
    return total


def report(fig: dict[str, Any]) -> None:
    print(f"agent dispatch -> result, {fig['agents']} agents (real runtime, L1), default limits")
    for load in LOADS:
        f = fig[load.name]
        ratio = TARGET_P99_SEC / (f["p99_ms"] / 1000) if f["p99_ms"] else float("nan")
        print(
            f"  {load.name:>5} {f['tasks_per_sec']:>6.0f} tasks/s: p50 {f['p50_ms']:6.1f} ms  "
            f"p99 {f['p99_ms']:6.1f} ms  ({f['results']} results, "
            f"{f['submit_refusals']:.0f} submits refused; p99 target < "
            f"{TARGET_P99_SEC * 1000:.0f} ms, ratio {ratio:.2f})"
        )


def run(agents: int = 4, seconds: float = 8.0) -> dict[str, Any]:
    """Run every load, print and return the figures."""
    fig = asyncio.run(measure(agents, seconds))
    report(fig)
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--agents", type=int, default=4, help="agents in the agent process")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per load")
    args = p.parse_args(argv)
    run(args.agents, args.seconds)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
