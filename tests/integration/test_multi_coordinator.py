"""One agent process, started as a reference agent is, serves several coordinators at once;
one that refuses it or goes away does not stop its service to the others."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest

from ioswarm.coordinator.app import CoordinatorApp
from ioswarm.core.address import to_io
from ioswarm.core.tokens import agent_token
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.swarm import WALLET, running_coordinator, signed_transfer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "ioswarm_cli.main"]
AGENT = "multi-1"
SECRETS = {"a": "coordinator-a-master-secret", "b": "coordinator-b-master-secret"}
WRONG_SECRET = "not-the-secret-of-coordinator-c"


def matched(app: CoordinatorApp) -> int:
    counts = app.coordinator.shadow.by_agent.get(AGENT)
    return counts.matched if counts else 0


def _coordinator(url: str, name: str) -> contextlib.AbstractAsyncContextManager[CoordinatorApp]:
    return running_coordinator(
        url,
        masterSecret=SECRETS.get(name, "coordinator-c-master-secret"),
        canaryPct=0,  # real tasks only: every verdict here is one of the agent's answers
        reward={"minTasksForReward": 2},
    )


async def test_reference_flags_serve_two_coordinators_and_survive_losing_one(
    anvil: AnvilProcess, tmp_path: Path
) -> None:
    """``--coordinator=a,b,c --agent-id=… --api-key=ka,kb,kx --wallet=io1… --tls=false`` with
    IOSWARM_LEVEL from the environment: c refuses the key and only that link stops; a and b
    both get matched verdicts and the agent accrues at both; when b goes away, a still gets
    answers; the process exits 0 on SIGTERM."""
    async with contextlib.AsyncExitStack() as stack:
        node = await stack.enter_async_context(JsonRpcNode(anvil.url))
        a = await stack.enter_async_context(_coordinator(anvil.url, "a"))
        c = await stack.enter_async_context(_coordinator(anvil.url, "c"))
        b_context = _coordinator(anvil.url, "b")
        b = await b_context.__aenter__()
        b_open = True
        keys = [
            agent_token(SECRETS["a"], AGENT),
            agent_token(SECRETS["b"], AGENT),
            agent_token(WRONG_SECRET, AGENT),  # an adversary's coordinator: refuses this agent
        ]
        log_path = tmp_path / "agent.log"
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'cmd'}{os.pathsep}{ROOT}",
            "IOSWARM_LEVEL": "l2",
        }
        with log_path.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *CLI,
                "agent",
                f"--coordinator=127.0.0.1:{a.grpc_port},127.0.0.1:{b.grpc_port},"
                f"127.0.0.1:{c.grpc_port}",
                f"--agent-id={AGENT}",
                f"--api-key={','.join(keys)}",
                f"-wallet={to_io(WALLET)}",
                "--tls=false",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
        try:
            log = log_path.read_text
            await eventually(
                lambda: (
                    a.coordinator.dispatcher.stream_count() == 1
                    and b.coordinator.dispatcher.stream_count() == 1
                ),
                60,
                what="a task stream at a and at b",
            )
            await eventually(
                lambda: (
                    f"coordinator=127.0.0.1:{c.grpc_port}" in log()
                    and "coordinator given up" in log()
                ),
                30,
                what="the link to c given up",
            )
            assert c.coordinator.registry.get(AGENT) is None
            for app in (a, b):
                rec = app.coordinator.registry.get(AGENT)
                assert rec is not None and rec.wallet == WALLET  # io1 taken as the same wallet

            key = anvil.private_keys[0]
            nonce = 0

            async def send_until(done: object) -> None:
                nonlocal nonce

                async def step() -> bool:
                    nonlocal nonce
                    assert proc.returncode is None, log()[-3000:]
                    if callable(done) and done():
                        return True
                    await node.send_raw_transaction(signed_transfer(key, anvil.chain_id, nonce))
                    nonce += 1
                    return False

                await eventually(step, 90, interval=0.4, what="verdicts")

            await send_until(lambda: matched(a) >= 3 and matched(b) >= 3)
            for app in (a, b):
                counts = app.coordinator.shadow.by_agent[AGENT]
                assert counts.mismatched == 0
                await eventually(
                    lambda app=app: (
                        app.coordinator.epochs is not None
                        and app.coordinator.epochs.standing(AGENT) == (True, "")
                    ),
                    30,
                    what="the agent accruing rewards",
                )

            # b goes away: a keeps getting the agent's answers.
            await b_context.__aexit__(None, None, None)
            b_open = False
            before = matched(a)
            await send_until(lambda: matched(a) >= before + 3)
            assert proc.returncode is None
            assert a.coordinator.dispatcher.stream_count() == 1
        finally:
            if b_open:
                await b_context.__aexit__(None, None, None)
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        assert proc.returncode == 0, log_path.read_text()[-3000:]
        text = log_path.read_text()
        assert all(k not in text for k in keys)  # API keys never reach the log
