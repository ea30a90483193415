"""``ioswarm agent status`` against a running coordinator whose agents were paid on chain."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from ioswarm_cli import main as cli_main

from ioswarm.core.iotexaddr import bytes_to_io
from ioswarm.errors import ConfigError, IoswarmError, ProtocolError
from ioswarm.sim.anvil import free_loopback_port
from tests.integration.swarm import WALLET
from tests.integration.test_http_reference import SettledSwarm, settled_swarm

pytestmark = pytest.mark.integration

__all__ = ["settled_swarm"]  # the fixture, shared with the reference key test


def parse(*argv: str) -> argparse.Namespace:
    return cli_main.build_parser().parse_args(["agent", "status", *argv])


async def status(env: dict[str, str], *argv: str) -> int:
    args = parse(*argv)
    code: int = await args.run(args, env)
    return code


async def test_status_reads_connection_results_payouts_and_the_pool(
    settled_swarm: SettledSwarm, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --rpc and --pool the status shows the live agent, its results, its confirmed
    payouts and what the pool says its wallet can claim; the coordinator address and
    agent id come from IOSWARM_COORDINATOR_HTTP and IOSWARM_AGENT_ID."""
    s = settled_swarm
    env = {"IOSWARM_COORDINATOR_HTTP": s.api, "IOSWARM_AGENT_ID": "ref-l2"}
    flags = ("--rpc", s.rpc_url, "--pool", s.pool.address, "--wallet", WALLET)
    assert await status(env, *flags, "--json") == 0
    report = json.loads(capsys.readouterr().out)

    assert report["coordinator"]["reachable"] is True
    assert report["coordinator"]["task_level"] == "L2"
    conn = report["connection"]
    assert conn["registered"] and conn["live"] and conn["connected"]
    assert conn["level"] == "L2" and conn["wallet_matches"] is True

    c = s.app.coordinator
    rec = c.registry.get("ref-l2")
    counts = c.shadow.by_agent["ref-l2"]
    assert rec is not None
    results = report["results"]
    assert results["tasks"] <= rec.results_accepted and results["tasks"] > 0
    assert 0 < results["matched"] <= counts.matched
    assert results["accuracy_pct"] == 100.0  # an honest agent validating plain transfers

    history = report["payouts"]["history"]
    ledger = s.epochs.rewards_view("ref-l2")["history"]  # read after: it may have grown
    assert {h["epoch"] for h in history} <= {h["epoch"] for h in ledger}
    assert any(h["status"] == "confirmed" and int(h["amount_wei"]) > 0 for h in history)

    claim = report["claimable"]
    assert claim["source"] == "contract" and claim["wallet"] == WALLET
    on_chain = await s.pool.claimable(WALLET)
    assert on_chain > 0
    assert int(claim["wei"]) <= on_chain  # more may settle between the two reads

    assert await status(env, *flags) == 0
    text = capsys.readouterr().out
    assert "agent ref-l2" in text and "registered, live" in text and "level L2" in text
    assert "confirmed" in text and f"in pool {s.pool.address}" in text


async def test_status_without_rpc_reads_the_coordinator(
    settled_swarm: SettledSwarm, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without an RPC URL the claimable comes from the coordinator, with what it paid in; an
    io1 wallet from IOSWARM_WALLET is the same wallet as its 0x form."""
    env = {"IOSWARM_WALLET": bytes_to_io(bytes.fromhex(WALLET[2:]))}  # an io1 address
    assert await status(env, "--coordinator-http", settled_swarm.api, "--agent-id", "ref-l1") == 0
    text = capsys.readouterr().out
    assert "as the coordinator last read it" in text and "level L1" in text
    assert "IOTX paid into the pool so far" in text
    assert "another wallet" not in text  # the io1 form names the same wallet


async def test_unknown_agent_and_unreachable_coordinator_are_clear_errors(
    settled_swarm: SettledSwarm,
) -> None:
    """An agent the coordinator never saw, a closed port, and a missing flag each end with one
    error naming the problem and the right exit code."""
    with pytest.raises(IoswarmError, match="'no-such-agent' is unknown") as unknown:
        await status({}, "--coordinator-http", settled_swarm.api, "--agent-id", "no-such-agent")
    assert cli_main.exit_code(unknown.value) == cli_main.EXIT_ERROR

    closed = f"http://127.0.0.1:{free_loopback_port()}"
    with pytest.raises(IoswarmError, match="unreachable") as down:
        await status({}, "--coordinator-http", closed, "--agent-id", "ref-l1")
    assert cli_main.exit_code(down.value) == cli_main.EXIT_ERROR

    rpc_only = ("--agent-id", "ref-l1", "--rpc", settled_swarm.rpc_url)
    with pytest.raises(ConfigError, match="--pool"):
        await status({}, "--coordinator-http", settled_swarm.api, *rpc_only)


@pytest.fixture
async def impostor() -> AsyncIterator[str]:
    """An HTTP server on the coordinator's address that is not a coordinator: it answers
    HTML, and an endless JSON body where the agent list should be."""

    async def html(_: web.Request) -> web.Response:
        return web.Response(text="<html>not here</html>", content_type="text/html")

    async def flood(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):  # the client hangs up once it has enough
            await resp.write(b'{"agents": [' + b'{"agent_id": "x"},' * 300_000)
        return resp

    async def empty(_: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/swarm/status", html)
    app.router.add_get("/other/swarm/status", empty)
    app.router.add_get("/other/swarm/agents", flood)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_loopback_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_server_that_is_not_a_coordinator_is_refused(impostor: str) -> None:
    """HTML where JSON belongs, and an oversized answer, are protocol errors, not crashes."""
    with pytest.raises(ProtocolError, match="not JSON"):
        await status({}, "--coordinator-http", impostor, "--agent-id", "a")
    with pytest.raises(ProtocolError, match="larger than"):
        await status({}, "--coordinator-http", impostor + "/other", "--agent-id", "a")
