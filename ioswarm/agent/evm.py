"""L3 execution: one transaction in py-evm on exactly the state the coordinator provided.

py-evm's stock state (``AccountDB`` over a trie) would need the whole input written into a trie
before every execution, and it reads zero for anything it does not hold. Instead the fork's
``State`` class runs over :class:`ProvidedStateDB`, a journaled set of dicts holding only the
input: every read of an account or slot that was not provided raises inside the VM and the
execution is reported as ``missing_state``, naming what was missing, never answered from a
guessed zero. Building it is a few dict inserts, which keeps per-task overhead small next to the
execution itself (``bench/l3_execution.py`` measures both).

What py-evm does around the code is kept: its transaction executor (gas purchase, nonce,
refunds, EIP-7623 floor, coinbase credit, EIP-161 clearing, EIP-7702 authorizations) and its
validity checks (balance, blob fee), run after the checks py-evm 0.12 leaves out or orders
differently: chain id, initcode size, block gas limit, fee caps, intrinsic gas of typed
transactions and the EIP-7623 floor, nonce, EIP-3607 senders (the order of the L2 rules).

Two deliberate exceptions to "everything read must be provided":

- precompile *code* (0x01..0x0a in Cancun, up to 0x11 in Prague) is known to be empty and is
  never missing; their balance, nonce and EXTCODEHASH are ordinary state and follow the rule;
- after the code has run, py-evm credits the priority fee to the coinbase and clears touched
  empty accounts. If the coinbase (or a precompile touched by a call) was not provided, these
  bookkeeping reads see an empty placeholder that is left out of the result: nothing executed
  depends on them, and the fee itself is reported as ``Execution.coinbase_fee``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, cast

from eth._utils.address import generate_contract_address
from eth.abc import (
    ComputationAPI,
    MessageAPI,
    SignedTransactionAPI,
)
from eth.constants import CREATE_CONTRACT_ADDRESS
from eth.exceptions import InsufficientFunds, Revert
from eth.vm.execution_context import ExecutionContext
from eth.vm.forks.cancun import CancunVM
from eth.vm.forks.cancun.computation import CancunComputation
from eth.vm.forks.cancun.state import CancunState, CancunTransactionExecutor
from eth.vm.forks.prague import PragueVM
from eth.vm.forks.prague.computation import PragueComputation
from eth.vm.forks.prague.state import PragueState, PragueTransactionExecutor
from eth.vm.forks.prague.transactions import Authorization
from eth.vm.message import Message
from eth_typing import Address, BlockNumber, Hash32
from eth_utils.exceptions import ValidationError as EvmValidationError
from eth_utils.logging import get_extended_debug_logger

from ioswarm.agent.evmprecompiles import (
    MODEXP_ADDRESS,
    POINT_EVALUATION_ADDRESS,
    modexp,
    point_evaluation,
)
from ioswarm.agent.evmstate import (
    JournaledTransientStorage,
    MissingStateRead,
    ProvidedStateDB,
    TxRejected,
)
from ioswarm.core.execution import (
    DEFAULT_FORK,
    ENGINE_ERROR,
    MISSING_STATE,
    AccountChange,
    AccountInput,
    BlockInput,
    ExecStatusName,
    Execution,
    LogRecord,
    MissingKey,
    StorageChange,
)
from ioswarm.core.rules import (
    Reject,
    chain_id_reject,
    nonce_reject,
    sender_code_reject,
    state_reject,
)
from ioswarm.core.tx import (
    TX_ACCESS_LIST,
    TX_BLOB,
    TX_DYNAMIC_FEE,
    TX_LEGACY,
    TX_SET_CODE,
    DecodedTx,
    decode_tx,
)
from ioswarm.core.validation import block_reject, tx_terms
from ioswarm.errors import ValidationError

__all__ = [
    "SUPPORTED_FORKS",
    "EvmEngine",
    "ProvidedStateDB",
    "PyEvmEngine",
    "execution_context",
    "provided_state",
]

log = logging.getLogger("ioswarm.agent.evm")

_MAX_BLOCKHASH_DEPTH: Final = 256
_CALL: Final = 0xF1
_STATICCALL: Final = 0xFA
_SELFDESTRUCT: Final = 0xFF

# Opcodes whose value comes from the block the transaction lands in.
_CONTEXT_OPCODES: Final = {
    0x40: "BLOCKHASH",
    0x41: "COINBASE",
    0x42: "TIMESTAMP",
    0x43: "NUMBER",
    0x44: "PREVRANDAO",
    0x45: "GASLIMIT",
    0x48: "BASEFEE",
    0x4A: "BLOBBASEFEE",
}


class EvmEngine(Protocol):
    """Executes one signed transaction on exactly the given accounts and block."""

    def execute(
        self,
        tx: DecodedTx | bytes,
        sender: bytes,
        accounts: Mapping[bytes, AccountInput],
        block: BlockInput,
    ) -> Execution: ...


class _ContextReadOpcode:
    """Wraps a block-context opcode so that executing it records its name."""

    __slots__ = ("_inner", "_name", "gas_cost", "mnemonic")

    def __init__(self, inner: Any, name: str) -> None:
        self._inner = inner
        self._name = name
        self.mnemonic = inner.mnemonic
        self.gas_cost = inner.gas_cost

    def __call__(self, computation: ComputationAPI) -> None:
        self._inner(computation)
        # Recorded after the opcode ran: one that failed for lack of gas read nothing.
        computation.state.context_reads.add(self._name)  # type: ignore[attr-defined]


def _value_gated(opcode: Any) -> Any:
    """A CALL-family opcode that asks whether the callee exists only when value is sent.

    EIP-161 charges the new-account gas only for value-bearing calls, yet py-evm reads the
    callee's existence on every CALL and STATICCALL. Unanswered, that read would make a plain
    call to an unprovided precompile "missing" for no reason.
    """

    class ValueGatedCall(type(opcode)):  # type: ignore[misc]
        def compute_msg_extra_gas(
            self, computation: ComputationAPI, gas: int, to: bytes, value: int
        ) -> int:
            if not value:
                return 0  # what py-evm computes for value 0, without the read
            extra: int = super().compute_msg_extra_gas(computation, gas, to, value)
            return extra

    return ValueGatedCall()


def _opcode_table(opcodes: Mapping[int, Any]) -> dict[int, Any]:
    """The fork's opcodes with context reads recorded and the adjustments above."""
    table = dict(opcodes)
    for value, name in _CONTEXT_OPCODES.items():
        if value in table:
            table[value] = _ContextReadOpcode(table[value], name)
    for value in (_CALL, _STATICCALL):
        table[value] = _value_gated(table[value])
    # py-evm wraps SELFDESTRUCT in a DeprecationWarning about future changes; the EIP-6780
    # behaviour it implements is the one executed here, and a warning per transaction would
    # flood agent logs.
    table[_SELFDESTRUCT] = getattr(table[_SELFDESTRUCT], "__wrapped__", table[_SELFDESTRUCT])
    return table


if TYPE_CHECKING:
    _ComputationBase = PragueComputation
    _ExecutorBase = PragueTransactionExecutor
    _StateBase = PragueState
else:
    _ComputationBase = _ExecutorBase = _StateBase = object


class _ComputationHooks(_ComputationBase):
    @classmethod
    def apply_create_message(
        cls,
        state: Any,
        message: MessageAPI,
        transaction_context: Any,
        parent_computation: ComputationAPI | None = None,
    ) -> ComputationAPI:
        # A contract is created on empty storage: clients refuse to create over non-empty
        # storage (EIP-7610), so its slots need not be provided. py-evm clears it for CREATE2
        # only; clearing it here for every create, inside a snapshot, makes CREATE and
        # creation transactions read zero there too instead of "missing".
        snapshot = state.snapshot()
        state.delete_storage(message.storage_address)
        computation = super().apply_create_message(
            state, message, transaction_context, parent_computation
        )
        if computation.is_error:
            state.revert(snapshot)
        else:
            state.commit(snapshot)
        return computation


class _ExecutorHooks(_ExecutorBase):
    def validate_transaction(self, transaction: SignedTransactionAPI) -> None:
        state: Any = self.vm_state
        reason = _precheck(state, transaction)
        if reason is not None:
            raise TxRejected(reason)
        try:
            super().validate_transaction(transaction)
        except EvmValidationError as exc:
            raise TxRejected(_reason_from_pyevm(str(exc))) from exc

    def build_evm_message(self, transaction: SignedTransactionAPI) -> MessageAPI:
        # CancunTransactionExecutor.build_evm_message (which Prague inherits) minus its debug
        # line: the line's arguments (repr of the transaction, keccak of its data, hex of the
        # code) are built on every call, logged or not, and cost a quarter of a transfer.
        state: Any = self.vm_state
        sender = transaction.sender
        fee = transaction.gas * state.get_gas_price(transaction)
        if transaction.type_id == TX_BLOB:
            fee += self.calc_data_fee(cast(Any, transaction))
        state.delta_balance(sender, -fee)
        state.increment_nonce(sender)
        refund = self.calc_message_refund(transaction)
        create_address: Any = None  # py-evm types it Address, with None for a call
        is_delegation = False
        if transaction.to == CREATE_CONTRACT_ADDRESS:
            create_address = generate_contract_address(sender, state.get_nonce(sender) - 1)
            data, code = b"", transaction.data
        else:
            data = transaction.data
            code, delegation = self.get_code_at_address(transaction.to)
            is_delegation = delegation is not None
        return Message(
            gas=transaction.gas - transaction.intrinsic_gas,
            to=transaction.to,
            sender=sender,
            value=transaction.value,
            data=data,
            code=code,
            create_address=create_address,
            refund=refund,
            is_delegation=is_delegation,
        )

    def finalize_computation(
        self, transaction: SignedTransactionAPI, computation: ComputationAPI
    ) -> ComputationAPI:
        state: Any = self.vm_state
        state.account_db.finalizing = True
        computation = super().finalize_computation(transaction, computation)
        # The same arithmetic py-evm used to charge the sender (refund capped at 1/5 since
        # London, then the EIP-7623 floor), so gas_used always matches the balances.
        gas_spent = transaction.gas - computation.get_gas_remaining()
        refund = self.calculate_gas_refund(computation, gas_spent)
        state.gas_used = gas_spent - refund + computation.data_floor_gas
        state.coinbase_fee = state.gas_used * state.get_tip(transaction)
        return computation


class _StateHooks(_StateBase):
    """The fork's State over a ProvidedStateDB, without trie or system-contract setup."""

    _transient_storage_class = JournaledTransientStorage
    max_blobs_per_block: int  # per fork, below

    # BaseState.logger looks the logger up by name on every use, several times per transaction.
    logger = get_extended_debug_logger("eth.vm.state.ProvidedState")

    def __init__(
        self,
        account_db: ProvidedStateDB,
        execution_context: ExecutionContext,
        blob_base_fee: int,
        block_hashes: Mapping[int, bytes],
        prague_floor: bool,
    ) -> None:
        # BaseState.__init__ is skipped on purpose: it would build an AccountDB and install
        # the EIP-4788/2935 system contracts, both block-level concerns.
        self.execution_context = execution_context
        self._account_db = account_db
        self._blob_base_fee = blob_base_fee
        self._block_hashes = block_hashes
        self.prague_floor = prague_floor
        self.context_reads: set[str] = set()
        self.decoded_tx: DecodedTx | None = None  # set by the engine: the rules read it
        self.gas_used = 0
        self.coinbase_fee = 0

    @property
    def account_db(self) -> ProvidedStateDB:
        return self._account_db  # type: ignore[return-value]

    @property
    def blob_base_fee(self) -> int:
        # Given directly: the coordinator knows the fee, not necessarily the excess blob gas.
        return self._blob_base_fee

    def get_ancestor_hash(self, block_number: int) -> Hash32:
        depth = self.block_number - block_number - 1
        if depth < 0 or depth >= _MAX_BLOCKHASH_DEPTH or block_number < 0:
            return Hash32(b"")  # BLOCKHASH is zero out of range, on every client
        block_hash = self._block_hashes.get(block_number)
        if block_hash is None:
            self.account_db.miss(MissingKey("block_hash", number=block_number))
        return Hash32(block_hash)


def _precompile_table(precompiles: Mapping[Any, Any]) -> dict[Any, Any]:
    """The fork's precompiles with the replacements of :mod:`ioswarm.agent.evmprecompiles`."""
    table = dict(precompiles)
    table[Address(MODEXP_ADDRESS)] = modexp
    table[Address(POINT_EVALUATION_ADDRESS)] = point_evaluation
    return table


class _PragueComputation(_ComputationHooks, PragueComputation):
    opcodes = _opcode_table(PragueComputation.opcodes)
    _precompiles = _precompile_table(PragueComputation.get_precompiles())


class _PragueExecutor(_ExecutorHooks, PragueTransactionExecutor):
    pass


class _PragueState(_StateHooks, PragueState):
    max_blobs_per_block = 9  # EIP-7691
    computation_class = _PragueComputation
    transaction_executor_class = _PragueExecutor


class _CancunComputation(_ComputationHooks, CancunComputation):
    opcodes = _opcode_table(CancunComputation.opcodes)
    _precompiles = _precompile_table(CancunComputation.get_precompiles())


class _CancunExecutor(_ExecutorHooks, CancunTransactionExecutor):
    pass


class _CancunState(_StateHooks, CancunState):
    max_blobs_per_block = 6  # EIP-4844
    computation_class = _CancunComputation
    transaction_executor_class = _CancunExecutor


class _Fork(NamedTuple):
    state_class: type[_StateHooks]
    builder: Any
    precompiles: frozenset[bytes]
    tx_types: frozenset[int]
    calldata_floor: bool  # EIP-7623


_FORKS: Final[dict[str, _Fork]] = {
    "cancun": _Fork(
        _CancunState,
        CancunVM.get_transaction_builder(),
        frozenset(_CancunComputation.get_precompiles()),
        frozenset({TX_LEGACY, TX_ACCESS_LIST, TX_DYNAMIC_FEE, TX_BLOB}),
        calldata_floor=False,
    ),
    "prague": _Fork(
        _PragueState,
        PragueVM.get_transaction_builder(),
        frozenset(_PragueComputation.get_precompiles()),
        frozenset({TX_LEGACY, TX_ACCESS_LIST, TX_DYNAMIC_FEE, TX_BLOB, TX_SET_CODE}),
        calldata_floor=True,
    ),
}
SUPPORTED_FORKS: Final = frozenset(_FORKS)


# --- validity ------------------------------------------------------------------------------------


def _precheck(state: Any, tx: Any) -> Reject | None:
    """The L2 rules, by the very functions L2 runs (:func:`ioswarm.core.validation.block_reject`
    and :mod:`ioswarm.core.rules`), now with what only the block and the sender's account decide:
    the base fee, the blob base fee and blob limit, nonce, balance (blob gas included) and
    EIP-3607 senders (with the EIP-7702 delegation exception). py-evm's own checks run after."""
    decoded: DecodedTx | None = state.decoded_tx
    if decoded is None:  # a py-evm transaction applied directly (bench/l3_execution.py)
        decoded = decode_tx(tx.encode())
    context = state.execution_context
    reason = chain_id_reject(decoded.chain_id, context.chain_id) or block_reject(
        decoded,
        block_gas_limit=state.gas_limit,
        base_fee=context.base_fee_per_gas,
        blob_base_fee=state.blob_base_fee,
        max_blobs=state.max_blobs_per_block,
        calldata_floor=state.prague_floor,
    )
    if reason is not None:
        return reason
    sender = tx.sender
    return state_reject(
        tx_terms(decoded), nonce=state.get_nonce(sender), balance=state.get_balance(sender)
    ) or sender_code_reject(state.get_code(sender))


_NONCE_MESSAGE: Final = re.compile(r"expected (\d+), but got (\d+)")


def _reason_from_pyevm(message: str) -> Reject:
    """The rule a py-evm validation message names; ``invalid_tx`` when it names none of ours."""
    text = message.lower()
    if "nonce" in text:
        found = _NONCE_MESSAGE.search(text)
        if found is None:
            return Reject.NONCE_MAX  # "Nonce must be less than 2**64 - 1" (EIP-2681)
        return nonce_reject(int(found[2]), int(found[1])) or Reject.INVALID_TX
    if "afford" in text or "insufficient funds" in text or "enough balance" in text:
        return Reject.INSUFFICIENT_BALANCE
    if "blob base fee" in text:
        return Reject.BLOB_FEE_CAP_BELOW_BASE_FEE
    if "base fee" in text:
        return Reject.FEE_CAP_BELOW_BASE_FEE
    if "priority fee" in text:
        return Reject.FEE_CAP_BELOW_TIP
    if "insufficient gas" in text:
        return Reject.INTRINSIC_GAS_TOO_HIGH
    log.debug("py-evm refused tx: %s", message[:200])
    return Reject.INVALID_TX


# --- the engine ----------------------------------------------------------------------------------


def _to_pyevm_tx(fork: _Fork, tx: DecodedTx, sender: bytes) -> Any:
    """Build py-evm's transaction object from the decoded fields (no second RLP decode)."""
    builder = fork.builder
    to = CREATE_CONTRACT_ADDRESS if tx.to is None else tx.to
    access_list = [
        (address, [int.from_bytes(k, "big") for k in keys]) for address, keys in tx.access_list
    ]
    if tx.tx_type == TX_LEGACY:
        assert tx.gas_price is not None
        evm_tx = builder.new_transaction(
            tx.nonce, tx.gas_price, tx.gas_limit, to, tx.value, tx.data, tx.v, tx.r, tx.s
        )
        # The signature was verified (with coincurve) before execution; py-evm's legacy
        # validate() would recover it twice more with eth_keys.
        evm_tx.__dict__["check_signature_validity"] = _signature_checked
    elif tx.tx_type == TX_ACCESS_LIST:
        evm_tx = builder.new_access_list_transaction(
            tx.chain_id, tx.nonce, tx.gas_price, tx.gas_limit, to, tx.value, tx.data,
            access_list, tx.y_parity, tx.r, tx.s,
        )  # fmt: skip
    elif tx.tx_type == TX_DYNAMIC_FEE:
        evm_tx = builder.new_dynamic_fee_transaction(
            tx.chain_id, tx.nonce, tx.max_priority_fee_per_gas, tx.max_fee_per_gas,
            tx.gas_limit, to, tx.value, tx.data, access_list, tx.y_parity, tx.r, tx.s,
        )  # fmt: skip
    elif tx.tx_type == TX_BLOB:
        evm_tx = builder.new_blob_transaction(
            tx.chain_id, tx.nonce, tx.max_priority_fee_per_gas, tx.max_fee_per_gas,
            tx.gas_limit, to, tx.value, tx.data, access_list, tx.max_fee_per_blob_gas,
            list(tx.blob_versioned_hashes), tx.y_parity, tx.r, tx.s,
        )  # fmt: skip
    else:
        authorizations = [
            Authorization(a.chain_id, a.address, a.nonce, a.y_parity, a.r, a.s)
            for a in tx.authorization_list
        ]
        evm_tx = builder.new_set_code_transaction(
            tx.chain_id, tx.nonce, tx.max_priority_fee_per_gas, tx.max_fee_per_gas,
            tx.gas_limit, to, tx.value, tx.data, access_list, authorizations,
            tx.y_parity, tx.r, tx.s,
        )  # fmt: skip
    # py-evm would recover the sender again on first use; it is already known.
    evm_tx.__dict__["sender"] = sender
    return evm_tx


def _signature_checked() -> None:
    """Stands in for py-evm's signature check of a transaction whose sender is known."""


class PyEvmEngine:
    """An :class:`EvmEngine` on py-evm, over :class:`ProvidedStateDB`."""

    def __init__(self) -> None:
        # One execution context per block: every task of a batch shares its BlockInput.
        self._context_key: BlockInput | None = None
        self._context: ExecutionContext | None = None

    def execute(
        self,
        tx: DecodedTx | bytes,
        sender: bytes,
        accounts: Mapping[bytes, AccountInput],
        block: BlockInput,
    ) -> Execution:
        """Execute ``tx`` from ``sender`` (already recovered) on ``accounts`` in ``block``."""
        fork = _FORKS.get(block.fork.lower() or DEFAULT_FORK)
        if fork is None:
            return Execution(valid=False, reject_reason=Reject.UNSUPPORTED_FORK, error=block.fork)
        if not isinstance(tx, DecodedTx):
            try:
                tx = decode_tx(tx)
            except ValidationError as exc:
                return Execution(valid=False, reject_reason=exc.reason)
        if tx.tx_type not in fork.tx_types:
            return Execution(valid=False, reject_reason=Reject.UNSUPPORTED_TX_TYPE)

        state = provided_state(accounts, block, self._execution_context(block))
        state.decoded_tx = tx
        db = state.account_db
        try:
            computation = state.apply_transaction(_to_pyevm_tx(fork, tx, sender))
        except MissingStateRead:
            return _missing(db)
        except TxRejected as exc:
            return _missing(db) if db.missing else Execution(valid=False, reject_reason=exc.args[0])
        except EvmValidationError as exc:
            return Execution(valid=False, reject_reason=_reason_from_pyevm(str(exc)))
        except InsufficientFunds:
            # py-evm bought the gas, then could not move the value: a node refuses such a tx.
            return Execution(valid=False, reject_reason=Reject.INSUFFICIENT_BALANCE)
        except Exception as exc:  # a crafted tx must never stop an agent: declare, serve on
            log.exception("engine error tx=0x%s", tx.tx_hash.hex())
            return Execution(valid=False, reject_reason=ENGINE_ERROR, error=type(exc).__name__)
        if db.missing:
            # A read failed inside code that swallows every exception (EIP-7702
            # authorizations): the result cannot be trusted.
            return _missing(db)
        return _execution(state, db, accounts, computation)

    def _execution_context(self, block: BlockInput) -> ExecutionContext:
        if self._context_key is not block or self._context is None:
            self._context = execution_context(block)
            self._context_key = block
        return self._context


def execution_context(block: BlockInput) -> ExecutionContext:
    """py-evm's execution context for ``block``."""
    return ExecutionContext(
        coinbase=Address(block.coinbase),
        timestamp=block.timestamp,
        block_number=BlockNumber(block.number),
        difficulty=0,
        mix_hash=Hash32(block.prev_randao),
        gas_limit=block.gas_limit,
        prev_hashes=(),  # BLOCKHASH is answered from BlockInput.block_hashes
        chain_id=block.chain_id,
        base_fee_per_gas=block.base_fee,
        excess_blob_gas=0,  # BLOBBASEFEE is answered from BlockInput.blob_base_fee
    )


def provided_state(
    accounts: Mapping[bytes, AccountInput],
    block: BlockInput,
    context: ExecutionContext | None = None,
) -> Any:
    """The py-evm State the engine executes on: ``block.fork`` over exactly ``accounts``.

    ``state.apply_transaction(tx)`` on it runs a py-evm transaction with the engine's checks;
    ``state.account_db`` is the :class:`ProvidedStateDB`. Raises KeyError for an unknown fork.
    """
    fork = _FORKS[block.fork.lower() or DEFAULT_FORK]
    return fork.state_class(
        ProvidedStateDB(accounts, block.coinbase, fork.precompiles, block.absent_accounts_exist),
        context if context is not None else execution_context(block),
        block.blob_base_fee,
        block.block_hashes,
        fork.calldata_floor,
    )


def _missing(db: ProvidedStateDB) -> Execution:
    first = db.missing[0]
    return Execution(
        valid=False,
        reject_reason=MISSING_STATE,
        missing=tuple(dict.fromkeys(db.missing)),
        error=str(first),
    )


def _execution(
    state: _StateHooks,
    db: ProvidedStateDB,
    accounts: Mapping[bytes, AccountInput],
    computation: ComputationAPI,
) -> Execution:
    status: ExecStatusName
    error = ""
    if computation.is_success:
        status = "success"
    else:
        status = "revert" if isinstance(computation.error, Revert) else "halt"
        error = type(computation.error).__name__
    logs = tuple(
        LogRecord(bytes(address), tuple(t.to_bytes(32, "big") for t in topics), bytes(data))
        for address, topics, data in computation.get_log_entries()
    )
    return Execution(
        valid=True,
        status=status,
        gas_used=state.gas_used,
        return_data=bytes(computation.output),
        logs=logs,
        storage_changes=_storage_changes(db),
        account_changes=_account_changes(db, accounts),
        context_reads=tuple(sorted(state.context_reads)),
        error=error,
        coinbase_fee=state.coinbase_fee,
    )


def _storage_changes(db: ProvidedStateDB) -> tuple[StorageChange, ...]:
    changes = []
    for key in sorted(db.dirty_slots):
        old, new = db.original_slot(key), db.post_slot(key)
        if old != new:
            changes.append(
                StorageChange(key[0], key[1].to_bytes(32, "big"), _word(old), _word(new))
            )
    return tuple(changes)


def _account_changes(
    db: ProvidedStateDB, accounts: Mapping[bytes, AccountInput]
) -> tuple[AccountChange, ...]:
    changes = []
    for address in sorted(db.dirty_accounts - db.placeholders):
        before = accounts.get(address)
        balance, nonce, code = db.post_account(address)
        old_balance = before.balance if before else 0
        old_nonce = before.nonce if before else 0
        old_code = before.code if before else b""
        deleted = before is not None and before.in_trie and not db.post_exists(address)
        code_changed = code != old_code
        if balance != old_balance or nonce != old_nonce or code_changed or deleted:
            changes.append(
                AccountChange(
                    address,
                    old_balance,
                    balance,
                    old_nonce,
                    nonce,
                    code if code_changed else b"",
                    code_cleared=code_changed and not code,
                    deleted=deleted,
                )
            )
    return tuple(changes)


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")
