"""What the executing validators (L3, L4) share: L1 first, then an engine run as a TaskResult.

L3 executes on the state the task carries (:mod:`ioswarm.agent.l3`), L4 on its own store
(:mod:`ioswarm.agent.l4`); both recover the sender here, convert the batch's block context once
per batch with :class:`BlockCache`, and report the :class:`Execution` with
:func:`execution_result`.
"""

from __future__ import annotations

import time

from ioswarm.core.execution import BlockInput, Execution
from ioswarm.core.validation import Check, check_l1
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import block_input, encode_u256

__all__ = ["BlockCache", "execution_result", "finish", "recover_or_reject"]

_STATUS = {
    "success": pb.EXEC_SUCCESS,
    "revert": pb.EXEC_REVERT,
    "halt": pb.EXEC_HALT,
}


def recover_or_reject(
    task: pb.TaskPackage, batch: pb.TaskBatch, started: float
) -> tuple[Check, pb.TaskResult | None]:
    """L1 first: the recovered sender, or the finished rejection of a bad signature (bad at
    every state, so executing levels answer it without looking at any state)."""
    chain_id = batch.chain_id or batch.block_context.chain_id
    check = check_l1(bytes(task.tx_raw), chain_id)
    if check.valid and check.tx is not None:
        return check, None
    rejected = pb.TaskResult(
        task_id=task.task_id,
        valid=False,
        reject_reason=check.reject_reason,
        sender=check.sender,
        gas_estimate=check.gas_estimate,
    )
    return check, finish(rejected, started)


class BlockCache:
    """The engine's block of the last batch seen: every task of a batch shares one context.

    The batch itself is kept (not its id) so that a later batch can never be mistaken for it.
    """

    __slots__ = ("_of",)

    def __init__(self) -> None:
        self._of: tuple[pb.TaskBatch, BlockInput] | None = None

    def block(self, batch: pb.TaskBatch, chain_id: int) -> BlockInput:
        """The block input of ``batch``, converted once."""
        cached = self._of
        if cached is None or cached[0] is not batch:
            cached = (batch, block_input(batch.block_context, chain_id))
            self._of = cached
        return cached[1]


def execution_result(task_id: int, execution: Execution) -> pb.TaskResult:
    """An Execution as the TaskResult an agent reports."""
    if not execution.valid:
        return pb.TaskResult(
            task_id=task_id,
            valid=False,
            reject_reason=execution.reject_reason,
            exec_error=execution.error,
            declined=execution.declined,
        )
    assert execution.status is not None  # every valid execution ran to a status
    return pb.TaskResult(
        task_id=task_id,
        valid=True,
        gas_used=execution.gas_used,
        status=_STATUS[execution.status],
        return_data=execution.return_data,
        logs=[
            pb.LogEntry(address=log.address, topics=list(log.topics), data=log.data)
            for log in execution.logs
        ],
        state_changes=[
            pb.StorageChange(address=c.address, slot=c.slot, old_value=c.old, new_value=c.new)
            for c in execution.storage_changes
        ],
        account_changes=[
            pb.AccountChange(
                address=c.address,
                balance_before=encode_u256(c.balance_before),
                balance_after=encode_u256(c.balance_after),
                nonce_before=c.nonce_before,
                nonce_after=c.nonce_after,
                created_code=c.created_code,
            )
            for c in execution.account_changes
        ],
        context_reads=list(execution.context_reads),
        exec_error=execution.error,
    )


def finish(result: pb.TaskResult, started: float) -> pb.TaskResult:
    """``result`` with its latency since ``started`` (a ``time.perf_counter()`` reading)."""
    result.latency_us = int((time.perf_counter() - started) * 1e6)
    return result
