"""The L4 validator: L3 execution on the agent's own LMDB state, behind a sequence barrier.

An L4 task names the state height it assumes (``TaskPackage.state_height``). The agent answers
only from a store at exactly that height: :meth:`L4Validator.ready` waits, bounded, while the
diff stream advances the store; :meth:`L4Validator.validate` then executes inside one LMDB read
view whose height it checks again. Any other height is answered ``declined`` with reason
``state_height_unavailable``, never from the wrong state.

The engine is the L3 one. It reads state through :class:`StoreAccounts`, a mapping that loads
accounts, code and storage slots from the view on demand. The store holds the whole state, so an
address it lacks is a real empty account and an unset slot a real zero, never missing state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping
from typing import Protocol

from ioswarm.agent.evm import EvmEngine, PyEvmEngine
from ioswarm.agent.executing import ExecutingValidator, Unavailable
from ioswarm.agent.l3 import L3Validator
from ioswarm.agent.validators import Validator
from ioswarm.core.execution import STATE_HEIGHT_UNAVAILABLE, AccountInput
from ioswarm.core.models import EMPTY_CODE_HASH, Level
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import decode_u256
from ioswarm.state.store import StateStore, StateView

__all__ = [
    "DEFAULT_BARRIER_WAIT_SEC",
    "STATE_HEIGHT_UNAVAILABLE",
    "L4Validator",
    "LocalState",
    "StoreAccounts",
    "StoreState",
    "StoreStorage",
]

DEFAULT_BARRIER_WAIT_SEC = 2.0
_NO_CODE = (b"", bytes(32), EMPTY_CODE_HASH)


class LocalState(Protocol):
    """What the validator needs of the state follower (``ioswarm.agent.l4sync``)."""

    @property
    def store(self) -> StateStore | None:
        """The local store, or None before it is open and complete."""

    @property
    def height(self) -> int:
        """Height of the local store (0 before bootstrap)."""

    async def wait_for_height(self, height: int, within: float) -> bool:
        """Wait up to ``within`` seconds for the store to reach ``height``; False if it did not."""


class StoreStorage(Mapping[bytes, bytes]):
    """One account's storage slots, read from a store view on demand (unset reads zero).

    Iteration covers only the slots read so far: the engine copies what it iterates at start,
    which is nothing, and asks for each slot as execution reaches it.
    """

    __slots__ = ("_address", "_cache", "_view")

    def __init__(self, view: StateView, address: bytes) -> None:
        self._view = view
        self._address = address
        self._cache: dict[bytes, bytes] = {}

    def __getitem__(self, slot: bytes) -> bytes:
        value = self._cache.get(slot)
        if value is None:
            if len(slot) != 32:
                raise KeyError(slot)
            value = self._cache[slot] = self._view.get_storage(self._address, slot)
        return value

    def __iter__(self) -> Iterator[bytes]:
        return iter(list(self._cache))

    def __len__(self) -> int:
        return len(self._cache)


class _WithSender(Mapping[bytes, AccountInput]):
    """Store accounts with the sender's nonce and balance taken from the task."""

    __slots__ = ("_address", "_base", "_sender")

    def __init__(
        self, base: Mapping[bytes, AccountInput], sender: pb.AccountSnapshot, address: bytes
    ) -> None:
        self._base = base
        self._sender = sender
        self._address = address  # the recovered sender: the task does not name it

    def __getitem__(self, address: bytes) -> AccountInput:
        account = self._base[address]
        if address == self._address:
            account = dataclasses.replace(
                account,
                balance=decode_u256(self._sender.balance),
                nonce=self._sender.nonce,
            )
        return account

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)


class StoreAccounts(Mapping[bytes, AccountInput]):
    """Accounts read from a store view on demand; an address the store lacks is empty.

    An account whose code hash has no Code entry is a damaged store: it is left out (a
    ``KeyError``), so the engine reports missing state instead of running empty code.
    """

    __slots__ = ("_cache", "_view")

    def __init__(self, view: StateView) -> None:
        self._view = view
        self._cache: dict[bytes, AccountInput | None] = {}

    def __getitem__(self, address: bytes) -> AccountInput:
        if address in self._cache:
            cached = self._cache[address]
        else:
            cached = self._cache[address] = self._load(address)
        if cached is None:
            raise KeyError(address)
        return cached

    def _load(self, address: bytes) -> AccountInput | None:
        if len(address) != 20:
            return None
        snapshot = self._view.get_account(address)
        storage = StoreStorage(self._view, address)
        if snapshot is None:
            return AccountInput(address=address, storage=storage)
        code = b""
        if snapshot.code_hash not in _NO_CODE:
            found = self._view.get_code(snapshot.code_hash)
            if found is None:
                return None
            code = found
        return AccountInput(
            address=address,
            balance=snapshot.balance,
            nonce=snapshot.nonce,
            code=code,
            storage=storage,
        )

    def __iter__(self) -> Iterator[bytes]:
        return iter([a for a, v in self._cache.items() if v is not None])

    def __len__(self) -> int:
        return sum(1 for v in self._cache.values() if v is not None)


class StoreState:
    """The accounts of the local store at exactly the task's state height.

    The height is checked inside the read view the execution then reads, so the height checked
    is the height executed on; any other height is :class:`Unavailable`
    (``state_height_unavailable``), never answered from the wrong state.
    """

    def __init__(self, local: LocalState) -> None:
        self.local = local
        self.declined_height = 0

    @contextlib.contextmanager
    def accounts(
        self, task: pb.TaskPackage, sender: bytes
    ) -> Iterator[Mapping[bytes, AccountInput] | Unavailable]:
        store = self.local.store
        if store is None or task.state_height == 0:
            yield self._unavailable(task.state_height, 0)
            return
        with store.view() as view:
            local = view.height
            if local != task.state_height or view.loading:
                yield self._unavailable(task.state_height, local)
                return
            accounts: Mapping[bytes, AccountInput] = StoreAccounts(view)
            named = bytes(task.sender.address)
            if task.HasField("sender") and (not named or named == sender):
                # The sender as the tx will find it after its pending predecessors (their
                # effects are not in any block yet): nonce and balance from the task, which
                # carries the sender's snapshot without naming the sender.
                accounts = _WithSender(accounts, task.sender, sender)
            yield accounts

    def _unavailable(self, wanted: int, local: int) -> Unavailable:
        self.declined_height += 1
        return Unavailable(
            STATE_HEIGHT_UNAVAILABLE, f"task state height {wanted}, local state height {local}"
        )


class L4Validator(ExecutingValidator):
    """L1 recovery, then py-evm execution on the local store at the task's state height.

    Tasks below L4 go to the L3 validator (they carry their own state).
    """

    level = Level.L4

    def __init__(
        self,
        state: LocalState,
        engine: EvmEngine | None = None,
        fallback: Validator | None = None,
        *,
        barrier_wait: float = DEFAULT_BARRIER_WAIT_SEC,
    ) -> None:
        shared: EvmEngine = engine if engine is not None else PyEvmEngine()
        self._store = StoreState(state)
        super().__init__(
            self._store,
            shared,
            fallback if fallback is not None else L3Validator(shared),
        )
        self._local = state
        self._barrier_wait = barrier_wait
        # (task height, local height) of the last barrier that timed out: the tasks of one
        # batch share a height, so only the first of them waits for a height that never came.
        self._given_up: tuple[int, int] | None = None

    @property
    def declined_height(self) -> int:
        """Tasks declined because the local store was not at their state height."""
        return self._store.declined_height

    async def ready(self, task: pb.TaskPackage) -> None:
        """Wait (bounded) until the local store reaches the task's state height.

        Returns early when the store is already at or past it, or when it cannot get there in
        time; :meth:`validate` decides from the height it then finds.
        """
        target = task.state_height
        if task.level < Level.L4 or target == 0:
            return
        local = self._local.height
        if local >= target or self._given_up == (target, local):
            return
        timeout = self._barrier_wait
        if task.deadline_unix_ms:
            timeout = min(timeout, task.deadline_unix_ms / 1000 - time.time())
        if timeout <= 0 or not await self._local.wait_for_height(target, timeout):
            self._given_up = (target, self._local.height)
