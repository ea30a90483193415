"""The L1 and L2 transaction rules as pure functions.

L1 needs only the raw signed transaction: it decodes it, checks the chain id and recovers the
sender. L2 adds what the sender's account state and the block gas limit decide. Each check
returns the first rule the transaction breaks as a short, stable reason string (shadow mode and
the dashboard group by it); the order follows geth's transaction pool so that the reasons line up
with what a node would say: stateless rules first, then the ones that need account state.
"""

from __future__ import annotations

from dataclasses import dataclass

from ioswarm.core.models import AccountSnapshot, Verdict
from ioswarm.core.tx import (
    MAX_INITCODE_SIZE,
    TX_BLOB,
    DecodedTx,
    decode_tx,
    floor_data_gas,
    intrinsic_gas,
    recover_sender,
)
from ioswarm.errors import ValidationError

__all__ = ["Check", "check_l1", "check_l2"]


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of validating one transaction at L1 or L2."""

    valid: bool
    reject_reason: str = ""
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
    if tx.chain_id is not None and tx.chain_id != chain_id:
        return Check(valid=False, reject_reason="wrong_chain_id", gas_estimate=gas, tx=tx)
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
    reason = _stateless_reason(tx, first.gas_estimate, block_gas_limit) or _state_reason(
        tx, first.sender, sender_state
    )
    if reason:
        return Check(
            valid=False,
            reject_reason=reason,
            sender=first.sender,
            gas_estimate=first.gas_estimate,
            tx=tx,
        )
    return first


def _stateless_reason(tx: DecodedTx, intrinsic: int, block_gas_limit: int) -> str:
    if tx.to is None and len(tx.data) > MAX_INITCODE_SIZE:  # EIP-3860
        return "initcode_too_large"
    if tx.gas_limit > block_gas_limit:
        return "gas_limit_exceeds_block"
    if (
        tx.max_priority_fee_per_gas is not None
        and tx.max_fee_per_gas is not None
        and tx.max_priority_fee_per_gas > tx.max_fee_per_gas
    ):
        return "fee_cap_below_tip"
    # Prague: the gas limit must also cover the EIP-7623 calldata floor.
    if max(intrinsic, floor_data_gas(tx)) > tx.gas_limit:
        return "intrinsic_gas_too_high"
    return ""


def _state_reason(tx: DecodedTx, sender: bytes, state: AccountSnapshot | None) -> str:
    if state is None:
        return "missing_state"
    # The task never names the sender (recovering it is the L1 evidence), so a snapshot usually
    # carries no address; one that does must be the recovered sender's.
    if state.address and state.address != sender:
        return "sender_mismatch"
    if tx.nonce < state.nonce:
        return "nonce_too_low"
    if tx.nonce > state.nonce:
        # A future nonce may wait in a node's queue, but it cannot be executed now, which is
        # the question a validator answers.
        return "nonce_too_high"
    cost = tx.value + tx.gas_limit * tx.max_fee
    if tx.tx_type == TX_BLOB:
        assert tx.max_fee_per_blob_gas is not None  # every blob transaction carries one
        cost += tx.blob_gas * tx.max_fee_per_blob_gas
    if state.balance < cost:
        return "insufficient_balance"
    # EIP-3607 rejects senders with deployed code, but an EIP-7702 delegation designator
    # (0xef0100 || address) is allowed, and a code hash alone cannot tell the two apart. So
    # any code hash is accepted here; the node's verdict on such senders is left to L3.
    return ""
