"""One task that makes a validator raise never stops the agent: it declines that task."""

from __future__ import annotations

from ioswarm.agent.runtime import Agent
from ioswarm.agent.validators import L1Validator
from ioswarm.config import AgentConfig
from ioswarm.core.models import Level
from ioswarm.proto import ioswarm_pb2 as pb


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
