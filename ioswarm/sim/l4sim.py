"""``ioswarm l4sim``: L4 state sync under churn: anvil, workload, coordinator, L4 agents.

A coordinator with L4 sync enabled follows an anvil chain (1 s blocks) carrying a workload.
In-process L4 agents (the real runtime, validator and state follower, each with its own LMDB
datadir) play roles: steady, late starter, disconnected for a short and a long stretch,
flapping, quitting half way, and slow (sleeps after every diff). Each disconnect closes the
agent's store; each reconnect reopens it, so a rejoin is a restart that resumes from disk.

At the end the run prints one PASS/FAIL line per check; any FAIL makes the command fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account

from ioswarm.agent.l4 import L4Validator
from ioswarm.agent.l4sync import FollowerStats, StateFollower
from ioswarm.agent.levels import validator_for
from ioswarm.agent.runtime import Agent
from ioswarm.config import AgentConfig, parse_config
from ioswarm.coordinator.app import CoordinatorApp
from ioswarm.core.models import Level
from ioswarm.core.tokens import agent_token
from ioswarm.errors import IoswarmError
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.protocol import auth_metadata
from ioswarm.sim.anvil import AnvilProcess
from ioswarm.sim.workload import Workload
from ioswarm.state.snapshot_io import export_snapshot, import_snapshot
from ioswarm.state.store import StateStore

__all__ = ["ROLES", "Check", "L4SimOptions", "L4SimReport", "run_l4sim"]

ROLES = ("steady", "late", "short_gap", "long_gap", "flappy", "quitter", "slow")
TIP_SLACK = 2  # blocks a follower may trail the tip at the end
SLOW_DELAY_SEC = 0.5
SETTLE_SEC = 45.0
STOP_SEC = 10.0


@dataclass
class L4SimOptions:
    """What to run."""

    blocks: int = 120
    """Blocks to run the schedule for (after the first snapshot exists)."""
    agents: int = len(ROLES)
    """Number of agents; roles are assigned in ROLES order, extra agents are steady."""
    rate: float = 4.0
    """Workload transactions per second."""
    seed: int = 1
    datadir: str = ""
    """Where stores live; empty means a fresh temporary directory."""


@dataclass(frozen=True)
class Check:
    """One PASS/FAIL line."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class L4SimReport:
    """The checks and the numbers behind them."""

    checks: list[Check] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return bool(self.checks) and all(c.ok for c in self.checks)


@dataclass
class _Schedule:
    """Relative blocks at which one role stops and starts."""

    start: int = 0
    stops: dict[int, bool] = field(default_factory=dict)  # block -> True=stop, False=start


def schedule_for(role: str, blocks: int) -> _Schedule:
    """The churn plan of ``role`` over a run of ``blocks`` blocks (pure, for tests)."""
    short, long_ = max(2, min(10, blocks // 6)), max(4, min(20, blocks // 3))
    if role == "late":
        return _Schedule(start=blocks // 4)
    if role == "short_gap":
        return _Schedule(stops={3: True, 3 + short: False})
    if role == "long_gap":
        return _Schedule(stops={4: True, 4 + long_: False})
    if role == "flappy":
        plan: dict[int, bool] = {}
        for at in range(2, blocks - 8, 6):
            plan[at], plan[at + 3] = True, False
        return _Schedule(stops=plan)
    if role == "quitter":
        return _Schedule(stops={blocks // 2: True})
    return _Schedule()


class SimAgent:
    """One in-process L4 agent whose store survives stop/start (a process restart)."""

    def __init__(self, name: str, role: str, root: Path, grpc_port: int, secret: str) -> None:
        self.name = name
        self.role = role
        self.datadir = root / name
        self.config = AgentConfig(
            coordinator=f"127.0.0.1:{grpc_port}",
            agent_id=name,
            api_key=agent_token(secret, name),
            wallet=Account.create().address,
            level="L4",
            tls=False,
            reconnect_max_sec=2.0,
        )
        self.follower: StateFollower | None = None
        self._agent: Agent | None = None
        self._task: asyncio.Task[None] | None = None
        self.past: list[FollowerStats] = []
        self.tasks = 0
        self.declined = 0
        self.starts = 0
        self.max_lag = 0

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        """Open the store (resuming it) and connect."""
        follower = StateFollower(
            self.datadir,
            agent_id=self.name,
            metadata=auth_metadata(self.name, self.config.api_key),
            apply_delay=SLOW_DELAY_SEC if self.role == "slow" else 0.0,
            backoff_max=1.0,
        )
        follower.open()
        self.follower = follower
        self._agent = Agent(self.config, validator_for(Level.L4, state=follower), follower)
        self._task = asyncio.create_task(self._agent.run(), name=f"l4sim-{self.name}")
        self.starts += 1

    async def stop(self) -> None:
        """Disconnect and close the store, as a process exit would."""
        if self._agent is None or self._task is None or self.follower is None:
            return
        self._agent.shutdown("l4sim")
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self._task, STOP_SEC)
        self.tasks += self._agent.stats.tasks
        validator = self._agent.validator
        self.declined += validator.declined_height if isinstance(validator, L4Validator) else 0
        self.follower.close()
        self.past.append(self.follower.stats)
        self._agent = self._task = None

    def total(self, name: str) -> int:
        """A follower counter summed over every start."""
        stats = [*self.past, *([self.follower.stats] if self.running and self.follower else [])]
        return sum(int(getattr(s, name)) for s in stats)

    @property
    def height(self) -> int:
        return self.follower.height if self.follower is not None else 0

    @property
    def state_hash(self) -> bytes:
        return self.follower.state_hash if self.follower is not None else b""


async def run_l4sim(
    opts: L4SimOptions, env: dict[str, str], out: Callable[[str], None] = print
) -> L4SimReport:
    """Run the simulation and return its checks (also printed through ``out``)."""
    root = _root(opts)
    secret = secrets.token_hex(24)
    report = L4SimReport()
    async with AnvilProcess(env=env, block_time=1.0) as anvil:
        config = parse_config(
            {
                "nodeRpcUrl": anvil.url,
                "grpcPort": 0,
                "swarmApiHost": "127.0.0.1",
                "swarmApiPort": 0,
                "masterSecret": secret,
                "taskLevel": "L4",
                "pollIntervalMs": 250,
                "logLevel": "warning",
                "dataDir": str(root / "coordinator"),
                "diffStoreEnabled": True,
                "snapshotIntervalBlocks": 5,
            },
            {},
        )
        async with JsonRpcNode(anvil.url) as node, CoordinatorApp(config) as app:
            sync = app.state_sync
            if sync is None:
                raise IoswarmError("the coordinator did not enable L4 state sync")
            out(f"anvil {anvil.url}; coordinator grpc 127.0.0.1:{app.grpc_port}")
            workload = Workload(
                node, anvil.private_keys[0], chain_id=anvil.chain_id, rate=opts.rate, seed=opts.seed
            )
            await workload.setup()
            load = asyncio.create_task(workload.run())
            roles = [ROLES[i] if i < len(ROLES) else "steady" for i in range(opts.agents)]
            agents = [
                SimAgent(f"l4-{i}-{role}", role, root, app.grpc_port, secret)
                for i, role in enumerate(roles)
            ]
            try:
                first = await _drive(opts, sync, agents, out)
                load.cancel()
                await asyncio.gather(load, return_exceptions=True)
                await _settle(sync, agents)
                _final_checks(report, sync, agents, first, root)
                for a in agents:
                    await a.stop()
                    report.numbers[a.name].update(tasks=a.tasks, declined_height=a.declined)
                report.checks.append(await _subscribers_drained(sync))
            finally:
                load.cancel()
                for a in agents:
                    await a.stop()
    for c in report.checks:
        out(f"{'PASS' if c.ok else 'FAIL'} {c.name}" + (f" ({c.detail})" if c.detail else ""))
    return report


def _root(opts: L4SimOptions) -> Path:
    root = Path(opts.datadir or tempfile.mkdtemp(prefix="ioswarm-l4sim-"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _tip(sync: Any) -> int:
    return int(sync.store.height) if sync.ready else 0


async def _drive(opts: L4SimOptions, sync: Any, agents: list[SimAgent], out: Any) -> int:
    """Run the churn schedule block by block; return the first height of the run."""
    for _ in range(600):  # the first snapshot: agents bootstrap from it
        if sync.ready and sync.latest_snapshot() is not None:
            break
        await asyncio.sleep(0.5)
    first = _tip(sync)
    plans = {a.name: schedule_for(a.role, opts.blocks) for a in agents}
    for a in agents:
        if plans[a.name].start == 0:
            a.start()
    seen = first
    deadline = time.monotonic() + opts.blocks * 4 + 60
    while seen - first < opts.blocks and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        tip = _tip(sync)
        for a in agents:
            if a.running and a.role != "slow" and a.total("snapshot_loads"):
                a.max_lag = max(a.max_lag, tip - a.height)
        if tip == seen:
            continue
        for rel in range(seen - first + 1, tip - first + 1):
            for a in agents:
                plan = plans[a.name]
                if rel == plan.start and plan.start and not a.running:
                    a.start()
                action = plan.stops.get(rel)
                if action is True and a.running:
                    await a.stop()
                elif action is False and not a.running:
                    a.start()
        seen = tip
        if (seen - first) % 10 == 0:
            heights = " ".join(f"{a.name}={a.height if a.running else '-'}" for a in agents)
            out(f"block +{seen - first} tip {seen}: {heights}")
    return first


async def _settle(sync: Any, agents: list[SimAgent]) -> None:
    """Wait until every running agent is within TIP_SLACK of the tip (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_SEC
    while loop.time() < deadline:
        tip = _tip(sync)
        if all(tip - a.height <= TIP_SLACK for a in agents if a.running):
            return
        await asyncio.sleep(0.2)


def _coordinator_hash(sync: Any, height: int) -> bytes | None:
    if height == sync.store.height:
        return bytes(sync.store.state_hash)
    diff = sync.diffs.get(height)
    return None if diff is None else bytes(diff.post_state_hash)


def _final_checks(
    report: L4SimReport, sync: Any, agents: list[SimAgent], first: int, root: Path
) -> None:
    checks = report.checks
    tip = _tip(sync)
    lo, hi = sync.diffs.first, sync.diffs.last
    heights = [d.height for d in sync.diffs.range(lo or 0)] if lo is not None else []
    contiguous = heights == list(range(lo, hi + 1)) if lo is not None and hi is not None else False
    checks.append(
        Check(
            "diff store covers the run",
            lo is not None and lo <= first + 1 and hi == tip and contiguous,
            f"[{lo}, {hi}], run [{first}, {tip}]",
        )
    )
    checks.append(_round_trip(sync.store, root / "roundtrip"))
    gaps = {a.name: a.total("gaps") for a in agents}
    checks.append(Check("no gap in any follower stream", not any(gaps.values()), str(gaps)))
    gone = [a for a in agents if a.role in ("short_gap", "long_gap", "flappy")]
    caught = {
        a.name: (a.running and tip - a.height <= TIP_SLACK and a.total("snapshot_loads") == 1)
        for a in gone
    }
    checks.append(
        Check(
            "disconnected followers catch up from their store",
            all(caught.values()),
            ", ".join(
                f"{a.name} starts={a.starts} loads={a.total('snapshot_loads')}" for a in gone
            ),
        )
    )
    bad = []
    for a in agents:
        if not a.running:
            continue
        lag = tip - a.height
        if lag > TIP_SLACK or a.state_hash != _coordinator_hash(sync, a.height):
            bad.append(f"{a.name} height={a.height} lag={lag}")
    checks.append(
        Check(
            f"every follower within {TIP_SLACK} blocks with the coordinator's hash",
            not bad,
            "; ".join(bad) or f"tip {tip}",
        )
    )
    steady = [a for a in agents if a.role == "steady"]
    calm = all(a.max_lag <= TIP_SLACK and a.total("resyncs") == 0 for a in steady)
    checks.append(
        Check(
            "quitting and slow followers do not disturb the others",
            calm,
            ", ".join(f"{a.name} max_lag={a.max_lag} resyncs={a.total('resyncs')}" for a in steady),
        )
    )
    report.numbers = {
        a.name: {
            "height": a.height,
            "starts": a.starts,
            "diffs_applied": a.total("diffs_applied"),
            "resyncs": a.total("resyncs"),
            "snapshot_loads": a.total("snapshot_loads"),
            "dropped": a.total("dropped"),
        }
        for a in agents
    }


def _round_trip(store: StateStore, directory: Path) -> Check:
    """Export, import into a fresh store, export again: the two files must be byte-identical."""
    directory.mkdir(parents=True, exist_ok=True)
    a, b = directory / "a.snap.gz", directory / "b.snap.gz"
    info = export_snapshot(store, a)
    with StateStore(directory / "store", map_size=1 << 30, sync=False) as copy:
        import_snapshot(a, copy)
        export_snapshot(copy, b)
    same = a.read_bytes() == b.read_bytes()
    return Check(
        "snapshot round-trip is byte-identical", same, f"height {info.height}, {info.count} entries"
    )


async def _subscribers_drained(sync: Any) -> Check:
    count = sync.broadcaster.subscriber_count
    for _ in range(50):
        count = sync.broadcaster.subscriber_count
        if count == 0:
            break
        await asyncio.sleep(0.1)
    return Check("subscriber count returns to 0", count == 0, f"{count} left")
