"""L3 state prefetch: every account, code and storage slot a pending transaction will touch.

Per poll round, all new transactions are simulated together (one JSON-RPC batch of
``eth_createAccessList`` at the head block), then every account with its listed slots is read
with one batched ``eth_getProof`` round and code is read once per code hash. Accounts the
access list leaves out but execution needs are added: sender, recipient (or the created
address), the coinbase and the precompiles. Reads are cached per head block (invalidated when
the head moves, bounded in size); code is cached by hash across blocks.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from ioswarm.core.hashing import keccak256
from ioswarm.core.models import EMPTY_CODE_HASH, AccountSnapshot, AccountState
from ioswarm.core.retention import TableSize
from ioswarm.core.touchset import delegations, exists_in_trie, tx_touches
from ioswarm.core.tx import DecodedTx
from ioswarm.node.execution import AccountData, ExecutionReader, call_object

log = logging.getLogger("ioswarm.prefetch")

# Prague precompiles: 0x01..0x0a (ecrecover .. point evaluation), 0x0b..0x11 (BLS12-381).
PRECOMPILES = tuple(bytes(19) + bytes([i]) for i in range(1, 0x12))
CODE_CACHE_LIMIT = 4096
STATE_CACHE_LIMIT = 50_000


@dataclass(frozen=True)
class Prefetched:
    """The state one L3 task carries, and what its execution reads."""

    accounts: tuple[AccountState, ...]
    read_set: frozenset[tuple[bytes, bytes]]


@dataclass
class PrefetchStats:
    rounds: int = 0
    txs: int = 0
    rpc_calls: int = 0
    round_trips: int = 0
    seconds: float = 0.0
    failed: int = 0


class StatePrefetcher:
    """Builds the L3 state of many transactions with as few node round trips as possible."""

    def __init__(self, reader: ExecutionReader) -> None:
        self._reader = reader
        self._block = -1
        self._accounts: dict[bytes, AccountData] = {}
        self._code: OrderedDict[bytes, bytes] = OrderedDict()
        self.stats = PrefetchStats()

    @property
    def supported(self) -> bool:
        return self._reader.access_list_supported

    def tables(self) -> dict[str, TableSize]:
        """Sizes and bounds of the read caches (a round's reads may top the state bound
        before the next round starts over)."""
        return {
            "prefetch_accounts": TableSize(len(self._accounts), STATE_CACHE_LIMIT),
            "prefetch_code": TableSize(len(self._code), CODE_CACHE_LIMIT),
        }

    def _new_block(self, block: int) -> None:
        if block != self._block or len(self._accounts) > STATE_CACHE_LIMIT:
            self._block = block
            self._accounts = {}

    async def prefetch(
        self,
        txs: Sequence[tuple[DecodedTx, bytes, AccountSnapshot]],
        block: int,
        coinbase: bytes,
        clock: float = 0.0,
    ) -> list[Prefetched | None]:
        """State for each (tx, sender, planned sender state); None where simulation failed."""
        self._new_block(block)
        self.stats.rounds += 1
        self.stats.txs += len(txs)
        per_tx = self._reader.calls_per_simulation
        lists = await self._reader.access_lists([call_object(tx, s) for tx, s, _ in txs], block)
        self.stats.rpc_calls += len(txs) * per_tx
        self.stats.round_trips += 1
        wanted: list[dict[bytes, set[bytes]] | None] = []
        for (tx, sender, _), al in zip(txs, lists, strict=True):
            if al is None:
                wanted.append(None)
                continue
            need: dict[bytes, set[bytes]] = {a: set(keys) for a, keys in al.entries.items()}
            # What the protocol touches whatever the code does (see core.touchset).
            for a in (*tx_touches(tx, sender), coinbase, *PRECOMPILES):
                need.setdefault(a, set())
            for a, keys in tx.access_list:
                need.setdefault(a, set()).update(keys)
            wanted.append(need)
        await self._load(wanted, block)
        if self._add_delegations(wanted):
            await self._load(wanted, block)
        out: list[Prefetched | None] = []
        for (tx, sender, planned), needed in zip(txs, wanted, strict=True):
            if needed is None:
                self.stats.failed += 1
                out.append(None)
                continue
            try:
                out.append(self._assemble(tx, sender, planned, needed, coinbase))
            except KeyError:
                self.stats.failed += 1
                out.append(None)
        return out

    def _add_delegations(self, wanted: list[dict[bytes, set[bytes]] | None]) -> bool:
        """Add the delegation target of every delegated account a tx needs (EIP-7702: calling
        it runs the target's code); whether any was new."""
        added = False
        for need in wanted:
            if need is None:
                continue
            codes = {}
            for addr in need:
                data = self._accounts.get(addr)
                if data is not None and data.snapshot.code_hash in self._code:
                    codes[addr] = self._code[data.snapshot.code_hash]
            for target in delegations(codes, need):
                need[target] = set()
                added = True
        return added

    async def _load(self, wanted: list[dict[bytes, set[bytes]] | None], block: int) -> None:
        missing: dict[bytes, set[bytes]] = {}
        for need in wanted:
            for addr, slots in (need if need is not None else {}).items():
                have = self._accounts.get(addr)
                lacking = slots - set(have.storage) if have else set(slots)
                if have is None or lacking:
                    missing.setdefault(addr, set()).update(lacking)
        if missing:
            fetched = await self._reader.account_data(
                {a: sorted(s) for a, s in missing.items()}, block
            )
            self.stats.rpc_calls += len(missing) + 1
            self.stats.round_trips += 1
            retry = {a: sorted(s) for a, s in missing.items() if a not in fetched}
            if retry:
                # The node answered with another block's state (caught by the proof check):
                # ask once more; what still fails leaves its txs at L2 this round.
                fetched.update(await self._reader.account_data(retry, block))
                self.stats.rpc_calls += len(retry) + 1
                self.stats.round_trips += 1
            for addr, data in fetched.items():
                old = self._accounts.get(addr)
                storage = {**(old.storage if old else {}), **data.storage}
                self._accounts[addr] = AccountData(
                    data.snapshot, storage, storage_root=data.storage_root
                )
        code_missing = {
            d.snapshot.code_hash: a
            for a, d in self._accounts.items()
            if d.snapshot.code_hash != EMPTY_CODE_HASH and d.snapshot.code_hash not in self._code
        }
        if code_missing:
            codes = await self._reader.codes(code_missing.values(), block)
            self.stats.rpc_calls += len(code_missing)
            self.stats.round_trips += 1
            for code_hash, addr in code_missing.items():
                code = codes.get(addr, b"")
                if keccak256(code) != code_hash:
                    # The node answered two reads of one block inconsistently; the txs that need
                    # this code go out at L2 this round instead of with wrong state.
                    log.warning("code of 0x%s does not match its hash; not prefetched", addr.hex())
                    continue
                self._code[code_hash] = code
            while len(self._code) > CODE_CACHE_LIMIT:
                self._code.popitem(last=False)

    def _assemble(
        self,
        tx: DecodedTx,
        sender: bytes,
        planned: AccountSnapshot,
        need: dict[bytes, set[bytes]],
        coinbase: bytes,
    ) -> Prefetched:
        accounts = []
        reads: set[tuple[bytes, bytes]] = set()
        for addr in sorted(need):
            data = self._accounts[addr]
            snap = data.snapshot
            if addr == sender:
                # Pending predecessors of the same sender are accounted for (see core.mempool).
                snap = AccountSnapshot(addr, planned.balance, planned.nonce, snap.code_hash)
            # A code hash whose code could not be read raises KeyError: no L3 task on guesses.
            code = self._code[snap.code_hash] if snap.code_hash != EMPTY_CODE_HASH else b""
            # A slot never read (its account's proof failed the check) raises KeyError too.
            slots = tuple(sorted((s, data.storage[s]) for s in need[addr]))
            exists = exists_in_trie(
                snap.balance, snap.nonce, snap.code_hash, data.storage_root, EMPTY_CODE_HASH
            )
            accounts.append(AccountState(snap, code, slots, exists=exists))
            if addr in PRECOMPILES or (addr == coinbase and addr not in (sender, tx.to)):
                continue  # the fee credit is compared as an amount, not as a read
            reads.update(((addr, b"balance"), (addr, b"nonce"), (addr, b"code")))
            reads.update((addr, s) for s in need[addr])
        return Prefetched(tuple(accounts), frozenset(reads))
