"""Canary tasks: their truth, the honest checks that agree with it, and how answers are judged."""

from __future__ import annotations

import random
from typing import Any

import pytest
from eth_account import Account

from ioswarm.agent.l3 import L3Validator
from ioswarm.coordinator.canaries import Canary, CanaryMint
from ioswarm.coordinator.wire import task_to_pb
from ioswarm.core.canary import (
    FOREIGN_KEY,
    HIGH_S,
    INSUFFICIENT_BALANCE,
    INTRINSIC_GAS_TOO_LOW,
    KINDS,
    NONCE_TOO_HIGH,
    NONCE_TOO_LOW,
    VALID,
    WRONG_CHAIN_ID,
    CanaryTruth,
    judge_canary,
)
from ioswarm.core.execshadow import PredictedContext
from ioswarm.core.models import AccountSnapshot, AccountState, Level, Task, Verdict
from ioswarm.core.tx import SECP256K1_N, decode_tx, floor_data_gas, intrinsic_gas
from ioswarm.core.validation import Check, check_l1, check_l2
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import context_to_pb

CHAIN_ID = 1337
SEED = 7
GWEI = 10**9
BLOCK_GAS_LIMIT = 30_000_000
BASE_FEE = 7
TEMPLATE_KEY = Account.from_key("0x" + "11" * 32)
TEMPLATE_SENDER = bytes.fromhex(TEMPLATE_KEY.address[2:])
TOKEN = bytes.fromhex("22" * 20)
COINBASE = bytes.fromhex("c0" * 20)
TRANSFER = bytes.fromhex("a9059cbb") + bytes(12) + b"\x44" * 20 + (10**6).to_bytes(32, "big")
# Key 0 of CanaryMint(CHAIN_ID, random.Random(7)): the first rng.randrange(1, n).
FIRST_ADDRESS = bytes.fromhex("2e6ee032ddfdb8a1a02d8a21873e941e2a6698fa")

TRUTH = {
    FOREIGN_KEY: (True, ""),
    VALID: (True, ""),
    HIGH_S: (False, "high_s"),
    WRONG_CHAIN_ID: (False, "wrong_chain_id"),
    NONCE_TOO_LOW: (False, "nonce_too_low"),
    NONCE_TOO_HIGH: (False, "nonce_too_high"),
    INSUFFICIENT_BALANCE: (False, "insufficient_balance"),
    INTRINSIC_GAS_TOO_LOW: (False, "intrinsic_gas_too_high"),
}
_UNRECOVERED = (HIGH_S, WRONG_CHAIN_ID)


def _signed(**fields: Any) -> bytes:
    fields.setdefault("chainId", CHAIN_ID)
    raw: bytes = bytes(TEMPLATE_KEY.sign_transaction(fields).raw_transaction)
    return raw


def _raw(tx_type: str) -> bytes:
    common: dict[str, Any] = {"nonce": 412, "gas": 90_000, "to": "0x" + TOKEN.hex()}
    if tx_type == "legacy":
        return _signed(gasPrice=30 * GWEI, value=0, data=TRANSFER, **common)
    if tx_type == "2930":
        access = [{"address": "0x" + TOKEN.hex(), "storageKeys": ["0x" + "00" * 31 + "01"]}]
        return _signed(type=1, gasPrice=30 * GWEI, value=0, data=TRANSFER, accessList=access,
                       **common)  # fmt: skip
    fees = {"maxFeePerGas": 40 * GWEI, "maxPriorityFeePerGas": 2 * GWEI}
    if tx_type == "1559":
        return _signed(type=2, value=10**15, data=b"", **fees, **common)
    if tx_type == "4844":
        return _signed(type=3, value=0, data=b"", accessList=[], maxFeePerBlobGas=3 * GWEI,
                       blobVersionedHashes=[b"\x01" + b"\x33" * 31], **fees, **common)  # fmt: skip
    assert tx_type == "7702"
    auth = TEMPLATE_KEY.sign_authorization({"chainId": CHAIN_ID, "address": TOKEN, "nonce": 413})
    return _signed(type=4, value=0, data=b"", accessList=[], authorizationList=[auth], **fees,
                   **common)  # fmt: skip


TX_TYPES = ("legacy", "2930", "1559", "4844", "7702")


def template(tx_type: str, level: Level, gas_limit: int = BLOCK_GAS_LIMIT) -> Task:
    """A real-looking task at ``level`` for a tx the template key signed."""
    raw = _raw(tx_type)
    tx = decode_tx(raw)
    sender = AccountSnapshot(address=TEMPLATE_SENDER, balance=3 * 10**18, nonce=tx.nonce)
    receiver = AccountSnapshot(address=TOKEN, balance=0, nonce=1)
    return Task(
        task_id=1,
        tx_hash=tx.tx_hash,
        raw_tx=raw,
        level=level,
        sender=TEMPLATE_SENDER,
        nonce=tx.nonce,
        block_height=100,
        block_gas_limit=gas_limit,
        sender_state=sender if level >= Level.L2 else None,
        receiver_state=receiver if level >= Level.L2 else None,
        max_cost=tx.value + tx.gas_limit * tx.max_fee,
        accounts=(AccountState(sender), AccountState(receiver)) if level == Level.L3 else (),
        read_set=frozenset({(TOKEN, b"balance")}) if level >= Level.L3 else frozenset(),
        state_height=100 if level == Level.L4 else 0,
    )


def mint() -> CanaryMint:
    return CanaryMint(CHAIN_ID, random.Random(SEED))


def expected_addresses() -> list[bytes]:
    """The mint's throwaway addresses, derived independently with eth_account."""
    rng = random.Random(SEED)
    keys = [rng.randrange(1, SECP256K1_N) for _ in range(16)]
    return [bytes.fromhex(Account.from_key(k.to_bytes(32, "big")).address[2:]) for k in keys]


def honest_check(canary: Canary) -> Check:
    """What an honest agent's L1/L2 rules answer, from what the task carries on the wire."""
    task = canary.task
    if task.level == Level.L1:
        return check_l1(task.raw_tx, CHAIN_ID)
    if task.level == Level.L3:
        (state,) = [a.snapshot for a in task.accounts if a.snapshot.address == task.sender]
    elif task.level == Level.L4:
        state = AccountSnapshot(address=b"", balance=0, nonce=0)  # a fresh key's chain state
    else:
        assert task.sender_state is not None
        state = task.sender_state
    wire = AccountSnapshot(address=b"", balance=state.balance, nonce=state.nonce)
    return check_l2(task.raw_tx, CHAIN_ID, wire, task.block_gas_limit)


def batch_of(*tasks: pb.TaskPackage) -> pb.TaskBatch:
    context = PredictedContext(
        number=101,
        timestamp=1_700_000_012,
        gas_limit=BLOCK_GAS_LIMIT,
        base_fee=BASE_FEE,
        coinbase=COINBASE,
        prev_randao=b"\x05" * 32,
        blob_base_fee=1,
    )
    return pb.TaskBatch(
        batch_id="b1",
        tasks=tasks,
        chain_id=CHAIN_ID,
        block_context=context_to_pb(context, CHAIN_ID, "prague"),
    )


CASES = [(level, kind, tx_type) for level in Level for kind in KINDS[level] for tx_type in TX_TYPES]


@pytest.mark.parametrize(("level", "kind", "tx_type"), CASES)
def test_truth_is_intended_and_honest_checks_agree(level: Level, kind: str, tx_type: str) -> None:
    """Each kind at each level has its intended truth, and the honest L1/L2 rules pass it."""
    canary = mint().make(template(tx_type, level), task_id=900, kind=kind)
    assert canary is not None
    valid, reason = TRUTH[kind]
    sender = b"" if kind in _UNRECOVERED else canary.task.sender
    assert canary.kind == kind
    assert canary.truth == CanaryTruth(valid=valid, reject_reason=reason, sender=sender)
    assert canary.task.sender in expected_addresses()
    check = honest_check(canary)
    assert (check.valid, check.reject_reason, check.sender) == (valid, reason, sender)
    assert judge_canary(canary.truth, level, check.verdict(900)) == ""


def test_throwaway_addresses_are_the_rngs_keys() -> None:
    """The mint's keys are the seeded rng's draws, so a test can pin a canary's sender."""
    m = mint()
    assert list(m.addresses) == expected_addresses()
    assert m.addresses[0] == FIRST_ADDRESS
    assert len(set(m.addresses)) == 16
    canary = m.make(template("1559", Level.L1), task_id=5, kind=FOREIGN_KEY)
    assert canary is not None
    assert canary.truth.sender in m.addresses
    assert canary.truth.sender != TEMPLATE_SENDER


@pytest.mark.parametrize("level", list(Level))
def test_lazy_valid_answer_fails_every_invalid_kind(level: Level) -> None:
    """Answering valid (even with the right sender) is judged wrong on every invalid kind."""
    m = mint()
    invalid = [k for k in KINDS[level] if not TRUTH[k][0]]
    assert invalid
    for kind in invalid:
        canary = m.make(template("1559", level), task_id=7, kind=kind)
        assert canary is not None
        lazy = Verdict(task_id=7, valid=True, sender=canary.truth.sender)
        assert judge_canary(canary.truth, level, lazy) == "valid"


@pytest.mark.parametrize("level", [Level.L1, Level.L2])
def test_foreign_key_needs_the_recovered_sender(level: Level) -> None:
    """On a foreign-key canary, a valid answer with another or no sender is judged wrong."""
    canary = mint().make(template("legacy", level), task_id=3, kind=FOREIGN_KEY)
    assert canary is not None
    truth = canary.truth
    assert judge_canary(truth, level, Verdict(3, valid=True, sender=TEMPLATE_SENDER)) == "sender"
    assert judge_canary(truth, level, Verdict(3, valid=True)) == "sender"
    assert judge_canary(truth, level, Verdict(3, valid=True, sender=truth.sender)) == ""


@pytest.mark.parametrize("level", list(Level))
def test_judge_reason_exact_at_every_level(level: Level) -> None:
    """Every level names a rule the same way, so a reject reason must be exact at each."""
    truth = CanaryTruth(valid=False, reject_reason="nonce_too_low", sender=FIRST_ADDRESS)
    right = Verdict(1, valid=False, reject_reason="nonce_too_low", sender=FIRST_ADDRESS)
    assert judge_canary(truth, level, right) == ""
    for wrong in ("nonce_too_high", "nonce_mismatch", "invalid_tx:nonce_too_low"):
        answer = Verdict(1, valid=False, reject_reason=wrong, sender=FIRST_ADDRESS)
        assert judge_canary(truth, level, answer) == "reject_reason"
    no_sender = Verdict(1, valid=False, reject_reason="nonce_too_low")
    assert judge_canary(truth, level, no_sender) == "sender"


def test_judge_ignores_sender_when_the_signature_does_not_recover() -> None:
    """A high-s canary has no sender, so any sender in the answer is accepted."""
    truth = CanaryTruth(valid=False, reject_reason="high_s", sender=b"")
    answer = Verdict(1, valid=False, reject_reason="high_s", sender=TEMPLATE_SENDER)
    assert judge_canary(truth, Level.L1, answer) == ""
    assert judge_canary(truth, Level.L1, Verdict(1, valid=False, reject_reason="bad_sig")) == (
        "reject_reason"
    )


@pytest.mark.parametrize(("level", "kind", "tx_type"), CASES)
def test_wire_shape_matches_template(level: Level, kind: str, tx_type: str) -> None:
    """On the wire a canary has its template's tx type, recipient, data size, level and state."""
    tpl = template(tx_type, level)
    canary = mint().make(tpl, task_id=11, kind=kind)
    assert canary is not None
    ours, theirs = task_to_pb(canary.task), task_to_pb(tpl)
    mine, real = decode_tx(ours.tx_raw), decode_tx(theirs.tx_raw)
    assert mine.tx_type == real.tx_type and ours.tx_raw[0] == theirs.tx_raw[0]
    assert mine.to == real.to and len(mine.data) == len(real.data)
    assert mine.access_list == real.access_list
    assert mine.blob_versioned_hashes == real.blob_versioned_hashes
    assert mine.authorization_list == real.authorization_list
    assert (mine.value, mine.max_fee) == (real.value, real.max_fee)
    assert ours.level == theirs.level
    assert ours.HasField("sender") == theirs.HasField("sender") == (level >= Level.L2)
    assert bytes(ours.sender.address) == b""  # the wire never names the sender
    assert ours.receiver == theirs.receiver
    assert (ours.block_height, ours.block_gas_limit) == (
        theirs.block_height,
        theirs.block_gas_limit,
    )
    assert ours.state_height == theirs.state_height
    assert len(ours.accounts) == len(theirs.accounts)
    assert ours.task_id == 11 and bytes(ours.tx_hash) == mine.tx_hash != real.tx_hash
    if kind != INTRINSIC_GAS_TOO_LOW:
        assert mine.gas_limit == real.gas_limit


def test_canaries_differ_and_their_state_varies() -> None:
    """Many canaries have distinct hashes, and their fabricated sender state varies."""
    m = mint()
    hashes, nonces, balances = set(), set(), set()
    for i in range(120):
        tpl = template(TX_TYPES[i % len(TX_TYPES)], Level.L2)
        canary = m.make(tpl, task_id=i, kind=VALID if i % 2 else NONCE_TOO_HIGH)
        assert canary is not None
        assert canary.task.tx_hash == decode_tx(canary.task.raw_tx).tx_hash
        hashes.add(canary.task.tx_hash)
        assert canary.task.sender_state is not None
        nonces.add(canary.task.sender_state.nonce)
        balances.add(canary.task.sender_state.balance)
        # Plausible: around the template sender's nonce and balance.
        assert 0 <= canary.task.sender_state.nonce <= 2 * tpl.nonce + 30
        assert canary.task.sender_state.balance < 10 * 3 * 10**18
    assert len(hashes) == 120
    assert len(nonces) > 30 and len(balances) > 30


def test_same_draws_cannot_repeat_a_tx() -> None:
    """A mint with one key never hands out the same tx twice, even for a nonce-0 L4 kind."""
    m = CanaryMint(CHAIN_ID, random.Random(SEED), keys=1)
    tpl = template("1559", Level.L4)
    made = [m.make(tpl, task_id=i, kind=INSUFFICIENT_BALANCE) for i in range(3)]
    assert made[0] is not None
    # Nonce 0, the same key and fields: the second identical tx is refused.
    assert made[1] is None and made[2] is None


def test_kind_none_draws_uniformly_from_the_levels_kinds() -> None:
    """With no kind asked, every kind of the level is drawn and no other."""
    m = mint()
    for level in Level:
        drawn = set()
        for i in range(200):
            canary = m.make(template("1559", level), task_id=i)
            if canary is not None:
                drawn.add(canary.kind)
        assert drawn == set(KINDS[level])


def test_l2_fabricated_state_pins_the_rule() -> None:
    """Insufficient balance is one wei short of the full cost, blob gas included."""
    m = mint()
    for tx_type in ("1559", "4844"):
        canary = m.make(template(tx_type, Level.L2), task_id=1, kind=INSUFFICIENT_BALANCE)
        assert canary is not None
        tx = decode_tx(canary.task.raw_tx)
        blob = tx.blob_gas * (tx.max_fee_per_blob_gas or 0)
        assert canary.task.sender_state is not None
        assert canary.task.sender_state.balance == tx.value + tx.gas_limit * tx.max_fee + blob - 1
        assert canary.task.sender_state.nonce == tx.nonce == canary.task.nonce
        assert canary.task.max_cost == tx.value + tx.gas_limit * tx.max_fee
    low = m.make(template("2930", Level.L2), task_id=2, kind=INTRINSIC_GAS_TOO_LOW)
    assert low is not None
    tx = decode_tx(low.task.raw_tx)
    assert tx.gas_limit < max(intrinsic_gas(tx), floor_data_gas(tx))
    too_low = m.make(template("legacy", Level.L2), task_id=3, kind=NONCE_TOO_LOW)
    assert too_low is not None and too_low.task.sender_state is not None
    assert too_low.task.sender_state.nonce > too_low.task.nonce


def test_l3_and_l4_task_fields() -> None:
    """L3 carries the canary sender's state in place of the template's; L4 the empty state."""
    m = mint()
    tpl = template("1559", Level.L3)
    l3 = m.make(tpl, task_id=4, kind=NONCE_TOO_HIGH)
    assert l3 is not None
    addresses = [a.snapshot.address for a in l3.task.accounts]
    assert addresses == [l3.task.sender, TOKEN]
    assert l3.task.accounts[0].snapshot == l3.task.sender_state
    assert l3.task.read_set == frozenset() and l3.task.state_height == 0
    assert l3.task.receiver_state == tpl.receiver_state
    l4 = m.make(template("1559", Level.L4), task_id=5, kind=NONCE_TOO_HIGH)
    assert l4 is not None
    assert l4.task.sender_state == AccountSnapshot(l4.task.sender, balance=0, nonce=0)
    assert l4.task.nonce >= 1 and l4.task.accounts == () and l4.task.state_height == 100


def test_impossible_variants_give_none() -> None:
    """A kind a template cannot give yields None rather than a canary with a wrong truth."""
    m = mint()
    pre155 = Account.from_key("0x" + "11" * 32).sign_transaction(
        {"nonce": 1, "gasPrice": GWEI, "gas": 21_000, "to": "0x" + TOKEN.hex(), "value": 1}
    )
    tpl = template("legacy", Level.L1)
    old = Task(**{**{f: getattr(tpl, f) for f in tpl.__slots__}, "raw_tx": pre155.raw_transaction})
    assert m.make(old, task_id=1, kind=WRONG_CHAIN_ID) is None
    assert m.make(old, task_id=1, kind=FOREIGN_KEY) is not None
    assert m.make(template("1559", Level.L3), task_id=1, kind=VALID) is None
    assert m.make(template("1559", Level.L1), task_id=1, kind=NONCE_TOO_LOW) is None
    # Executing agents reject a fee cap below the base fee first.
    assert m.make(template("1559", Level.L3), 1, NONCE_TOO_LOW, base_fee=41 * GWEI) is None
    assert m.make(template("1559", Level.L3), 1, NONCE_TOO_LOW, base_fee=40 * GWEI) is not None
    bad = Task(**{**{f: getattr(tpl, f) for f in tpl.__slots__}, "raw_tx": b"\x05\xc0"})
    assert m.make(bad, task_id=1, kind=HIGH_S) is None


def test_mint_drops_a_canary_its_honest_check_disagrees_with() -> None:
    """A template over the block gas limit cannot give a valid canary: the check says so."""
    m = mint()
    over = template("1559", Level.L2, gas_limit=50_000)  # the tx asks for 90 000
    assert m.make(over, task_id=1, kind=VALID) is None
    assert m.make(over, task_id=1, kind=FOREIGN_KEY) is None
    high_s = m.make(over, task_id=1, kind=HIGH_S)  # L1 fails first: still exact
    assert high_s is not None and high_s.truth.reject_reason == "high_s"


L3_CASES = [(kind, tx_type) for kind in KINDS[Level.L3] for tx_type in TX_TYPES]


@pytest.mark.parametrize(("kind", "tx_type"), L3_CASES)
def test_honest_l3_agent_passes_every_l3_canary(kind: str, tx_type: str) -> None:
    """The real L3 validator, fed the canary over the wire, answers as the truth says."""
    canary = mint().make(template(tx_type, Level.L3), task_id=21, kind=kind, base_fee=BASE_FEE)
    assert canary is not None
    package = task_to_pb(canary.task)
    result = L3Validator().validate(package, batch_of(package))
    verdict = Verdict(
        task_id=result.task_id,
        valid=result.valid,
        reject_reason=result.reject_reason,
        sender=bytes(result.sender),
    )
    assert not result.declined
    assert judge_canary(canary.truth, Level.L3, verdict) == "", result
    assert Verdict(21, valid=True, sender=canary.truth.sender) != verdict


def test_blob_network_form_keeps_its_sidecar() -> None:
    """A blob template in the network form gives a canary in the network form, same sidecar."""
    import rlp

    tpl = template("4844", Level.L2)
    body = rlp.decode(tpl.raw_tx[1:])
    sidecar = [[b"\x00" * 64], [b"\x11" * 48], [b"\x22" * 48]]
    wrapped = b"\x03" + rlp.encode([body, *sidecar])
    tpl = Task(**{**{f: getattr(tpl, f) for f in tpl.__slots__}, "raw_tx": wrapped})
    canary = mint().make(tpl, task_id=8, kind=NONCE_TOO_LOW)
    assert canary is not None
    outer = rlp.decode(canary.task.raw_tx[1:])
    assert isinstance(outer[0], list) and outer[1:] == sidecar
    tx = decode_tx(canary.task.raw_tx)
    assert canary.task.tx_hash == tx.tx_hash  # the hash of the block form, as nodes name it
    assert honest_check(canary).reject_reason == "nonce_too_low"
