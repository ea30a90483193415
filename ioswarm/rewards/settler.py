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

Test hooks: ``hook(point, epoch)`` is called at :data:`HOOK_POINTS`; a fault-injection test
passes a hook that kills the process there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from prometheus_client import CollectorRegistry, Counter, Gauge

from ioswarm.core.rewards import PPM, EpochPlan, wei_to_iotx
from ioswarm.errors import IoswarmError, SettlementError, StoreError
from ioswarm.rewards.ledger import (
    EpochLedger,
    Settlement,
    SettlementCall,
    SettlementState,
    TxAttempt,
)
from ioswarm.rewards.pool import Broadcast, RewardPool, TxOptions, TxOutcome

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

HALT_CHAIN_ID = "chain_id"
HALT_GENESIS = "genesis"
HALT_NO_CODE = "no_code"
HALT_REASONS = (HALT_CHAIN_ID, HALT_GENESIS, HALT_NO_CODE)
"""The bounded ``reason`` label values of ``ioswarm_settlement_halted``."""

OUT_OF_GAS = "out of gas"
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


class _Halted(Exception):
    """Internal: the node is not the recorded chain; abandon this pass."""


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


def _bump(value: int, ppm: int) -> int:
    """``value`` raised by ``ppm``, rounded up, by at least 1 wei."""
    return value + max(1, -(-value * ppm // PPM))


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
        self.halted: str | None = None
        """Why settling is refused (wrong chain); epochs keep queueing meanwhile."""
        self.halt_reason: str | None = None
        """The bounded reason of :attr:`halted`: one of :data:`HALT_REASONS`."""
        self.head: int | None = None
        """The newest block number seen while watching settlements for finality."""
        self.rpc_up = True
        self.last_error = ""
        self._broadcast: set[str] = set()  # hashes sent by this process
        self._needs_bump: set[int] = set()
        self._nonce_misses: dict[int, int] = {}
        self._cap_warned: set[int] = set()

    @property
    def signer_address(self) -> str:
        return self._pool.signer_address

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
            await self._check_chain()
            if not self._reconciled:
                await self._reconcile()
                self._reconciled = True
            await self._watch_included()
            queue = self._ledger.unsettled()
            self.metrics.unsettled.set(len(queue))
            for epoch in queue:
                if self._stopping:
                    break
                await self._drive(epoch)
        except _Halted:
            self.metrics.unsettled.set(len(self._ledger.unsettled()))
            return False
        self.metrics.unsettled.set(len(self._ledger.unsettled()))
        return bool(queue)

    def _watching(self) -> bool:
        try:
            return bool(self._ledger.included())
        except StoreError:
            return False

    # -- the state machine -----------------------------------------------------------------

    async def _check_chain(self) -> None:
        """Raise _Halted unless the node is the recorded chain and the pool has code."""
        actual = await self._pool.chain_id()
        genesis = await self._pool.block_hash(0)
        recorded = self._ledger.chain_identity()
        expected = recorded[0] if recorded else self.options.expected_chain_id
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
                self.metrics.halted.labels(reason=reason).set(0)

    def _halt(self, reason: str, detail: str) -> None:
        if self.halted != detail:
            log.error(
                "SETTLEMENT HALTED reason=%s: %s; nothing is sent, epochs keep being planned",
                reason,
                detail,
            )
        self.halted, self.halt_reason = detail, reason
        for r in HALT_REASONS:
            self.metrics.halted.labels(reason=r).set(1 if r == reason else 0)
        raise _Halted(detail)

    async def _watch_included(self) -> None:
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
                self.metrics.settlements.labels(outcome="reorged").inc()
                log.error(
                    "SETTLEMENT REORGED epoch=%d tx=%s block=%s: %s; re-sending the same "
                    "transaction (nonce %s)",
                    epoch,
                    s.tx_hash,
                    s.block,
                    lost,
                    s.nonce,
                )
                self._hook(HOOK_REORGED, epoch)
                continue
            confirmations = head - s.block + 1 if s.block is not None else 0
            if s.block is None or confirmations >= self.options.confirmations:
                self._ledger.record_final(epoch, confirmations, self._clock())
                value = s.call.value if s.call else 0
                self.metrics.settlements.labels(outcome="final").inc()
                self.metrics.deposited.inc(wei_to_iotx(value))
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
            await self._check_chain()
            if s.state is SettlementState.REORGED:
                if not await self._check_sent(epoch, s):
                    await self._resend(epoch, s)
            elif s.state is SettlementState.SENT:
                if await self._check_sent(epoch, s):
                    continue
                await self._keep_alive(epoch, s)
                await self._nap(self.options.poll_interval_sec, wakeable=False)
            else:
                await self._bind(epoch, s)

    def _call_for(self, plan: EpochPlan) -> SettlementCall:
        weights = {w.wallet: w.weight for w in plan.wallets}
        # Zero every wallet still weighted on chain that this epoch does not pay (departed,
        # or left over from an epoch that was never settled).
        for wallet in self._ledger.onchain_weights():
            weights.setdefault(wallet, 0)
        items = sorted(weights.items())
        pay_out = self.options.pay_out
        return SettlementCall(
            function="depositSettleAndClaim" if pay_out else "depositAndSettle",
            wallets=tuple(w for w, _ in items),
            weights=tuple(n for _, n in items),
            value=plan.deposit_wei,
            claimants=tuple(w for w, n in items if n > 0) if pay_out else (),
        )

    async def _bind(self, epoch: int, s: Settlement) -> None:
        """Bind an unbound epoch to a fresh nonce: sign, record (synced), broadcast."""
        plan = self._ledger.epoch(epoch)
        if plan is None:
            raise StoreError(f"epoch {epoch}: queued but its plan is missing")
        call = self._call_for(plan)
        if not call.wallets and call.value == 0:
            self._ledger.record_skipped(
                epoch, "no weights to change, nothing to deposit", self._clock()
            )
            self.metrics.settlements.labels(outcome="skipped").inc()
            log.info("settlement skipped epoch=%d reason=nothing to send", epoch)
            return
        self._hook(HOOK_PLANNED, epoch)
        nonce = await self._pool.nonce("pending")
        max_fee, tip = await self._fees()
        # After out-of-gas reverts, double the headroom once per revert.
        tries = min(self._out_of_gas_reverts(epoch), self.options.max_oog_retries)
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
            self._alert_revert(epoch, str(exc), None, retry=False)
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
        if await self._send(epoch, attempt) is Broadcast.NONCE_USED:
            # This transaction was never sent before, so it cannot be what used the nonce (a
            # stale "pending" count, or another sender with this key): it can never be mined.
            reason = f"nonce {attempt.nonce} already used by another transaction; not sent"
            log.warning("settlement rebinding epoch=%d: %s", epoch, reason)
            self._ledger.record_reverted(epoch, reason, True, self._clock())

    def _out_of_gas_reverts(self, epoch: int) -> int:
        return sum(
            1
            for e in self._ledger.events(epoch)
            if e["state"] == "reverted" and str(e.get("reason", "")).startswith(OUT_OF_GAS)
        )

    async def _send(self, epoch: int, attempt: TxAttempt) -> Broadcast:
        result = await self._pool.broadcast(bytes.fromhex(attempt.raw[2:]))
        self._broadcast.add(attempt.tx_hash)
        if result is Broadcast.UNDERPRICED:
            self._needs_bump.add(epoch)
        elif result is not Broadcast.ACCEPTED:
            log.info(
                "settlement broadcast epoch=%d tx=%s node=%s", epoch, attempt.tx_hash, result.value
            )
        self._hook(HOOK_BROADCAST, epoch)
        return result

    async def _check_sent(self, epoch: int, s: Settlement) -> bool:
        """Look for a receipt of any of the epoch's transactions; True once it is final."""
        for attempt in reversed(s.attempts):
            outcome = await self._pool.outcome(attempt.tx_hash)
            if outcome is None:
                continue
            self._hook(HOOK_RECEIPT, epoch)
            if outcome.success:
                self._confirm(epoch, s, outcome)
            else:
                await self._reverted(epoch, s, attempt, outcome)
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
        await self._send(epoch, newest)

    async def _keep_alive(self, epoch: int, s: Settlement) -> None:
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
            await self._send(epoch, newest)
            return
        # A re-send after a reorg restarts the wait (updated_at is the resent event's time).
        since = max(newest.sent_at, s.updated_at)
        stuck = self._clock() - since >= self.options.replace_after_sec
        if stuck or epoch in self._needs_bump:
            await self._replace(epoch, s)

    async def _replace(self, epoch: int, s: Settlement) -> None:
        old = s.attempts[-1]
        assert s.call is not None and s.nonce is not None
        max_fee, tip = await self._fees(capped=False)
        ppm = self.options.fee_bump_ppm
        new_tip = max(_bump(old.max_priority_fee_per_gas, ppm), tip)
        new_max = max(_bump(old.max_fee_per_gas, ppm), max_fee, new_tip)
        cap = self.options.max_fee_cap_wei
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
        self.metrics.replacements.inc()
        log.warning(
            "settlement stuck, replaced epoch=%d nonce=%d old_tx=%s new_tx=%s max_fee=%d tip=%d",
            epoch,
            s.nonce,
            old.tx_hash,
            attempt.tx_hash,
            new_max,
            new_tip,
        )
        await self._send(epoch, attempt)

    def _confirm(self, epoch: int, s: Settlement, outcome: TxOutcome) -> None:
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
        self.metrics.settlements.labels(outcome="confirmed").inc()
        self.metrics.last_confirmed.set(epoch)
        log.info(
            "settlement included epoch=%d tx=%s block=%d gas_used=%d deposit_wei=%d",
            epoch,
            outcome.tx_hash,
            outcome.block_number,
            outcome.gas_used,
            value,
        )
        self._finished(epoch)

    async def _reverted(
        self, epoch: int, s: Settlement, attempt: TxAttempt, outcome: TxOutcome
    ) -> None:
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
        retry = out_of_gas and self._out_of_gas_reverts(epoch) < self.options.max_oog_retries
        self._alert_revert(epoch, reason, outcome.tx_hash, retry=retry)
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
        self._finished(epoch)

    def _alert_revert(self, epoch: int, reason: str, tx_hash: str | None, *, retry: bool) -> None:
        self.metrics.settlements.labels(outcome="reverted").inc()
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

    def _finished(self, epoch: int) -> None:
        self._needs_bump.discard(epoch)
        self._nonce_misses.pop(epoch, None)
        self._cap_warned.discard(epoch)

    # -- helpers ---------------------------------------------------------------------------

    async def _fees(self, *, capped: bool = True) -> tuple[int, int]:
        max_fee, tip = await self._pool.suggest_fees()
        cap = self.options.max_fee_cap_wei
        if capped and cap is not None:
            max_fee = min(max_fee, cap)
            tip = min(tip, max_fee)
        return max_fee, tip

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
