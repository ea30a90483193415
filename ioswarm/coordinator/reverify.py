"""Re-verification: every excluded executing-level comparison still gets an exact verdict.

When shadow mode excludes an L3/L4 answer (a race with an earlier transaction, a block context
other than the predicted one, a claim of missing state, a nonce or balance race), the
transaction has landed, so its truth is known exactly: the node's prestate trace gives every
account and slot it touched as they were just before it ran in its block, and the block's
header gives its real context. The re-verifier turns that into an L3 task for a different
agent than the one excluded. Its answer is judged exactly (no race or context can excuse a
difference; see :func:`ioswarm.core.shadow.judge_reverification`) and counts for that agent like
any verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from ioswarm.core.models import AccountState, Level, Task
from ioswarm.core.retention import TableSize
from ioswarm.core.scheduling import Scheduler
from ioswarm.core.shadow import MAX_REVERIFY_QUEUE, Reverifiable, ShadowBook
from ioswarm.errors import NodeError

log = logging.getLogger("ioswarm.reverify")

MAX_WAITING = 4096


class PrestateSource(Protocol):
    async def tx_prestate(self, tx_hash: bytes) -> dict[bytes, AccountState]: ...


class Reverifier:
    """Drains the shadow book's excluded comparisons into re-verification tasks."""

    def __init__(
        self,
        shadow: ShadowBook,
        source: PrestateSource,
        scheduler: Scheduler,
        next_id: Callable[[], int],
        has_context: Callable[[int], bool],
        submit: Callable[[Task], bool],
        withdraw: Callable[[int], None],
        count: Callable[[str], None],
        give_up_sec: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``has_context(number)`` says whether block ``number``'s real context is still
        known; ``submit``/``withdraw`` queue and take back a task (the dispatcher's);
        ``count(result)`` counts each excluded comparison's fate (``issued``,
        ``no_agent``, ``no_trace``, ``no_context``, ``queue_full``, ``unassigned``);
        ``give_up_sec`` is how long a task may wait for another agent before it is
        cancelled."""
        self._shadow = shadow
        self._source = source
        self._scheduler = scheduler
        self._next_id = next_id
        self._has_context = has_context
        self._submit = submit
        self._withdraw = withdraw
        self._count = count
        self._give_up = give_up_sec
        self._clock = clock
        self._event = asyncio.Event()
        self._waiting: OrderedDict[int, float] = OrderedDict()

    def notify(self) -> None:
        """Something was excluded (called after each block)."""
        if self._shadow.reverifiable:
            self._event.set()

    def tables(self) -> dict[str, TableSize]:
        return {
            "reverify_queue": TableSize(len(self._shadow.reverifiable), MAX_REVERIFY_QUEUE),
            "reverify_waiting": TableSize(len(self._waiting), MAX_WAITING),
        }

    async def run(self) -> None:
        """The re-verification loop (supervised)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # also retires tasks nobody took in time
                    await self._event.wait()
            self._event.clear()
            await self.step()

    async def step(self) -> None:
        """Issue a task for every queued exclusion; cancel tasks no other agent took in time."""
        self._give_up_waiting()
        queue = self._shadow.reverifiable
        prestates: dict[bytes, dict[bytes, AccountState] | None] = {}
        while queue:
            item = queue.popleft()
            if not self._scheduler.can_serve(Level.L3, item.agent_id):
                self._count("no_agent")
                continue
            if not self._has_context(item.truth.block_number):
                self._count("no_context")
                continue
            tx_hash = item.task.tx_hash
            if tx_hash not in prestates:
                try:
                    prestates[tx_hash] = await self._source.tx_prestate(tx_hash)
                except NodeError as exc:
                    log.warning("prestate trace failed tx=0x%s: %s", tx_hash.hex(), exc)
                    prestates[tx_hash] = None
            accounts = prestates[tx_hash]
            if not accounts or item.task.sender not in accounts:
                self._count("no_trace")
                continue
            task = self._task(item, accounts)
            if not self._submit(task):
                self._count("queue_full")
                continue
            self._waiting[task.task_id] = self._clock()
            while len(self._waiting) > MAX_WAITING:
                self._waiting.popitem(last=False)
            self._count("issued")
            log.info(
                "re-verifying tx=0x%s block=%d reason=%s excluded_agent=%s task_id=%d",
                tx_hash.hex(),
                item.truth.block_number,
                item.reason,
                item.agent_id,
                task.task_id,
            )

    def _task(self, item: Reverifiable, accounts: dict[bytes, AccountState]) -> Task:
        """An L3 task with the transaction's real pre-state and its block's real context."""
        original = item.task
        sender = accounts[original.sender].snapshot
        reads = {
            (address, key) for address in accounts for key in (b"balance", b"nonce", b"code")
        } | {(address, slot) for address, acc in accounts.items() for slot, _ in acc.storage}
        return Task(
            task_id=self._next_id(),
            tx_hash=original.tx_hash,
            raw_tx=original.raw_tx,
            level=Level.L3,
            sender=original.sender,
            nonce=original.nonce,
            block_height=item.truth.block_number - 1,
            block_gas_limit=original.block_gas_limit,
            sender_state=sender,
            max_cost=original.max_cost,
            accounts=tuple(accounts[a] for a in sorted(accounts)),
            read_set=frozenset(reads),
            context_block=item.truth.block_number,
            avoid=item.agent_id,
            reverifies=original.level,
            gas_limit=original.gas_limit,
        )

    def _give_up_waiting(self) -> None:
        now = self._clock()
        while self._waiting:
            task_id, since = next(iter(self._waiting.items()))
            if now - since < self._give_up:
                break
            del self._waiting[task_id]
            if self._scheduler.waiting(task_id):
                self._withdraw(task_id)
                self._count("unassigned")
