"""The L3 validator: L1 sender recovery, then execution on the state the task carries."""

from __future__ import annotations

import time

from ioswarm.agent.evm import EvmEngine, PyEvmEngine
from ioswarm.agent.executing import BlockCache, execution_result, finish, recover_or_reject
from ioswarm.agent.validators import L2Validator, Validator
from ioswarm.core.execution import MISSING_STATE
from ioswarm.core.models import Level
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import account_inputs

__all__ = ["L3Validator"]


class L3Validator:
    """L1 recovery, then py-evm execution on exactly the state and block the task carries.

    Tasks below L3 go to the L2 validator. An execution that needed state the task did not
    carry is answered ``declined`` with reject reason ``missing_state`` (the missing key in
    ``exec_error``): the agent could not answer, which is not the same as a wrong answer.
    """

    level = Level.L3

    def __init__(self, engine: EvmEngine | None = None, fallback: Validator | None = None) -> None:
        self._engine: EvmEngine = engine if engine is not None else PyEvmEngine()
        self._fallback: Validator = fallback if fallback is not None else L2Validator()
        self._blocks = BlockCache()

    def validate(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        started = time.perf_counter()
        if task.level < Level.L3:
            return self._fallback.validate(task, batch)
        check, rejected = recover_or_reject(task, batch, started)
        if rejected is not None or check.tx is None:
            assert rejected is not None  # an undecodable tx is always rejected
            return rejected
        if not batch.HasField("block_context"):
            return finish(
                pb.TaskResult(
                    task_id=task.task_id,
                    valid=False,
                    declined=True,
                    reject_reason=MISSING_STATE,
                    exec_error="block_context",
                    sender=check.sender,
                    gas_estimate=check.gas_estimate,
                ),
                started,
            )
        block = self._blocks.block(batch, batch.chain_id or batch.block_context.chain_id)
        execution = self._engine.execute(check.tx, check.sender, account_inputs(task), block)
        result = execution_result(task.task_id, execution)
        result.sender = check.sender
        result.gas_estimate = check.gas_estimate
        return finish(result, started)
