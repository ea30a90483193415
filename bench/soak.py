"""Soak: a coordinator process under a steady workload and agent churn, watched from outside.

Starts anvil (1 s blocks), ``ioswarm coordinator`` as its own process, agent processes and the
workload. Every ``--churn-sec`` one agent is killed (SIGKILL and SIGTERM in turn) and another
starts, under a new id every other time. Every ``--sample-sec`` it samples the coordinator's
resident set and open descriptors (/proc) and, from /metrics, its asyncio tasks and table
sizes. Prints the RSS slope over the second half (target < 0.1 MB/min), the spread of fds and
tasks over the second half (flat), and the largest tables against their bounds.

A longer run for operators: ``python bench/soak.py --minutes 120 --rate 20``.

Run: ``python bench/soak.py [--minutes 8] [--rate 8] [--agents 4]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from ioswarm.core.tokens import agent_token
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.sim.anvil import AnvilProcess
from ioswarm.sim.workload import Workload

SECRET = secrets.token_hex(16)
WALLET = "0x" + "42" * 20
CLI = [sys.executable, "-m", "ioswarm_cli.main"]
RSS_SLOPE_TARGET_MB_MIN = 0.1


@dataclass
class Sample:
    t: float
    rss_mb: float
    fds: int
    tasks: float
    tables: dict[str, tuple[float, float]] = field(default_factory=dict)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _parse_metrics(text: str) -> tuple[float, dict[str, tuple[float, float]]]:
    tasks = 0.0
    entries: dict[str, float] = {}
    bounds: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("ioswarm_asyncio_tasks "):
            tasks = float(line.split()[1])
        m = re.match(r'ioswarm_table_(entries|bound)\{table="([^"]+)"\} (\S+)', line)
        if m:
            (entries if m[1] == "entries" else bounds)[m[2]] = float(m[3])
    return tasks, {k: (v, bounds.get(k, 0.0)) for k, v in entries.items()}


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    cov = sum((t - mx) * (v - my) for t, v in points)
    return 60.0 * cov / var if var else 0.0


async def _start_agent(port: int, agent_id: str, level: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *CLI,
        "agent",
        "--coordinator",
        f"127.0.0.1:{port}",
        "--agent-id",
        agent_id,
        "--api-key",
        agent_token(SECRET, agent_id),
        "--wallet",
        WALLET,
        "--level",
        level,
        "--no-tls",
        "--log-level",
        "warning",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _coordinator(workdir: Path, node_url: str) -> tuple[asyncio.subprocess.Process, int, int]:
    cfg = workdir / "coordinator.yaml"
    cfg.write_text(
        f"masterSecret: {SECRET}\nnodeRpcUrl: {node_url}\ngrpcPort: 0\nswarmApiPort: 0\n"
        f"taskLevel: L2\ndataDir: {workdir / 'data'}\n"
        "heartbeatIntervalSec: 2\nheartbeatMissLimit: 3\nagentRetentionBlocks: 30\n"
        # Small bounds, so that every table reaches its plateau in the first half (the
        # mempool's table of txs gone fills at the workload's rate: 1,000 at 8 tx/s in ~2 min).
        "maxTrackedTxs: 1000\nshadowExpiryBlocks: 20\n"
    )
    log = workdir / "coordinator.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "coordinator",
            "--config",
            str(cfg),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    for _ in range(300):
        text = log.read_text(errors="replace")
        grpc = re.search(r'grpc listening"? port=(\d+)', text)
        api = re.search(r'http api listening"? host=\S+ port=(\d+)', text)
        if grpc and api:
            return proc, int(grpc[1]), int(api[1])
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.1)
    raise RuntimeError(f"coordinator did not start:\n{log.read_text(errors='replace')[-2000:]}")


async def soak(
    minutes: float, rate: float, agents: int, churn_sec: float, sample_sec: float
) -> dict[str, Any]:
    samples: list[Sample] = []
    churns = 0
    with tempfile.TemporaryDirectory(prefix="ioswarm-soak-") as tmp:
        async with AnvilProcess(env=os.environ, block_time=1) as anvil:
            coord, grpc_port, api_port = await _coordinator(Path(tmp), anvil.url)
            running: list[asyncio.subprocess.Process] = []
            try:
                levels = ("L1", "L2")
                for i in range(agents):
                    running.append(await _start_agent(grpc_port, f"soak-{i}", levels[i % 2]))
                async with JsonRpcNode(anvil.url) as node, aiohttp.ClientSession() as http:
                    workload = Workload(
                        node,
                        anvil.private_keys[0],
                        chain_id=await node.chain_id(),
                        rate=rate,
                        seed=7,
                    )
                    await workload.setup()
                    duration = minutes * 60
                    load = asyncio.create_task(workload.run(duration=duration))
                    start = time.monotonic()
                    next_churn = start + churn_sec
                    next_id = agents
                    while time.monotonic() - start < duration:
                        await asyncio.sleep(sample_sec)
                        if coord.returncode is not None:
                            raise RuntimeError("coordinator exited during the soak")
                        async with http.get(f"http://127.0.0.1:{api_port}/metrics") as resp:
                            tasks, tables = _parse_metrics(await resp.text())
                        samples.append(
                            Sample(
                                time.monotonic() - start,
                                _rss_mb(coord.pid),
                                _fds(coord.pid),
                                tasks,
                                tables,
                            )
                        )
                        if time.monotonic() >= next_churn:
                            next_churn += churn_sec
                            victim = running.pop(0)
                            victim.send_signal(
                                signal.SIGKILL if churns % 2 == 0 else signal.SIGTERM
                            )
                            await victim.wait()
                            agent_id = (
                                f"soak-{next_id}" if churns % 2 == 0 else f"soak-{next_id - 1}"
                            )
                            next_id += 1 if churns % 2 == 0 else 0
                            running.append(
                                await _start_agent(grpc_port, agent_id, levels[churns % 2])
                            )
                            churns += 1
                    sent = (await load).sent
            finally:
                for proc in running:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
                with contextlib.suppress(ProcessLookupError):
                    coord.send_signal(signal.SIGTERM)
                await coord.wait()
    half = [s for s in samples if s.t >= samples[-1].t / 2]
    rss_slope = slope_per_min([(s.t, s.rss_mb) for s in half])
    last = samples[-1]
    tight = sorted(
        ((name, e, b) for name, (e, b) in last.tables.items() if b > 0),
        key=lambda x: -x[1] / x[2],
    )[:5]
    return {
        "minutes": minutes,
        "tx_sent": sent,
        "agent_churns": churns,
        "rss_start_mb": round(samples[0].rss_mb, 1),
        "rss_end_mb": round(last.rss_mb, 1),
        "rss_slope_second_half_mb_per_min": round(rss_slope, 3),
        "rss_slope_target_mb_per_min": RSS_SLOPE_TARGET_MB_MIN,
        "fds_second_half_min_max": (min(s.fds for s in half), max(s.fds for s in half)),
        "fds_slope_second_half_per_min": round(slope_per_min([(s.t, s.fds) for s in half]), 3),
        "asyncio_tasks_second_half_min_max": (
            min(s.tasks for s in half),
            max(s.tasks for s in half),
        ),
        "tables_total_entries_end": int(sum(e for e, _ in last.tables.values())),
        "tables_fullest_end": [(n, int(e), int(b)) for n, e, b in tight],
    }


def run(minutes: float = 8.0, rate: float = 8.0, agents: int = 4) -> dict[str, Any]:
    result = asyncio.run(soak(minutes, rate, agents, churn_sec=15.0, sample_sec=5.0))
    print("== soak: coordinator process under workload and agent churn ==")
    for key, value in result.items():
        print(f"  {key}: {value}")
    slope = result["rss_slope_second_half_mb_per_min"]
    print(
        f"  RSS slope {slope} MB/min vs target < {RSS_SLOPE_TARGET_MB_MIN}: "
        f"{'met' if slope < RSS_SLOPE_TARGET_MB_MIN else 'NOT met'}"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=8.0)
    parser.add_argument("--agents", type=int, default=4)
    args = parser.parse_args()
    run(args.minutes, args.rate, args.agents)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
