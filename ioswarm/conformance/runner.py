"""Run one state-test case through the path an executing agent takes, and judge it.

The case becomes a real L3 :class:`~ioswarm.proto.ioswarm_pb2.TaskPackage` and
:class:`~ioswarm.proto.ioswarm_pb2.TaskBatch` (signed transaction, block context on the wire)
answered by the agents' own :class:`~ioswarm.agent.executing.ExecutingValidator`: L1 decode and
sender recovery, the shared L2 rules in the engine's precheck, then py-evm. Only the state
source differs from an agent's: the whole pre-state of the test, where an address it does not
list is absent (like an L4 agent's own store). The reported changes, as they travel on the
wire, are applied to the pre-state and the resulting state root and logs hash are compared with
the fixture's. A case that expects an exception must be rejected with a matching reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Final, Literal

from ioswarm.agent.evm import EvmEngine
from ioswarm.agent.executing import ExecutingValidator, ExecutionState, Unavailable
from ioswarm.agent.validators import L2Validator
from ioswarm.conformance.fixtures import StateCase
from ioswarm.conformance.stateroot import PostAccount, logs_hash, state_root
from ioswarm.core.execshadow import PredictedContext
from ioswarm.core.execution import AccountInput
from ioswarm.core.hashing import keccak256
from ioswarm.core.models import Level
from ioswarm.core.rules import BAD_FIELD_PREFIX, Reject
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import context_to_pb, decode_u256

__all__ = [
    "EXPECTED_REASONS",
    "CaseOutcome",
    "blob_base_fee",
    "post_state",
    "reason_matches",
    "run_case",
]

Verdict = Literal["pass", "fail"]

_ZERO_WORD: Final = b"\x00" * 32
_BLOB_FRACTION: Final = {"Cancun": 3_338_477, "Prague": 5_007_716}  # EIP-4844, EIP-7691
_BLOCKHASH_WINDOW: Final = 256

# Fixture exception name -> the reject reasons (exact, or a "prefix*") that name it.
EXPECTED_REASONS: Final[Mapping[str, tuple[str, ...]]] = {
    "INTRINSIC_GAS_TOO_LOW": (Reject.INTRINSIC_GAS_TOO_HIGH,),
    "INSUFFICIENT_ACCOUNT_FUNDS": (Reject.INSUFFICIENT_BALANCE,),
    "GASLIMIT_PRICE_PRODUCT_OVERFLOW": (Reject.INSUFFICIENT_BALANCE,),
    "TYPE_3_TX_INVALID_BLOB_VERSIONED_HASH": (BAD_FIELD_PREFIX + "blob_versioned_hashes",),
    "TYPE_3_TX_ZERO_BLOBS": (BAD_FIELD_PREFIX + "blob_versioned_hashes",),
    "TYPE_3_TX_BLOB_COUNT_EXCEEDED": (Reject.TOO_MANY_BLOBS,),
    "TYPE_3_TX_CONTRACT_CREATION": (BAD_FIELD_PREFIX + "to",),
    "TYPE_4_TX_CONTRACT_CREATION": (BAD_FIELD_PREFIX + "to",),
    "SENDER_NOT_EOA": (Reject.SENDER_NOT_EOA,),
    "INSUFFICIENT_MAX_FEE_PER_GAS": (Reject.FEE_CAP_BELOW_BASE_FEE,),
    "INSUFFICIENT_MAX_FEE_PER_BLOB_GAS": (Reject.BLOB_FEE_CAP_BELOW_BASE_FEE,),
    "INITCODE_SIZE_EXCEEDED": (Reject.INITCODE_TOO_LARGE,),
    "NONCE_IS_MAX": (Reject.NONCE_MAX,),
    "GAS_ALLOWANCE_EXCEEDED": (Reject.GAS_LIMIT_EXCEEDS_BLOCK,),
    "PRIORITY_GREATER_THAN_MAX_FEE_PER_GAS": (Reject.FEE_CAP_BELOW_TIP,),
    "RLP_INVALID_VALUE": (Reject.MALFORMED_RLP, BAD_FIELD_PREFIX + "*"),
}


@dataclass(frozen=True, slots=True)
class CaseOutcome:
    """The verdict on one case; ``detail`` says what differed (empty on a pass)."""

    case_id: str
    verdict: Verdict
    detail: str = ""


def reason_matches(expected: str, reason: str) -> bool:
    """Whether reject ``reason`` names one of the ``|``-joined fixture exceptions."""
    for name in expected.split("|"):
        for wanted in EXPECTED_REASONS.get(name.rsplit(".", 1)[-1], ()):
            if wanted.endswith("*") and reason.startswith(wanted[:-1]):
                return True
            if reason == wanted:
                return True
    return False


def blob_base_fee(excess_blob_gas: int, update_fraction: int) -> int:
    """EIP-4844 ``fake_exponential(MIN_BASE_FEE_PER_BLOB_GAS=1, excess, fraction)``."""
    i, output, accum = 1, 0, update_fraction
    while accum > 0:
        output += accum
        accum = accum * excess_blob_gas // (update_fraction * i)
        i += 1
    return output // update_fraction


class _ZeroStorage(Mapping[bytes, bytes]):
    """A whole account's storage: an unlisted slot is zero, not missing."""

    __slots__ = ("_slots",)

    def __init__(self, slots: Mapping[bytes, bytes]) -> None:
        self._slots = slots

    def __getitem__(self, slot: bytes) -> bytes:
        return self._slots.get(slot, _ZERO_WORD)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._slots)

    def __len__(self) -> int:
        return len(self._slots)


class WholeState(Mapping[bytes, AccountInput]):
    """A test's whole pre-state: a listed account exists as given, any other is absent."""

    __slots__ = ("_accounts",)

    def __init__(self, case: StateCase) -> None:
        self._accounts = {
            address: AccountInput(
                address=address,
                balance=account.balance,
                nonce=account.nonce,
                code=account.code,
                storage=_ZeroStorage(
                    {
                        k.to_bytes(32, "big"): v.to_bytes(32, "big")
                        for k, v in account.storage.items()
                    }
                ),
                has_storage=bool(account.storage),
                exists=True,
            )
            for address, account in case.pre.items()
        }

    def __getitem__(self, address: bytes) -> AccountInput:
        account = self._accounts.get(address)
        if account is None:
            return AccountInput(address=address, storage=_ZeroStorage({}), exists=False)
        return account

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._accounts)

    def __len__(self) -> int:
        return len(self._accounts)


class _CaseState:
    """The :class:`ExecutionState` of one case: its whole pre-state."""

    def __init__(self, accounts: WholeState) -> None:
        self._accounts = accounts

    def accounts(
        self, task: pb.TaskPackage, sender: bytes
    ) -> AbstractContextManager[Mapping[bytes, AccountInput] | Unavailable]:
        return contextlib.nullcontext(self._accounts)


class _CaseValidator(ExecutingValidator):
    level = Level.L3

    def __init__(self, state: ExecutionState, engine: EvmEngine | None) -> None:
        super().__init__(state, engine, L2Validator())


def _batch(case: StateCase) -> pb.TaskBatch:
    env = case.env
    fraction = case.blob_update_fraction or _BLOB_FRACTION[case.fork]
    context = PredictedContext(
        number=env.number,
        timestamp=env.timestamp,
        gas_limit=env.gas_limit,
        base_fee=env.base_fee,
        coinbase=env.coinbase,
        prev_randao=env.prev_randao,
        blob_base_fee=blob_base_fee(env.excess_blob_gas, fraction),
        # The hash the state-test tools give block n: keccak of its decimal number.
        block_hashes={
            n: keccak256(str(n).encode())
            for n in range(max(0, env.number - _BLOCKHASH_WINDOW), env.number)
        },
    )
    task = pb.TaskPackage(task_id=1, tx_raw=case.tx_raw, level=pb.L3)
    return pb.TaskBatch(
        batch_id="conformance",
        tasks=[task],
        block_context=context_to_pb(context, case.chain_id, case.fork.lower()),
        chain_id=case.chain_id,
    )


def post_state(case: StateCase, result: pb.TaskResult) -> dict[bytes, PostAccount]:
    """The pre-state with the result's reported changes applied, as they came over the wire."""
    post = {
        address: PostAccount(a.balance, a.nonce, a.code, dict(a.storage))
        for address, a in case.pre.items()
    }
    for change in result.account_changes:
        account = post.setdefault(bytes(change.address), PostAccount())
        account.balance = decode_u256(change.balance_after)
        account.nonce = change.nonce_after
        if change.created_code or change.code_cleared:
            account.code = bytes(change.created_code)
        if change.deleted:
            del post[bytes(change.address)]
    for slot in result.state_changes:
        account = post.setdefault(bytes(slot.address), PostAccount())
        key = int.from_bytes(slot.slot, "big")
        value = int.from_bytes(slot.new_value, "big")
        if value:
            account.storage[key] = value
        else:
            account.storage.pop(key, None)
    return post


def run_case(case: StateCase, engine: EvmEngine | None = None) -> CaseOutcome:
    """Execute ``case`` as an agent would and judge the answer against the fixture."""
    batch = _batch(case)
    validator = _CaseValidator(_CaseState(WholeState(case)), engine)
    result = validator.validate(batch.tasks[0], batch)
    if result.declined:
        return CaseOutcome(
            case.case_id, "fail", f"declined {result.reject_reason}: {result.exec_error}"
        )
    if not result.valid:
        if not case.expect_exception:
            return CaseOutcome(case.case_id, "fail", f"rejected {result.reject_reason}")
        if reason_matches(case.expect_exception, result.reject_reason):
            return CaseOutcome(case.case_id, "pass")
        return CaseOutcome(
            case.case_id,
            "fail",
            f"rejected {result.reject_reason}, expected {case.expect_exception}",
        )
    if case.expect_exception:
        return CaseOutcome(case.case_id, "fail", f"executed, expected {case.expect_exception}")
    got_logs = logs_hash(
        (bytes(log.address), [bytes(t) for t in log.topics], bytes(log.data)) for log in result.logs
    )
    if got_logs != case.logs_hash:
        return CaseOutcome(case.case_id, "fail", f"logs hash differs ({len(result.logs)} logs)")
    root = state_root(post_state(case, result))
    if root != case.post_root:
        return CaseOutcome(case.case_id, "fail", f"state root differs (gas_used={result.gas_used})")
    return CaseOutcome(case.case_id, "pass")
