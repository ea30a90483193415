"""The settler's view of the chain: is it the recorded chain, and are settlements still on it.

:class:`ChainGuard` checks chain id, genesis hash and the pool's code before anything is read
or sent (rule 5 of ``settler.py``); :class:`FinalityWatch` follows included settlements until
they are final or reorged away (rule 4). The :class:`~ioswarm.rewards.settler.Settler` is
constructed with one of each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import Counter, Gauge

from ioswarm.core.rewards import wei_to_iotx
from ioswarm.errors import SettlementError
from ioswarm.rewards.ledger import EpochLedger, Settlement, SettlementState
from ioswarm.rewards.pool import RewardPool

log = logging.getLogger("ioswarm.rewards")

HALT_CHAIN_ID = "chain_id"
HALT_GENESIS = "genesis"
HALT_NO_CODE = "no_code"
HALT_REASONS = (HALT_CHAIN_ID, HALT_GENESIS, HALT_NO_CODE)
"""The bounded ``reason`` label values of ``ioswarm_settlement_halted``."""


class SettlementHalted(Exception):
    """Internal: the node is not the recorded chain; abandon this pass."""


class ChainGuard:
    """Refuses to let settlement go on unless the node is the recorded chain with the pool."""

    def __init__(
        self, pool: RewardPool, ledger: EpochLedger, halted: Gauge, expected_chain_id: int = 0
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._gauge = halted
        self._expected_chain_id = expected_chain_id
        self.halted: str | None = None
        """Why settling is refused (wrong chain); epochs keep queueing meanwhile."""
        self.halt_reason: str | None = None
        """The bounded reason of :attr:`halted`: one of :data:`HALT_REASONS`."""

    async def check(self) -> None:
        """Raise SettlementHalted unless the node is the recorded chain and the pool has code."""
        actual = await self._pool.chain_id()
        genesis = await self._pool.block_hash(0)
        recorded = self._ledger.chain_identity()
        expected = recorded[0] if recorded else self._expected_chain_id
        if expected and actual != expected:
            self._halt(HALT_CHAIN_ID, f"reward RPC is on chain {actual}, expected {expected}")
        if recorded is not None and genesis != recorded[1]:
            self._halt(
                HALT_GENESIS,
                f"reward RPC genesis is {genesis}, the ledger's chain has {recorded[1]}",
            )
        if not await self._pool.has_code():
            self._halt(HALT_NO_CODE, f"no contract code at the reward pool {self._pool.address}")
        if recorded is None:
            if genesis is None:
                raise SettlementError("reward RPC has no genesis block")
            self._ledger.record_chain_identity(actual, genesis)
            log.info("settlement chain recorded chain_id=%d genesis=%s", actual, genesis)
        if self.halted is not None:
            log.warning(
                "settlement resumed: reward RPC is the recorded chain again (was: %s)", self.halted
            )
            self.halted = self.halt_reason = None
            for reason in HALT_REASONS:
                self._gauge.labels(reason=reason).set(0)

    def _halt(self, reason: str, detail: str) -> None:
        if self.halted != detail:
            log.error(
                "SETTLEMENT HALTED reason=%s: %s; nothing is sent, epochs keep being planned",
                reason,
                detail,
            )
        self.halted, self.halt_reason = detail, reason
        for r in HALT_REASONS:
            self._gauge.labels(reason=r).set(1 if r == reason else 0)
        raise SettlementHalted(detail)


class FinalityWatch:
    """Makes included settlements final once deep enough, and records the reorged ones."""

    def __init__(
        self,
        pool: RewardPool,
        ledger: EpochLedger,
        clock: Callable[[], float],
        *,
        confirmations: int,
        settlements: Counter,
        deposited: Counter,
        on_reorged: Callable[[int], None],
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._clock = clock
        self._confirmations = confirmations
        self._settlements = settlements
        self._deposited = deposited
        self._on_reorged = on_reorged
        self.head: int | None = None
        """The newest block number seen while watching settlements for finality."""

    def watching(self) -> bool:
        """Whether any settlement is included but not final yet."""
        return bool(self._ledger.included())

    async def watch(self) -> None:
        """Make included settlements final once deep enough; catch the reorged ones."""
        epochs = self._ledger.included()
        if not epochs:
            return
        head = await self._pool.block_number()
        self.head = head
        for epoch in epochs:
            s = self._ledger.settlement(epoch)
            if s is None or s.state is not SettlementState.CONFIRMED or s.final:
                continue
            lost = await self._lost(s)
            if lost:
                self._ledger.record_reorged(epoch, lost, self._clock(), head)
                self._settlements.labels(outcome="reorged").inc()
                log.error(
                    "SETTLEMENT REORGED epoch=%d tx=%s block=%s: %s; re-sending the same "
                    "transaction (nonce %s)",
                    epoch,
                    s.tx_hash,
                    s.block,
                    lost,
                    s.nonce,
                )
                self._on_reorged(epoch)
                continue
            confirmations = head - s.block + 1 if s.block is not None else 0
            if s.block is None or confirmations >= self._confirmations:
                self._ledger.record_final(epoch, confirmations, self._clock())
                value = s.call.value if s.call else 0
                self._settlements.labels(outcome="final").inc()
                self._deposited.inc(wei_to_iotx(value))
                log.info(
                    "settlement final epoch=%d tx=%s block=%s confirmations=%d",
                    epoch,
                    s.tx_hash,
                    s.block,
                    confirmations,
                )

    async def _lost(self, s: Settlement) -> str:
        """Why an included settlement is no longer on the canonical chain ("" while it is)."""
        if s.tx_hash is None or s.block is None:
            return ""  # confirmed without a receipt (nonce consumed): nothing to follow
        outcome = await self._pool.outcome(s.tx_hash)
        if outcome is None:
            return "receipt gone"
        if s.block_hash and outcome.block_hash and outcome.block_hash != s.block_hash:
            return f"mined again in another block {outcome.block_number}"
        canonical = await self._pool.block_hash(s.block)
        if s.block_hash and canonical != s.block_hash:
            return f"block {s.block} hash is now {canonical}"
        return ""
