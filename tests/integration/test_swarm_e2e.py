"""The whole loop over TLS: real anvil, coordinator, three agents, exact shadow counts."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio
import pytest
from eth_account import Account

from ioswarm.core.models import Level
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.proto import ioswarm_pb2_grpc as pb_grpc
from ioswarm.sim.anvil import AnvilProcess
from ioswarm.sim.workload import Workload
from tests.helpers import eventually
from tests.integration.swarm import (
    make_test_pki,
    metadata,
    register_request,
    running_coordinator,
    start_agent,
)

pytestmark = pytest.mark.integration

GWEI = 10**9


def sign(key: str, chain_id: int, nonce: int, to: str, value: int, tip: int = 2 * GWEI) -> bytes:
    tx = {
        "type": 2,
        "chainId": chain_id,
        "nonce": nonce,
        "to": to,
        "value": value,
        "gas": 21_000,
        "maxFeePerGas": 50 * GWEI + tip,
        "maxPriorityFeePerGas": tip,
    }
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


async def test_known_workload_over_tls_gives_exact_shadow_counts(
    anvil_manual: AnvilProcess, tmp_path: Path
) -> None:
    """Transfers, a replacement, a reverting call and a nonce gap give exactly the expected
    matched/excluded counts at L1 and L2, and a hung agent's tasks move on after the deadline."""
    anvil = anvil_manual
    ca, cert, key = make_test_pki(tmp_path)
    async with (
        JsonRpcNode(anvil.url) as node,
        running_coordinator(
            anvil.url,
            tlsCertFile=str(cert),
            tlsKeyFile=str(key),
            taskTimeoutMs=1000,
            canaryPct=0,  # exact counts of real tasks; canaries are tested beside adversaries
        ) as app,
    ):
        c = app.coordinator
        wl = Workload(
            node,
            anvil.private_keys[0],
            chain_id=anvil.chain_id,
            accounts=4,
            mine=anvil.mine,
            seed=7,
        )
        await wl.setup()
        me = Account.create()
        fund = await wl.send_transfer(to=bytes.fromhex(me.address[2:]), value=10**18)
        await anvil.mine(1)
        assert (await wl.wait_included([fund]))[fund] == 1

        agents = [
            start_agent(app.grpc_port, "tls-l1", Level.L1, tls=True, ca_cert=str(ca)),
            start_agent(app.grpc_port, "tls-l2-a", Level.L2, tls=True, ca_cert=str(ca)),
            start_agent(app.grpc_port, "tls-l2-b", Level.L2, tls=True, ca_cert=str(ca)),
        ]
        await eventually(lambda: c.dispatcher.stream_count() == 3, 20, what="3 TLS streams")

        # Three transfers of different types and one reverting-but-valid call.
        sent = [await wl.send_transfer(kind=k) for k in ("eip1559", "legacy", "eip2930")]
        sent.append(await wl.send_reverting_call())
        # A replacement the coordinator sees both halves of.
        to = "0x" + "77" * 20
        replaced = await node.send_raw_transaction(sign(me.key.hex(), anvil.chain_id, 0, to, 1))
        await eventually(lambda: c.poller.was_dispatched(replaced), what="original dispatched")
        replacement = await node.send_raw_transaction(
            sign(me.key.hex(), anvil.chain_id, 0, to, 2, tip=4 * GWEI)
        )
        # A nonce gap: nonce 2 waits (not dispatched) until nonce 1 fills the gap.
        late = await node.send_raw_transaction(sign(me.key.hex(), anvil.chain_id, 2, to, 3))
        polls = c.poller.polls
        await eventually(lambda: c.poller.polls >= polls + 3, what="three polls")
        assert not c.poller.was_dispatched(late)
        filler = await node.send_raw_transaction(sign(me.key.hex(), anvil.chain_id, 1, to, 4))
        for h in (*sent, replacement, late, filler):
            await eventually(lambda h=h: c.poller.was_dispatched(h), what="dispatched")
        await eventually(lambda: c.totals.results_accepted == 2 * 8, 30, what="16 results")
        await anvil.mine(1)
        statuses = await wl.wait_included([*sent, replacement, late, filler])
        assert statuses[sent[3]] == 0  # the reverting call landed with status 0

        def counts(level: Level) -> tuple[int, int, int, dict[str, int]]:
            s = c.shadow.by_level.get(level)
            return (s.compared, s.matched, s.mismatched, s.excluded) if s else (0, 0, 0, {})

        expected = (8, 7, 0, {"replaced": 1})
        await eventually(
            lambda: counts(Level.L1) == expected and counts(Level.L2) == expected,
            30,
            what="exact shadow counts",
        )

        # A hung agent: registers, takes tasks, never answers. Its tasks must move on.
        creds = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{app.grpc_port}", creds) as channel:
            hung = pb_grpc.IOSwarmStub(channel)
            md = metadata("tls-hung")
            await hung.Register(register_request("tls-hung", Level.L2), metadata=md)
            stream = hung.GetTasks(pb.GetTasksRequest(agent_id="tls-hung"), metadata=md)
            await eventually(lambda: c.dispatcher.stream_count() == 4, what="hung stream open")
            more = [await wl.send_transfer() for _ in range(8)]
            first = await stream.read()
            assert isinstance(first, pb.TaskBatch) and first.tasks
            await eventually(
                lambda: c.dispatcher.reassigned_total >= len(first.tasks),
                what="hung agent's tasks reassigned after the deadline",
            )
            stream.cancel()  # the hung agent dies
        await eventually(lambda: c.totals.results_accepted == 2 * 16, what="every task answered")
        await anvil.mine(1)
        await wl.wait_included(more)
        expected = (16, 15, 0, {"replaced": 1})
        await eventually(
            lambda: counts(Level.L1) == expected and counts(Level.L2) == expected,
            what="every included tx has a verdict",
        )
        for a in agents:
            await a.stop()
        assert all(a.agent.stats.connects == 1 for a in agents)
