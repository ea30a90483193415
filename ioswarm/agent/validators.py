"""The validator protocol and the stateless levels (L1, L2); L3 and L4 live in l3 and l4.

An agent gets its validator from :func:`ioswarm.agent.levels.validator_for`.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

from ioswarm.core.models import Level
from ioswarm.core.validation import Check, check_l1, check_l2
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import snapshot_from_pb


class Validator(Protocol):
    """Validates one task of a batch; never raises for a bad transaction, it rejects it."""

    level: Level

    def validate(self, task: pb.TaskPackage, batch: pb.TaskBatch) -> pb.TaskResult: ...


@runtime_checkable
class GatedValidator(Protocol):
    """A validator with a readiness hook the runtime awaits before each ``validate`` (L4)."""

    async def ready(self, task: pb.TaskPackage) -> None: ...


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
        sender = snapshot_from_pb(task.sender) if task.HasField("sender") else None
        check = check_l2(bytes(task.tx_raw), batch.chain_id, sender, task.block_gas_limit)
        return _result(task, check, started)
