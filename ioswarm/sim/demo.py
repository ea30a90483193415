"""``ioswarm demo``: the whole loop on one machine: anvil, workload, coordinator, agents, report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from prometheus_client import CollectorRegistry
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.providers.async_base import AsyncBaseProvider

from ioswarm.config import parse_config
from ioswarm.coordinator.app import CoordinatorApp
from ioswarm.core.models import Level
from ioswarm.core.rewards import PoolModel, iotx_text
from ioswarm.core.shadow import ShadowCounts
from ioswarm.core.tokens import agent_token
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.rewards.epochs import EpochManager
from ioswarm.rewards.ledger import SettlementState
from ioswarm.rewards.pool import RewardPool
from ioswarm.rewards.settler import SettlerOptions
from ioswarm.sim.adversaries import Adversary, TappedHonestAgent, build_adversaries
from ioswarm.sim.anvil import AnvilProcess
from ioswarm.sim.l3calls import CATEGORIES, Category
from ioswarm.sim.l3workload import ContractWorkload
from ioswarm.sim.workload import Workload

log = logging.getLogger("ioswarm.demo")

PROGRESS_EVERY_SEC = 5.0
REWARD_KEY_INDEX = 2
DRAIN_BLOCKS = 3
TAPPED_AGENT_ID = "demo-tapped-l2"


@dataclass(frozen=True)
class DemoOptions:
    duration: float = 60.0
    agents: int = 4
    level: str = "L3"
    rate: float | None = None  # tx/s of transfers; contracts add half as many at L3
    block_time: float | None = None
    report_json: str | None = None
    seed: int | None = None
    adversaries: tuple[str, ...] = ("lazy",)  # kinds from ioswarm.sim.adversaries.KINDS


def agent_levels(count: int, top: Level) -> list[Level]:
    """A spread of levels up to ``top``: L2 -> half L1, half L2; L3/L4 -> L1, L2, then top."""
    if top is Level.L1:
        return [Level.L1] * count
    if top is Level.L2:
        low = count // 2
        return [Level.L1] * low + [Level.L2] * (count - low)
    lower = [lv for lv in Level if lv < top][: max(0, count - max(1, count // 2))]
    return lower + [top] * (count - len(lower))


# The demo's contract mix: mostly independent token transfers, every other category present.
# Most other categories write a slot every sender shares (a counter, an array length, the
# factory's nonce), so two of them in one block race; they stay in the mix at a low weight.
DEMO_CONTRACT_WEIGHTS: dict[Category, float] = {
    **dict.fromkeys(CATEGORIES, 0.15),
    "erc20_transfer": 20.0,
}


class DemoAgents:
    """Agent subprocesses, each a real ``ioswarm agent`` over loopback gRPC."""

    def __init__(self, grpc_port: int, secret: str, levels: list[Level], data_dir: str) -> None:
        self.data_dir = data_dir
        self.grpc_port = grpc_port
        self.secret = secret
        self.levels = levels
        self.procs: list[asyncio.subprocess.Process] = []
        self.wallets: dict[str, str] = {}

    async def start(self) -> None:
        for i, level in enumerate(self.levels):
            agent_id = f"demo-{level.name.lower()}-{i}"
            wallet = Account.create().address
            self.wallets[agent_id] = wallet
            self.procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "ioswarm_cli.main",
                    "agent",
                    "--coordinator",
                    f"127.0.0.1:{self.grpc_port}",
                    "--agent-id",
                    agent_id,
                    "--api-key",
                    agent_token(self.secret, agent_id),
                    "--wallet",
                    wallet,
                    "--level",
                    level.name,
                    "--no-tls",
                    "--log-level",
                    "warning",
                    # L4 agents keep their own state, bootstrapped from the coordinator's snapshot.
                    *(["--datadir", f"{self.data_dir}/{agent_id}"] if level >= Level.L4 else []),
                    stdin=asyncio.subprocess.DEVNULL,
                )
            )

    async def stop(self) -> list[int | None]:
        for p in self.procs:
            if p.returncode is None:
                p.terminate()
        codes: list[int | None] = []
        for p in self.procs:
            try:
                codes.append(await asyncio.wait_for(p.wait(), 10))
            except TimeoutError:
                p.kill()
                codes.append(await p.wait())
        return codes


def _level_report(levels: Mapping[Level, ShadowCounts]) -> dict[str, Any]:
    out = {}
    for level, counts in levels.items():
        out[level.name] = {
            "compared": counts.compared,
            "matched": counts.matched,
            "mismatched": counts.mismatched,
            "excluded": dict(sorted(counts.excluded.items())),
            "mismatched_fields": dict(sorted(counts.mismatched_fields.items())),
            "reverified": counts.reverified,
            "unverified": max(0, counts.excluded_total - counts.reverified),
        }
    return out


INTEGRITY_KEYS = ("canaries", "refused", "declined", "decline_pct", "throttled", "earning")


def adversaries_report(
    c: Any, adversaries: list[Adversary], rewards: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Per adversary: its verdicts, what the coordinator says about it, what it got paid.

    ``rewards`` is the ``agents`` part of :func:`rewards_report` (it must cover the adversaries'
    wallets). The integrity keys of ``c.views.agents()`` rows are read with ``.get()``: a
    coordinator without those defences reports None for them.
    """
    rows = {a["agent_id"]: a for a in c.views.agents()}
    out: dict[str, Any] = {}
    for adv in adversaries:
        row = rows.get(adv.agent_id, {})
        counts = c.shadow.by_agent.get(adv.agent_id)
        paid = rewards.get(adv.agent_id, {})
        out[adv.agent_id] = {
            "kind": adv.kind,
            "level": adv.level.name,
            "wallet": adv.wallet,
            "shadow": counts.as_dict() if counts else None,
            **{key: row.get(key) for key in INTEGRITY_KEYS},
            "counters": adv.counters,
            "ledger_wei": str(c.views.rewards_view(adv.agent_id)["totals"].get("amount_wei", "0")),
            "claimable_wei": paid.get("claimable_wei", "0"),
        }
    return out


async def run_demo(
    opts: DemoOptions, env: Mapping[str, str], out: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the demo for ``opts.duration`` seconds and return the report."""
    top = Level.parse(opts.level)
    # Per-tx truth at L3 comes from anvil's block tracer, whose cost grows faster than the block
    # size: one-second blocks keep it well under the block time at the demo's rate.
    block_time = opts.block_time or (1.0 if top >= Level.L3 else 2.0)
    rate = opts.rate or (30.0 if top >= Level.L3 else 40.0)
    secret = secrets.token_hex(24)
    started = time.monotonic()
    async with AnvilProcess(env=env, block_time=block_time) as anvil:
        out(f"anvil up on {anvil.url} (prague, block time {block_time:g}s)")
        # The reward pool lives on the same anvil; its own key signs, so no nonce is shared
        # with the workloads (keys 0 and 1).
        signer_key = anvil.private_keys[REWARD_KEY_INDEX]
        w3: AsyncWeb3[AsyncBaseProvider] = AsyncWeb3(AsyncHTTPProvider(anvil.url))
        pool = await RewardPool.deploy(w3, Account.from_key(signer_key))
        out(f"AgentRewardPool deployed at {pool.address}")
        data_dir = tempfile.mkdtemp(prefix="ioswarm-demo-")
        config = parse_config(
            {
                "nodeRpcUrl": anvil.url,
                "grpcPort": 0,
                "swarmApiPort": 0,
                "masterSecret": secret,
                "taskLevel": top.name,
                "pollIntervalMs": 250,
                "logLevel": "warning",
                "dataDir": data_dir,
                "rewardContract": pool.address,
                "rewardSignerKey": signer_key,
                "rewardRpcUrl": anvil.url,
                "epochRewardIOTX": "1",
                # About five epochs in a one-minute demo.
                "reward": {"epochBlocks": max(4, int(12 / block_time)), "minTasksForReward": 5},
                # L4: the coordinator keeps state, streams diffs, exports a snapshot to start from.
                "diffStoreEnabled": top >= Level.L4,
                "snapshotIntervalBlocks": 5 if top >= Level.L4 else 0,
                # L4 agents report their state hash in every heartbeat; once a second compares
                # it at nearly every height of one-second blocks.
                "heartbeatIntervalSec": 1 if top >= Level.L4 else 10,
            },
            {},
        )
        epochs = EpochManager.from_config(
            config, CollectorRegistry(), options=SettlerOptions(poll_interval_sec=0.2)
        )
        async with JsonRpcNode(anvil.url) as node, CoordinatorApp(config, epochs=epochs) as app:
            c = app.coordinator
            out(
                f"coordinator up: grpc 127.0.0.1:{app.grpc_port}, "
                f"api http://127.0.0.1:{app.api_port}/"
            )
            agents = DemoAgents(app.grpc_port, secret, agent_levels(opts.agents, top), data_dir)
            await agents.start()
            honest_wallets = dict(agents.wallets)
            tapped: TappedHonestAgent | None = None
            if "replayer" in opts.adversaries:
                tapped = TappedHonestAgent(TAPPED_AGENT_ID, app.grpc_port, secret)
                honest_wallets[tapped.agent_id] = tapped.wallet
                await tapped.start()
            adversaries = build_adversaries(
                list(opts.adversaries),
                app.grpc_port,
                secret,
                config.task_timeout_ms / 1000,
                tapped.tap if tapped else None,
                victim=next(iter(agents.wallets)),
                seed=opts.seed,
            )
            for adv in adversaries:
                await adv.start()
            if adversaries:
                out(
                    "adversaries started: "
                    + ", ".join(f"{a.agent_id} ({a.level.name})" for a in adversaries)
                    + (f"; {tapped.agent_id} is the replayer's honest source" if tapped else "")
                )
            workload = Workload(
                node,
                anvil.private_keys[0],
                chain_id=anvil.chain_id,
                accounts=24,
                rate=rate,
                seed=opts.seed,
            )
            await workload.setup()
            contracts: ContractWorkload | None = None
            loads: list[Coroutine[Any, Any, object]] = [workload.run(duration=opts.duration)]
            if top >= Level.L3:
                contracts = ContractWorkload(
                    node,
                    anvil.private_keys[1],
                    anvil.chain_id,
                    accounts=128,
                    rate=rate / 2,
                    weights=DEMO_CONTRACT_WEIGHTS,
                    fresh_recipients=True,
                    round_robin=True,
                    seed=opts.seed,
                    authorities_per_sender=1,  # 128 senders: keep the setup short
                )
                await contracts.setup()
                loads.append(contracts.run(duration=opts.duration))
            out(
                f"{opts.agents} agents started ({', '.join(lv.name for lv in agents.levels)}); "
                f"workload at {rate:g} tx/s"
                + (f" + contracts at {rate / 2:g} tx/s" if contracts else "")
                + f" for {opts.duration:g}s"
            )
            wl_task = asyncio.ensure_future(asyncio.gather(*loads))
            t0 = time.monotonic()
            last_results = 0
            while not wl_task.done():
                await asyncio.wait({wl_task}, timeout=PROGRESS_EVERY_SEC)
                now = time.monotonic()
                stats = c.views.stats()
                rate = (c.totals.results_accepted - last_results) / max(now - t0, 1e-9)
                last_results, t0 = c.totals.results_accepted, now
                honest = ShadowCounts()
                for counts in c.shadow.level_totals(honest_wallets).values():
                    honest.merge(counts)
                cheats = sum(
                    c.shadow.by_agent[a.agent_id].mismatched
                    for a in adversaries
                    if a.agent_id in c.shadow.by_agent
                )
                out(
                    f"[{now - started:5.0f}s] block {c.head.number} "
                    f"agents {stats['active_agents']} "
                    f"tasks {stats['tasks_dispatched']} results {stats['tasks_received']} "
                    f"({rate:.0f}/s) honest shadow {honest.matched}/{honest.compared} "
                    f"accuracy {honest.accuracy * 100:.2f}%, canaries {c.totals.canary_results}"
                    + (f", adversary answers caught {cheats}" if adversaries else "")
                )
            wl_task.result()
            drain_until = c.head.number + DRAIN_BLOCKS
            out(f"workload done; waiting for blocks up to {drain_until} to settle verdicts")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(block_time * (DRAIN_BLOCKS + 3)):
                    while c.head.number < drain_until:  # noqa: ASYNC110 - polls another task's state
                        await asyncio.sleep(0.2)
            await _wait_settled(epochs, limit_sec=30)
            for adv in adversaries:
                await adv.stop()
            if tapped is not None:
                await tapped.stop()
            codes = await agents.stop()
            rewards = await rewards_report(
                c, epochs, pool, {**honest_wallets, **{a.agent_id: a.wallet for a in adversaries}}
            )
            report = {
                "duration_s": round(time.monotonic() - started, 1),
                "blocks": c.totals.blocks_seen,
                "agents": len(agents.levels),
                "agent_levels": [lv.name for lv in agents.levels],
                "agent_exit_codes": codes,
                "workload": workload.counters.as_dict(),
                "contract_workload": contracts.counters.as_dict() if contracts else None,
                "prefetch": _prefetch_report(c),
                "tasks": {
                    "created": c.totals.tasks_created,
                    "dispatched": c.dispatcher.dispatched_total,
                    "results": c.totals.results_accepted,
                    "late": c.totals.results_late,
                    "reassigned": c.dispatcher.reassigned_total,
                    "dropped": c.dispatcher.dropped_total,
                },
                # Only honest agents: an adversary's mismatches are the point, not a failure.
                "shadow": _level_report(c.shadow.level_totals(honest_wallets)),
                "shadow_pending_at_end": c.shadow.pending,
                "shadow_expired": c.shadow.expired,
                "epochs": rewards["epochs"],
                "per_agent": {
                    a["agent_id"]: {
                        "level": a["level"],
                        "results": a["results_accepted"],
                        "canaries": a["canaries"],
                        **({"l4_state": a["l4_state"]} if a["l4_state"] else {}),
                        **rewards["agents"].get(a["agent_id"], {}),
                    }
                    for a in c.views.agents()
                    if a["agent_id"] in honest_wallets
                },
                "adversaries": adversaries_report(c, adversaries, rewards["agents"]),
            }
        await w3.provider.disconnect()
    if opts.report_json:
        Path(opts.report_json).write_text(json.dumps(report, indent=2) + "\n")  # noqa: ASYNC240 - once, at exit
    return report


async def _wait_settled(epochs: EpochManager, limit_sec: float) -> None:
    """Give the settler time to confirm every closed epoch (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_sec
    while epochs.ledger.unsettled() and loop.time() < deadline:  # noqa: ASYNC110 - polls the ledger
        await asyncio.sleep(0.25)


async def rewards_report(
    c: Any, epochs: EpochManager, pool: RewardPool, wallets: dict[str, str]
) -> dict[str, Any]:
    """Settled epochs from the ledger, and each agent's claimable on-chain next to the ledger."""
    view = epochs.epoch_view()["settlement"]
    settled = sorted(
        (s for s in epochs.ledger.recent(10_000) if s.state is SettlementState.CONFIRMED),
        key=lambda s: s.epoch,
    )
    model = PoolModel()
    for s in settled:
        if s.call is not None:
            model.settle(s.call.wallets, s.call.weights, s.call.value)
    paid = sum(s.call.value for s in settled if s.call)
    agents: dict[str, Any] = {}
    for agent_id, wallet in wallets.items():
        totals = c.views.rewards_view(agent_id)["totals"]
        on_chain = await pool.claimable(wallet)
        agents[agent_id] = {
            "wallet": wallet,
            "epoch_amounts_wei": totals["paid_wei"],
            "ledger_claimable_wei": str(model.claimable(wallet)),
            "claimable_wei": str(on_chain),
            "claimable_equals_ledger": on_chain == model.claimable(wallet),
        }
    return {
        "epochs": {
            "settled": len(settled),
            "pending": len(view["queued"]) + len(view["sent"]),
            "reverted": len(view["reverted"]),
            "paid_wei": str(paid),
        },
        "agents": agents,
    }


def _prefetch_report(c: Any) -> dict[str, Any] | None:
    p = c.prefetcher
    if p is None or p.stats.txs == 0:
        return None
    st = p.stats
    return {
        "txs": st.txs,
        "rounds": st.rounds,
        "rpc_calls_per_tx": round(st.rpc_calls / st.txs, 2),
        "round_trips_per_round": round(st.round_trips / st.rounds, 2),
        "ms_per_tx": round(st.seconds * 1000 / st.txs, 3),
        "l3_fallbacks": c.tasks.l3_fallbacks,
    }


def _iotx(wei: object) -> str:
    """``wei`` (int or decimal string; anything else counts as 0) as exact IOTX text."""
    try:
        return f"{iotx_text(int(str(wei)))} IOTX"
    except ValueError:
        return "0 IOTX"


def _verdict(ok: bool) -> str:
    return "OK" if ok else "CHECK"


def format_report(report: Mapping[str, Any]) -> str:
    """The human summary printed at the end of a demo: amounts in IOTX, plain words.

    Every key is read with a default, so a report with a part missing (an agent gone before
    the end, no settlement yet) still prints.
    """
    tasks = report.get("tasks") or {}
    workload = report.get("workload") or {}
    lines = [
        "",
        "== ioswarm demo report ==",
        f"ran {report.get('duration_s', '?')}s over {report.get('blocks', 0)} blocks with "
        f"{report.get('agents', 0)} agents ({', '.join(report.get('agent_levels') or [])})",
        f"transactions: the workload sent {workload.get('sent', 0)} "
        f"({workload.get('errors', 0)} refused by the node)"
        + (
            f", the contract workload {_count(contracts.get('sent'))} "
            f"({_count(contracts.get('errors'))} refused)"
            if (contracts := report.get("contract_workload"))
            else ""
        ),
        f"tasks: {tasks.get('created', 0)} created, {tasks.get('dispatched', 0)} handed out, "
        f"{tasks.get('results', 0)} answered ({tasks.get('late', 0)} late), "
        f"{tasks.get('reassigned', 0)} given to another agent, {tasks.get('dropped', 0)} dropped",
    ]
    if report.get("prefetch"):
        p = report["prefetch"]
        lines.append(
            f"L3 state prefetch: {p.get('txs', 0)} transactions, "
            f"{p.get('rpc_calls_per_tx', 0)} node calls and {p.get('ms_per_tx', 0)} ms each"
        )
    e = report.get("epochs") or {}
    lines.append(
        f"reward epochs: {e.get('settled', 0)} paid on-chain, {e.get('pending', 0)} waiting, "
        f"{e.get('reverted', 0)} reverted; {_iotx(e.get('paid_wei', 0))} paid into the pool"
    )
    for agent_id, a in (report.get("per_agent") or {}).items():
        if "claimable_wei" not in a:
            lines.append(f"  {agent_id}: no reward figures (it left before the end)")
            continue
        claimable = _iotx(a.get("claimable_wei"))
        ledger = _iotx(a.get("ledger_claimable_wei", a.get("claimable_wei")))
        if a.get("claimable_equals_ledger", claimable == ledger):
            same = "as the ledger says"
        else:
            same = f"but the ledger says {ledger} -> CHECK"
        canaries = a.get("canaries") or {}
        lines.append(
            f"  {agent_id}: can claim {claimable}, {same}; test transactions (canaries) "
            f"{canaries.get('matched', 0)} right, {canaries.get('failed', 0)} wrong"
        )
    if report.get("adversaries"):
        lines.append("dishonest agents (each must end with nothing to claim):")
        lines.extend(f"  {line}" for line in adversary_lines(report["adversaries"]))
    for agent_id, a in (report.get("per_agent") or {}).items():
        if st := a.get("l4_state"):
            ok = st.get("heights_checked", 0) > 0 and st.get("mismatched", 0) == 0
            lines.append(
                f"L4 state of {agent_id}: agreed with the coordinator's at "
                f"{st.get('heights_checked', 0) - st.get('mismatched', 0)} of "
                f"{st.get('heights_checked', 0)} heights "
                f"({st.get('first_checked', '?')}..{st.get('last_checked', '?')}) "
                f"-> {_verdict(ok)}"
            )
    for level, s in (report.get("shadow") or {}).items():
        excluded = s.get("excluded") or {}
        skipped = sum(excluded.values())
        why = f" ({', '.join(f'{k} {v}' for k, v in excluded.items())})" if excluded else ""
        ok = s.get("matched", 0) + skipped == s.get("compared", 0) and s.get("mismatched", 0) == 0
        settled = ""
        if level in ("L3", "L4") and skipped:
            left = s.get("unverified", 0)
            pct = 100 * left / s["compared"] if s.get("compared") else 0.0
            settled = (
                f"; {s.get('reverified', 0)} of those re-verified exactly by another agent, "
                f"{left} left without an exact verdict ({pct:.1f}% of compared)"
            )
        lines.append(
            f"{level} answers checked against the chain: {s.get('compared', 0)} compared, "
            f"{s.get('matched', 0)} agreed, {s.get('mismatched', 0)} disagreed, "
            f"{skipped} not counted{why}{settled} -> {_verdict(ok)}"
        )
    return "\n".join(lines)


def _count(value: Any) -> int:
    """A count that may be given per category (a mapping of counts)."""
    if isinstance(value, Mapping):
        return sum(int(v) for v in value.values())
    return int(value or 0)


def adversary_lines(adversaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per adversary: kind, verdicts, refusals, why it earned nothing, claimable."""
    lines = []
    for agent_id, a in adversaries.items():
        s = a.get("shadow") or {}
        excluded = sum((s.get("excluded") or {}).values())
        verdicts = (
            f"matched {s.get('matched', 0)}/{s.get('compared', 0)}, "
            f"mismatched {s.get('mismatched', 0)}, excluded {excluded}"
        )
        refused = a.get("refused") or {}
        earning = a.get("earning") or {}
        if not earning:
            why = "earning: not reported"
        elif earning.get("eligible"):
            why = "earning: ELIGIBLE"
        else:
            why = "earning nothing: " + (", ".join(earning.get("reasons") or []) or "no reason")
        extra = []
        if refused:
            extra.append("refused " + ", ".join(f"{k} {v}" for k, v in sorted(refused.items())))
        if a.get("throttled"):
            extra.append("throttled")
        ok = _iotx(a.get("claimable_wei", "0")) == "0 IOTX"
        lines.append(
            f"{agent_id} ({a.get('kind', '?')}, {a.get('level', '?')}): {verdicts}; "
            + "; ".join([*extra, why])
            + f"; ledger {_iotx(a.get('ledger_wei', '0'))}, can claim "
            + f"{_iotx(a.get('claimable_wei', '0'))} -> {'OK' if ok else 'PAID'}"
        )
    return lines
