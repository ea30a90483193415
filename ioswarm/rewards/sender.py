"""Getting a recorded settlement transaction to the node, and replacing it when stuck.

:class:`SettlementSender` broadcasts the settler's recorded transactions, remembers which it
has sent in this process (so a restart rebroadcasts the recorded bytes once), and replaces a
stuck or underpriced one with the same nonce and gas and fees raised by ``fee_bump_ppm``
(rule 3 of ``settler.py``), never above ``max_fee_cap_wei``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import Counter

from ioswarm.core.rewards import PPM
from ioswarm.rewards.ledger import EpochLedger, Settlement, TxAttempt
from ioswarm.rewards.pool import Broadcast, RewardPool, TxOptions

log = logging.getLogger("ioswarm.rewards")


def bump(value: int, ppm: int) -> int:
    """``value`` raised by ``ppm``, rounded up, by at least 1 wei."""
    return value + max(1, -(-value * ppm // PPM))


class SettlementSender:
    """Broadcasts, rebroadcasts and replaces one signer's settlement transactions."""

    def __init__(
        self,
        pool: RewardPool,
        ledger: EpochLedger,
        clock: Callable[[], float],
        *,
        replace_after_sec: float,
        fee_bump_ppm: int,
        max_fee_cap_wei: int | None,
        replacements: Counter,
        on_broadcast: Callable[[int], None],
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._clock = clock
        self._replace_after_sec = replace_after_sec
        self._fee_bump_ppm = fee_bump_ppm
        self._max_fee_cap_wei = max_fee_cap_wei
        self._replacements = replacements
        self._on_broadcast = on_broadcast
        self._broadcast: dict[str, int] = {}  # hashes sent by this process -> their epoch
        self._needs_bump: set[int] = set()
        self._cap_warned: set[int] = set()

    def forget(self, epoch: int) -> None:
        """The epoch reached an outcome: drop what was kept about its transactions."""
        self._needs_bump.discard(epoch)
        self._cap_warned.discard(epoch)
        for tx_hash in [h for h, e in self._broadcast.items() if e == epoch]:
            del self._broadcast[tx_hash]

    async def fees(self, *, capped: bool = True) -> tuple[int, int]:
        """The node's suggested (max fee, tip), held under ``max_fee_cap_wei`` when ``capped``."""
        max_fee, tip = await self._pool.suggest_fees()
        cap = self._max_fee_cap_wei
        if capped and cap is not None:
            max_fee = min(max_fee, cap)
            tip = min(tip, max_fee)
        return max_fee, tip

    async def send(self, epoch: int, attempt: TxAttempt) -> Broadcast:
        """Broadcast a recorded transaction's bytes; an underpriced one is replaced next poll."""
        result = await self._pool.broadcast(bytes.fromhex(attempt.raw[2:]))
        self._broadcast[attempt.tx_hash] = epoch
        if result is Broadcast.UNDERPRICED:
            self._needs_bump.add(epoch)
        elif result is not Broadcast.ACCEPTED:
            log.info(
                "settlement broadcast epoch=%d tx=%s node=%s", epoch, attempt.tx_hash, result.value
            )
        self._on_broadcast(epoch)
        return result

    async def keep_alive(self, epoch: int, s: Settlement) -> None:
        """Rebroadcast after a restart; replace when stuck or refused as underpriced."""
        newest = s.attempts[-1]
        if newest.tx_hash not in self._broadcast:
            # First sight of this transaction in this process: a restart, or a crash between
            # recording it and sending it. The recorded bytes are sent again (same hash).
            log.info(
                "settlement rebroadcast epoch=%d nonce=%d tx=%s",
                epoch,
                newest.nonce,
                newest.tx_hash,
            )
            await self.send(epoch, newest)
            return
        # A re-send after a reorg restarts the wait (updated_at is the resent event's time).
        since = max(newest.sent_at, s.updated_at)
        stuck = self._clock() - since >= self._replace_after_sec
        if stuck or epoch in self._needs_bump:
            await self._replace(epoch, s)

    async def _replace(self, epoch: int, s: Settlement) -> None:
        old = s.attempts[-1]
        assert s.call is not None and s.nonce is not None
        max_fee, tip = await self.fees(capped=False)
        ppm = self._fee_bump_ppm
        new_tip = max(bump(old.max_priority_fee_per_gas, ppm), tip)
        new_max = max(bump(old.max_fee_per_gas, ppm), max_fee, new_tip)
        cap = self._max_fee_cap_wei
        if cap is not None and new_max > cap:
            if epoch not in self._cap_warned:
                self._cap_warned.add(epoch)
                log.warning(
                    "settlement stuck epoch=%d nonce=%d tx=%s: a replacement would exceed "
                    "max_fee_cap_wei=%d; waiting",
                    epoch,
                    s.nonce,
                    old.tx_hash,
                    cap,
                )
            return
        signed = await self._pool.sign_settlement(
            s.call.wallets,
            s.call.weights,
            s.call.value,
            TxOptions(
                nonce=s.nonce,
                gas=old.gas,
                max_fee_per_gas=new_max,
                max_priority_fee_per_gas=new_tip,
            ),
            claimants=s.call.claimants if s.call.function == "depositSettleAndClaim" else None,
        )
        now = self._clock()
        attempt = TxAttempt(
            tx_hash=signed.tx_hash,
            nonce=s.nonce,
            gas=old.gas,
            max_fee_per_gas=new_max,
            max_priority_fee_per_gas=new_tip,
            sent_at=now,
            raw="0x" + signed.raw.hex(),
        )
        self._ledger.record_sent(epoch, s.call, attempt, now)
        self._needs_bump.discard(epoch)
        self._replacements.inc()
        log.warning(
            "settlement stuck, replaced epoch=%d nonce=%d old_tx=%s new_tx=%s max_fee=%d tip=%d",
            epoch,
            s.nonce,
            old.tx_hash,
            attempt.tx_hash,
            new_max,
            new_tip,
        )
        await self.send(epoch, attempt)
