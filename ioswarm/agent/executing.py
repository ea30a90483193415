"""The one executing validator (L3, L4): L1 first, then an engine run as a TaskResult.

:class:`ExecutingValidator` is parameterised by where it reads state, an
:class:`ExecutionState`: L3 reads the state the task carries (:mod:`ioswarm.agent.l3`), L4 its
own store at the task's state height (:mod:`ioswarm.agent.l4`). Everything else, from sender
recovery to the reported result, is the same code for both.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from ioswarm.agent.evm import EvmEngine, PyEvmEngine
from ioswarm.agent.validators import Validator
from ioswarm.core.execution import MISSING_STATE, AccountInput, BlockInput, Execution
from ioswarm.core.models import Level
from ioswarm.core.validation import Check, check_l1
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import block_input, encode_u256

__all__ = [
    "BlockCache",
    "ExecutingValidator",
    "ExecutionState",
    "Unavailable",
    "execution_result",
    "finish",
    "recover_or_reject",
]


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The state a task needs cannot be had here: the task is answered ``declined``."""

    reason: str
    detail: str


class ExecutionState(Protocol):
    """Where an executing validator reads the accounts a task's execution touches."""

    def accounts(
        self, task: pb.TaskPackage, sender: bytes
    ) -> AbstractContextManager[Mapping[bytes, AccountInput] | Unavailable]:
        """The accounts to execute ``task`` on (valid while the context is open), or why not.

        ``sender`` is the recovered sender (the task does not name it).
        """


class ExecutingValidator:
    """L1 recovery, then py-evm execution of the task on the accounts ``state`` gives.

    Tasks below ``level`` go to ``fallback``. A task whose state cannot be had (no block
    context, or what ``state`` reports :class:`Unavailable`) is answered ``declined``: the agent
    could not answer, which is not the same as a wrong answer. Subclasses name their level.
    """

    level: Level

    def __init__(
        self, state: ExecutionState, engine: EvmEngine | None, fallback: Validator
    ) -> None:
        self._state = state
        self._engine: EvmEngine = engine if engine is not None else PyEvmEngine()
        self._fallback = fallback
        self._blocks = BlockCache()

    def validate(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        started = time.perf_counter()
        if task.level < self.level:
            return self._fallback.validate(task, batch)
        # A bad signature is bad at every state: answered without looking at any.
        check, rejected = recover_or_reject(task, batch, started)
        if rejected is not None or check.tx is None:
            assert rejected is not None  # an undecodable tx is always rejected
            return rejected
        if not batch.HasField("block_context"):
            return self._declined(task, check, Unavailable(MISSING_STATE, "block_context"), started)
        block = self._blocks.block(batch, batch.chain_id or batch.block_context.chain_id)
        with self._state.accounts(task, check.sender) as accounts:
            if isinstance(accounts, Unavailable):
                return self._declined(task, check, accounts, started)
            execution = self._engine.execute(check.tx, check.sender, accounts, block)
        result = execution_result(task.task_id, execution)
        result.sender = check.sender
        result.gas_estimate = check.gas_estimate
        return finish(result, started)

    def _declined(
        self, task: pb.TaskPackage, check: Check, why: Unavailable, started: float
    ) -> pb.TaskResult:
        result = pb.TaskResult(
            task_id=task.task_id,
            valid=False,
            declined=True,
            reject_reason=why.reason,
            exec_error=why.detail,
            sender=check.sender,
            gas_estimate=check.gas_estimate,
        )
        return finish(result, started)


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
                code_cleared=c.code_cleared,
                deleted=c.deleted,
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
