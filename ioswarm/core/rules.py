"""Why a transaction is invalid: one name per rule, and the rules every validating level shares.

:class:`Reject` is the one vocabulary of reject reasons. Its values are the strings on the wire
(``Verdict.reject_reason``), so L1/L2 checks, the L3/L4 executing precheck, shadow mode, canary
judging and the reward tally all compare the same names; a rule has exactly one.

The rule functions are pure and take plain numbers (:class:`TxTerms`), so that the L2 checks
(on a decoded transaction, :mod:`ioswarm.core.validation`) and the executing agents' precheck
(on py-evm's transaction, :mod:`ioswarm.agent.evm`) run the same code in the same order, which
is geth's transaction pool order: stateless rules first, then the ones that need account state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "BAD_FIELD_PREFIX",
    "DELEGATION_PREFIX",
    "MAX_INITCODE_SIZE",
    "Reject",
    "TxTerms",
    "bad_field",
    "blob_reject",
    "chain_id_reject",
    "nonce_reject",
    "sender_code_reject",
    "state_reject",
    "stateless_reject",
]

MAX_INITCODE_SIZE: Final = 49_152  # EIP-3860: 2 * MAX_CODE_SIZE
DELEGATION_PREFIX: Final = b"\xef\x01\x00"  # EIP-7702 delegation designator


class Reject(StrEnum):
    """Every reason a transaction is invalid; the value is the wire string."""

    # Decoding (ioswarm.core.tx), in the order the decoder meets them.
    EMPTY_TX = "empty_tx"
    UNKNOWN_TX_TYPE = "unknown_tx_type"
    MALFORMED_RLP = "malformed_rlp"
    BAD_FIELD_COUNT = "bad_field_count"
    BAD_FIELD = "bad_field"  # on the wire as "bad_field:<field name>", see bad_field()
    BAD_V = "bad_v"
    # Signature and chain (L1).
    WRONG_CHAIN_ID = "wrong_chain_id"
    HIGH_S = "high_s"  # EIP-2
    BAD_SIGNATURE = "bad_signature"
    # Stateless rules (L2 and the executing precheck).
    INITCODE_TOO_LARGE = "initcode_too_large"  # EIP-3860
    GAS_LIMIT_EXCEEDS_BLOCK = "gas_limit_exceeds_block"
    FEE_CAP_BELOW_TIP = "fee_cap_below_tip"  # EIP-1559
    FEE_CAP_BELOW_BASE_FEE = "fee_cap_below_base_fee"  # needs the block's base fee (L3/L4)
    BLOB_FEE_CAP_BELOW_BASE_FEE = "blob_fee_cap_below_base_fee"  # EIP-4844, at execution
    TOO_MANY_BLOBS = "too_many_blobs"  # more blobs than the fork allows in a block
    INTRINSIC_GAS_TOO_HIGH = "intrinsic_gas_too_high"  # the gas limit is below it (or EIP-7623)
    # Rules on the sender's account state.
    MISSING_STATE = "missing_state"
    SENDER_MISMATCH = "sender_mismatch"  # the snapshot names another account than recovered
    NONCE_TOO_LOW = "nonce_too_low"
    NONCE_TOO_HIGH = "nonce_too_high"
    NONCE_MAX = "nonce_max"  # EIP-2681: the sender's nonce cannot be incremented
    INSUFFICIENT_BALANCE = "insufficient_balance"
    SENDER_NOT_EOA = "sender_not_eoa"  # EIP-3607, with the EIP-7702 delegation exception
    # What only an executing agent can meet.
    UNSUPPORTED_FORK = "unsupported_fork"
    UNSUPPORTED_TX_TYPE = "unsupported_tx_type"  # a known type the block's fork predates
    INVALID_TX = "invalid_tx"  # py-evm refused it for a reason none of the above names


BAD_FIELD_PREFIX: Final = Reject.BAD_FIELD.value + ":"


def bad_field(name: str) -> str:
    """The wire reason for a decoded field that is out of range or of the wrong shape."""
    return BAD_FIELD_PREFIX + name


@dataclass(frozen=True, slots=True)
class TxTerms:
    """What the shared rules read from a transaction, whichever library decoded it."""

    creates: bool
    data_size: int
    gas_limit: int
    nonce: int
    value: int
    fee_cap: int  # maxFeePerGas, or gasPrice for legacy and EIP-2930
    tip_cap: int | None  # maxPriorityFeePerGas; None for legacy and EIP-2930
    blob_fee_cap: int = 0  # blob gas x maxFeePerBlobGas (type 3)

    @property
    def max_cost(self) -> int:
        """What the sender must hold to be included (geth's buyGas): value + gas x fee cap,
        plus blob gas x blob fee cap; not gas x effective price."""
        return self.value + self.gas_limit * self.fee_cap + self.blob_fee_cap


def chain_id_reject(tx_chain_id: int | None, chain_id: int) -> Reject | None:
    """A pre-EIP-155 legacy transaction carries no chain id and is valid on every chain."""
    if tx_chain_id is not None and tx_chain_id != chain_id:
        return Reject.WRONG_CHAIN_ID
    return None


def stateless_reject(
    tx: TxTerms,
    *,
    required_gas: int,
    block_gas_limit: int,
    base_fee: int | None = None,
) -> Reject | None:
    """The first rule ``tx`` breaks that needs no account state.

    ``required_gas`` is the intrinsic gas, raised to the EIP-7623 calldata floor where the
    fork has one. ``base_fee`` is None where it is not known (L2 tasks carry none).
    """
    if tx.creates and tx.data_size > MAX_INITCODE_SIZE:
        return Reject.INITCODE_TOO_LARGE
    if tx.gas_limit > block_gas_limit:
        return Reject.GAS_LIMIT_EXCEEDS_BLOCK
    if tx.tip_cap is not None and tx.tip_cap > tx.fee_cap:
        return Reject.FEE_CAP_BELOW_TIP
    if base_fee is not None and tx.fee_cap < base_fee:
        return Reject.FEE_CAP_BELOW_BASE_FEE
    if required_gas > tx.gas_limit:
        return Reject.INTRINSIC_GAS_TOO_HIGH
    return None


def blob_reject(
    blob_count: int,
    max_fee_per_blob_gas: int,
    *,
    max_blobs: int | None,
    blob_base_fee: int | None,
) -> Reject | None:
    """EIP-4844 rules of a blob transaction that need the block: no more blobs than a block
    may hold (EIP-7691 raised it in Prague), and a blob fee cap at least the blob base fee.
    ``None`` for what is not known (L2 tasks carry no block)."""
    if max_blobs is not None and blob_count > max_blobs:
        return Reject.TOO_MANY_BLOBS
    if blob_base_fee is not None and blob_count and max_fee_per_blob_gas < blob_base_fee:
        return Reject.BLOB_FEE_CAP_BELOW_BASE_FEE
    return None


def nonce_reject(tx_nonce: int, account_nonce: int) -> Reject | None:
    """A future nonce may wait in a node's queue, but it cannot be executed now, which is the
    question a validator answers."""
    if tx_nonce < account_nonce:
        return Reject.NONCE_TOO_LOW
    if tx_nonce > account_nonce:
        return Reject.NONCE_TOO_HIGH
    return None


def state_reject(tx: TxTerms, *, nonce: int, balance: int) -> Reject | None:
    """The first rule ``tx`` breaks against its sender's nonce and balance."""
    reason = nonce_reject(tx.nonce, nonce)
    if reason is not None:
        return reason
    if balance < tx.max_cost:
        return Reject.INSUFFICIENT_BALANCE
    return None


def sender_code_reject(code: bytes) -> Reject | None:
    """EIP-3607: a sender with deployed code is refused, unless the code is an EIP-7702
    delegation designator. Needs the code itself: a code hash cannot tell the two apart."""
    if code and not code.startswith(DELEGATION_PREFIX):
        return Reject.SENDER_NOT_EOA
    return None
