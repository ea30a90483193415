"""Coordinator dispatch + ingest throughput with many simulated agent streams.

The server side is the real coordinator: a ``Coordinator`` with its ``Dispatcher`` loop and
the real grpc.aio ``GrpcServer`` (auth interceptor included) on 127.0.0.1. No node is
involved: a producer task feeds pre-built tasks (real signed EIP-1559 transfers, about 110
bytes each) straight into ``dispatcher.submit``, keeping the queue topped up, the way the
mempool poller would. The chain loops (block watcher, mempool poller, evictor) never start.

The agents run in a separate process, so that server and clients each get a core: each
simulated agent registers, opens GetTasks and answers every batch at once with one
``SubmitResults`` carrying a trivial valid result per task, over a few shared channels.

After a warm-up the benchmark counts results the coordinator accepted over a measured window
and prints:

- tasks/s (accepted results per second of wall time),
- each stream's share of the window's results: min, max and min/max (fairness),
- tasks reassigned (deadline passed) and late results in the window,
- CPU seconds of the server process and of the client process in the window,
- the resident memory of the server process (coordinator, gRPC server, producer): at the end
  of the window and its peak.

``make bench`` runs the scaling sweep (``run``): 100, 500 and 1,000 saturated agents, each in a
fresh process (so one run's memory does not count in the next one's RSS), then 100 agents with
shadow mode on. Each window closes once 16 batches per agent were answered (or at its time
cap), so the share figure, counted in whole batches, is as fine on a slow machine as on a fast
one. Every point keeps about 25-32k tasks in flight in total (fewer per agent as the
agents grow), as an operator would size ``maxInflightPerAgent``: the agents here answer at
once, so every task in flight waits in the coordinator's pipeline, and a deeper one would only
outlast the task timeout. What it does not measure: agents' validation work (answers are
trivial), a node, or the network beyond loopback; the simulated agents share a few channels,
where real ones would each have their own connection.

The queue starts full (``prefill``), as for a coordinator facing a deep mempool, so the run
measures the saturated steady state in which every batch is full. ``--trickle`` starts from
an empty queue instead: batches then start small, and because these agents answer each batch
on its own, a small batch frees room for another small batch and the sizes stay small.

Everything is bounded: at most ``total_tasks`` tasks, a time cap on every phase, and the
client process stops on its own deadline.

Run: ``python bench/coordinator_throughput.py [--help]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import itertools
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import grpc
import grpc.aio
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address
from prometheus_client import CollectorRegistry

from ioswarm.config import CoordinatorConfig, parse_config
from ioswarm.coordinator.service import Coordinator
from ioswarm.coordinator.servicer import GrpcServer
from ioswarm.core.models import Level, Task
from ioswarm.core.tokens import agent_token
from ioswarm.node.adapter import NodeClient
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.proto import ioswarm_pb2_grpc as pb_grpc
from ioswarm.protocol import auth_metadata

TARGET_TASKS_PER_SEC = 20_000
TARGET_SHARE_RATIO = 0.8
TARGET_RSS_MIB = 300  # at 1,000 agents
SECRET = "bench-coordinator-master-secret"  # noqa: S105 - a throwaway secret on loopback
WALLET = "0x" + "42" * 20
CHAIN_ID = 4689
BLOCK_GAS_LIMIT = 30_000_000
TX_POOL = 64  # distinct signed transactions the tasks cycle through
PRODUCER_TICK_SEC = 0.002
PRODUCER_CHUNK = 512  # most tasks submitted between two yields to the event loop
TASK_TIMEOUT_MS = 5_000  # above the pipeline's queueing delay, so no task is reassigned
CONNECT_TIMEOUT_SEC = 30.0
CLIENT_SLACK_SEC = 30.0  # the client process gives up this long after the planned end
JSON_PREFIX = "figures: "


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run; every count and time is a bound."""

    agents: int = 100
    """Simulated agents, one GetTasks stream each."""
    channels: int = 4
    """gRPC channels the client process spreads the agents over."""
    max_batch: int = 128
    """``maxBatchSize``: most tasks in one TaskBatch (the config default is 64; every batch
    costs a stream write and a SubmitResults call, so bigger batches cost less per task)."""
    max_inflight: int = 256
    """``maxInflightPerAgent``: most unanswered tasks per agent (two batches in flight)."""
    warmup_sec: float = 2.0
    """Seconds of full load before the measured window opens."""
    seconds: float = 10.0
    """Length of the measured window (it closes early if the tasks run out). Shares are
    counted in whole batches, so the window should hold a few dozen batches per agent."""
    batches_per_agent: int = 0
    """When above 0, the window also closes once this many full batches per agent were
    answered, so the share figure has the same granularity however fast the machine is
    (``seconds`` stays the cap)."""
    total_tasks: int = 600_000
    """Most tasks the producer creates over the whole run."""
    shadow: bool = False
    """``shadowMode``: also record every verdict in the shadow book."""
    prefill: bool = True
    """Queue a full load before dispatch starts; False trickles tasks in from the start."""


def queue_high_water(bench: BenchConfig) -> int:
    """Tasks the producer keeps queued: enough to fill every agent's inflight window at the
    start, and never less than one full batch per agent, so no dispatch round runs short of
    work and has to split a batch (``maxBatchSize`` stays the batch size at saturation)."""
    return bench.agents * (bench.max_inflight + bench.max_batch)


def coordinator_config(bench: BenchConfig) -> CoordinatorConfig:
    """The coordinator config the benchmark runs with (limits high enough not to throttle)."""
    queue = max(10_000, queue_high_water(bench))
    return parse_config(
        {
            "grpcHost": "127.0.0.1",
            "grpcPort": 0,
            "masterSecret": SECRET,
            "chainId": CHAIN_ID,
            "taskLevel": "L1",
            "shadowMode": bench.shadow,
            "maxAgents": bench.agents,
            "maxBatchSize": bench.max_batch,
            "maxInflightPerAgent": bench.max_inflight,
            "retryQueueSize": queue,
            "taskTimeoutMs": TASK_TIMEOUT_MS,
            "submitRatePerSec": 1_000_000.0,
            "submitBurst": 1_000_000,
            "heartbeatIntervalSec": 60,
            # Real agents each have their own connection; here many share a few channels, so
            # a channel carries a task stream and a SubmitResults call per simulated agent.
            "limits": {
                "grpcMaxStreamsPerConnection": 2 * -(-bench.agents // bench.channels) + 8,
            },
        },
        {},
    )


# -- tasks ------------------------------------------------------------------------------------


def signed_pool(count: int = TX_POOL) -> list[tuple[bytes, bytes, bytes, int]]:
    """``count`` signed EIP-1559 transfers as (raw, tx hash, sender, nonce)."""
    key = bytes.fromhex("11" * 32)
    sender = bytes.fromhex(Account.from_key(key).address[2:])
    out = []
    for nonce in range(count):
        tx = {
            "type": 2,
            "chainId": CHAIN_ID,
            "nonce": nonce,
            "to": to_checksum_address((nonce + 1).to_bytes(20, "big")),
            "value": 10**15 + nonce,
            "gas": 21_000,
            "maxFeePerGas": 50 * 10**9,
            "maxPriorityFeePerGas": 2 * 10**9,
        }
        raw = bytes(Account.sign_transaction(tx, key).raw_transaction)
        out.append((raw, keccak(raw), sender, nonce))
    return out


def task_stream(pool: list[tuple[bytes, bytes, bytes, int]]) -> Iterator[Task]:
    """Endless L1 tasks with fresh ids over the signed pool."""
    for task_id, (raw, tx_hash, sender, nonce) in zip(
        itertools.count(1), itertools.cycle(pool), strict=False
    ):
        yield Task(task_id, tx_hash, raw, Level.L1, sender, nonce, 1, BLOCK_GAS_LIMIT)


async def produce(
    coordinator: Coordinator, tasks: Iterator[Task], total: int, high: int, prefill: bool
) -> int:
    """Keep about ``high`` tasks queued until ``total`` were submitted; returns the count.

    With ``prefill`` the first ``high`` tasks go in at once, as a coordinator meeting a full
    mempool would queue them; after that at most ``PRODUCER_CHUNK`` tasks go in between
    yields to the event loop, like one mempool page at a time, so gRPC I/O never waits long.
    """
    dispatcher, scheduler = coordinator.dispatcher, coordinator.scheduler
    made = 0
    chunk = high if prefill else PRODUCER_CHUNK
    while made < total:
        room = min(high - scheduler.queued, total - made, chunk)
        if room <= 0:
            await asyncio.sleep(PRODUCER_TICK_SEC)
            continue
        created = 0
        for task in itertools.islice(tasks, room):
            created += dispatcher.submit(task)
        made += room
        coordinator.totals.tasks_created += created
        chunk = PRODUCER_CHUNK
        await asyncio.sleep(0)
    return made


# -- client process ---------------------------------------------------------------------------


@dataclass
class ClientStats:
    """What the client process saw."""

    registered: int = 0
    batches: int = 0
    tasks: int = 0
    submits: int = 0
    errors: int = 0
    cpu_sec: float = 0.0


def _metadata(agent_id: str) -> tuple[tuple[str, str], ...]:
    return auth_metadata(agent_id, agent_token(SECRET, agent_id))


async def _agent(stub: pb_grpc.IOSwarmStub, agent_id: str, stats: ClientStats) -> None:
    """Register, stream tasks, answer every batch at once with trivial valid results."""
    md = _metadata(agent_id)
    await stub.Register(
        pb.RegisterRequest(
            agent_id=agent_id,
            capability=pb.L1,
            region="bench",
            version="bench",
            wallet_address=WALLET,
        ),
        metadata=md,
        timeout=10,
    )
    stats.registered += 1
    call = stub.GetTasks(pb.GetTasksRequest(agent_id=agent_id, max_level=pb.L1), metadata=md)
    async for batch in call:
        result = pb.BatchResult(agent_id=agent_id, batch_id=batch.batch_id)
        add = result.results.add
        for task in batch.tasks:
            add(task_id=task.task_id, valid=True)
        stats.batches += 1
        stats.tasks += len(batch.tasks)
        await stub.SubmitResults(result, metadata=md, timeout=10)
        stats.submits += 1


async def _clients(port: int, agents: int, channels: int, deadline: float) -> ClientStats:
    stats = ClientStats()
    options = [("grpc.max_receive_message_length", 8 << 20)]
    chans = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[*options, ("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(channels)
    ]
    stubs = [pb_grpc.IOSwarmStub(ch) for ch in chans]

    async def one(i: int) -> None:
        try:
            await _agent(stubs[i % channels], f"bench-agent-{i:03d}", stats)
        except grpc.aio.AioRpcError:
            stats.errors += 1  # the server ending the run cuts in-flight calls

    jobs = [asyncio.create_task(one(i)) for i in range(agents)]
    _, pending = await asyncio.wait(jobs, timeout=max(0.0, deadline - time.time()))
    for job in pending:
        job.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)
    for ch in chans:
        await ch.close()
    return stats


def client_process(
    port: int, agents: int, channels: int, deadline: float, conn: Connection
) -> None:
    """Entry point of the client process: run the agents, send back a ``ClientStats``."""
    stats = asyncio.run(_clients(port, agents, channels, deadline))
    stats.cpu_sec = time.process_time()
    conn.send(asdict(stats))
    conn.close()


def process_cpu_sec(pid: int) -> float | None:
    """CPU seconds (user + system) of a process, from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- server side ------------------------------------------------------------------------------


class _NoNode:
    """The benchmark starts no chain loop, so the node is never called."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the throughput benchmark does not use the node ({name})")


@dataclass
class _Snapshot:
    at: float
    accepted: int
    late: int
    reassigned: int
    per_agent: dict[str, int]
    server_cpu: float
    client_cpu: float | None
    rss_mib: float | None = None
    peak_rss_mib: float | None = None


def _rss_mib() -> tuple[float | None, float | None]:
    """Resident and peak resident memory of this process in MiB, from /proc (None without)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None, None
    kib = {
        k: int(v.split()[0])
        for k, v in (line.split(":", 1) for line in status.splitlines() if ":" in line)
        if k in ("VmRSS", "VmHWM")
    }
    rss, peak = kib.get("VmRSS"), kib.get("VmHWM")
    return (
        rss / 1024 if rss is not None else None,
        peak / 1024 if peak is not None else None,
    )


def _snapshot(coordinator: Coordinator, client_pid: int | None) -> _Snapshot:
    return _Snapshot(
        at=time.perf_counter(),
        accepted=coordinator.totals.results_accepted,
        late=coordinator.totals.results_late,
        reassigned=coordinator.dispatcher.reassigned_total,
        per_agent={r.agent_id: r.results_accepted for r in coordinator.registry.all()},
        server_cpu=time.process_time(),
        client_cpu=process_cpu_sec(client_pid) if client_pid is not None else None,
    )


async def _wait_until(condition: Callable[[], bool], limit: float, what: str) -> None:
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"benchmark setup: {what} not reached in {limit:.0f}s")
        await asyncio.sleep(0.05)


async def _window(
    coordinator: Coordinator, producer: asyncio.Task[int], bench: BenchConfig, accepted: int
) -> None:
    enough = bench.batches_per_agent * bench.agents * bench.max_batch
    end = time.monotonic() + bench.seconds
    while not producer.done():
        if enough and coordinator.totals.results_accepted - accepted >= enough:
            return
        left = end - time.monotonic()
        if left <= 0:
            return
        await asyncio.wait({producer}, timeout=min(left, 0.05))


async def measure(bench: BenchConfig, profile: cProfile.Profile | None = None) -> dict[str, Any]:
    """One run: coordinator and server here, agents in a child process; returns the figures."""
    pool = signed_pool()
    coordinator = Coordinator(
        coordinator_config(bench), cast(NodeClient, _NoNode()), CollectorRegistry()
    )
    server = GrpcServer(coordinator)
    await server.start()
    dispatcher = asyncio.create_task(coordinator.dispatcher.run(), name="bench-dispatcher")
    planned = bench.warmup_sec + bench.seconds
    ctx = multiprocessing.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    deadline = time.time() + CONNECT_TIMEOUT_SEC + planned + CLIENT_SLACK_SEC
    client = ctx.Process(
        target=client_process,
        args=(server.port, bench.agents, bench.channels, deadline, child_conn),
        name="bench-agents",
        daemon=True,
    )
    client.start()
    child_conn.close()
    producer: asyncio.Task[int] | None = None
    high = queue_high_water(bench)
    try:
        await _wait_until(
            lambda: coordinator.dispatcher.stream_count() == bench.agents,
            CONNECT_TIMEOUT_SEC,
            f"{bench.agents} open task streams",
        )
        producer = asyncio.create_task(
            produce(coordinator, task_stream(pool), bench.total_tasks, high, bench.prefill),
            name="bench-producer",
        )
        await asyncio.sleep(bench.warmup_sec)
        start = _snapshot(coordinator, client.pid)
        if profile is not None:
            profile.enable()
        # The window closes after ``seconds``, or earlier when the producer has run out or
        # (with ``batches_per_agent``) when enough batches were answered.
        await _window(coordinator, producer, bench, start.accepted)
        if profile is not None:
            profile.disable()
        stop = _snapshot(coordinator, client.pid)
        stop.rss_mib, stop.peak_rss_mib = _rss_mib()
    finally:
        if producer is not None:
            producer.cancel()
        coordinator.dispatcher.stop()
        await asyncio.gather(dispatcher, return_exceptions=True)
        await server.stop(grace=1.0)
        stats: dict[str, Any] = {}
        if await asyncio.to_thread(parent_conn.poll, CLIENT_SLACK_SEC):
            with contextlib.suppress(EOFError):  # the client process died without a report
                stats = parent_conn.recv()
        client.join(timeout=5)
        if client.is_alive():
            client.terminate()
            client.join(timeout=5)
    return _figures(bench, start, stop, stats)


def _figures(
    bench: BenchConfig, start: _Snapshot, stop: _Snapshot, client: dict[str, Any]
) -> dict[str, Any]:
    elapsed = stop.at - start.at
    server_cpu = stop.server_cpu - start.server_cpu
    accepted = stop.accepted - start.accepted
    counts = [stop.per_agent.get(a, 0) - start.per_agent.get(a, 0) for a in stop.per_agent]
    total = sum(counts) or 1
    lo, hi = min(counts, default=0), max(counts, default=0)
    client_cpu = (
        stop.client_cpu - start.client_cpu
        if stop.client_cpu is not None and start.client_cpu is not None
        else None
    )
    return {
        "agents": bench.agents,
        "channels": bench.channels,
        "max_batch": bench.max_batch,
        "max_inflight": bench.max_inflight,
        "shadow": bench.shadow,
        "window_sec": round(elapsed, 3),
        "results_accepted": accepted,
        "tasks_per_sec": round(accepted / elapsed, 1) if elapsed > 0 else 0.0,
        "share_min": lo / total,
        "share_max": hi / total,
        "share_ratio": lo / hi if hi else 0.0,
        "results_late": stop.late - start.late,
        "tasks_reassigned": stop.reassigned - start.reassigned,
        "server_cpu_sec": round(server_cpu, 3),
        "tasks_per_server_cpu_sec": round(accepted / server_cpu, 1) if server_cpu > 0 else 0.0,
        "tasks_per_batch": round(client["tasks"] / client["batches"], 1)
        if client.get("batches")
        else None,
        "client_cpu_sec": round(client_cpu, 3) if client_cpu is not None else None,
        "rss_mib": round(stop.rss_mib, 1) if stop.rss_mib is not None else None,
        "peak_rss_mib": round(stop.peak_rss_mib, 1) if stop.peak_rss_mib is not None else None,
        "client": client,
    }


def report(fig: dict[str, Any]) -> None:
    """Print one run's figures."""
    n = fig["agents"]
    fair = 1 / n if n else 0.0
    cpu = fig["client_cpu_sec"]
    shadow = "on" if fig["shadow"] else "off"
    rate_ok = fig["tasks_per_sec"] >= TARGET_TASKS_PER_SEC
    ratio_ok = fig["share_ratio"] >= TARGET_SHARE_RATIO
    print(
        f"coordinator dispatch+ingest, {n} agent streams over {fig['channels']} channels, "
        f"shadow {shadow}, maxBatchSize={fig['max_batch']} "
        f"maxInflightPerAgent={fig['max_inflight']}"
    )
    print(
        f"  throughput:  {fig['tasks_per_sec']:>10,.0f} tasks/s  "
        f"({fig['results_accepted']:,} results in {fig['window_sec']:.2f} s; "
        f"target >= {TARGET_TASKS_PER_SEC:,}: {'met' if rate_ok else 'MISSED'})"
    )
    print(
        f"  stream share: min {fig['share_min']:.4%}  max {fig['share_max']:.4%}  "
        f"(fair {fair:.4%})  min/max {fig['share_ratio']:.3f} "
        f"(target >= {TARGET_SHARE_RATIO}: {'met' if ratio_ok else 'MISSED'})"
    )
    client_text = f"{cpu:.2f} s" if cpu is not None else "n/a"
    print(
        f"  CPU in window: server {fig['server_cpu_sec']:.2f} s, clients {client_text} "
        f"(wall {fig['window_sec']:.2f} s); "
        f"{fig['tasks_per_server_cpu_sec']:,.0f} tasks per server CPU second"
    )
    print(
        f"  mean tasks per TaskBatch (whole run): {fig['tasks_per_batch']}; in window "
        f"{fig['tasks_reassigned']} tasks reassigned, {fig['results_late']} late results"
    )
    if fig.get("rss_mib") is not None:
        print(
            f"  server process RSS: {fig['rss_mib']:.0f} MiB at the window's end, "
            f"peak {fig['peak_rss_mib']:.0f} MiB"
        )


@dataclass(frozen=True)
class SweepPoint:
    """One point of the scaling sweep."""

    agents: int
    max_batch: int
    max_inflight: int
    channels: int
    seconds: float
    shadow: bool = False
    batches_per_agent: int = 16


# About 25-32k tasks in flight at every point (see the module docstring). Shares are counted
# in whole batches: a window closes after 16 answered batches per agent (or at its time cap).
SWEEP = (
    SweepPoint(100, 128, 256, 4, 10.0),
    SweepPoint(500, 64, 64, 8, 20.0),
    SweepPoint(1000, 32, 32, 16, 30.0),
    SweepPoint(100, 128, 256, 4, 10.0, shadow=True),
)
TASKS_PER_POINT = 2_000_000  # the producer's bound (a window needs at most ~0.6M)
POINT_TIMEOUT_SEC = 150.0


def measure_point(point: SweepPoint) -> dict[str, Any]:
    """Run one sweep point in a fresh process (its own RSS) and return its figures."""
    args = [
        sys.executable,
        str(Path(__file__).resolve()),
        f"--agents={point.agents}",
        f"--batch={point.max_batch}",
        f"--inflight={point.max_inflight}",
        f"--channels={point.channels}",
        f"--seconds={point.seconds}",
        f"--batches-per-agent={point.batches_per_agent}",
        f"--tasks={TASKS_PER_POINT}",
        "--json",
        *(["--shadow"] if point.shadow else []),
    ]
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=POINT_TIMEOUT_SEC, check=False
    )
    lines = done.stdout.splitlines()
    figures = [line for line in lines if line.startswith(JSON_PREFIX)]
    for line in lines:
        if not line.startswith(JSON_PREFIX):
            print(line)
    if done.returncode != 0 or not figures:
        tail = done.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"sweep point {point} failed: {' | '.join(tail)}")
    result: dict[str, Any] = json.loads(figures[-1][len(JSON_PREFIX) :])
    return result


def _judge(value: float, target: float, higher: bool = True) -> str:
    ratio = value / target if higher else (target / value if value else 0.0)
    met = value >= target if higher else value < target
    verdict = "met" if met else "MISSED"
    return f"target {'>=' if higher else '<'} {target:g}, ratio {ratio:.2f} ({verdict})"


def run(points: tuple[SweepPoint, ...] = SWEEP) -> dict[str, Any]:
    """The scaling sweep: each point in its own process; prints a summary with targets."""
    results: dict[str, Any] = {
        "target_tasks_per_sec": TARGET_TASKS_PER_SEC,
        "target_share_ratio": TARGET_SHARE_RATIO,
        "target_rss_mib_at_1000": TARGET_RSS_MIB,
        "points": [],
    }
    for point in points:
        results["points"].append(measure_point(point))
    print("coordinator scaling, saturated agents (real gRPC server, agents in one process):")
    for fig in results["points"]:
        shadow = ", shadow on" if fig["shadow"] else ""
        print(
            f"  {fig['agents']:>5} agents{shadow}: {fig['tasks_per_sec']:>9,.0f} tasks/s "
            f"({_judge(fig['tasks_per_sec'], TARGET_TASKS_PER_SEC)}); "
            f"fairness {fig['share_ratio']:.3f} "
            f"({_judge(fig['share_ratio'], TARGET_SHARE_RATIO)}); "
            f"{fig['tasks_reassigned']} reassigned; RSS peak {fig['peak_rss_mib'] or 0:.0f} MiB"
        )
    big = [f for f in results["points"] if f["agents"] == 1000 and not f["shadow"]]
    if big:
        top = big[0]
        if top.get("peak_rss_mib") is not None:
            print(
                f"  coordinator RSS at 1000 agents: peak {top['peak_rss_mib']:.0f} MiB "
                f"({_judge(top['peak_rss_mib'], TARGET_RSS_MIB, higher=False)})"
            )
        results["meets_target"] = (
            top["tasks_per_sec"] >= TARGET_TASKS_PER_SEC
            and top["share_ratio"] >= TARGET_SHARE_RATIO
            and (top.get("peak_rss_mib") or 0.0) < TARGET_RSS_MIB
        )
    return results


def run_pair(base: BenchConfig, shadow_run: bool = True) -> dict[str, Any]:
    """``base`` with shadow mode off, then on; the target is judged on the first run."""
    results: dict[str, Any] = {"target_tasks_per_sec": TARGET_TASKS_PER_SEC}
    off = asyncio.run(measure(replace(base, shadow=False)))
    report(off)
    results["shadow_off"] = off
    if shadow_run:
        on = asyncio.run(measure(replace(base, shadow=True)))
        report(on)
        results["shadow_on"] = on
    results["meets_target"] = (
        off["tasks_per_sec"] >= TARGET_TASKS_PER_SEC and off["share_ratio"] >= TARGET_SHARE_RATIO
    )
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line: options for one run, or the default pair (shadow off, shadow on)."""
    d = BenchConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--agents", type=int, default=d.agents, help="simulated agent streams")
    p.add_argument("--channels", type=int, default=d.channels, help="client gRPC channels")
    p.add_argument("--batch", type=int, default=d.max_batch, help="maxBatchSize")
    p.add_argument("--inflight", type=int, default=d.max_inflight, help="maxInflightPerAgent")
    p.add_argument("--seconds", type=float, default=d.seconds, help="measured window")
    p.add_argument("--warmup", type=float, default=d.warmup_sec, help="warm-up seconds")
    p.add_argument(
        "--batches-per-agent",
        type=int,
        default=d.batches_per_agent,
        help="close the window once this many batches per agent were answered (0: time only)",
    )
    p.add_argument("--tasks", type=int, default=d.total_tasks, help="most tasks produced")
    p.add_argument("--shadow", action="store_true", help="one run with shadowMode on")
    p.add_argument("--both", action="store_true", help="shadow off, then shadow on")
    p.add_argument(
        "--trickle", action="store_true", help="no prefill: tasks trickle in from the start"
    )
    p.add_argument("--profile", metavar="FILE", help="cProfile the server's window into FILE")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    p.add_argument("--sweep", action="store_true", help="the scaling sweep of make bench")
    args = p.parse_args(argv)
    if args.sweep:
        run()
        return 0
    bench = BenchConfig(
        agents=args.agents,
        channels=args.channels,
        max_batch=args.batch,
        max_inflight=args.inflight,
        warmup_sec=args.warmup,
        seconds=args.seconds,
        batches_per_agent=args.batches_per_agent,
        total_tasks=args.tasks,
        shadow=args.shadow,
        prefill=not args.trickle,
    )
    if args.both:
        run_pair(bench)
        return 0
    profile = cProfile.Profile() if args.profile else None
    figures = asyncio.run(measure(bench, profile))
    report(figures)
    if args.json:
        print(JSON_PREFIX + json.dumps(figures), flush=True)
    if profile is not None:
        profile.dump_stats(args.profile)
        print(f"  server profile of the window: {args.profile}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
