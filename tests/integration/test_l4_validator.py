"""L4Validator: the sequence barrier, declines, and execution over lazy LMDB-backed mappings."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

from ioswarm.agent.l4 import STATE_HEIGHT_UNAVAILABLE, L4Validator, StoreAccounts
from ioswarm.agent.l4sync import StateFollower
from ioswarm.core.models import EMPTY_CODE_HASH, Level
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.state.store import ACCOUNT, CODE, STORAGE, StateStore, Write, encode_account
from tests.integration.l4fake import MAP, SyntheticChain, word

pytestmark = pytest.mark.integration

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
SENDER = bytes.fromhex(Account.from_key(KEY).address[2:])
NOBODY = bytes.fromhex("0b0d1e" + "00" * 17)
COUNTER = bytes.fromhex("c0de" + "00" * 18)
COINBASE = bytes.fromhex("c0ffee" + "00" * 17)
CHAIN_ID = 31337
GWEI = 10**9
ETHER = 10**18
# slot0 += 1; also reads the never-written slot 1 (a real zero on a full state)
COUNTER_CODE = bytes.fromhex("600054600101600055" + "60015450" + "00")


def sign(to: bytes, *, nonce: int = 0, value: int = 0, gas: int = 100_000) -> bytes:
    """An EIP-1559 transaction from SENDER."""
    tx: dict[str, Any] = {
        "type": 2,
        "chainId": CHAIN_ID,
        "nonce": nonce,
        "value": value,
        "gas": gas,
        "maxFeePerGas": 10 * GWEI,
        "maxPriorityFeePerGas": GWEI,
        "data": b"",
        "to": to_checksum_address(to),
    }
    return bytes(Account.sign_transaction(tx, KEY).raw_transaction)


def batch(*tasks: pb.TaskPackage) -> pb.TaskBatch:
    return pb.TaskBatch(
        batch_id="b1",
        tasks=list(tasks),
        chain_id=CHAIN_ID,
        block_context=pb.BlockContext(
            number=100,
            timestamp=1_700_000_000,
            gas_limit=30_000_000,
            base_fee=GWEI.to_bytes(8, "big"),
            coinbase=COINBASE,
            chain_id=CHAIN_ID,
            evm_fork="prague",
        ),
    )


def task(raw: bytes, height: int, task_id: int = 1, level: Level = Level.L4) -> pb.TaskPackage:
    return pb.TaskPackage(task_id=task_id, tx_raw=raw, level=level.name, state_height=height)


GENESIS = [
    Write.put(ACCOUNT, SENDER, encode_account(0, 10 * ETHER, EMPTY_CODE_HASH)),
    Write.put(ACCOUNT, COUNTER, encode_account(1, 0, keccak(COUNTER_CODE))),
    Write.put(CODE, keccak(COUNTER_CODE), COUNTER_CODE),
    Write.put(STORAGE, COUNTER + word(0), word(5)),
]


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[SyntheticChain]:
    c = SyntheticChain(tmp_path / "chain")
    c.add_block(GENESIS)
    c.add_block([Write.put(STORAGE, COUNTER + word(0), word(7))])
    yield c
    c.close()


@pytest.fixture
def follower(tmp_path: Path, chain: SyntheticChain) -> Iterator[StateFollower]:
    """A follower at height 1 of ``chain``."""
    f = StateFollower(tmp_path / "agent", map_size=MAP)
    f.apply(next(iter(chain.diffs.range(1, 2))))
    yield f
    f.close()


def test_lazy_accounts_read_store_on_demand(follower: StateFollower) -> None:
    """Accounts, code and slots load when asked; an absent address is a real empty account."""
    store = follower.store
    assert isinstance(store, StateStore)
    with store.view() as view:
        accounts = StoreAccounts(view)
        assert len(accounts) == 0
        counter = accounts[COUNTER]
        assert counter.code == COUNTER_CODE
        assert counter.nonce == 1
        assert counter.storage[word(0)] == word(5)
        assert counter.storage[word(9)] == word(0)
        nobody = accounts[NOBODY]
        assert nobody.is_empty
        assert dict(nobody.storage) == {}
        assert sorted(accounts) == sorted([COUNTER, NOBODY])


def test_damaged_code_reference_is_missing(tmp_path: Path) -> None:
    """An account whose code hash has no Code entry is left out, never run as empty code."""
    with StateStore(tmp_path / "s", map_size=MAP) as store:
        store.apply_diff(1, [Write.put(ACCOUNT, COUNTER, encode_account(1, 0, b"\x01" * 32))])
        with store.view() as view:
            assert StoreAccounts(view).get(COUNTER) is None


def test_executes_on_local_state(follower: StateFollower) -> None:
    """A call at the local height reads storage from LMDB and reports the slot change."""
    result = L4Validator(follower).validate(task(sign(COUNTER), 1), batch())
    assert result.valid, result.reject_reason
    assert not result.declined
    assert result.status == pb.EXEC_SUCCESS
    assert [(c.slot, c.old_value, c.new_value) for c in result.state_changes] == [
        (word(0), word(5), word(6))
    ]


def test_transfer_to_absent_address_is_not_missing_state(follower: StateFollower) -> None:
    """An address the full store lacks is an empty account: the transfer executes."""
    result = L4Validator(follower).validate(task(sign(NOBODY, value=7, gas=21_000), 1), batch())
    assert result.valid, result.reject_reason
    changed = {bytes(c.address): c for c in result.account_changes}
    assert int.from_bytes(changed[NOBODY].balance_after, "big") == 7


def test_wrong_height_is_declined(follower: StateFollower) -> None:
    """A task for a height other than the local one is declined, both behind and ahead."""
    validator = L4Validator(follower)
    for height in (2, 0):
        result = validator.validate(task(sign(COUNTER), height), batch())
        assert result.declined
        assert not result.valid
        assert result.reject_reason == STATE_HEIGHT_UNAVAILABLE
    assert validator.declined_height == 2


def test_not_bootstrapped_is_declined(tmp_path: Path) -> None:
    """Before the store holds a state every L4 task is declined."""
    f = StateFollower(tmp_path / "empty", map_size=MAP)
    f.open()
    try:
        result = L4Validator(f).validate(task(sign(COUNTER), 1), batch())
        assert result.declined
        assert result.reject_reason == STATE_HEIGHT_UNAVAILABLE
    finally:
        f.close()


def test_bad_signature_is_answered_without_barrier(follower: StateFollower) -> None:
    """A transaction that fails L1 is rejected whatever the state height."""
    result = L4Validator(follower).validate(task(b"\x02\x01", 50), batch())
    assert not result.valid
    assert not result.declined


def test_lower_levels_fall_back_to_l3(follower: StateFollower) -> None:
    """An L3 task carries its own state and is answered by the L3 validator."""
    result = L4Validator(follower).validate(
        task(sign(NOBODY, value=1, gas=21_000), 0, level=Level.L3), batch()
    )
    assert result.declined
    assert result.reject_reason == "missing_state"


async def test_barrier_waits_for_the_stream(follower: StateFollower, chain: SyntheticChain) -> None:
    """``ready`` waits while the follower advances, then the task executes at that height."""
    validator = L4Validator(follower, barrier_wait=30.0)
    job = task(sign(COUNTER), 2)
    waiting = asyncio.create_task(validator.ready(job))
    await asyncio.sleep(0)
    assert not waiting.done()
    follower.apply(next(iter(chain.diffs.range(2, 3))))
    await waiting
    result = validator.validate(job, batch())
    assert result.valid
    assert result.state_changes[0].old_value == word(7)


class _StuckState:
    """A LocalState that never advances and counts waits."""

    def __init__(self, store: StateStore | None, height: int) -> None:
        self.store = store
        self.height = height
        self.waits = 0

    async def wait_for_height(self, height: int, within: float) -> bool:
        self.waits += 1
        return False


async def test_barrier_timeout_declines_and_does_not_wait_twice(
    follower: StateFollower,
) -> None:
    """A height that never comes is declined; later tasks of that height do not wait again."""
    stuck = _StuckState(follower.store, follower.height)
    validator = L4Validator(stuck, barrier_wait=0.01)
    b = batch()
    for task_id in (1, 2, 3):
        job = task(sign(COUNTER), 5, task_id=task_id)
        await validator.ready(job)
        result = validator.validate(job, b)
        assert result.declined
        assert result.reject_reason == STATE_HEIGHT_UNAVAILABLE
    assert stuck.waits == 1


async def test_barrier_does_not_wait_when_ahead(follower: StateFollower) -> None:
    """A store already past the task's height declines at once, without waiting."""
    stuck = _StuckState(follower.store, 5)
    validator = L4Validator(stuck)
    job = task(sign(COUNTER), 3)
    await validator.ready(job)
    assert stuck.waits == 0
    assert validator.validate(job, batch()).reject_reason == STATE_HEIGHT_UNAVAILABLE
