"""The wire protocol both sides speak: auth metadata names, heartbeat directives, and the
conversions between protobuf messages (:mod:`ioswarm.proto`) and domain objects.

The coordinator and the agent import these from here, so a field is encoded one way only.
Amounts (balances, base fees) travel as big-endian unsigned bytes: :func:`encode_u256` writes
the minimal form (empty for zero); :func:`decode_u256` also reads the 32-byte padded form, which
older coordinators wrote into ``StateDiff.block_context`` and which stored diffs may still hold.

No grpc here: the metadata key names live in :mod:`ioswarm.core.credentials` (pure, so that the
credential check can use them) and are re-exported.
"""

from __future__ import annotations

from enum import StrEnum

from ioswarm.core.credentials import AGENT_ID_KEY, TOKEN_KEY
from ioswarm.core.execshadow import PredictedContext
from ioswarm.core.execution import DEFAULT_FORK, AccountInput, BlockInput
from ioswarm.core.models import EMPTY_CODE_HASH, AccountSnapshot, AccountState
from ioswarm.proto import ioswarm_pb2 as pb

__all__ = [
    "AGENT_ID_KEY",
    "MAX_WIRE_MESSAGE_BYTES",
    "TOKEN_KEY",
    "Directive",
    "account_input",
    "account_inputs",
    "account_state_to_pb",
    "auth_metadata",
    "block_input",
    "context_to_pb",
    "decode_u256",
    "encode_u256",
    "snapshot_from_pb",
    "snapshot_to_pb",
]


MAX_WIRE_MESSAGE_BYTES = 8 * 1024 * 1024
"""Largest message the coordinator sends (a task batch, a state diff) and an agent accepts."""


class Directive(StrEnum):
    """What a ``HeartbeatResponse.directive`` tells the agent to do."""

    CONTINUE = ""
    SHUTDOWN = "shutdown"
    """Leave cleanly and do not reconnect."""
    REREGISTER = "reregister"
    """The coordinator does not know this agent (evicted, restarted): register again."""


def auth_metadata(agent_id: str, token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that authenticates ``agent_id`` with its API token."""
    return ((AGENT_ID_KEY, agent_id), (TOKEN_KEY, token))


# -- amounts ------------------------------------------------------------------------------------


def encode_u256(value: int) -> bytes:
    """Big-endian minimal bytes of a non-negative integer (empty for zero)."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def decode_u256(raw: bytes) -> int:
    """The integer of big-endian unsigned bytes, minimal or left-padded (empty is zero)."""
    return int.from_bytes(raw, "big")


# -- accounts -----------------------------------------------------------------------------------


def snapshot_to_pb(snap: AccountSnapshot) -> pb.AccountSnapshot:
    """An account snapshot as the task carries it."""
    return pb.AccountSnapshot(
        address=snap.address,
        balance=encode_u256(snap.balance),
        nonce=snap.nonce,
        code_hash=snap.code_hash,
    )


def snapshot_from_pb(msg: pb.AccountSnapshot) -> AccountSnapshot:
    """The domain snapshot of a task's account message."""
    return AccountSnapshot(
        address=bytes(msg.address),
        balance=decode_u256(msg.balance),
        nonce=msg.nonce,
        code_hash=bytes(msg.code_hash),
    )


def account_state_to_pb(state: AccountState) -> pb.AccountState:
    """An account with its code and listed storage slots (the L3 state of a task)."""
    return pb.AccountState(
        account=snapshot_to_pb(state.snapshot),
        code=state.code,
        storage=[pb.StorageSlot(key=k, value=v) for k, v in state.storage],
        exists=state.exists,
    )


def account_input(
    address: bytes, snapshot: pb.AccountSnapshot, state: pb.AccountState | None
) -> AccountInput | None:
    """The engine's view of one task account, or None when the task lacks its code.

    An account with code the task does not carry is left out, so that any read of it is
    reported missing rather than executed as an empty account.
    """
    code = bytes(state.code) if state is not None else b""
    code_hash = bytes(snapshot.code_hash)
    if not code and code_hash not in (b"", EMPTY_CODE_HASH):
        return None
    storage = {bytes(s.key): bytes(s.value) for s in state.storage} if state is not None else {}
    exists = state is not None and state.exists
    return AccountInput(
        address=address,
        balance=decode_u256(snapshot.balance),
        nonce=snapshot.nonce,
        code=code,
        storage=storage,
        # Set, the account exists even when empty and its listed slots are zero (it holds
        # storage elsewhere); unset, existence is derived, so an older coordinator's task still
        # means what it meant.
        has_storage=exists and not (snapshot.nonce or decode_u256(snapshot.balance) or code),
        exists=True if exists else None,
    )


def account_inputs(task: pb.TaskPackage) -> dict[bytes, AccountInput]:
    """The accounts a task provides, by address.

    ``task.accounts`` is the L3 state; the L2 sender and receiver snapshots fill in accounts it
    does not list, with no storage (so a slot read of them is missing, never zero).
    """
    accounts: dict[bytes, AccountInput] = {}
    for state in task.accounts:
        address = bytes(state.account.address)
        account = account_input(address, state.account, state)
        if account is not None:
            accounts[address] = account
    for field in ("sender", "receiver"):
        if task.HasField(field):
            snapshot: pb.AccountSnapshot = getattr(task, field)
            address = bytes(snapshot.address)
            if address and address not in accounts:
                account = account_input(address, snapshot, None)
                if account is not None:
                    accounts[address] = account
    return accounts


# -- block context ------------------------------------------------------------------------------


def context_to_pb(
    ctx: PredictedContext, chain_id: int, fork: str, *, absent_accounts_exist: bool = False
) -> pb.BlockContext:
    """A block context as batches and state diffs carry it."""
    return pb.BlockContext(
        absent_accounts_exist=absent_accounts_exist,
        number=ctx.number,
        timestamp=ctx.timestamp,
        gas_limit=ctx.gas_limit,
        base_fee=encode_u256(ctx.base_fee),
        coinbase=ctx.coinbase,
        prev_randao=ctx.prev_randao,
        chain_id=chain_id,
        evm_fork=fork,
        recent_block_hashes=[
            pb.BlockHash(number=n, hash=h) for n, h in sorted(ctx.block_hashes.items())
        ],
        blob_base_fee=encode_u256(ctx.blob_base_fee),
    )


def block_input(context: pb.BlockContext, chain_id: int = 0) -> BlockInput:
    """The engine's view of a batch's block context (``chain_id`` when the context has none)."""
    return BlockInput(
        number=context.number,
        timestamp=context.timestamp,
        gas_limit=context.gas_limit,
        base_fee=decode_u256(context.base_fee),
        coinbase=bytes(context.coinbase),
        prev_randao=bytes(context.prev_randao).rjust(32, b"\x00"),
        chain_id=context.chain_id or chain_id,
        fork=context.evm_fork or DEFAULT_FORK,
        block_hashes={h.number: bytes(h.hash) for h in context.recent_block_hashes},
        # Unset means the coordinator did not say; 1 wei is the protocol minimum, and a
        # BLOBBASEFEE read is reported in context_reads either way.
        blob_base_fee=decode_u256(context.blob_base_fee) or 1,
        absent_accounts_exist=context.absent_accounts_exist,
    )
