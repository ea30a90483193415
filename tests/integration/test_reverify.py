"""Re-verification on a real anvil: excluded L3 answers get an exact verdict from another
agent, and a cheater cannot hide a wrong answer behind a context it was not given."""

from __future__ import annotations

import pytest

from ioswarm.agent.l3 import L3Validator
from ioswarm.core.models import Level
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.sim.anvil import AnvilProcess
from ioswarm.sim.l3workload import ContractWorkload
from tests.helpers import eventually
from tests.integration.swarm import running_coordinator
from tests.integration.test_l3_shadow import GasOffByOne, start

pytestmark = pytest.mark.integration

TXS = 6
MAX_ROUNDS = 4


async def test_excluded_answers_are_reverified_exactly_by_another_agent(
    anvil_manual: AnvilProcess,
) -> None:
    """Transactions that store the block timestamp in one slot land in a block whose time
    nobody could predict: every answer is excluded (``block_context``, or ``read_write_race``
    behind an earlier one of them); each is re-verified by the other
    agent with the real pre-state and context, so nothing stays unverified, the honest agent
    is never mismatched, and every re-verification answer of the cheater (one unit of gas
    too many) is caught."""
    anvil = anvil_manual
    async with (
        JsonRpcNode(anvil.url) as node,
        running_coordinator(anvil.url, taskLevel="L3", canaryPct=0, shadowExpiryBlocks=20) as app,
    ):
        c = app.coordinator
        assert c.reverifier is not None
        wl = ContractWorkload(
            node, anvil.private_keys[1], anvil.chain_id, accounts=TXS, seed=5, mine=anvil.mine
        )
        await wl.setup()
        agents = [
            start(app.grpc_port, "honest", L3Validator()),
            start(app.grpc_port, "cheater", GasOffByOne()),
        ]
        await eventually(lambda: c.dispatcher.stream_count() == 2, 30, what="L3 streams")

        def l3() -> dict[str, object]:
            counts = c.shadow.by_level.get(Level.L3)
            return counts.as_dict() if counts is not None else {}

        def excluded_of(agent_id: str) -> int:
            counts = c.shadow.by_agent.get(agent_id)
            return counts.excluded_total if counts is not None else 0

        # Rounds until each agent had an answer excluded (the scheduler decides who gets
        # what; a round's six transactions almost always split between the two).
        rounds = 0
        while rounds < MAX_ROUNDS and not (excluded_of("honest") and excluded_of("cheater")):
            rounds += 1
            sent = [await wl.send("ctx_timestamp", sender=i) for i in range(TXS)]
            await eventually(
                lambda n=rounds * TXS: c.totals.results_accepted >= n, 30, what="answers"
            )
            await anvil.rpc("evm_increaseTime", [1000])  # the block lands far from its prediction
            await anvil.mine(1)
            await wl.wait_included(sent)
            await eventually(
                lambda n=rounds * TXS: l3().get("compared", 0) >= n and l3().get("unverified") == 0,
                60,
                what="re-verified",
            )
        total = rounds * TXS
        counts = l3()
        excluded = counts["excluded"]
        assert isinstance(excluded, dict) and sum(excluded.values()) == total, counts
        # The first one read a timestamp nobody predicted; the rest also raced on its slot.
        assert set(excluded) <= {"block_context", "read_write_race"}, counts
        assert counts["reverified"] == total and counts["unverified"] == 0
        honest, cheater = c.shadow.by_agent["honest"], c.shadow.by_agent["cheater"]
        # Each re-verification went to the agent whose answer was not the excluded one.
        assert honest.excluded_total + cheater.excluded_total == total
        assert honest.mismatched == 0 and honest.matched == cheater.excluded_total >= 1
        assert cheater.mismatched == honest.excluded_total >= 1
        assert set(cheater.mismatched_fields) == {"gas_used"}
        issued = app.registry.get_sample_value(
            "ioswarm_shadow_reverify_total", {"result": "issued"}
        )
        assert issued == total
        for a in agents:
            await a.stop()
