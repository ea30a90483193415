"""L3 on a real anvil: every workload category executed by agents and judged against the chain."""

from __future__ import annotations

import asyncio

import pytest

from ioswarm.agent.l3 import L3Validator
from ioswarm.agent.runtime import Agent
from ioswarm.config import AgentConfig
from ioswarm.core.models import Level
from ioswarm.core.tokens import agent_token
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.sim.anvil import AnvilProcess
from ioswarm.sim.l3calls import CATEGORIES
from ioswarm.sim.l3workload import ContractWorkload
from tests.helpers import eventually
from tests.integration.swarm import SECRET, WALLET, RunningAgent, running_coordinator

pytestmark = pytest.mark.integration


class FlipStorageByte(L3Validator):
    """A faulty agent: flips the last byte of the first storage write it reports."""

    def validate(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        result = super().validate(task, batch)
        if result.state_changes:
            change = result.state_changes[0]
            value = bytearray(change.new_value.rjust(32, b"\x00"))
            value[-1] ^= 0x01
            change.new_value = bytes(value)
        return result


class GasOffByOne(L3Validator):
    """A faulty agent: reports one unit of gas more than it used."""

    def validate(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        result = super().validate(task, batch)
        if result.valid:
            result.gas_used += 1
        return result


def start(port: int, agent_id: str, validator: L3Validator) -> RunningAgent:
    cfg = AgentConfig(
        coordinator=f"127.0.0.1:{port}",
        agent_id=agent_id,
        api_key=agent_token(SECRET, agent_id),
        wallet=WALLET,
        level="L3",
        tls=False,
        reconnect_max_sec=1.0,
    )
    agent = Agent(cfg, validator)
    return RunningAgent(agent, asyncio.create_task(agent.run()))


CONTEXT_DEPENDENT = {"ctx_timestamp", "ctx_prevrandao"}


async def test_every_category_matches_or_is_excluded_and_faults_are_caught(
    anvil_manual: AnvilProcess,
) -> None:
    """Each contract category (and all three tx types) is matched or excluded with a reason by
    honest L3 agents; an agent that flips a storage byte or misreports gas is caught, by field."""
    anvil = anvil_manual
    async with (
        JsonRpcNode(anvil.url) as node,
        running_coordinator(anvil.url, taskLevel="L3", shadowExpiryBlocks=20) as app,
    ):
        c = app.coordinator
        wl = ContractWorkload(
            node, anvil.private_keys[1], anvil.chain_id, accounts=24, seed=11, mine=anvil.mine
        )
        await wl.setup()
        honest = [start(app.grpc_port, f"l3-{i}", L3Validator()) for i in range(2)]
        await eventually(lambda: c.dispatcher.stream_count() == 2, 30, what="L3 streams")

        # One transaction per block, each answered before its block is mined: a race-free
        # baseline where only values no one can predict (time, randomness) may be excluded.
        sent = []
        for i, category in enumerate(CATEGORIES):
            kind = ("eip1559", "legacy", "eip2930")[i % 3]
            tx_hash = await wl.send(category, kind, sender=i % 24)
            await eventually(
                lambda n=i + 1: c.totals.results_accepted - c.totals.canary_results >= n,
                30,
                what=category,
            )
            head = c.head.number
            await anvil.mine(1)
            await eventually(lambda h=head: c.head.number > h, 30, what="coordinator sees block")
            sent.append(tx_hash)
        await wl.wait_included(sent)

        def l3() -> tuple[int, int, int, dict[str, int], dict[str, int]]:
            s = c.shadow.by_level.get(Level.L3)
            if s is None:
                return (0, 0, 0, {}, {})
            return (s.compared, s.matched, s.mismatched, s.excluded, s.mismatched_fields)

        await eventually(lambda: l3()[0] >= len(sent), 60, what="every category judged")
        compared, matched, mismatched, excluded, fields = l3()
        assert mismatched == 0, fields
        assert matched + sum(excluded.values()) == compared
        assert set(excluded) <= {"block_context"}, excluded
        assert matched >= len(sent) - len(CONTEXT_DEPENDENT), excluded
        for a in honest:
            await a.stop()
        await eventually(lambda: c.dispatcher.stream_count() == 0, 20)

        for agent_id, validator, field in (
            ("flip", FlipStorageByte(), "storage"),
            ("gas", GasOffByOne(), "gas_used"),
        ):
            faulty = start(app.grpc_port, agent_id, validator)
            await eventually(lambda: c.dispatcher.stream_count() == 1, 30)
            txs = [await wl.send("erc20_transfer", sender=20 + k) for k in range(2)]
            await eventually(
                lambda last=txs[-1]: c.scheduler.open_tasks == 0 and c.poller.was_dispatched(last),
                30,
                what="faulty answers in",
            )
            await anvil.mine(1)
            await wl.wait_included(txs)
            await eventually(
                lambda agent_id=agent_id: (
                    c.shadow.by_agent.get(agent_id) is not None
                    and c.shadow.by_agent[agent_id].compared >= 2
                ),
                60,
                what=f"{agent_id} judged",
            )
            counts = c.shadow.by_agent[agent_id]
            assert counts.mismatched >= 1 and set(counts.mismatched_fields) == {field}
            await faulty.stop()
            await eventually(lambda: c.dispatcher.stream_count() == 0, 20)
