"""An agent stops with the reason on permanent failures (bad API key, a CA that does not
match) and keeps reconnecting on transient ones (nobody listening)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from ioswarm.agent.levels import validator_for
from ioswarm.agent.runtime import Agent
from ioswarm.config import AgentConfig
from ioswarm.core.models import Level
from ioswarm.core.tokens import agent_token
from ioswarm.errors import AuthError, ConfigError
from ioswarm.sim.anvil import AnvilProcess, free_loopback_port
from tests.helpers import eventually
from tests.integration.swarm import SECRET, WALLET, make_test_pki, running_coordinator

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "ioswarm_cli.main"]


def _agent(port: int, api_key: str, *, tls: bool = False, ca_cert: str = "") -> Agent:
    cfg = AgentConfig(
        coordinator=f"localhost:{port}" if tls else f"127.0.0.1:{port}",
        agent_id="stopper",
        api_key=api_key,
        wallet=WALLET,
        level="L1",
        tls=tls,
        ca_cert=ca_cert,
        reconnect_max_sec=0.2,
    )
    return Agent(cfg, validator_for(Level.L1))


async def test_a_wrong_api_key_stops_the_agent_with_the_reason(anvil_manual: AnvilProcess) -> None:
    """Register answered UNAUTHENTICATED ends run() with AuthError naming --api-key, once."""
    async with running_coordinator(anvil_manual.url) as app:
        agent = _agent(app.grpc_port, agent_token("another-secret", "stopper"))
        with pytest.raises(AuthError, match="--api-key"):
            await asyncio.wait_for(agent.run(), 60)
        assert agent.stats.connect_failures == 0 and "credentials" in agent.exit_reason


async def test_the_cli_agent_exits_non_zero_with_one_line(anvil_manual: AnvilProcess) -> None:
    """``ioswarm agent`` with a bad key exits 1 and its last stderr line says why; its JSON
    log lines carry the fields as keys."""
    async with running_coordinator(anvil_manual.url) as app:
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "agent",
            "--coordinator",
            f"127.0.0.1:{app.grpc_port}",
            "--agent-id",
            "stopper",
            "--api-key",
            agent_token("another-secret", "stopper"),
            "--wallet",
            WALLET,
            "--level",
            "L1",
            "--no-tls",
            "--log-format",
            "json",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    last = err.decode().strip().splitlines()[-1]
    assert proc.returncode == 1, err.decode()[-2000:]
    assert last.startswith("ioswarm agent: ") and "--api-key" in last
    assert "reconnecting" not in err.decode()
    docs = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    stopping = [d for d in docs if d["msg"] == "agent stopping"]
    assert len(stopping) == 1 and stopping[0]["agent_id"] == "stopper"
    assert stopping[0]["kind"] == "credentials" and stopping[0]["level"] == "error"


async def test_a_ca_that_does_not_match_stops_the_agent(
    anvil_manual: AnvilProcess, tmp_path: Path
) -> None:
    """A coordinator certificate the agent's --ca-cert did not sign ends run() with a
    ConfigError naming --ca-cert; the right CA connects."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ca, cert, key = make_test_pki(tmp_path / "a")
    other_ca, _, _ = make_test_pki(tmp_path / "b")
    async with running_coordinator(
        anvil_manual.url, tlsCertFile=str(cert), tlsKeyFile=str(key)
    ) as app:
        token = agent_token(SECRET, "stopper")
        wrong = _agent(app.grpc_port, token, tls=True, ca_cert=str(other_ca))
        with pytest.raises(ConfigError) as err:
            await asyncio.wait_for(wrong.run(), 60)
        assert err.value.key == "--ca-cert" and "TLS" in str(err.value)
        right = _agent(app.grpc_port, token, tls=True, ca_cert=str(ca))
        task = asyncio.create_task(right.run())
        await eventually(lambda: right.stats.connects == 1, 30)
        right.shutdown()
        await asyncio.wait_for(task, 30)


async def test_nobody_listening_is_retried() -> None:
    """With no coordinator on the port the agent keeps reconnecting until shut down."""
    agent = _agent(free_loopback_port(), agent_token(SECRET, "stopper"))
    task = asyncio.create_task(agent.run())
    await eventually(lambda: agent.stats.connect_failures >= 3, 60)
    assert not task.done()
    agent.shutdown()
    await asyncio.wait_for(task, 30)
    assert agent.exit_reason == "requested"
