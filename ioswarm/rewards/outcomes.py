"""What the chain decided about a settlement, recorded in the ledger, metrics and log.

:class:`OutcomeRecorder` turns a receipt into ``confirmed`` (included) or ``reverted``, with
the decoded revert reason and whether the epoch may be bound again: only an out-of-gas revert
is retried (``max_oog_retries`` per epoch), every other one is parked for an operator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import Counter, Gauge

from ioswarm.rewards.ledger import EpochLedger, Settlement, TxAttempt
from ioswarm.rewards.pool import RewardPool, TxOutcome

log = logging.getLogger("ioswarm.rewards")

OUT_OF_GAS = "out of gas"
"""How an out-of-gas revert's reason starts (the only revert that is retried)."""


class OutcomeRecorder:
    """Records a settlement's receipt (or a refusal) as the ledger state it leads to."""

    def __init__(
        self,
        pool: RewardPool,
        ledger: EpochLedger,
        clock: Callable[[], float],
        *,
        max_oog_retries: int,
        settlements: Counter,
        last_confirmed: Gauge,
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._clock = clock
        self._max_oog_retries = max_oog_retries
        self._settlements = settlements
        self._last_confirmed = last_confirmed

    def out_of_gas_reverts(self, epoch: int) -> int:
        """How many times the epoch's settlement reverted out of gas."""
        return sum(
            1
            for e in self._ledger.events(epoch)
            if e["state"] == "reverted" and str(e.get("reason", "")).startswith(OUT_OF_GAS)
        )

    def confirmed(self, epoch: int, s: Settlement, outcome: TxOutcome) -> None:
        """Record a successful receipt: the epoch is included (final after confirmations)."""
        self._ledger.record_confirmed(
            epoch,
            outcome.tx_hash,
            outcome.block_number,
            outcome.gas_used,
            outcome.fee,
            self._clock(),
            block_hash=outcome.block_hash or None,
        )
        value = s.call.value if s.call else 0
        self._settlements.labels(outcome="confirmed").inc()
        self._last_confirmed.set(epoch)
        log.info(
            "settlement included epoch=%d tx=%s block=%d gas_used=%d deposit_wei=%d",
            epoch,
            outcome.tx_hash,
            outcome.block_number,
            outcome.gas_used,
            value,
        )

    async def reverted(
        self, epoch: int, s: Settlement, attempt: TxAttempt, outcome: TxOutcome
    ) -> None:
        """Record a reverted receipt with its reason; only out of gas may be bound again."""
        assert s.call is not None
        gas = next((a.gas for a in s.attempts if a.tx_hash == outcome.tx_hash), attempt.gas)
        out_of_gas = outcome.gas_used >= gas
        if out_of_gas:
            reason = f"{OUT_OF_GAS} (used {outcome.gas_used} of {gas})"
        else:
            replay = await self._pool.revert_reason(
                s.call.wallets,
                s.call.weights,
                s.call.value,
                outcome.block_number,
                claimants=s.call.claimants if s.call.function == "depositSettleAndClaim" else None,
            )
            reason = replay or "reverted (the call succeeds when replayed on the block's state)"
        retry = out_of_gas and self.out_of_gas_reverts(epoch) < self._max_oog_retries
        self.alert_revert(epoch, reason, outcome.tx_hash, retry=retry)
        self._ledger.record_reverted(
            epoch,
            reason,
            retry,
            self._clock(),
            tx_hash=outcome.tx_hash,
            block=outcome.block_number,
            gas_used=outcome.gas_used,
            fee_wei=outcome.fee,
        )

    def alert_revert(self, epoch: int, reason: str, tx_hash: str | None, *, retry: bool) -> None:
        """Count and log a revert at ERROR (the ledger is written by the caller)."""
        self._settlements.labels(outcome="reverted").inc()
        log.error(
            "SETTLEMENT REVERTED epoch=%d tx=%s reason=%s retry=%s; %s",
            epoch,
            tx_hash or "-",
            reason,
            retry,
            "retrying with a new nonce and more gas"
            if retry
            else "this epoch is NOT paid; fix the cause, then requeue it",
        )
