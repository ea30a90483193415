"""One task that makes a validator raise never stops the agent: it declines that task."""

from __future__ import annotations

from ioswarm.agent.l3 import L3Validator
from ioswarm.agent.runtime import Agent
from ioswarm.agent.validators import L1Validator
from ioswarm.config import AgentConfig
from ioswarm.core.models import Level
from ioswarm.proto import ioswarm_pb2 as pb
from tests.unit.test_engine_fidelity import blob_tx
from tests.unit.test_evm_engine import ALICE, COINBASE, ETHER, GWEI, _batch, _task, empty, sign
from tests.unit.test_evm_engine import sender as funded


class Flaky:
    """Raises on task 1, answers like the real L1 validator otherwise."""

    level = Level.L1

    def validate(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        if task.task_id == 1:
            raise KeyError("a crafted transaction hit a bug")
        return L1Validator().validate(task, batch)


def test_a_raising_validator_declines_the_task_and_the_next_one_is_answered() -> None:
    """The raising task is declined with engine_error and its kind; the next is a real answer."""
    cfg = AgentConfig(coordinator="127.0.0.1:1", agent_id="a", api_key="k", wallet="0x" + "1" * 40)
    agent = Agent(cfg, Flaky())
    batch = pb.TaskBatch(batch_id="b", chain_id=1)
    first = agent._answer(pb.TaskPackage(task_id=1, tx_raw=b"\x02", level=pb.L1), batch)
    assert (first.declined, first.reject_reason, first.exec_error) == (
        True,
        "engine_error",
        "KeyError",
    )
    second = agent._answer(pb.TaskPackage(task_id=2, tx_raw=b"\x02", level=pb.L1), batch)
    assert not second.declined and second.reject_reason  # undecodable: a real rejection
    assert agent.stats.validator_errors == 1


def test_an_l3_agent_answers_the_blob_tx_that_used_to_raise_and_serves_on() -> None:
    """A blob tx whose sender pays gas and blob gas but not the value raised InsufficientFunds
    out of py-evm; the agent's L3 validator now rejects it (an answer, not a decline) and
    answers the next task, with no validator error counted."""
    cfg = AgentConfig(coordinator="127.0.0.1:1", agent_id="a", api_key="k", wallet="0x" + "1" * 40)
    agent = Agent(cfg, L3Validator())
    broke = funded(ETHER + 21_000 * 10 * GWEI + 131_072 * 10 - 1)
    raising = _task(blob_tx(1, value=ETHER), broke, empty(ALICE), empty(COINBASE))
    first = agent._answer(raising, _batch(raising))
    assert (first.valid, first.declined, first.reject_reason) == (
        False,
        False,
        "insufficient_balance",
    )
    transfer = _task(sign(ALICE, value=5, gas=21_000), funded(), empty(ALICE), empty(COINBASE))
    second = agent._answer(transfer, _batch(transfer))
    assert second.valid and second.gas_used == 21_000
    assert agent.stats.validator_errors == 0
