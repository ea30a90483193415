"""Conversions between domain models and protobuf messages, coordinator side."""

from __future__ import annotations

from ioswarm.core.models import AccountSnapshot, Level, Task, Verdict
from ioswarm.proto import ioswarm_pb2 as pb


def u256(value: int) -> bytes:
    """Big-endian minimal bytes of a non-negative integer (empty for zero)."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def snapshot_to_pb(snap: AccountSnapshot) -> pb.AccountSnapshot:
    return pb.AccountSnapshot(
        address=snap.address, balance=u256(snap.balance), nonce=snap.nonce, code_hash=snap.code_hash
    )


def snapshot_from_pb(msg: pb.AccountSnapshot) -> AccountSnapshot:
    return AccountSnapshot(
        address=bytes(msg.address),
        balance=int.from_bytes(msg.balance, "big"),
        nonce=msg.nonce,
        code_hash=bytes(msg.code_hash),
    )


def task_to_pb(task: Task) -> pb.TaskPackage:
    msg = pb.TaskPackage(
        task_id=task.task_id,
        tx_raw=task.raw_tx,
        level=task.level.name,
        block_height=task.block_height,
        tx_hash=task.tx_hash,
        block_gas_limit=task.block_gas_limit,
    )
    if task.sender_state is not None:
        msg.sender.CopyFrom(snapshot_to_pb(task.sender_state))
    if task.receiver_state is not None:
        msg.receiver.CopyFrom(snapshot_to_pb(task.receiver_state))
    return msg


def verdict_from_pb(msg: pb.TaskResult) -> Verdict:
    return Verdict(
        task_id=msg.task_id,
        valid=msg.valid,
        reject_reason=msg.reject_reason,
        sender=bytes(msg.sender),
        gas_estimate=msg.gas_estimate,
        latency_us=msg.latency_us,
    )


def level_from_pb(value: int) -> Level | None:
    try:
        return Level(value)
    except ValueError:
        return None
