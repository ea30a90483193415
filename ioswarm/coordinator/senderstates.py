"""Pending senders' nonce and balance at a head block: what L2 tasks carry.

Every read is one batch pinned to a block's hash, and what it answered is cached until the
head moves. Rounds ask in one of two ways:

- :meth:`SenderStates.at` reads what is missing at the given head before answering (a round
  waits for the node);
- :meth:`SenderStates.known` answers at once with the freshest block whose state is cached and
  reads beside the rounds: the senders it lacks at that block, or every sender again at a newer
  head. While a new block is being mined the node answers slowly, and a tx seen then is planned
  on the state of the block before (the task names that block), advanced past the txs the
  block watcher saw included since: they count as predecessors, as pending ones do
  (:func:`~ioswarm.core.mempool.plan_dispatch`: the nonce after them, the balance less their
  most cost). A tx included since that the pool never knew leaves a nonce gap, so its sender's
  next tx waits for the re-read; a pending tx whose nonce an included one used (seen or not) is
  stale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from ioswarm.core.models import AccountSnapshot, BlockHeader, IncludedTx, PendingTx
from ioswarm.node.adapter import NodeClient


class SenderStates:
    """The sender state cache of the mempool rounds, and its one read beside them."""

    def __init__(
        self,
        node: NodeClient,
        max_tracked: int,
        newest: Callable[[BlockHeader], Awaitable[BlockHeader]],
        on_read: Callable[[], None],
    ) -> None:
        """``newest(header)`` gives the node's newest block when it is newer than ``header``,
        else ``header``; ``on_read`` is called when a read beside the rounds answered (it wakes
        the next round)."""
        self._node = node
        self.max_tracked = max_tracked
        self._newest = newest
        self._on_read = on_read
        self.header: BlockHeader | None = None
        self.states: dict[bytes, AccountSnapshot] = {}
        self._reading: asyncio.Task[None] | None = None
        # sender -> nonce -> (block, hash, the pool's copy or None): txs included after the
        # cached block.
        self._mined: dict[bytes, dict[int, tuple[int, bytes, PendingTx | None]]] = {}
        self.mined_count = 0
        self.early_rounds = 0  # rounds that planned on a block older than the head they knew

    def get(self, address: bytes) -> AccountSnapshot | None:
        return self.states.get(address)

    def _missing(self, header: BlockHeader, senders: Iterable[bytes]) -> list[bytes]:
        if self.header is None or header.hash != self.header.hash:
            return list(dict.fromkeys(senders))
        return [a for a in dict.fromkeys(senders) if a not in self.states]

    async def _read(self, header: BlockHeader, senders: list[bytes]) -> None:
        """Read what is missing at ``header`` and cache it (the cache moves to ``header``).
        Reads never overlap: :meth:`at` waits for the one beside the rounds first."""
        missing = self._missing(header, senders)
        fresh = self.header is None or header.hash != self.header.hash
        if not fresh and len(self.states) + len(missing) > self.max_tracked:
            fresh = True  # a huge mempool within one block: start over
            missing = senders
        if not missing:
            return
        read = await self._node.accounts(missing, header.number, block_hash=header.hash, code=False)
        if fresh:
            self.states = {}
            self.header = header
            self._forget_mined(header.number)
        self.states.update(read)

    def on_mined(
        self, block: int, included: Iterable[IncludedTx], known: Callable[[bytes], PendingTx | None]
    ) -> None:
        """These txs were included in ``block`` (the block watcher processed it); ``known``
        gives the pool's copy of a tx (its cost), None for one the pool never saw."""
        if self.header is not None and block <= self.header.number:
            return  # the cached state already holds their effects
        for tx in included:
            slots = self._mined.setdefault(tx.sender, {})
            self.mined_count += tx.nonce not in slots
            slots[tx.nonce] = (block, tx.tx_hash, known(tx.tx_hash))
        if self.mined_count > self.max_tracked:
            # Forgetting is safe: a sender's next tx then finds a nonce gap and waits.
            self._mined, self.mined_count = {}, 0

    def _forget_mined(self, upto: int) -> None:
        for sender in list(self._mined):
            slots = self._mined[sender]
            for nonce in [n for n, (block, _, _) in slots.items() if block <= upto]:
                del slots[nonce]
                self.mined_count -= 1
            if not slots:
                del self._mined[sender]

    def mined_since(self, senders: Iterable[bytes]) -> list[PendingTx]:
        """Txs of ``senders`` included after the cached block that the pool knew (predecessors
        to plan with; one it never saw leaves a nonce gap: its cost is not known)."""
        return [
            tx for s in senders for _, _, tx in self._mined.get(s, {}).values() if tx is not None
        ]

    def mined_senders(self) -> list[bytes]:
        return list(self._mined)

    def slot_used(self, tx: PendingTx) -> bool:
        """Whether an included tx took ``tx``'s (sender, nonce) after the cached block."""
        used = self._mined.get(tx.sender, {}).get(tx.nonce)
        return used is not None and used[1] != tx.tx_hash

    async def at(
        self, header: BlockHeader, senders: Iterable[bytes]
    ) -> dict[bytes, AccountSnapshot]:
        """State of ``senders`` at ``header``, read now where not cached."""
        await self.settle()
        await self._read(header, list(dict.fromkeys(senders)))
        return self.states

    def known(
        self,
        header: BlockHeader,
        senders: Iterable[bytes],
        around: Callable[[], Iterable[bytes]] = lambda: (),
    ) -> tuple[BlockHeader | None, dict[bytes, AccountSnapshot]]:
        """The freshest cached block at or below ``header`` and its states, at once. Unless
        one is running, a read beside the rounds is started: at a newer head, of ``senders``
        and ``around()`` (senders likely to send again); else of the ``senders`` not cached.
        A sender not cached is absent from the answer: its txs wait for a later round."""
        if self._reading is None or self._reading.done():
            self.reap()
            self._reading = asyncio.create_task(self._read_beside(header, list(senders), around))
        cached = self.header
        if cached is None or cached.number > header.number:
            return None, {}  # nothing read yet, or the chain went back below it
        if cached.hash != header.hash:
            self.early_rounds += 1
        return cached, self.states

    async def _read_beside(
        self, header: BlockHeader, senders: list[bytes], around: Callable[[], Iterable[bytes]]
    ) -> None:
        header = await self._newest(header)
        if self.header is None or header.hash != self.header.hash:
            senders = [*senders, *around()]
        senders = list(dict.fromkeys(senders))
        if self._missing(header, senders):
            await self._read(header, senders)
            self._on_read()

    def reap(self) -> None:
        """Raise what the last read beside the rounds raised (a node error, retried by the
        round's loop), once."""
        task, self._reading = self._reading, None
        if task is not None and task.done():
            task.result()
        elif task is not None:
            self._reading = task

    async def settle(self) -> None:
        """Wait for the read beside the rounds (its error is raised)."""
        task, self._reading = self._reading, None
        if task is not None:
            await task

    async def close(self) -> None:
        task, self._reading = self._reading, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
