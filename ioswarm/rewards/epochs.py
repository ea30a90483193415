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
    EpochTally,
    RewardPolicy,
    normalize_wallet,
    plan_epoch,
    wei_to_iotx,
    weight_reason,
)
from ioswarm.errors import ConfigError, StoreError
from ioswarm.rewards import views
from ioswarm.rewards.ledger import EpochLedger, OpenEpoch, SettlementState
from ioswarm.rewards.pool import RewardPool
from ioswarm.rewards.settler import Settler, SettlerOptions

if TYPE_CHECKING:
    from ioswarm.config import CoordinatorConfig

log = logging.getLogger("ioswarm.rewards")

LEDGER_DIR = "rewards"
"""The ledger's directory under ``dataDir``."""
NOTICE_SCAN = 32
"""Newest epochs of an agent looked at for an unannounced payout (bounds heartbeat work)."""
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
        (matched / judged over all agents, 0.0 when nothing was judged, as the reference)."""
        tallies = self._open.tallies.values()
        tasks = sum(t.tasks for t in tallies)
        matched = sum(t.matched for t in tallies)
        judged = sum(t.judged for t in tallies)
        return self.current_epoch(), tasks, (matched / judged if judged else 0.0)

    def epoch_view(self) -> dict[str, Any]:
        """``GET /swarm/epoch``: the open epoch's tallies and where settlements stand."""
        return views.epoch_view(
            self.ledger,
            self.settler,
            self.policy,
            self._open.tallies,
            epoch=self.current_epoch(),
            epoch_blocks=self.epoch_blocks,
            head_block=self._head,
            epoch_reward_wei=self.epoch_reward_wei,
        )

    def rewards_view(self, agent_id: str, limit: int = 100) -> dict[str, Any]:
        """``GET /api/rewards?agent=ID``: the agent's epochs (newest first) and totals."""
        return views.rewards_view(
            self.ledger,
            agent_id,
            self._open.tallies.get(agent_id),
            current_epoch=self.current_epoch(),
            limit=limit,
        )

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
