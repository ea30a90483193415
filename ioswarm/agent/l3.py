"""The L3 validator: L1 sender recovery, then execution on the state the task carries."""

from __future__ import annotations

import time

from ioswarm.agent.evm import EvmEngine, PyEvmEngine
from ioswarm.agent.validators import L2Validator, Validator
from ioswarm.core.execution import (
    DEFAULT_FORK,
    MISSING_STATE,
    AccountInput,
    BlockInput,
    Execution,
)
from ioswarm.core.models import EMPTY_CODE_HASH, Level
from ioswarm.core.validation import Check, check_l1
from ioswarm.proto import ioswarm_pb2 as pb

__all__ = ["L3Validator", "account_inputs", "block_input"]

_STATUS = {
    "success": pb.EXEC_SUCCESS,
    "revert": pb.EXEC_REVERT,
    "halt": pb.EXEC_HALT,
}


def block_input(context: pb.BlockContext, chain_id: int = 0) -> BlockInput:
    """The engine's view of a batch's block context (``chain_id`` when the context has none)."""
    return BlockInput(
        number=context.number,
        timestamp=context.timestamp,
        gas_limit=context.gas_limit,
        base_fee=int.from_bytes(context.base_fee, "big"),
        coinbase=bytes(context.coinbase),
        prev_randao=bytes(context.prev_randao).rjust(32, b"\x00"),
        chain_id=context.chain_id or chain_id,
        fork=context.evm_fork or DEFAULT_FORK,
        block_hashes={h.number: bytes(h.hash) for h in context.recent_block_hashes},
        # Unset means the coordinator did not say; 1 wei is the protocol minimum, and a
        # BLOBBASEFEE read is reported in context_reads either way.
        blob_base_fee=int.from_bytes(context.blob_base_fee, "big") or 1,
    )


def _account(
    address: bytes, snapshot: pb.AccountSnapshot, state: pb.AccountState | None
) -> AccountInput | None:
    code = bytes(state.code) if state is not None else b""
    code_hash = bytes(snapshot.code_hash)
    if not code and code_hash not in (b"", EMPTY_CODE_HASH):
        # The account has code the task does not carry: leave the account out, so that any
        # read of it is reported missing rather than executed as an empty account.
        return None
    storage = {bytes(s.key): bytes(s.value) for s in state.storage} if state is not None else {}
    return AccountInput(
        address=address,
        balance=int.from_bytes(snapshot.balance, "big"),
        nonce=snapshot.nonce,
        code=code,
        storage=storage,
    )


def account_inputs(task: pb.TaskPackage) -> dict[bytes, AccountInput]:
    """The accounts a task provides, by address.

    ``task.accounts`` is the L3 state; the L2 sender and receiver snapshots fill in accounts it
    does not list, with no storage (so a slot read of them is missing, never zero).
    """
    accounts: dict[bytes, AccountInput] = {}
    for state in task.accounts:
        address = bytes(state.account.address)
        account = _account(address, state.account, state)
        if account is not None:
            accounts[address] = account
    for field in ("sender", "receiver"):
        if task.HasField(field):
            snapshot: pb.AccountSnapshot = getattr(task, field)
            address = bytes(snapshot.address)
            if address and address not in accounts:
                account = _account(address, snapshot, None)
                if account is not None:
                    accounts[address] = account
    return accounts


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
    return check, _finish(rejected, started)


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
        # Every task of a batch shares one block context; convert it once per batch. The batch
        # itself is kept (not its id) so that a later batch can never be mistaken for it.
        self._block_of: tuple[pb.TaskBatch, BlockInput] | None = None

    def validate(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        started = time.perf_counter()
        if task.level < Level.L3:
            return self._fallback.validate(task, batch)
        check, rejected = recover_or_reject(task, batch, started)
        if rejected is not None or check.tx is None:
            assert rejected is not None  # an undecodable tx is always rejected
            return rejected
        if not batch.HasField("block_context"):
            return _finish(
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
        block = self._block(batch, batch.chain_id or batch.block_context.chain_id)
        execution = self._engine.execute(check.tx, check.sender, account_inputs(task), block)
        result = _result(task.task_id, execution)
        result.sender = check.sender
        result.gas_estimate = check.gas_estimate
        return _finish(result, started)

    def _block(self, batch: pb.TaskBatch, chain_id: int) -> BlockInput:
        cached = self._block_of
        if cached is None or cached[0] is not batch:
            cached = (batch, block_input(batch.block_context, chain_id))
            self._block_of = cached
        return cached[1]


def _result(task_id: int, execution: Execution) -> pb.TaskResult:
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
                balance_before=_uint(c.balance_before),
                balance_after=_uint(c.balance_after),
                nonce_before=c.nonce_before,
                nonce_after=c.nonce_after,
                created_code=c.created_code,
            )
            for c in execution.account_changes
        ],
        context_reads=list(execution.context_reads),
        exec_error=execution.error,
    )


def _uint(value: int) -> bytes:
    """Minimal big-endian bytes, as the wire carries uint256 amounts."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _finish(result: pb.TaskResult, started: float) -> pb.TaskResult:
    result.latency_us = int((time.perf_counter() - started) * 1e6)
    return result
