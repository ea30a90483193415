"""A real scrape of a running coordinator's /metrics passes `promtool check metrics` and holds
every metric the Grafana dashboard and the alert rules query."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import aiohttp
import pytest
import yaml
from eth_account import Account
from prometheus_client.parser import text_string_to_metric_families
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.providers.async_base import AsyncBaseProvider

from ioswarm import __version__
from ioswarm.core.models import Level
from ioswarm.rewards.pool import RewardPool
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.swarm import drive_until_compared, running_coordinator, start_agent

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NAMES = re.compile(r"ioswarm_[a-z0-9_]+|process_[a-z0-9_]+")
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_info")


def queried() -> set[str]:
    """Every metric name the dashboard panels and the alert rules query."""
    board = json.loads((DEPLOY / "grafana" / "dashboards" / "ioswarm.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return {name for expr in exprs for name in NAMES.findall(expr)}


async def test_a_running_coordinator_scrape_passes_promtool_and_feeds_every_panel(
    anvil: AnvilProcess,
) -> None:
    """With settlement on and two agents at work, /metrics lints clean with promtool, carries
    process_* and ioswarm_build_info, shows every loop up, and holds every queried metric."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (make debs installs Debian's prometheus)"
    signer_key = anvil.private_keys[2]
    w3: AsyncWeb3[AsyncBaseProvider] = AsyncWeb3(AsyncHTTPProvider(anvil.url))
    try:
        pool = await RewardPool.deploy(w3, Account.from_key(signer_key))
    finally:
        await w3.provider.disconnect()
    async with running_coordinator(
        anvil.url, rewardContract=pool.address, rewardSignerKey=signer_key, canaryPct=0
    ) as app:
        c = app.coordinator
        agents = [
            start_agent(app.grpc_port, "scrape-l1", Level.L1),
            start_agent(app.grpc_port, "scrape-l2", Level.L2),
        ]
        try:
            await eventually(lambda: c.dispatcher.stream_count() == 2, 30, what="streams")
            await drive_until_compared(anvil, app, 2)
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{app.api_port}/metrics") as resp,
            ):
                assert resp.status == 200
                body = await resp.text()
        finally:
            for agent in agents:
                await agent.stop()
    lint = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    report, _ = await lint.communicate(body.encode())
    assert lint.returncode == 0 and report.strip() == b"", report.decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    build = families["ioswarm_build_info"].samples[0]
    assert build.name == "ioswarm_build_info" and build.labels["version"] == __version__
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["process_cpu_seconds"].samples[0].value > 0
    loops = {s.labels["loop"]: s.value for s in families["ioswarm_loop_up"].samples}
    assert "settler" in loops and set(loops.values()) == {1.0}
    results = families["ioswarm_results"].samples
    assert sum(s.value for s in results if s.name == "ioswarm_results_total") >= 2
    names = {f + sfx for f in families for sfx in SUFFIXES}
    missing = queried() - names
    assert not missing, f"dashboard or alerts query metrics the scrape lacks: {missing}"
