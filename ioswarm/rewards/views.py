"""The JSON documents of the reward side: ``GET /swarm/epoch`` and ``GET /api/rewards``.

Pure functions of the ledger, the open epoch's tallies and the settler's state;
:class:`~ioswarm.rewards.epochs.EpochManager` passes them its parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ioswarm.core.rewards import (
    DEPARTED,
    PPM,
    EpochTally,
    RewardPolicy,
    normalize_wallet,
    wei_to_iotx,
    weight_reason,
)
from ioswarm.rewards.ledger import AgentEpoch, EpochLedger, SettlementState
from ioswarm.rewards.settler import Settler

RECENT_EPOCHS = 20
"""Newest settlements shown in ``GET /swarm/epoch``."""


def pct(ppm: int) -> float:
    """A ppm fraction as a percentage, 4 decimals."""
    return round(ppm / (PPM // 100), 4)


def tally_view(t: EpochTally) -> dict[str, Any]:
    """One agent's open-epoch tally as JSON."""
    return {
        "agent_id": t.agent_id,
        "wallet": t.wallet,
        "tasks": t.tasks,
        "matched": t.matched,
        "mismatched": t.mismatched,
        "excluded": t.excluded,
        "accuracy_pct": pct(t.accuracy_ppm),
        "canary_matched": t.canary_matched,
        "canary_failed": t.canary_failed,
        "incomplete": t.incomplete,
    }


def history_row(row: AgentEpoch) -> dict[str, Any]:
    """One closed epoch of an agent (its payout and settlement status) as JSON."""
    p = row.payout
    return {
        "epoch": row.epoch,
        "amount_iotx": wei_to_iotx(p.amount_wei),
        "amount_wei": str(p.amount_wei),
        "tasks": p.tasks,
        "matched": p.matched,
        "mismatched": p.mismatched,
        "excluded": p.excluded,
        "accuracy_pct": pct(p.accuracy_ppm),
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


def epoch_view(
    ledger: EpochLedger,
    settler: Settler | None,
    policy: RewardPolicy,
    tallies: Mapping[str, EpochTally],
    *,
    epoch: int,
    epoch_blocks: int,
    head_block: int,
    epoch_reward_wei: int,
) -> dict[str, Any]:
    """``GET /swarm/epoch``: the open epoch's tallies (``agent_list``) and where settlements
    stand, with the reference's ``agents`` (how many tallied), ``total_tasks``,
    ``total_correct`` (matched) and ``accuracy`` (matched / judged, 0 when nothing was judged)."""
    end = (epoch + 1) * epoch_blocks - 1
    total_tasks = sum(t.tasks for t in tallies.values())
    total_correct = sum(t.matched for t in tallies.values())
    judged = total_correct + sum(t.mismatched for t in tallies.values())
    queued: list[int] = []
    sent: list[dict[str, Any]] = []
    for e in ledger.unsettled():
        s = ledger.settlement(e)
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
    head = settler.head if settler else None
    confirmed: list[dict[str, Any]] = []
    reverted: list[dict[str, Any]] = []
    for s in ledger.recent(RECENT_EPOCHS):
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
        "agents": len(tallies),
        "total_tasks": total_tasks,
        "total_correct": total_correct,
        "accuracy": round(total_correct / judged, 6) if judged else 0.0,
        "epoch_blocks": epoch_blocks,
        "head_block": head_block,
        "start_block": epoch * epoch_blocks,
        "end_block": end,
        "blocks_left": max(end - head_block, 0) if head_block >= 0 else epoch_blocks,
        "reward_iotx": wei_to_iotx(epoch_reward_wei),
        "reward_wei": str(epoch_reward_wei),
        "min_accuracy_pct": pct(policy.min_accuracy_ppm),
        "agent_list": [
            {
                **tally_view(t),
                "weight_reason": weight_reason(t, normalize_wallet(t.wallet), policy),
            }
            for _, t in sorted(tallies.items())
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


def rewards_view(
    ledger: EpochLedger,
    agent_id: str,
    tally: EpochTally | None,
    *,
    current_epoch: int,
    limit: int = 100,
) -> dict[str, Any]:
    """``GET /api/rewards?agent=ID``: the agent's epochs (newest first) and totals, with the
    reference's ``earned_iotx``, ``total_tasks`` and ``avg_accuracy`` (the mean of the epochs'
    ``accuracy_pct``)."""
    rows = [r for r in ledger.agent_history(agent_id) if r.payout.reason != DEPARTED]
    paid = sum(r.payout.amount_wei for r in rows if r.state is SettlementState.CONFIRMED)
    earned = sum(r.payout.amount_wei for r in rows)
    pending = sum(
        r.payout.amount_wei
        for r in rows
        if r.state in (SettlementState.PLANNED, SettlementState.SENT)
    )
    return {
        "agent_id": agent_id,
        "history": [history_row(r) for r in rows[:limit]],
        "totals": {
            "earned_iotx": wei_to_iotx(earned),
            "total_tasks": sum(r.payout.tasks for r in rows),
            "avg_accuracy": (
                round(sum(pct(r.payout.accuracy_ppm) for r in rows) / len(rows), 4) if rows else 0.0
            ),
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
        "current": None if tally is None else {"epoch": current_epoch, **tally_view(tally)},
    }
