"""Epoch settlement on chain, exactly once (the coordinator-facing side is in ``epochs.py``).

:class:`Settler` is one asyncio loop that settles the ledger's queued epochs strictly in order.
Exactly-once rests on three rules:

1. **One nonce per epoch, recorded first.** The transaction is signed (its hash is known before
   it is sent) and ``sent(tx hash, nonce, fees, raw bytes)`` is synced to the ledger before the
   transaction is broadcast. Replacements reuse that nonce, so at most one of them can be mined.
2. **Reconcile before anything else.** On start, every ``sent`` epoch is checked against the
   chain first: a receipt for any recorded hash decides it (confirmed or reverted); a nonce the
   chain has already consumed without a receipt for any recorded hash is taken as confirmed
   (logged as an error: only a foreign use of the signer key does that); otherwise the recorded
   bytes are broadcast again (same nonce, same hash). A new nonce is only ever taken for an
   epoch that was never bound to one, whose mined transaction reverted, or whose freshly
   signed transaction the node refused because the nonce was already taken.
3. **Stuck transactions are replaced, never duplicated.** After ``replace_after_sec`` without
   a receipt, the same call is signed again with the same nonce and gas and fees raised by at
   least 12.5 % (nodes want >= 10 %), recorded, then broadcast.

4. **Final only after confirmations; a reorg re-sends the same bytes.** A mined settlement is
   ``confirmed`` (included) and watched until its block has ``confirmations`` blocks on it
   (then ``final``). If its receipt disappears, or its block hash is no longer the canonical
   one at that height, it is recorded ``reorged`` and the epoch's recorded transaction (same
   nonce, same hash) is broadcast again (``resent``). No new nonce is taken for a reorged
   epoch, so the old inclusion and the re-send can never both be mined. Later epochs do not wait
   for an earlier one's finality: their nonces already order them after it.
5. **Same chain, or nothing.** Chain id and genesis hash are recorded in the ledger at first
   use and checked before anything is read or sent, as is the pool's code. A node on another
   chain (or without the pool) halts settlement: one ERROR line, ``halted``/``halt_reason``,
   ``ioswarm_settlement_halted{reason}`` = 1; epochs keep being planned, nothing is sent, and
   settlement resumes by itself once the node answers for the recorded chain again.

Failure handling:

- *Reward RPC unreachable* (any retryable :class:`SettlementError`): epochs stay queued, the
  loop logs once, retries with exponential backoff and never blocks the caller; planning epochs
  is local (LMDB) work, so validation and epoch accounting continue.
- *Reverted*: logged at ERROR with the decoded reason and counted in
  ``ioswarm_reward_settlements_total{outcome="reverted"}``. Only one revert is known to be
  safe to retry: **out of gas** (status 0 with all gas used): the call was valid but the
  estimate too tight. A reverted transaction moves no value and consumes its own nonce, so a
  new binding (new nonce, doubled gas headroom, up to ``max_oog_retries``) cannot pay twice.
  Every other revert (a custom error such as ``NotCoordinator``, or a refusal at gas
  estimation, where nothing is sent) is deterministic: the epoch is parked as ``reverted`` for
  an operator (fix the cause, then :meth:`EpochLedger.requeue`) and later epochs go on. A later
  settlement zeroes every wallet still weighted on chain that it does not pay, so epochs
  settled around a parked one leave the on-chain weights right.

The delegate's cut is never sent anywhere: only the agents' share is deposited, the cut stays
with the signer (the delegate's wallet).

Parts: :class:`~ioswarm.rewards.finality.ChainGuard` (rule 5) and
:class:`~ioswarm.rewards.finality.FinalityWatch` (rule 4),
:class:`~ioswarm.rewards.sender.SettlementSender` (broadcast and replacement, rule 3) and
:class:`~ioswarm.rewards.outcomes.OutcomeRecorder` (a receipt into a ledger state).

Test hooks: ``hook(point, epoch)`` is called at :data:`HOOK_POINTS`; a fault-injection test
passes a hook that kills the process there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from prometheus_client import CollectorRegistry, Counter, Gauge

from ioswarm.core.rewards import EpochPlan
from ioswarm.errors import IoswarmError, SettlementError, StoreError
from ioswarm.rewards.finality import (
    HALT_REASONS,
    ChainGuard,
    FinalityWatch,
    SettlementHalted,
)
from ioswarm.rewards.ledger import (
    EpochLedger,
    Settlement,
    SettlementCall,
    SettlementState,
    TxAttempt,
)
from ioswarm.rewards.outcomes import OutcomeRecorder
from ioswarm.rewards.pool import Broadcast, RewardPool, TxOptions
from ioswarm.rewards.sender import SettlementSender

log = logging.getLogger("ioswarm.rewards")

HOOK_PLANNED = "planned"
"""About to bind a nonce and sign (nothing recorded for this attempt yet)."""
HOOK_SIGNED = "signed"
"""``sent`` is durable in the ledger; the transaction has not been broadcast."""
HOOK_BROADCAST = "broadcast"
"""The node has the transaction; its receipt has not been looked at."""
HOOK_RECEIPT = "receipt"
"""A receipt was seen; the ledger does not know yet."""
HOOK_REORGED = "reorged"
"""A reorg is recorded in the ledger; the transaction has not been broadcast again."""
HOOK_POINTS = (HOOK_PLANNED, HOOK_SIGNED, HOOK_BROADCAST, HOOK_RECEIPT, HOOK_REORGED)

MIN_FEE_BUMP_PPM = 125_000
"""12.5 %: above the 10 % most nodes require for a replacement, with room for rounding."""

Hook = Callable[[str, int], None]


@dataclass(frozen=True, slots=True)
class SettlerOptions:
    """Tuning of the settlement loop."""

    replace_after_sec: float = 180.0
    """A transaction without a receipt this long is replaced (same nonce, higher fees)."""
    fee_bump_ppm: int = MIN_FEE_BUMP_PPM
    """Fee increase per replacement, in ppm (at least 12.5 %)."""
    max_fee_cap_wei: int | None = None
    """Never offer more than this max fee per gas; a stuck transaction then just waits."""
    gas_margin_pct: int = 20
    """Added to the node's gas estimate."""
    max_oog_retries: int = 3
    """Out-of-gas reverts retried per epoch (with doubled headroom each time)."""
    poll_interval_sec: float = 2.0
    """How often a sent transaction's receipt is looked for."""
    backoff_initial_sec: float = 1.0
    backoff_max_sec: float = 60.0
    idle_check_sec: float = 30.0
    """The queue is re-read this often even without a wake-up."""
    nonce_grace_polls: int = 3
    """Polls to wait for a receipt after the chain shows the epoch's nonce consumed."""
    pay_out: bool = False
    """Use ``depositSettleAndClaim``: pay every weighted wallet in the same transaction."""
    expected_chain_id: int = 0
    """Refuse to settle unless the RPC reports this chain id (0: no check)."""
    confirmations: int = 12
    """Blocks on top of a settlement (its own included) before it is final."""

    def __post_init__(self) -> None:
        if self.fee_bump_ppm < MIN_FEE_BUMP_PPM:
            raise ValueError("fee_bump_ppm must be >= 125000 (12.5 %)")
        if self.confirmations < 1:
            raise ValueError("confirmations must be >= 1")


class SettlerMetrics:
    """The settler's Prometheus metrics (bounded labels)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.settlements = Counter(
            "ioswarm_reward_settlements_total",
            "Epoch settlements that reached a final state, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.replacements = Counter(
            "ioswarm_reward_tx_replacements_total",
            "Stuck settlement transactions replaced with a higher fee.",
            registry=registry,
        )
        self.deposited = Counter(
            "ioswarm_reward_deposited_iotx_total",
            "IOTX deposited into the reward pool by final settlements.",
            registry=registry,
        )
        self.unsettled = Gauge(
            "ioswarm_reward_epochs_unsettled",
            "Closed epochs not yet settled on chain.",
            registry=registry,
        )
        self.rpc_up = Gauge(
            "ioswarm_reward_rpc_up",
            "1 while the reward RPC answers, 0 while settlements are queueing.",
            registry=registry,
        )
        self.last_confirmed = Gauge(
            "ioswarm_reward_last_confirmed_epoch",
            "Newest epoch whose settlement is confirmed on chain.",
            registry=registry,
        )
        self.halted = Gauge(
            "ioswarm_settlement_halted",
            "1 while settlement is halted because the node is not the recorded chain, by reason.",
            ["reason"],
            registry=registry,
        )
        self.rpc_up.set(1)
        for reason in HALT_REASONS:
            self.halted.labels(reason=reason).set(0)


def settlement_call(plan: EpochPlan, onchain: Iterable[str], *, pay_out: bool) -> SettlementCall:
    """The call settling ``plan``: its weights, and 0 for every other ``onchain`` wallet."""
    weights = {w.wallet: w.weight for w in plan.wallets}
    # Zero every wallet still weighted on chain that this epoch does not pay (departed,
    # or left over from an epoch that was never settled).
    for wallet in onchain:
        weights.setdefault(wallet, 0)
    items = sorted(weights.items())
    return SettlementCall(
        function="depositSettleAndClaim" if pay_out else "depositAndSettle",
        wallets=tuple(w for w, _ in items),
        weights=tuple(n for _, n in items),
        value=plan.deposit_wei,
        claimants=tuple(w for w, n in items if n > 0) if pay_out else (),
    )


class Settler:
    """Settles the ledger's queued epochs in order; see the module docstring for the rules."""

    def __init__(
        self,
        pool: RewardPool,
        ledger: EpochLedger,
        signer: LocalAccount,
        clock: Callable[[], float] = time.time,
        *,
        options: SettlerOptions | None = None,
        registry: CollectorRegistry | None = None,
        hook: Hook | None = None,
    ) -> None:
        self._pool = pool.with_signer(signer)
        self._ledger = ledger
        self._clock = clock
        self.options = options or SettlerOptions()
        self.metrics = SettlerMetrics(registry or CollectorRegistry())
        self._hook = hook or (lambda point, epoch: None)
        self._wake = asyncio.Event()
        self._stopping = False
        self._reconciled = False
        self._guard = ChainGuard(
            self._pool, ledger, self.metrics.halted, self.options.expected_chain_id
        )
        self._finality = FinalityWatch(
            self._pool,
            ledger,
            clock,
            confirmations=self.options.confirmations,
            settlements=self.metrics.settlements,
            deposited=self.metrics.deposited,
            on_reorged=lambda epoch: self._hook(HOOK_REORGED, epoch),
        )
        self.rpc_up = True
        self.last_error = ""
        self._sender = SettlementSender(
            self._pool,
            ledger,
            clock,
            replace_after_sec=self.options.replace_after_sec,
            fee_bump_ppm=self.options.fee_bump_ppm,
            max_fee_cap_wei=self.options.max_fee_cap_wei,
            replacements=self.metrics.replacements,
            on_broadcast=lambda epoch: self._hook(HOOK_BROADCAST, epoch),
        )
        self._outcomes = OutcomeRecorder(
            self._pool,
            ledger,
            clock,
            max_oog_retries=self.options.max_oog_retries,
            settlements=self.metrics.settlements,
            last_confirmed=self.metrics.last_confirmed,
        )
        self._nonce_misses: dict[int, int] = {}

    @property
    def halted(self) -> str | None:
        """Why settling is refused (wrong chain); epochs keep queueing meanwhile."""
        return self._guard.halted

    @property
    def halt_reason(self) -> str | None:
        """The bounded reason of :attr:`halted`: one of :data:`HALT_REASONS`."""
        return self._guard.halt_reason

    @property
    def head(self) -> int | None:
        """The newest block number seen while watching settlements for finality."""
        return self._finality.head

    @property
    def signer_address(self) -> str:
        return self._pool.signer_address

    async def claimable(self, wallet: str) -> int:
        """Whole wei ``wallet`` can claim from the pool now (a read, no signer funds)."""
        return await self._pool.claimable(wallet)

    def wake(self) -> None:
        """A new epoch is queued: look at the queue now."""
        self._wake.set()

    async def stop(self) -> None:
        """Ask :meth:`run` to return; every state it leaves is durable and resumable."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Reconcile with the chain, then settle queued epochs until :meth:`stop`."""
        backoff = self.options.backoff_initial_sec
        while not self._stopping:
            try:
                progressed = await self.step()
                self._mark_up()
                backoff = self.options.backoff_initial_sec
                if not progressed:
                    idle = self.options.idle_check_sec
                    if self._watching():
                        idle = min(idle, self.options.poll_interval_sec)
                    await self._nap(idle, wakeable=True)
            except (SettlementError, StoreError) as exc:
                self._mark_down(exc)
                await self._nap(backoff, wakeable=False)
                backoff = min(backoff * 2, self.options.backoff_max_sec)
            except Exception:
                # A side system: an unexpected bug here must not end reward settlement for
                # good, nor reach the coordinator. Log it and try again later.
                log.exception("settler: unexpected error; retrying in %.1fs", backoff)
                await self._nap(backoff, wakeable=False)
                backoff = min(backoff * 2, self.options.backoff_max_sec)

    async def step(self) -> bool:
        """One pass: reconcile once, then drive queued epochs to a final state in order.

        Returns whether anything was queued. Raises SettlementError while the RPC is down.
        """
        try:
            await self._guard.check()
            if not self._reconciled:
                await self._reconcile()
                self._reconciled = True
            await self._finality.watch()
            queue = self._ledger.unsettled()
            self.metrics.unsettled.set(len(queue))
            for epoch in queue:
                if self._stopping:
                    break
                await self._drive(epoch)
        except SettlementHalted:
            self.metrics.unsettled.set(len(self._ledger.unsettled()))
            return False
        self.metrics.unsettled.set(len(self._ledger.unsettled()))
        return bool(queue)

    def _watching(self) -> bool:
        try:
            return self._finality.watching()
        except StoreError:
            return False

    # -- the state machine -----------------------------------------------------------------

    async def _reconcile(self) -> None:
        for epoch in self._ledger.unsettled():
            s = self._ledger.settlement(epoch)
            if s is not None and s.state in (SettlementState.SENT, SettlementState.REORGED):
                resolved = await self._check_sent(epoch, s)
                log.info(
                    "settlement reconciled epoch=%d nonce=%s resolved=%s",
                    epoch,
                    s.nonce,
                    resolved,
                )

    async def _drive(self, epoch: int) -> None:
        while not self._stopping:
            s = self._ledger.settlement(epoch)
            if s is None or s.terminal:
                return
            await self._guard.check()
            if s.state is SettlementState.REORGED:
                if not await self._check_sent(epoch, s):
                    await self._resend(epoch, s)
            elif s.state is SettlementState.SENT:
                if await self._check_sent(epoch, s):
                    continue
                await self._sender.keep_alive(epoch, s)
                await self._nap(self.options.poll_interval_sec, wakeable=False)
            else:
                await self._bind(epoch, s)

    async def _bind(self, epoch: int, s: Settlement) -> None:
        """Bind an unbound epoch to a fresh nonce: sign, record (synced), broadcast."""
        plan = self._ledger.epoch(epoch)
        if plan is None:
            raise StoreError(f"epoch {epoch}: queued but its plan is missing")
        call = settlement_call(plan, self._ledger.onchain_weights(), pay_out=self.options.pay_out)
        if not call.wallets and call.value == 0:
            self._ledger.record_skipped(
                epoch, "no weights to change, nothing to deposit", self._clock()
            )
            self.metrics.settlements.labels(outcome="skipped").inc()
            log.info("settlement skipped epoch=%d reason=nothing to send", epoch)
            return
        self._hook(HOOK_PLANNED, epoch)
        nonce = await self._pool.nonce("pending")
        max_fee, tip = await self._sender.fees()
        # After out-of-gas reverts, double the headroom once per revert.
        tries = min(self._outcomes.out_of_gas_reverts(epoch), self.options.max_oog_retries)
        margin = (100 + self.options.gas_margin_pct) * 2**tries - 100
        try:
            signed = await self._pool.sign_settlement(
                call.wallets,
                call.weights,
                call.value,
                TxOptions(nonce=nonce, max_fee_per_gas=max_fee, max_priority_fee_per_gas=tip),
                claimants=call.claimants if self.options.pay_out else None,
                gas_margin_pct=margin,
            )
        except SettlementError as exc:
            if exc.retryable:
                raise
            # Refused at estimation: nothing was sent and the nonce is still free.
            self._outcomes.alert_revert(epoch, str(exc), None, retry=False)
            self._ledger.record_reverted(epoch, str(exc), False, self._clock())
            return
        now = self._clock()
        attempt = TxAttempt(
            tx_hash=signed.tx_hash,
            nonce=signed.nonce,
            gas=signed.gas,
            max_fee_per_gas=signed.max_fee_per_gas,
            max_priority_fee_per_gas=signed.max_priority_fee_per_gas,
            sent_at=now,
            raw="0x" + signed.raw.hex(),
        )
        self._ledger.record_sent(epoch, call, attempt, now)
        log.info(
            "settlement sent epoch=%d nonce=%d tx=%s wallets=%d value_wei=%d gas=%d max_fee=%d",
            epoch,
            attempt.nonce,
            attempt.tx_hash,
            len(call.wallets),
            call.value,
            attempt.gas,
            attempt.max_fee_per_gas,
        )
        self._hook(HOOK_SIGNED, epoch)
        if await self._sender.send(epoch, attempt) is Broadcast.NONCE_USED:
            # This transaction was never sent before, so it cannot be what used the nonce (a
            # stale "pending" count, or another sender with this key): it can never be mined.
            reason = f"nonce {attempt.nonce} already used by another transaction; not sent"
            log.warning("settlement rebinding epoch=%d: %s", epoch, reason)
            self._ledger.record_reverted(epoch, reason, True, self._clock())

    async def _check_sent(self, epoch: int, s: Settlement) -> bool:
        """Look for a receipt of any of the epoch's transactions; True once it is final."""
        for attempt in reversed(s.attempts):
            outcome = await self._pool.outcome(attempt.tx_hash)
            if outcome is None:
                continue
            self._hook(HOOK_RECEIPT, epoch)
            if outcome.success:
                self._outcomes.confirmed(epoch, s, outcome)
            else:
                await self._outcomes.reverted(epoch, s, attempt, outcome)
            self._finished(epoch)
            return True
        assert s.nonce is not None
        if await self._pool.nonce("latest") <= s.nonce:
            self._nonce_misses.pop(epoch, None)
            return False
        misses = self._nonce_misses.get(epoch, 0) + 1
        self._nonce_misses[epoch] = misses
        if misses <= self.options.nonce_grace_polls:
            return False  # the receipt may not be indexed yet
        reason = "nonce consumed; no receipt for any recorded transaction"
        log.error(
            "settlement epoch=%d nonce=%d: %s; marked confirmed. Is the signer key used "
            "elsewhere? hashes=%s",
            epoch,
            s.nonce,
            reason,
            ",".join(a.tx_hash for a in s.attempts),
        )
        self._ledger.record_confirmed(epoch, None, None, None, None, self._clock(), reason)
        self._finished(epoch)
        return True

    async def _resend(self, epoch: int, s: Settlement) -> None:
        """Broadcast a reorged epoch's newest recorded transaction again (same nonce, hash)."""
        newest = s.attempts[-1]
        self._ledger.record_resent(epoch, newest.tx_hash, self._clock())
        log.warning(
            "settlement re-sent epoch=%d nonce=%d tx=%s after a reorg",
            epoch,
            newest.nonce,
            newest.tx_hash,
        )
        await self._sender.send(epoch, newest)

    def _finished(self, epoch: int) -> None:
        self._sender.forget(epoch)
        self._nonce_misses.pop(epoch, None)

    # -- helpers ---------------------------------------------------------------------------

    async def _nap(self, seconds: float, *, wakeable: bool) -> None:
        """Sleep up to ``seconds``; stop() always ends it, wake() only when ``wakeable``."""
        if self._stopping:
            return
        deadline = asyncio.get_running_loop().time() + seconds
        while not self._stopping:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)
            if self._wake.is_set():
                self._wake.clear()
                if wakeable:
                    return

    def _mark_down(self, exc: IoswarmError) -> None:
        self.last_error = str(exc)
        if self.rpc_up:
            log.warning(
                "settlement blocked; epochs queue and are retried with backoff queued=%d error=%s",
                len(self._safe_unsettled()),
                exc,
            )
        self.rpc_up = False
        self.metrics.rpc_up.set(0)

    def _mark_up(self) -> None:
        if not self.rpc_up:
            log.info(
                "settlement unblocked; settling queued epochs queued=%d",
                len(self._safe_unsettled()),
            )
        self.rpc_up = True
        self.last_error = ""
        self.metrics.rpc_up.set(1)

    def _safe_unsettled(self) -> list[int]:
        try:
            return self._ledger.unsettled()
        except StoreError:
            return []
