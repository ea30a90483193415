"""A realistic stream of signed transactions for a node: the mempool traffic ioswarm validates.

The workload funds a few fresh accounts from a development key, deploys a contract that always
reverts, then sends a mix of EIP-1559, legacy (EIP-155) and EIP-2930 transfers, nonce gaps that
are filled a little later, fee-bumped replacements and reverting calls. Nonces are tracked
locally. A test can send an exact, known set through the ``send_*`` methods instead of
:meth:`Workload.run`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import rlp
from eth_account import Account
from eth_account.datastructures import SignedTransaction
from eth_account.signers.local import LocalAccount
from eth_account.types import TransactionDictType
from eth_hash.auto import keccak

from ioswarm.errors import IoswarmError, NodeError
from ioswarm.node.adapter import NodeClient
from ioswarm.sim.sending import (
    FeeOracle,
    Fees,
    NonceBook,
    SendReport,
    new_account,
    pending_nonce,
    presign_transfers,
    send_paced,
)

log = logging.getLogger("ioswarm.sim")

TxKind = Literal["eip1559", "legacy", "eip2930"]
TX_KINDS: tuple[TxKind, ...] = ("eip1559", "legacy", "eip2930")

# Initcode that returns the runtime PUSH1 0 PUSH1 0 REVERT (0x60006000fd):
# PUSH5 <runtime> PUSH1 0 MSTORE PUSH1 5 PUSH1 27 RETURN.
REVERTER_INITCODE = bytes.fromhex("6460006000fd6000526005601bf3")
REVERTER_RUNTIME = bytes.fromhex("60006000fd")
TRANSFER_GAS = 21_000
ACCESS_LIST_GAS = 30_000  # 21000 + 2400 for the one listed address, with room to spare
REVERT_CALL_GAS = 50_000
DEPLOY_GAS = 100_000


@dataclass
class WorkloadCounters:
    """What the workload has sent so far, by category."""

    sent: int = 0
    """Transactions the node accepted."""
    transfers: int = 0
    """Plain value transfers."""
    replacements: int = 0
    """Replacement pairs (original plus its fee-bumped replacement)."""
    gaps: int = 0
    """Nonce-gap pairs (nonce n+1 first, then n)."""
    reverts: int = 0
    """Calls to the always-reverting contract."""
    errors: int = 0
    """Sends the node refused or could not take."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class WorkloadMix:
    """Relative weights of each category and transaction type in :meth:`Workload.run`."""

    transfer: float = 0.7
    replacement: float = 0.1
    gap: float = 0.1
    revert: float = 0.1
    eip1559: float = 0.5
    legacy: float = 0.25
    eip2930: float = 0.25


def contract_address(sender: bytes, nonce: int) -> bytes:
    """Address of the contract ``sender`` creates with ``nonce`` (CREATE)."""
    return bytes(keccak(rlp.encode([sender, nonce])))[12:]


class Workload:
    """Sends signed transactions to a node through a :class:`NodeClient`."""

    def __init__(
        self,
        node: NodeClient,
        funder_key: str,
        *,
        chain_id: int,
        accounts: int = 8,
        fund_wei: int = 10**19,
        rate: float = 10.0,
        mix: WorkloadMix | None = None,
        seed: int | None = None,
        gap_delay: float = 0.2,
        tip_wei: int = 10**9,
        bump_pct: int = 12,
        mine: Callable[[int], Awaitable[Any]] | None = None,
        include_timeout: float = 60.0,
    ) -> None:
        if accounts < 2:
            raise ValueError("accounts must be >= 2 (transfers go between them)")
        if rate <= 0:
            raise ValueError("rate must be > 0 tx/s")
        if bump_pct < 10:
            raise ValueError("bump_pct must be >= 10: nodes refuse smaller replacement bumps")
        self.node = node
        self.chain_id = chain_id
        self.rate = rate
        self.mix = mix or WorkloadMix()
        self.fund_wei = fund_wei
        self.gap_delay = gap_delay
        self.tip_wei = tip_wei
        self.bump_pct = bump_pct
        self.counters = WorkloadCounters()
        self._mine = mine
        self.include_timeout = include_timeout
        self._rng = random.Random(seed)
        self._funder: LocalAccount = Account.from_key(funder_key)
        self._accounts: list[LocalAccount] = [new_account(self._rng) for _ in range(accounts)]
        self._nonce_book = NonceBook(node, [a.address for a in self._accounts])
        self._fee_oracle = FeeOracle(node, tip_wei)
        self.reverter: bytes | None = None

    @property
    def addresses(self) -> list[bytes]:
        """The workload's own accounts."""
        return [bytes.fromhex(a.address[2:]) for a in self._accounts]

    # ------------------------------------------------------------------------ setup

    async def setup(self) -> None:
        """Fund the accounts and deploy the reverting contract; wait until both are included."""
        funder = bytes.fromhex(self._funder.address[2:])
        nonce = await pending_nonce(self.node, self._funder.address)
        fees = await self._fee_oracle.current(refresh=True)
        hashes = []
        for addr in self.addresses:
            tx = self._tx(
                "eip1559",
                nonce,
                to=addr,
                value=self.fund_wei,
                gas=TRANSFER_GAS,
                data=b"",
                fees=fees,
            )
            hashes.append(await self._submit(self._funder.sign_transaction(tx)))
            nonce += 1
        deploy = self._tx(
            "eip1559", nonce, to=None, value=0, gas=DEPLOY_GAS, data=REVERTER_INITCODE, fees=fees
        )
        deploy_hash = await self._submit(self._funder.sign_transaction(deploy))
        statuses = await self.wait_included([*hashes, deploy_hash])
        if any(s != 1 for s in statuses.values()):
            raise NodeError("eth_getTransactionReceipt", "workload setup transaction failed")
        self.reverter = contract_address(funder, nonce)
        log.info(
            "workload ready accounts=%d reverter=0x%s", len(self._accounts), self.reverter.hex()
        )

    async def wait_included(self, hashes: Iterable[bytes]) -> dict[bytes, int]:
        """Wait for the receipts of ``hashes``; return each one's status (1 ok, 0 reverted).

        Raises TimeoutError after ``include_timeout`` seconds.
        """
        pending = list(dict.fromkeys(hashes))
        if self._mine is not None:
            await self._mine(1)
        async with asyncio.timeout(self.include_timeout):
            return await self._receipt_statuses(pending)

    async def _receipt_statuses(self, pending: list[bytes]) -> dict[bytes, int]:
        statuses: dict[bytes, int] = {}
        while pending:
            still = []
            for h in pending:
                receipt = await self.node.call("eth_getTransactionReceipt", ["0x" + h.hex()])
                if receipt is None:
                    still.append(h)
                    continue
                status = receipt.get("status") if isinstance(receipt, dict) else None
                if not isinstance(status, str):
                    raise NodeError("eth_getTransactionReceipt", "field result.status is missing")
                statuses[h] = int(status, 16)
            pending = still
            if pending:
                await asyncio.sleep(0.1)
        return statuses

    # ------------------------------------------------------------------------ scenario API

    async def send_transfer(
        self,
        *,
        kind: TxKind = "eip1559",
        sender: int | None = None,
        to: bytes | None = None,
        value: int | None = None,
    ) -> bytes:
        """One plain transfer between workload accounts; returns its hash."""
        i = self._pick_sender(sender)
        nonce = await self._nonce_book.alloc(i, 1)
        tx_hash = await self._send_transfer_at(i, nonce, kind, to=to, value=value)
        self.counters.transfers += 1
        return tx_hash

    async def send_replacement(
        self, *, kind: TxKind = "eip1559", sender: int | None = None
    ) -> tuple[bytes, bytes]:
        """A transfer and its replacement (same nonce, fees bumped); returns (replaced, new)."""
        i = self._pick_sender(sender)
        nonce = await self._nonce_book.alloc(i, 1)
        fees = await self._fee_oracle.current()
        to = self._pick_recipient(i)
        first = self._tx(kind, nonce, to=to, value=1, gas=self._gas(kind), data=b"", fees=fees)
        replaced = await self._submit(self._accounts[i].sign_transaction(first), i)
        # A different value as well, so the two are clearly different transactions.
        second = self._tx(
            kind,
            nonce,
            to=to,
            value=2,
            gas=self._gas(kind),
            data=b"",
            fees=fees.bumped(self.bump_pct),
        )
        replacement = await self._submit(self._accounts[i].sign_transaction(second), i)
        self.counters.replacements += 1
        return replaced, replacement

    async def send_gap_pair(
        self, *, kind: TxKind = "eip1559", sender: int | None = None, delay: float | None = None
    ) -> tuple[bytes, bytes]:
        """Nonce n+1 first, then n after ``delay`` seconds; returns (n+1 hash, n hash)."""
        i = self._pick_sender(sender)
        nonce = await self._nonce_book.alloc(i, 2)
        later = await self._send_transfer_at(i, nonce + 1, kind)
        await asyncio.sleep(self.gap_delay if delay is None else delay)
        filler = await self._send_transfer_at(i, nonce, kind)
        self.counters.gaps += 1
        return later, filler

    async def send_reverting_call(
        self, *, kind: TxKind = "eip1559", sender: int | None = None
    ) -> bytes:
        """A call to the always-reverting contract with a fixed gas limit; returns its hash."""
        if self.reverter is None:
            raise RuntimeError("call setup() before sending reverting calls")
        i = self._pick_sender(sender)
        nonce = await self._nonce_book.alloc(i, 1)
        fees = await self._fee_oracle.current()
        tx = self._tx(
            kind, nonce, to=self.reverter, value=0, gas=REVERT_CALL_GAS, data=b"\x01", fees=fees
        )
        tx_hash = await self._submit(self._accounts[i].sign_transaction(tx), i)
        self.counters.reverts += 1
        return tx_hash

    # ------------------------------------------------------------------------ the loop

    async def run(
        self, *, count: int | None = None, duration: float | None = None
    ) -> WorkloadCounters:
        """Send a random mix at ``rate`` tx/s until ``count`` txs were tried or ``duration`` s.

        With neither bound it runs until cancelled. Node errors are counted and logged.
        """
        if self.reverter is None:
            await self.setup()
        loop = asyncio.get_running_loop()
        start = loop.time()
        tried = 0
        streak = 0
        categories = ("transfer", "replacement", "gap", "revert")
        weights = [self.mix.transfer, self.mix.replacement, self.mix.gap, self.mix.revert]
        kind_weights = [self.mix.eip1559, self.mix.legacy, self.mix.eip2930]
        while (count is None or tried < count) and (
            duration is None or loop.time() - start < duration
        ):
            # Pace against the start time, so slow steps are caught up instead of drifting.
            wait = start + tried / self.rate - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            category = self._rng.choices(categories, weights)[0]
            kind = self._rng.choices(TX_KINDS, kind_weights)[0]
            before = self.counters.sent + self.counters.errors
            try:
                if category == "transfer":
                    await self.send_transfer(kind=kind)
                elif category == "replacement":
                    await self.send_replacement(kind=kind)
                elif category == "gap":
                    await self.send_gap_pair(kind=kind)
                else:
                    await self.send_reverting_call(kind=kind)
            except IoswarmError as exc:
                if self.counters.sent + self.counters.errors == before:
                    self.counters.errors += 1  # failed before anything reached the node
                # One warning per run of failures: a node that is down would flood the log.
                streak += 1
                level = logging.WARNING if streak == 1 else logging.DEBUG
                log.log(
                    level,
                    "workload send failed category=%s kind=%s error=%r",
                    category,
                    kind,
                    str(exc),
                )
            else:
                if streak:
                    log.info("workload sending again after failures=%d", streak)
                streak = 0
            tried += max(1, self.counters.sent + self.counters.errors - before)
        return self.counters

    async def run_presigned(
        self,
        count: int,
        *,
        on_sent: Callable[[bytes, float], None] | None = None,
    ) -> SendReport:
        """Send ``count`` plain EIP-1559 transfers at ``rate`` tx/s, all signed before the first
        goes out and sent in pipelined JSON-RPC batches: the rate a node takes, not the rate
        one-at-a-time signing and awaiting allows (:meth:`run` reaches some tens per second).
        """
        if self.reverter is None:
            await self.setup()
        nonces = [await pending_nonce(self.node, a.address) for a in self._accounts]
        fees = await self._fee_oracle.current(refresh=True)
        raws = presign_transfers(self._accounts, nonces, count, self.chain_id, fees, self._rng)
        for i in range(len(self._accounts)):
            self._nonce_book.resync(i)  # the next scenario send re-reads its nonce
        report = await send_paced(self.node, raws, self.rate, on_sent=on_sent)
        self.counters.sent += report.sent
        self.counters.transfers += report.sent
        self.counters.errors += report.refused
        return report

    # ------------------------------------------------------------------------ internals

    def _pick_sender(self, sender: int | None) -> int:
        if sender is None:
            return self._rng.randrange(len(self._accounts))
        if not 0 <= sender < len(self._accounts):
            raise ValueError(f"sender must be an account index in 0..{len(self._accounts) - 1}")
        return sender

    def _pick_recipient(self, sender: int) -> bytes:
        others = [a for j, a in enumerate(self.addresses) if j != sender]
        return self._rng.choice(others)

    @staticmethod
    def _gas(kind: TxKind) -> int:
        return ACCESS_LIST_GAS if kind == "eip2930" else TRANSFER_GAS

    async def _send_transfer_at(
        self,
        i: int,
        nonce: int,
        kind: TxKind,
        *,
        to: bytes | None = None,
        value: int | None = None,
    ) -> bytes:
        fees = await self._fee_oracle.current()
        target = to if to is not None else self._pick_recipient(i)
        amount = value if value is not None else self._rng.randrange(1, 10**12)
        tx = self._tx(
            kind, nonce, to=target, value=amount, gas=self._gas(kind), data=b"", fees=fees
        )
        return await self._submit(self._accounts[i].sign_transaction(tx), i)

    def _tx(
        self,
        kind: TxKind,
        nonce: int,
        *,
        to: bytes | None,
        value: int,
        gas: int,
        data: bytes,
        fees: Fees,
    ) -> TransactionDictType:
        tx: TransactionDictType = {
            "chainId": self.chain_id,
            "nonce": nonce,
            "value": value,
            "gas": gas,
            "data": data,
        }
        if to is not None:
            tx["to"] = to
        if kind == "eip1559":
            tx.update(type=2, maxFeePerGas=fees.max_fee, maxPriorityFeePerGas=fees.tip)
        elif kind == "eip2930":
            # List the recipient so the access list is not empty (that is the point of the type).
            access = [{"address": "0x" + to.hex(), "storageKeys": []}] if to is not None else []
            tx.update(type=1, gasPrice=fees.max_fee, accessList=access)  # type: ignore[arg-type]
        else:
            tx["gasPrice"] = fees.max_fee
        return tx

    async def _submit(self, signed: SignedTransaction, account: int | None = None) -> bytes:
        try:
            tx_hash = await self.node.send_raw_transaction(bytes(signed.raw_transaction))
        except NodeError:
            self.counters.errors += 1
            if account is not None:
                # The nonce may or may not be used now; ask the node before the next send.
                self._nonce_book.resync(account)
            raise
        self.counters.sent += 1
        log.debug("workload sent tx=0x%s", tx_hash.hex())
        return tx_hash
