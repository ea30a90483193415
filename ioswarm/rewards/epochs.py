"""The coordinator's side of rewards: count each agent's epoch, close epochs, report payouts.

:class:`EpochManager` is the one object the coordinator talks to. Its hot-path methods
(:meth:`~EpochManager.on_result`, :meth:`~EpochManager.on_comparison`) only touch memory;
:meth:`~EpochManager.on_block` writes the ledger (a checkpoint each block, a synced plan when
an epoch closes) and never raises: a ledger failure is logged and retried on the next block,
because validation must not stop for the reward side. Settlement runs in :meth:`run`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_account import Account
from prometheus_client import CollectorRegistry
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.providers.async_base import AsyncBaseProvider

from ioswarm.core.models import Outcome
from ioswarm.core.rewards import (
    DEPARTED,
    PPM,
    EpochTally,
    RewardPolicy,
    normalize_wallet,
    plan_epoch,
    wei_to_iotx,
    weight_reason,
)
from ioswarm.errors import ConfigError, StoreError
from ioswarm.rewards.ledger import AgentEpoch, EpochLedger, OpenEpoch, SettlementState
from ioswarm.rewards.pool import RewardPool
from ioswarm.rewards.settler import Settler, SettlerOptions

if TYPE_CHECKING:
    from ioswarm.config import CoordinatorConfig

log = logging.getLogger("ioswarm.rewards")

LEDGER_DIR = "rewards"
"""The ledger's directory under ``dataDir``."""
NOTICE_SCAN = 32
"""Newest epochs of an agent looked at for an unannounced payout (bounds heartbeat work)."""
RECENT_EPOCHS = 20
NO_RESULTS = "no_results"
"""Standing of an agent with nothing accepted in the open epoch."""
STOP_TIMEOUT_SEC = 5.0

Closer = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PayoutNotice:
    """A confirmed payout to tell an agent about (maps onto ``PayoutInfo``)."""

    epoch: int
    amount_wei: int
    rank: int
    total_agents: int
    tx_hash: str

    @property
    def amount_iotx(self) -> float:
        """Display value only."""
        return wei_to_iotx(self.amount_wei)

    def proto_fields(self) -> dict[str, Any]:
        """Keyword arguments for ``ioswarm_pb2.PayoutInfo``."""
        return {
            "epoch": self.epoch,
            "amount_iotx": self.amount_iotx,
            "rank": self.rank,
            "total_agents": self.total_agents,
            "amount_wei": str(self.amount_wei),
            "tx_hash": self.tx_hash,
        }


def _pct(ppm: int) -> float:
    return round(ppm / (PPM // 100), 4)


def _tally_view(t: EpochTally) -> dict[str, Any]:
    return {
        "agent_id": t.agent_id,
        "wallet": t.wallet,
        "tasks": t.tasks,
        "matched": t.matched,
        "mismatched": t.mismatched,
        "excluded": t.excluded,
        "accuracy_pct": _pct(t.accuracy_ppm),
        "canary_matched": t.canary_matched,
        "canary_failed": t.canary_failed,
        "incomplete": t.incomplete,
    }


def _history_row(row: AgentEpoch) -> dict[str, Any]:
    p = row.payout
    return {
        "epoch": row.epoch,
        "amount_iotx": wei_to_iotx(p.amount_wei),
        "amount_wei": str(p.amount_wei),
        "tasks": p.tasks,
        "matched": p.matched,
        "mismatched": p.mismatched,
        "excluded": p.excluded,
        "accuracy_pct": _pct(p.accuracy_ppm),
        "rank": p.rank,
        "total_agents": row.total_agents,
        "bonus_applied": p.bonus_applied,
        "canary_matched": p.canary_matched,
        "canary_failed": p.canary_failed,
        "incomplete": p.incomplete,
        "weight": str(p.weight),
        "wallet": p.wallet,
        "reason": p.reason,
        "status": row.state.value,
        "tx_hash": row.tx_hash,
    }


class EpochManager:
    """Per-epoch tallies, epoch closing, payout notices and the reward views."""

    def __init__(
        self,
        ledger: EpochLedger,
        policy: RewardPolicy,
        *,
        epoch_blocks: int,
        epoch_reward_wei: int,
        settler: Settler | None = None,
        clock: Callable[[], float] = time.time,
        closers: Sequence[Closer] = (),
    ) -> None:
        if epoch_blocks <= 0:
            raise ValueError("epoch_blocks must be > 0")
        self.ledger = ledger
        self.policy = policy
        self.epoch_blocks = epoch_blocks
        self.epoch_reward_wei = epoch_reward_wei
        self.settler = settler
        self._clock = clock
        self._closers = list(closers)
        # Tallies survive restarts through the checkpoint; epoch -1 = no block seen yet.
        self._open = ledger.load_checkpoint() or OpenEpoch(-1)
        self._head = -1
        self._dirty = False
        self._store_failing = False
        self._stopped = asyncio.Event()
        self._settling: asyncio.Task[None] | None = None

    @classmethod
    def from_config(
        cls,
        config: CoordinatorConfig,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
        options: SettlerOptions | None = None,
    ) -> EpochManager:
        """Ledger under ``dataDir``; a settler when ``rewardContract`` is set.

        ``options`` tunes the settler; its chain id check defaults to ``rewardChainId`` (or,
        when settlements go through the node's RPC, ``chainId``).
        """
        r = config.reward
        policy = RewardPolicy.from_config(
            min_tasks=r.min_tasks_for_reward,
            bonus_accuracy_pct=r.bonus_accuracy_pct,
            bonus_multiplier=r.bonus_multiplier,
            delegate_cut_pct=r.delegate_cut_pct,
            min_accuracy_pct=r.min_accuracy_pct,
            # Canaries are the evidence that answers are the agent's own work; with none
            # issued (canaryPct 0) the rule cannot apply.
            min_canaries=r.min_canaries if config.canary_pct > 0 else 0,
        )
        if config.reward_contract and not config.reward_signer_key:
            raise ConfigError("rewardSignerKey", "is required when rewardContract is set")
        ledger = EpochLedger(Path(config.data_dir) / LEDGER_DIR)
        settler: Settler | None = None
        closers: list[Closer] = []
        if config.reward_contract:
            url = config.reward_rpc_url or config.node_rpc_url
            # No provider-level retries: the settler's backoff is the one retry policy.
            w3: AsyncWeb3[AsyncBaseProvider] = AsyncWeb3(
                AsyncHTTPProvider(url, exception_retry_configuration=None)
            )
            signer = Account.from_key(config.reward_signer_key)
            pool = RewardPool(w3, config.reward_contract, signer)
            opts = options or SettlerOptions(confirmations=config.reward_confirmations)
            if not opts.expected_chain_id:
                chain = config.reward_chain_id or (0 if config.reward_rpc_url else config.chain_id)
                opts = replace(opts, expected_chain_id=chain)
            settler = Settler(pool, ledger, signer, clock, options=opts, registry=registry)
            closers.append(w3.provider.disconnect)
        return cls(
            ledger,
            policy,
            epoch_blocks=r.epoch_blocks,
            epoch_reward_wei=config.epoch_reward_wei,
            settler=settler,
            clock=clock,
            closers=closers,
        )

    # -- the coordinator's feed (never raises for ledger trouble) --------------------------

    def _tally(self, agent_id: str, wallet: str) -> EpochTally:
        t = self._open.tallies.get(agent_id)
        if t is None:
            t = self._open.tallies[agent_id] = EpochTally(agent_id, wallet)
        elif wallet and not t.wallet:
            # Only a tally begun without a wallet (a comparison after eviction) takes one: an
            # epoch pays the wallet it began with, and wallet changes wait for the boundary.
            t.wallet = wallet
        self._dirty = True
        return t

    def on_result(self, agent_id: str, wallet: str) -> None:
        """An agent's result was accepted: one task in the current epoch."""
        self._tally(agent_id, wallet).tasks += 1

    def on_comparison(
        self,
        agent_id: str,
        wallet: str,
        outcome: Outcome | str,
        *,
        canary: bool = False,
        detail: str = "",
    ) -> None:
        """A verdict on that agent; ``canary`` when the task was a canary (exact truth),
        ``detail`` the mismatched field. An outcome's string value is still taken while
        callers move to :class:`Outcome`; an unknown one raises ValueError."""
        self._tally(agent_id, wallet).add_comparison(outcome, canary=canary, detail=detail)

    def standing(self, agent_id: str) -> tuple[bool, str]:
        """Whether the agent would earn if the open epoch closed now, and if not, why
        (``no_results`` when it has nothing accepted this epoch)."""
        tally = self._open.tallies.get(agent_id)
        if tally is None:
            return False, NO_RESULTS
        reason = weight_reason(tally, normalize_wallet(tally.wallet), self.policy)
        return reason == "", reason

    def on_block(self, number: int) -> int | None:
        """A new head block; closes the open epoch when ``number // epochBlocks`` advances.

        Returns the epoch closed by this call, if any.
        """
        self._head = max(self._head, number)
        epoch = number // self.epoch_blocks
        closed: int | None = None
        if self._open.epoch < 0:
            self._open.epoch = epoch
            self._dirty = True
        elif epoch > self._open.epoch:
            closed = self._close(epoch)
        self._checkpoint()
        return closed

    def _close(self, next_epoch: int) -> int | None:
        old = self._open
        try:
            prev_epoch = self.ledger.latest_epoch()
            prev = self.ledger.epoch(prev_epoch) if prev_epoch is not None else None
            previous_agents = {
                p.agent_id: p.wallet for p in (prev.payouts if prev else ()) if p.weight > 0
            }
            previous_wallets = self.ledger.expected_weights()
            fresh = OpenEpoch(next_epoch)
            if not old.tallies and not previous_wallets:
                written = False  # nobody worked and nothing is weighted on chain
                self.ledger.save_checkpoint(fresh)
            else:
                plan = plan_epoch(
                    old.epoch,
                    old.tallies.values(),
                    previous_agents,
                    previous_wallets,
                    self.policy,
                    self.epoch_reward_wei,
                )
                written = self.ledger.plan(plan, self._clock(), fresh)
                if written:
                    log.info(
                        "epoch closed epoch=%d agents=%d total_weight=%d deposit_wei=%d "
                        "delegate_wei=%d",
                        plan.epoch,
                        plan.total_agents,
                        plan.total_weight,
                        plan.deposit_wei,
                        plan.delegate_wei,
                    )
                else:
                    log.info("epoch already in the ledger epoch=%d", old.epoch)
        except StoreError as exc:
            # Keep counting into the old epoch; the next block tries to close it again.
            self._store_error(exc)
            return None
        self._store_ok()
        self._open = fresh
        self._dirty = False
        if written and self.settler is not None:
            self.settler.wake()
        return old.epoch if written else None

    def _checkpoint(self) -> None:
        if not self._dirty:
            return
        try:
            self.ledger.save_checkpoint(self._open)
        except StoreError as exc:
            self._store_error(exc)
            return
        self._store_ok()
        self._dirty = False

    def _store_error(self, exc: StoreError) -> None:
        if not self._store_failing:
            log.error("epoch ledger failing; tallies kept in memory error=%s", exc)
        self._store_failing = True

    def _store_ok(self) -> None:
        if self._store_failing:
            log.info("epoch ledger writable again")
        self._store_failing = False

    # -- notices and views -----------------------------------------------------------------

    def payout_notice(self, agent_id: str) -> PayoutNotice | None:
        """The newest confirmed payout the agent has not heard about; marks it announced."""
        try:
            announced = self.ledger.last_announced(agent_id)
            for row in self.ledger.agent_history(agent_id, NOTICE_SCAN):
                if row.epoch <= announced:
                    break
                p = row.payout
                if row.state is SettlementState.CONFIRMED and p.amount_wei > 0:
                    self.ledger.mark_announced(agent_id, row.epoch)
                    return PayoutNotice(
                        row.epoch, p.amount_wei, p.rank, row.total_agents, row.tx_hash or ""
                    )
        except StoreError as exc:
            self._store_error(exc)
        return None

    @property
    def open_epoch(self) -> int:
        """The epoch being counted; -1 before the first block. Advances when an epoch closes."""
        return self._open.epoch

    def current_epoch(self) -> int:
        """The epoch being counted (from the head block once one is seen)."""
        if self._open.epoch >= 0:
            return self._open.epoch
        return max(self._head, 0) // self.epoch_blocks

    def current_epoch_stats(self) -> tuple[int, int, float]:
        """``(epoch, tasks, accuracy)`` of the open epoch; accuracy is a fraction in 0..1
        (matched / judged over all agents, 1.0 when nothing was judged)."""
        tallies = self._open.tallies.values()
        tasks = sum(t.tasks for t in tallies)
        matched = sum(t.matched for t in tallies)
        judged = sum(t.judged for t in tallies)
        return self.current_epoch(), tasks, (matched / judged if judged else 1.0)

    def epoch_view(self) -> dict[str, Any]:
        """``GET /swarm/epoch``: the open epoch's tallies and where settlements stand."""
        epoch = self.current_epoch()
        end = (epoch + 1) * self.epoch_blocks - 1
        queued: list[int] = []
        sent: list[dict[str, Any]] = []
        for e in self.ledger.unsettled():
            s = self.ledger.settlement(e)
            if s is not None and s.state in (SettlementState.SENT, SettlementState.REORGED):
                sent.append(
                    {
                        "epoch": e,
                        "status": s.status,
                        "nonce": s.nonce,
                        "tx_hash": s.attempts[-1].tx_hash if s.attempts else None,
                        "attempts": len(s.attempts),
                        "reorgs": s.reorgs,
                    }
                )
            else:
                queued.append(e)
        settler = self.settler
        head = settler.head if settler else None
        confirmed: list[dict[str, Any]] = []
        reverted: list[dict[str, Any]] = []
        for s in self.ledger.recent(RECENT_EPOCHS):
            if s.state is SettlementState.CONFIRMED:
                value = s.call.value if s.call else 0
                depth = None
                if head is not None and s.block is not None:
                    depth = max(head - s.block + 1, 0)
                confirmed.append(
                    {
                        "epoch": s.epoch,
                        "status": s.status,
                        "final": s.final,
                        "confirmations": depth,
                        "reorgs": s.reorgs,
                        "tx_hash": s.tx_hash,
                        "block": s.block,
                        "deposit_iotx": wei_to_iotx(value),
                        "deposit_wei": str(value),
                    }
                )
            elif s.state is SettlementState.REVERTED:
                reverted.append(
                    {"epoch": s.epoch, "tx_hash": s.tx_hash, "reason": s.reason, "retry": s.retry}
                )
        return {
            "epoch": epoch,
            "epoch_blocks": self.epoch_blocks,
            "head_block": self._head,
            "start_block": epoch * self.epoch_blocks,
            "end_block": end,
            "blocks_left": max(end - self._head, 0) if self._head >= 0 else self.epoch_blocks,
            "reward_iotx": wei_to_iotx(self.epoch_reward_wei),
            "reward_wei": str(self.epoch_reward_wei),
            "min_accuracy_pct": _pct(self.policy.min_accuracy_ppm),
            "agents": [
                {
                    **_tally_view(t),
                    "weight_reason": weight_reason(t, normalize_wallet(t.wallet), self.policy),
                }
                for _, t in sorted(self._open.tallies.items())
            ],
            "settlement": {
                "enabled": settler is not None,
                "signer": settler.signer_address if settler else None,
                "rpc_up": settler.rpc_up if settler else None,
                "halted": settler.halted if settler else None,
                "halt_reason": settler.halt_reason if settler else None,
                "last_error": (settler.halted or settler.last_error) if settler else "",
                "confirmations_required": settler.options.confirmations if settler else None,
                "head_block": head,
                "queued": queued,
                "sent": sent,
                "confirmed": confirmed,
                "reverted": reverted,
            },
        }

    def rewards_view(self, agent_id: str, limit: int = 100) -> dict[str, Any]:
        """``GET /api/rewards?agent=ID``: the agent's epochs (newest first) and totals."""
        rows = [r for r in self.ledger.agent_history(agent_id) if r.payout.reason != DEPARTED]
        paid = sum(r.payout.amount_wei for r in rows if r.state is SettlementState.CONFIRMED)
        earned = sum(r.payout.amount_wei for r in rows)
        pending = sum(
            r.payout.amount_wei
            for r in rows
            if r.state in (SettlementState.PLANNED, SettlementState.SENT)
        )
        tally = self._open.tallies.get(agent_id)
        return {
            "agent_id": agent_id,
            "history": [_history_row(r) for r in rows[:limit]],
            "totals": {
                "epochs": len(rows),
                "tasks": sum(r.payout.tasks for r in rows),
                "matched": sum(r.payout.matched for r in rows),
                "bonus_epochs": sum(1 for r in rows if r.payout.bonus_applied),
                "amount_iotx": wei_to_iotx(earned),
                "amount_wei": str(earned),
                "paid_iotx": wei_to_iotx(paid),
                "paid_wei": str(paid),
                "pending_iotx": wei_to_iotx(pending),
                "pending_wei": str(pending),
            },
            "current": None
            if tally is None
            else {"epoch": self.current_epoch(), **_tally_view(tally)},
        }

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Settle closed epochs until :meth:`stop` (returns at once without a settler)."""
        if self.settler is None:
            await self._stopped.wait()
            return
        self._settling = asyncio.create_task(self.settler.run(), name="epoch-settler")
        try:
            await self._settling
        finally:
            self._settling = None

    async def stop(self) -> None:
        """Stop settling, save the open epoch's tallies, close the ledger and the RPC client."""
        self._stopped.set()
        if self.settler is not None:
            await self.settler.stop()
        task = self._settling
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_SEC)
            if not done:
                # Every settlement state is durable; an interrupted RPC is resumed at restart.
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._dirty = True
        self._checkpoint()
        for close in self._closers:
            await close()
        self.ledger.close()
