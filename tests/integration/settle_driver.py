"""A settler process for the crash test: plans a few epochs, settles them, may SIGKILL itself.

Run as ``python -m tests.integration.settle_driver --rpc URL --pool ADDR --data DIR
[--crash-at POINT --crash-epoch N]``; the signer key comes from ``IOSWARM_REWARD_SIGNER_KEY``.
The first run of a data directory plans the epochs; every run settles what is queued, so a
run after a crash is the coordinator's restart. Exit code 0 once every epoch is confirmed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time

from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.providers.async_base import AsyncBaseProvider

from ioswarm.core.rewards import EpochTally, RewardPolicy, plan_epoch
from ioswarm.rewards.ledger import EpochLedger, SettlementState
from ioswarm.rewards.pool import RewardPool
from ioswarm.rewards.settler import HOOK_POINTS, Hook, Settler, SettlerOptions

EPOCH_REWARD = 10**18 // 2
POLICY = RewardPolicy(min_tasks=1, delegate_cut_pct=10)
WORK: dict[int, dict[str, tuple[str, int]]] = {
    1: {"a": ("0x" + "a1" * 20, 10), "b": ("0x" + "b2" * 20, 7)},
    2: {"a": ("0x" + "a1" * 20, 3), "b": ("0x" + "b2" * 20, 9), "c": ("0x" + "c3" * 20, 1)},
    3: {"a": ("0x" + "a1" * 20, 5), "c": ("0x" + "c3" * 20, 5)},  # b departs
}
EPOCHS = tuple(WORK)
MAX_PASSES = 10


def plan_all(ledger: EpochLedger) -> None:
    """Close every epoch of WORK, in order, as the EpochManager would."""
    for epoch, work in WORK.items():
        latest = ledger.latest_epoch()
        prev = ledger.epoch(latest) if latest is not None else None
        previous = {p.agent_id: p.wallet for p in (prev.payouts if prev else ()) if p.weight}
        tallies = [EpochTally(a, w, tasks=n, matched=n) for a, (w, n) in work.items()]
        plan = plan_epoch(epoch, tallies, previous, ledger.expected_weights(), POLICY, EPOCH_REWARD)
        ledger.plan(plan, at=time.time())


def crash_hook(point: str, epoch: int) -> Hook:
    def hook(at: str, e: int) -> None:
        if at == point and e == epoch:
            print(f"crash at {at} epoch {e}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


async def main(args: argparse.Namespace) -> int:
    signer = Account.from_key(os.environ["IOSWARM_REWARD_SIGNER_KEY"])
    w3: AsyncWeb3[AsyncBaseProvider] = AsyncWeb3(
        AsyncHTTPProvider(args.rpc, exception_retry_configuration=None)
    )
    ledger = EpochLedger(args.data)
    try:
        if ledger.latest_epoch() is None:
            plan_all(ledger)
        hook = crash_hook(args.crash_at, args.crash_epoch) if args.crash_at else None
        options = SettlerOptions(
            poll_interval_sec=0.05, backoff_initial_sec=0.05, backoff_max_sec=0.5
        )
        pool = RewardPool(w3, args.pool, signer)
        settler = Settler(pool, ledger, signer, options=options, hook=hook)
        # step() reconciles first, then drives each queued epoch to a final state.
        for _ in range(MAX_PASSES):
            if not ledger.unsettled():
                break
            await settler.step()
        done = all(
            (s := ledger.settlement(e)) is not None and s.state is SettlementState.CONFIRMED
            for e in EPOCHS
        )
        return 0 if done else 3
    finally:
        ledger.close()
        await w3.provider.disconnect()


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rpc", required=True)
    p.add_argument("--pool", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--crash-at", choices=HOOK_POINTS)
    p.add_argument("--crash-epoch", type=int, default=2)
    return p.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
