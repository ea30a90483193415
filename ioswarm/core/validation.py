"""The L1 and L2 transaction rules as pure functions.

L1 needs only the raw signed transaction: it decodes it, checks the chain id and recovers the
sender. L2 adds what the sender's account state and the block gas limit decide. Each check
returns the first rule the transaction breaks as a :class:`~ioswarm.core.rules.Reject` (shadow
mode and the dashboard group by it). The rules themselves live in :mod:`ioswarm.core.rules`,
shared with the executing agents' precheck, in geth's transaction pool order.
"""

from __future__ import annotations

from dataclasses import dataclass

from ioswarm.core.models import AccountSnapshot, Verdict
from ioswarm.core.rules import (
    Reject,
    TxTerms,
    blob_reject,
    chain_id_reject,
    state_reject,
    stateless_reject,
)
from ioswarm.core.tx import (
    TX_BLOB,
    DecodedTx,
    decode_tx,
    floor_data_gas,
    intrinsic_gas,
    recover_sender,
)
from ioswarm.errors import ValidationError

__all__ = ["Check", "block_reject", "check_l1", "check_l2", "tx_terms"]


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of validating one transaction at L1 or L2."""

    valid: bool
    reject_reason: str = ""  # a Reject value; "bad_field:<name>" for a bad decoded field
    sender: bytes = b""  # empty when the signature could not be recovered
    gas_estimate: int = 0  # intrinsic gas; 0 when the transaction did not decode
    tx: DecodedTx | None = None  # None when the transaction did not decode

    def verdict(self, task_id: int, latency_us: int = 0) -> Verdict:
        """This outcome as the Verdict an agent reports for a task."""
        return Verdict(
            task_id=task_id,
            valid=self.valid,
            reject_reason=self.reject_reason,
            sender=self.sender,
            gas_estimate=self.gas_estimate,
            latency_us=latency_us,
        )


def check_l1(raw: bytes, chain_id: int) -> Check:
    """Decode the transaction, check its chain id and recover its sender."""
    try:
        tx = decode_tx(raw)
    except ValidationError as exc:
        return Check(valid=False, reject_reason=exc.reason)
    gas = intrinsic_gas(tx)
    # A pre-EIP-155 legacy transaction carries no chain id. It is replay-unprotected but still
    # valid on every chain (nodes may refuse it by policy, the protocol does not), so accept it.
    # The chain id is checked before recovery because it is far cheaper, as geth's signer does.
    wrong_chain = chain_id_reject(tx.chain_id, chain_id)
    if wrong_chain is not None:
        return Check(valid=False, reject_reason=wrong_chain, gas_estimate=gas, tx=tx)
    try:
        sender = recover_sender(tx)
    except ValidationError as exc:
        return Check(valid=False, reject_reason=exc.reason, gas_estimate=gas, tx=tx)
    return Check(valid=True, sender=sender, gas_estimate=gas, tx=tx)


def check_l2(
    raw: bytes,
    chain_id: int,
    sender_state: AccountSnapshot | None,
    block_gas_limit: int,
) -> Check:
    """L1, then the rules decided by the sender's account state and the block gas limit."""
    first = check_l1(raw, chain_id)
    if not first.valid:
        return first
    tx = first.tx
    assert tx is not None  # a valid L1 check always carries the decoded transaction
    reason = block_reject(tx, block_gas_limit=block_gas_limit) or _state_reason(
        tx_terms(tx), first.sender, sender_state
    )
    if reason is not None:
        return Check(
            valid=False,
            reject_reason=reason,
            sender=first.sender,
            gas_estimate=first.gas_estimate,
            tx=tx,
        )
    return first


def block_reject(
    tx: DecodedTx,
    *,
    block_gas_limit: int,
    base_fee: int | None = None,
    blob_base_fee: int | None = None,
    max_blobs: int | None = None,
    calldata_floor: bool = True,
) -> Reject | None:
    """The first rule ``tx`` breaks that needs no account state, only the block: the one
    function L2 and the L3/L4 precheck share. L2 knows only the gas limit; an executing level
    also passes the base fee, the blob base fee and the fork's blob limit (None = unknown).

    The gas limit must cover the intrinsic gas with the EIP-3860 initcode words and, where the
    fork has it (``calldata_floor``, Prague), the EIP-7623 calldata floor.
    """
    required = intrinsic_gas(tx)
    if calldata_floor:
        required = max(required, floor_data_gas(tx))
    reason = stateless_reject(
        tx_terms(tx), required_gas=required, block_gas_limit=block_gas_limit, base_fee=base_fee
    )
    if reason is not None or tx.tx_type != TX_BLOB:
        return reason
    assert tx.max_fee_per_blob_gas is not None  # every blob transaction carries one
    return blob_reject(
        len(tx.blob_versioned_hashes),
        tx.max_fee_per_blob_gas,
        max_blobs=max_blobs,
        blob_base_fee=blob_base_fee,
    )


def tx_terms(tx: DecodedTx) -> TxTerms:
    """What the shared rules (:mod:`ioswarm.core.rules`) read from a decoded transaction."""
    blob_fee_cap = 0
    if tx.tx_type == TX_BLOB:
        assert tx.max_fee_per_blob_gas is not None  # every blob transaction carries one
        blob_fee_cap = tx.blob_gas * tx.max_fee_per_blob_gas
    return TxTerms(
        creates=tx.to is None,
        data_size=len(tx.data),
        gas_limit=tx.gas_limit,
        nonce=tx.nonce,
        value=tx.value,
        fee_cap=tx.max_fee,
        tip_cap=tx.max_priority_fee_per_gas if tx.max_fee_per_gas is not None else None,
        blob_fee_cap=blob_fee_cap,
    )


def _state_reason(tx: TxTerms, sender: bytes, state: AccountSnapshot | None) -> Reject | None:
    if state is None:
        return Reject.MISSING_STATE
    # The task never names the sender (recovering it is the L1 evidence), so a snapshot usually
    # carries no address; one that does must be the recovered sender's.
    if state.address and state.address != sender:
        return Reject.SENDER_MISMATCH
    # EIP-3607 rejects senders with deployed code, but an EIP-7702 delegation designator
    # (0xef0100 || address) is allowed, and a code hash alone cannot tell the two apart. So
    # any code hash is accepted here; the node's verdict on such senders is left to L3.
    return state_reject(tx, nonce=state.nonce, balance=state.balance)
