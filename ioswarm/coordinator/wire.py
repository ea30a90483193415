"""Coordinator-side messages: tasks out, verdicts in (shared conversions: ioswarm.protocol)."""

from __future__ import annotations

from collections.abc import Callable

from ioswarm.core.execshadow import ExecEffects, Log
from ioswarm.core.models import Level, Task, Verdict
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import account_state_to_pb, decode_u256, snapshot_to_pb


def task_to_pb(task: Task) -> pb.TaskPackage:
    """The task as it travels to an agent."""
    return add_task_pb(pb.TaskPackage, task)


def add_task_pb(add: Callable[..., pb.TaskPackage], task: Task) -> pb.TaskPackage:
    """Build the task's message with ``add`` (a batch's ``tasks.add``, which builds it in
    place, or the message class itself) and return it."""
    msg = add(
        task_id=task.task_id,
        tx_raw=task.raw_tx,
        level=task.level.name,
        block_height=task.block_height,
        tx_hash=task.tx_hash,
        block_gas_limit=task.block_gas_limit,
        state_height=task.state_height,
    )
    if task.sender_state is not None:
        # Without its address: the task never names the sender; recovering it is the agent's
        # L1 evidence of work.
        sender = snapshot_to_pb(task.sender_state)
        sender.ClearField("address")
        msg.sender.CopyFrom(sender)
    if task.receiver_state is not None:
        msg.receiver.CopyFrom(snapshot_to_pb(task.receiver_state))
    if task.accounts:
        msg.accounts.extend(account_state_to_pb(a) for a in task.accounts)
    return msg


def _word(b: bytes) -> bytes:
    return bytes(b).rjust(32, b"\x00")[-32:]


def effects_from_pb(msg: pb.TaskResult, coinbase: bytes) -> ExecEffects:
    """An agent's execution report as effects comparable with the chain's (see execshadow)."""
    storage = {
        (bytes(c.address), _word(c.slot)): _word(c.new_value)
        for c in msg.state_changes
        if _word(c.old_value) != _word(c.new_value)
    }
    balances: dict[bytes, int] = {}
    nonces: dict[bytes, int] = {}
    code: dict[bytes, bytes] = {}
    deleted: set[bytes] = set()
    coinbase_fee = 0
    for a in msg.account_changes:
        addr = bytes(a.address)
        before = decode_u256(a.balance_before)
        after = decode_u256(a.balance_after)
        if addr == coinbase:
            coinbase_fee = after - before
        elif before != after:
            balances[addr] = after - before
        if a.nonce_before != a.nonce_after:
            nonces[addr] = a.nonce_after
        if a.created_code or a.code_cleared:  # b"": the account's delegation was cleared
            code[addr] = bytes(a.created_code)
        if a.deleted and addr != coinbase:
            deleted.add(addr)
    return ExecEffects(
        success=msg.status == pb.EXEC_SUCCESS,
        gas_used=msg.gas_used,
        logs=tuple(
            Log(bytes(lg.address), tuple(bytes(t) for t in lg.topics), bytes(lg.data))
            for lg in msg.logs
        ),
        storage=storage,
        balances=balances,
        nonces=nonces,
        code=code,
        coinbase_fee=coinbase_fee,
        deleted=frozenset(deleted),
    )


def verdict_from_pb(
    msg: pb.TaskResult, level: Level, coinbase: bytes = b"", sender_waived: bool = False
) -> Verdict:
    """An agent's answer as a verdict; ``sender_waived`` when the coordinator received it in
    the reference JSON codec (see :mod:`ioswarm.core.evidence`)."""
    executed = level >= Level.L3 and msg.valid and msg.status != pb.EXEC_STATUS_UNSPECIFIED
    return Verdict(
        task_id=msg.task_id,
        valid=msg.valid,
        reject_reason=msg.reject_reason,
        sender=bytes(msg.sender),
        gas_estimate=msg.gas_estimate,
        latency_us=msg.latency_us,
        effects=effects_from_pb(msg, coinbase) if executed else None,
        context_reads=frozenset(msg.context_reads),
        declined=msg.declined,
        detail=msg.exec_error[:200],
        sender_waived=sender_waived and level < Level.L3,
    )


def level_from_pb(value: int) -> Level | None:
    try:
        return Level(value)
    except ValueError:
        return None
