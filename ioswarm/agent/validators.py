"""Agent-side validators: one per level, each turns a TaskPackage into a TaskResult."""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

from ioswarm.core.models import AccountSnapshot, Level
from ioswarm.core.validation import Check, check_l1, check_l2
from ioswarm.proto import ioswarm_pb2 as pb


class Validator(Protocol):
    """Validates one task of a batch; never raises for a bad transaction, it rejects it."""

    level: Level

    def validate(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult: ...


@runtime_checkable
class GatedValidator(Protocol):
    """A validator with a readiness hook the runtime awaits before each ``validate`` (L4)."""

    async def ready(self, task: pb.TaskPackage) -> None: ...


def _snapshot(msg: pb.AccountSnapshot) -> AccountSnapshot:
    return AccountSnapshot(
        address=bytes(msg.address),
        balance=int.from_bytes(msg.balance, "big"),
        nonce=msg.nonce,
        code_hash=bytes(msg.code_hash),
    )


def _result(task: pb.TaskPackage, check: Check, started: float) -> pb.TaskResult:
    return pb.TaskResult(
        task_id=task.task_id,
        valid=check.valid,
        reject_reason=check.reject_reason,
        sender=check.sender,
        gas_estimate=check.gas_estimate,
        latency_us=int((time.perf_counter() - started) * 1e6),
    )


class L1Validator:
    """Sender recovery from the signature: type, chain id, low-s."""

    level = Level.L1

    def validate(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        started = time.perf_counter()
        return _result(task, check_l1(bytes(task.tx_raw), batch.chain_id), started)


class L2Validator:
    """L1 plus nonce, balance, intrinsic gas and block gas limit against the provided state."""

    level = Level.L2

    def validate(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult:
        started = time.perf_counter()
        if task.level < Level.L2:
            return _result(task, check_l1(bytes(task.tx_raw), batch.chain_id), started)
        sender = _snapshot(task.sender) if task.HasField("sender") else None
        check = check_l2(bytes(task.tx_raw), batch.chain_id, sender, task.block_gas_limit)
        return _result(task, check, started)


def validator_for(level: Level) -> Validator:
    """The validator an agent runs at ``level`` (L4 keeps its own state; see agent.l4)."""
    if level is Level.L1:
        return L1Validator()
    if level is Level.L2:
        return L2Validator()
    if level is Level.L3:
        from ioswarm.agent.l3 import L3Validator  # noqa: PLC0415 - py-evm loads only for L3 agents

        return L3Validator()
    if level is Level.L4:
        raise NotImplementedError(
            "L4 validation needs a state follower: build it with ioswarm.agent.l4.l4_validator"
        )
    raise NotImplementedError(f"{level.name} validation is not available in this version")
