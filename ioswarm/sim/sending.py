"""What every workload needs to send transactions: local nonces and current fees."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eth_account import Account
from eth_account.signers.local import LocalAccount

from ioswarm.errors import NodeError
from ioswarm.node.adapter import NodeClient

FEES_TTL_SEC = 1.0


@dataclass(frozen=True, slots=True)
class Fees:
    """EIP-1559 max fee and tip (the max fee doubles as gas price for legacy and 2930)."""

    max_fee: int
    tip: int

    def bumped(self, pct: int) -> Fees:
        """Fees a node accepts as a replacement (both raised by ``pct`` percent, plus one)."""
        return Fees(self.max_fee * (100 + pct) // 100 + 1, self.tip * (100 + pct) // 100 + 1)


def new_account(rng: random.Random) -> LocalAccount:
    """A fresh account from ``rng`` (reproducible for a seeded workload)."""
    while True:
        try:
            acct: LocalAccount = Account.from_key(rng.randbytes(32))
        except ValueError:  # a key outside the curve order: astronomically rare
            continue
        return acct


async def pending_nonce(node: NodeClient, address: str) -> int:
    """The next nonce of ``address`` counting its pending transactions."""
    value = await node.call("eth_getTransactionCount", [address, "pending"])
    if not isinstance(value, str) or not value.startswith("0x"):
        raise NodeError("eth_getTransactionCount", f"field result: not a quantity: {value!r}")
    return int(value, 16)


class NonceBook:
    """Nonces of a set of accounts, kept locally; an account is re-read from the node after a
    failed send (``resync``) and before its first one."""

    def __init__(self, node: NodeClient, addresses: Sequence[str]) -> None:
        self._node = node
        self._addresses = list(addresses)
        self._next = [0] * len(self._addresses)
        self._stale = set(range(len(self._addresses)))

    async def alloc(self, i: int, n: int = 1) -> int:
        """Reserve ``n`` consecutive nonces of account ``i``; returns the first."""
        if i in self._stale:
            self._next[i] = await pending_nonce(self._node, self._addresses[i])
            self._stale.discard(i)
        nonce = self._next[i]
        self._next[i] += n
        return nonce

    def resync(self, i: int) -> None:
        self._stale.add(i)


class FeeOracle:
    """Fees that stay valid for a few blocks: twice the base fee plus the tip, never below
    ``eth_gasPrice`` (chains without a base fee still have a minimum price); cached briefly."""

    def __init__(self, node: NodeClient, tip_wei: int) -> None:
        self._node = node
        self.tip_wei = tip_wei
        self._fees: Fees | None = None
        self._at = 0.0

    async def current(self, *, refresh: bool = False) -> Fees:
        now = asyncio.get_running_loop().time()
        if refresh or self._fees is None or now - self._at > FEES_TTL_SEC:
            header = await self._node.get_block("latest")
            price = await self._node.call("eth_gasPrice")
            if not isinstance(price, str) or not price.startswith("0x"):
                raise NodeError("eth_gasPrice", f"field result: not a quantity: {price!r}")
            max_fee = max(2 * header.base_fee + self.tip_wei, int(price, 16))
            self._fees = Fees(max_fee, min(self.tip_wei, max_fee))
            self._at = now
        return self._fees


@dataclass
class SendReport:
    """What a paced send achieved."""

    sent: int = 0
    """Transactions the node accepted."""
    refused: int = 0
    """Transactions the node refused (or could not be reached for)."""
    seconds: float = 0.0
    """From the first send to the last answer."""

    @property
    def rate(self) -> float:
        """Accepted transactions per second."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def presign_transfers(
    accounts: Sequence[LocalAccount],
    next_nonce: list[int],
    count: int,
    chain_id: int,
    fees: Fees,
    rng: random.Random,
    gas: int = 21_000,
) -> list[bytes]:
    """``count`` signed EIP-1559 transfers between ``accounts``, senders in turn, nonces taken
    from (and advanced in) ``next_nonce``: signing is done before sending starts, so the send
    rate is not bound by it."""
    if len(accounts) < 2:
        raise ValueError("transfers need at least two accounts")
    addresses = [bytes.fromhex(a.address[2:]) for a in accounts]
    raws = []
    for k in range(count):
        i = k % len(accounts)
        to = addresses[(i + 1 + rng.randrange(len(accounts) - 1)) % len(accounts)]
        tx = {
            "type": 2,
            "chainId": chain_id,
            "nonce": next_nonce[i],
            "to": to,
            "value": rng.randrange(1, 10**12),
            "gas": gas,
            "data": b"",
            "maxFeePerGas": fees.max_fee,
            "maxPriorityFeePerGas": fees.tip,
        }
        next_nonce[i] += 1
        raws.append(bytes(accounts[i].sign_transaction(tx).raw_transaction))  # type: ignore[arg-type]
    return raws


async def send_paced(
    node: NodeClient,
    raws: Sequence[bytes],
    rate: float,
    *,
    max_batch: int = 64,
    in_flight: int = 16,
    on_sent: Callable[[bytes, float], None] | None = None,
) -> SendReport:
    """Send pre-signed ``raws`` at ``rate`` tx/s: whatever is due goes out as one JSON-RPC batch
    (at most ``max_batch``), with up to ``in_flight`` batches awaiting answers at once, so a
    slow answer does not hold back the next send. ``on_sent(hash, perf_counter)`` is called for
    each accepted tx."""
    if rate <= 0:
        raise ValueError("rate must be > 0 tx/s")
    report = SendReport()
    slots = asyncio.Semaphore(in_flight)
    pending: set[asyncio.Task[None]] = set()

    async def send(chunk: Sequence[bytes]) -> None:
        try:
            answers = await node.send_raw_transactions(chunk)
        except NodeError:
            report.refused += len(chunk)
            return
        finally:
            slots.release()
        now = time.perf_counter()
        for answer in answers:
            if isinstance(answer, bytes):
                report.sent += 1
                if on_sent is not None:
                    on_sent(answer, now)
            else:
                report.refused += 1

    loop = asyncio.get_running_loop()
    start = loop.time()
    i = 0
    while i < len(raws):
        due = min(len(raws), int((loop.time() - start) * rate) + 1)
        if due <= i:
            await asyncio.sleep(max(0.0005, start + i / rate - loop.time()))
            continue
        chunk = raws[i : min(due, i + max_batch)]
        i += len(chunk)
        await slots.acquire()
        task = asyncio.create_task(send(chunk))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    report.seconds = loop.time() - start
    return report
