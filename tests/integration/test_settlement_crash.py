"""Fault injection: SIGKILL the settling process at each settlement state, restart, pay once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.providers.async_base import AsyncBaseProvider

from ioswarm.rewards.ledger import EpochLedger, SettlementState
from ioswarm.rewards.pool import RewardPool
from ioswarm.rewards.settler import HOOK_BROADCAST, HOOK_PLANNED, HOOK_RECEIPT, HOOK_SIGNED
from ioswarm.sim.anvil import AnvilProcess
from tests.integration import settle_driver

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CRASH_EPOCH = 2


async def run_driver(
    node: AnvilProcess, pool: RewardPool, key: str, data: Path, crash_at: str | None
) -> tuple[int, str]:
    """Run the driver to completion (or its own SIGKILL); returns exit code and stdout."""
    args = ["--rpc", node.url, "--pool", pool.address, "--data", str(data)]
    if crash_at:
        args += ["--crash-at", crash_at, "--crash-epoch", str(CRASH_EPOCH)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.settle_driver",
        *args,
        cwd=REPO,
        env={**os.environ, "IOSWARM_REWARD_SIGNER_KEY": key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"driver exited {proc.returncode}: {err.decode()[-3000:]}")
    return proc.returncode, out.decode()


@asynccontextmanager
async def anvil(mining: str) -> AsyncIterator[AnvilProcess]:
    """Anvil mining each transaction at once, or one block a second (transactions wait)."""
    interval = mining == "interval"
    async with AnvilProcess(env=os.environ, block_time=1 if interval else None) as node:
        if not interval:
            await node.rpc("evm_setAutomine", [True])
        yield node


CASES = [
    *(("automine", point) for point in (HOOK_PLANNED, HOOK_SIGNED, HOOK_BROADCAST, HOOK_RECEIPT)),
    # With interval mining a transaction is still pending when the process dies after sending.
    ("interval", HOOK_SIGNED),
    ("interval", HOOK_BROADCAST),
]


@pytest.mark.parametrize(("mining", "crash_at"), CASES)
async def test_sigkill_at_each_state_pays_every_epoch_once(
    tmp_path: Path, mining: str, crash_at: str
) -> None:
    """Killed at any settlement state and restarted, each epoch is paid exactly once, to the wei."""
    async with anvil(mining) as node:
        await crash_and_restart(node, tmp_path / "ledger", crash_at)


async def crash_and_restart(node: AnvilProcess, data: Path, crash_at: str) -> None:
    """Deploy, run the driver until it kills itself at ``crash_at``, restart it, check."""
    key = node.private_keys[0]
    signer: LocalAccount = Account.from_key(key)
    w3: AsyncWeb3[AsyncBaseProvider] = AsyncWeb3(
        AsyncHTTPProvider(node.url, exception_retry_configuration=None)
    )
    try:
        pool = await RewardPool.deploy(w3, signer)
        nonce_before = await pool.nonce()

        code, out = await run_driver(node, pool, key, data, crash_at)
        assert code == -signal.SIGKILL
        assert f"crash at {crash_at} epoch {CRASH_EPOCH}" in out
        with EpochLedger(data) as ledger:
            s = ledger.settlement(CRASH_EPOCH)
            assert s is not None
            first = ledger.settlement(1)
            assert first is not None and first.state is SettlementState.CONFIRMED
            if crash_at == HOOK_PLANNED:
                assert s.state is SettlementState.PLANNED
                assert await pool.nonce("pending") == nonce_before + 1
            else:
                assert s.state is SettlementState.SENT and len(s.attempts) == 1
            if crash_at == HOOK_SIGNED:  # recorded, never broadcast
                assert await pool.outcome(s.attempts[0].tx_hash) is None
                assert await pool.nonce("pending") == nonce_before + 1
            if crash_at == HOOK_RECEIPT:  # mined, the ledger does not know
                assert await pool.outcome(s.attempts[0].tx_hash) is not None

        code, _ = await run_driver(node, pool, key, data, None)
        assert code == 0

        with EpochLedger(data) as ledger:
            states = [ledger.settlement(e) for e in settle_driver.EPOCHS]
            plans = [ledger.epoch(e) for e in settle_driver.EPOCHS]
        assert all(s is not None and s.state is SettlementState.CONFIRMED for s in states)
        assert all(s is not None and len({a.nonce for a in s.attempts}) == 1 for s in states)
        deposits = sum(p.deposit_wei for p in plans if p is not None)
        # Exactly one transaction per epoch from the signer: nothing resent with a new nonce.
        assert await pool.nonce() == nonce_before + len(settle_driver.EPOCHS)
        events = await pool.settled_events()
        assert sorted(e.tx_hash for e in events) == sorted(s.tx_hash or "" for s in states if s)
        for s, p in zip(states, plans, strict=True):
            assert s is not None and p is not None
            [event] = [e for e in events if e.tx_hash == s.tx_hash]
            assert event.amount == p.deposit_wei
        # One agent is paid out; then deposits == claimed + balance, to the wei.
        wallet = settle_driver.WORK[1]["a"][0]
        owed = sum(p.amount_wei for pl in plans if pl for p in pl.payouts if p.wallet == wallet)
        receipt = await pool.claim_for(wallet)
        claimed = sum(p.amount for p in receipt.claimed)
        assert abs(claimed - owed) <= len(plans)  # per-epoch floors vs. carried sub-wei
        assert sum(e.amount for e in events) == deposits == claimed + await pool.balance()
    finally:
        await w3.provider.disconnect()
