"""The shared wire conversions (ioswarm.protocol): one encoding, lenient decoding."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ioswarm.core.execshadow import PredictedContext
from ioswarm.core.models import EMPTY_CODE_HASH, AccountSnapshot, AccountState
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import (
    AGENT_ID_KEY,
    TOKEN_KEY,
    Directive,
    account_inputs,
    account_state_to_pb,
    auth_metadata,
    block_input,
    context_to_pb,
    decode_u256,
    encode_u256,
    snapshot_from_pb,
    snapshot_to_pb,
)

U256 = st.integers(min_value=0, max_value=(1 << 256) - 1)
ADDRESS = b"\x11" * 20
CODE = b"\x60\x00"


@given(U256)
def test_u256_round_trips_in_minimal_form(value: int) -> None:
    """encode_u256 writes the minimal big-endian form, which decode_u256 reads back."""
    raw = encode_u256(value)
    assert decode_u256(raw) == value
    assert raw == b"" if value == 0 else raw[0] != 0


@given(U256)
def test_u256_decodes_the_padded_form(value: int) -> None:
    """A 32-byte left-padded amount (as older stored diffs hold) decodes to the same integer."""
    assert decode_u256(value.to_bytes(32, "big")) == value


def _context(base_fee: int = 7, blob_base_fee: int = 3) -> PredictedContext:
    return PredictedContext(
        number=12,
        timestamp=1_700_000_000,
        gas_limit=30_000_000,
        base_fee=base_fee,
        coinbase=b"\xcc" * 20,
        prev_randao=b"\x05" * 32,
        blob_base_fee=blob_base_fee,
        block_hashes={11: b"\xab" * 32, 10: b"\xba" * 32},
    )


@given(U256, U256)
def test_block_context_round_trips(base_fee: int, blob_base_fee: int) -> None:
    """A predicted context encoded for the wire reads back as the same block (blob fee >= 1)."""
    ctx = _context(base_fee, blob_base_fee)
    block = block_input(context_to_pb(ctx, chain_id=4690, fork="cancun"))
    assert (block.number, block.timestamp, block.gas_limit) == (12, 1_700_000_000, 30_000_000)
    assert (block.base_fee, block.blob_base_fee) == (base_fee, blob_base_fee or 1)
    assert (block.coinbase, block.prev_randao) == (ctx.coinbase, ctx.prev_randao)
    assert (block.chain_id, block.fork) == (4690, "cancun")
    assert dict(block.block_hashes) == dict(ctx.block_hashes)


def test_block_context_fees_are_minimal_on_the_wire() -> None:
    """Base fee and blob base fee are written in the minimal form, like every amount."""
    msg = context_to_pb(_context(base_fee=0x0102, blob_base_fee=0), chain_id=1, fork="cancun")
    assert (msg.base_fee, msg.blob_base_fee) == (b"\x01\x02", b"")


def test_block_context_padded_fees_still_decode() -> None:
    """A stored diff whose context holds 32-byte padded fees decodes to the same fees."""
    msg = context_to_pb(_context(), chain_id=1, fork="cancun")
    msg.base_fee = (0x0102).to_bytes(32, "big")
    msg.blob_base_fee = (9).to_bytes(32, "big")
    block = block_input(msg)
    assert (block.base_fee, block.blob_base_fee) == (0x0102, 9)


@given(U256, st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_snapshot_round_trips(balance: int, nonce: int) -> None:
    """An account snapshot survives encoding and decoding unchanged."""
    snap = AccountSnapshot(address=ADDRESS, balance=balance, nonce=nonce, code_hash=b"\x22" * 32)
    assert snapshot_from_pb(snapshot_to_pb(snap)) == snap


def test_account_state_becomes_engine_input() -> None:
    """A task's account state reaches the engine with its balance, nonce, code and slots."""
    slot, value = b"\x00" * 31 + b"\x01", b"\x00" * 31 + b"\x2a"
    state = AccountState(
        AccountSnapshot(ADDRESS, balance=10**18, nonce=4, code_hash=b"\x33" * 32),
        code=CODE,
        storage=((slot, value),),
    )
    task = pb.TaskPackage(accounts=[account_state_to_pb(state)])
    account = account_inputs(task)[ADDRESS]
    assert (account.balance, account.nonce, account.code) == (10**18, 4, CODE)
    assert dict(account.storage) == {slot: value}


def test_account_with_code_the_task_lacks_is_left_out() -> None:
    """A snapshot naming code the task does not carry is no engine input (reads go missing)."""
    other = b"\x44" * 20
    task = pb.TaskPackage(
        receiver=snapshot_to_pb(AccountSnapshot(ADDRESS, 1, 0, b"\x33" * 32)),
        sender=snapshot_to_pb(AccountSnapshot(other, 5, 1, EMPTY_CODE_HASH)),
    )
    accounts = account_inputs(task)
    assert ADDRESS not in accounts
    assert (accounts[other].balance, dict(accounts[other].storage)) == (5, {})


def test_auth_metadata_and_directives_name_the_wire_values() -> None:
    """The metadata keys and heartbeat directives are the strings the protocol defines."""
    assert (AGENT_ID_KEY, TOKEN_KEY) == ("x-ioswarm-agent-id", "x-ioswarm-token")
    assert auth_metadata("a-1", "tok") == ((AGENT_ID_KEY, "a-1"), (TOKEN_KEY, "tok"))
    assert [d.value for d in Directive] == ["", "shutdown", "reregister"]
