"""What every workload needs to send transactions: local nonces and current fees."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
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
