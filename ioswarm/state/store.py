"""Flat EVM state in LMDB: the store L4 state sync keeps at one height, diff by diff.

One LMDB environment holds four named databases::

    Account   address (20)              -> nonce u64 BE | balance (32, BE) | code hash (32)
    Code      code hash (32)            -> code
    Storage   address (20) | slot (32)  -> value (32); a zero value is deleted, never stored
    Meta      b"height", b"state_hash", b"loading" (set while a bulk load is in progress)

Every diff, or group of consecutive diffs (:mod:`ioswarm.state.diffapply`), is applied in one
write transaction that also moves the height and the state hash (:mod:`ioswarm.core.statehash`),
so data, height and hash can never disagree on disk.

Durability choices:

- ``metasync=False``: each commit flushes the data pages, but the meta page is flushed with
  the next commit. A system crash can undo the last committed diff, never corrupt the store,
  and because height and data roll back together the store simply re-applies that diff.
- ``sync=True`` by default. ``sync=False`` skips the flush entirely; a system crash may then
  corrupt the store, so it is only for throwaway stores (tests, scratch imports).
- ``writemap=False`` by default: LMDB builds dirty pages in its own memory and writes them
  at commit. Writing through the shared map instead (``writemap=True``) takes a page fault
  per newly touched page and flushes by scanning the map; on a 1 GB snapshot import that
  measured about a third slower, with twice the system time. Bulk loads commit every 32 MB,
  well under LMDB's per-transaction dirty-page limit (512 MB with 4 KiB pages).
- ``readahead=False``: execution reads state at random; readahead would fill the page cache
  with neighbours and evict useful pages once the store outgrows RAM.
- Bulk loads (snapshot imports) commit without a flush each: a helper thread flushes in the
  background and one forced flush ends the load. A marker file, ``bulk-load.pending``, exists
  for the whole load; a store opened with it present was cut short (killed or powered off
  mid-load) and its files are discarded, so a partial load is never trusted.
- A full map is grown (doubled) and the transaction retried once; a second failure, or a
  growth attempted while read views are open, becomes a :class:`StoreError`.

Thread use: one writer at a time; any number of threads may read and export concurrently
(LMDB readers see a consistent snapshot and never block the writer).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any, Protocol, TypeVar

import lmdb

from ioswarm.core.models import AccountSnapshot
from ioswarm.core.snapshot import Entry, EntryBatch, encode_record, entry_batches
from ioswarm.core.statehash import ZERO_HASH
from ioswarm.errors import StoreError
from ioswarm.state.bulkload import (
    BackgroundFlusher,
    SpanHasher,
    remove_marker,
    write_marker,
)
from ioswarm.state.diffapply import Planned, PreparedGroup, prepare_group, write_group

ACCOUNT = "Account"
CODE = "Code"
STORAGE = "Storage"
NAMESPACES = (ACCOUNT, CODE, STORAGE)
PUT = 0  # StateDiffEntry.Op values
DELETE = 1

DEFAULT_MAP_SIZE = 64 << 30
ZERO_WORD = bytes(32)
ACCOUNT_VALUE_LEN = 8 + 32 + 32
_KEY_LEN = {ACCOUNT: 20, CODE: 32, STORAGE: 52}
_VALUE_LEN = {ACCOUNT: ACCOUNT_VALUE_LEN, STORAGE: 32}
_META_HEIGHT = b"height"
_META_HASH = b"state_hash"
_META_LOADING = b"loading"
_BULK_MARKER = "bulk-load.pending"  # a file beside data.mdb while a bulk load runs
# Bulk loads commit when either bound is reached: large transactions amortise the fsync, the
# bounds keep the Python objects of one batch to some tens of MB.
DEFAULT_LOAD_BATCH_ENTRIES = 200_000
DEFAULT_LOAD_BATCH_BYTES = 32 << 20

_T = TypeVar("_T")
_log = logging.getLogger(__name__)


class DiffEntry(Protocol):
    """One write of a state diff; ``ioswarm_pb2.StateDiffEntry`` satisfies it."""

    @property
    def op(self) -> int: ...
    @property
    def namespace(self) -> str: ...
    @property
    def key(self) -> bytes: ...
    @property
    def value(self) -> bytes: ...


class Diff(Protocol):
    """One block's diff; ``ioswarm_pb2.StateDiff`` satisfies it."""

    @property
    def height(self) -> int: ...
    @property
    def entries(self) -> Iterable[DiffEntry]: ...
    @property
    def post_state_hash(self) -> bytes: ...


# (namespace, key, new value or None to delete)
_Normalised = tuple[str, bytes, bytes | None]


@dataclass(frozen=True, slots=True)
class Write:
    """A plain :class:`DiffEntry` for code that does not hold protobuf messages."""

    op: int
    namespace: str
    key: bytes
    value: bytes = b""

    @classmethod
    def put(cls, namespace: str, key: bytes, value: bytes) -> Write:
        """A put of ``value`` under ``key``."""
        return cls(PUT, namespace, key, value)

    @classmethod
    def delete(cls, namespace: str, key: bytes) -> Write:
        """A delete of ``key``."""
        return cls(DELETE, namespace, key)


def encode_account(nonce: int, balance: int, code_hash: bytes) -> bytes:
    """The Account value: nonce u64 BE, balance 32 bytes BE, code hash."""
    if len(code_hash) != 32:
        raise ValueError("code hash must be 32 bytes")
    return nonce.to_bytes(8, "big") + balance.to_bytes(32, "big") + code_hash


def decode_account(address: bytes, value: bytes) -> AccountSnapshot:
    """Parse an Account value stored under ``address``."""
    if len(value) != ACCOUNT_VALUE_LEN:
        raise StoreError(f"account {address.hex()}: value is {len(value)} bytes, expected 72")
    return AccountSnapshot(
        address=address,
        nonce=int.from_bytes(value[:8], "big"),
        balance=int.from_bytes(value[8:40], "big"),
        code_hash=value[40:],
    )


def storage_key(address: bytes, slot: bytes) -> bytes:
    """The Storage key of one slot: address (20) then slot (32)."""
    if len(address) != 20 or len(slot) != 32:
        raise ValueError("storage key needs a 20-byte address and a 32-byte slot")
    return address + slot


def check_entry(namespace: str, key: bytes, value: bytes | None) -> None:
    """Raise :class:`StoreError` unless the entry fits the namespace layout."""
    want = _KEY_LEN.get(namespace)
    if want is None:
        raise StoreError(f"unknown namespace {namespace!r} (expected one of {NAMESPACES})")
    if len(key) != want:
        raise StoreError(f"{namespace} key is {len(key)} bytes, expected {want}")
    vlen = _VALUE_LEN.get(namespace)
    if value is not None and vlen is not None and len(value) != vlen:
        raise StoreError(f"{namespace} value is {len(value)} bytes, expected {vlen}")


def normalise_all(entries: Iterable[DiffEntry]) -> list[_Normalised]:
    """Every entry as (namespace, key, new value or None to delete), checked against the layout.

    The common case (a put or delete of the right lengths) is checked inline; anything else
    goes through :func:`_normalise`, which names the problem.
    """
    out: list[_Normalised] = []
    append = out.append
    key_len, value_len = _KEY_LEN.get, _VALUE_LEN.get
    for index, entry in enumerate(entries):
        ns, op, key = entry.namespace, entry.op, entry.key
        if op == PUT:
            value = entry.value
            if key_len(ns) != len(key) or value_len(ns, len(value)) != len(value):
                append(_normalise(index, entry))
            elif ns == STORAGE and value == ZERO_WORD:
                append((ns, bytes(key), None))  # the store never holds zero slots
            else:
                append((ns, bytes(key), bytes(value)))
        elif op == DELETE and key_len(ns) == len(key):
            append((ns, bytes(key), None))
        else:
            append(_normalise(index, entry))
    return out


def _normalise(index: int, entry: DiffEntry) -> _Normalised:
    """``entry`` as (namespace, key, new value or None to delete), checked against the layout."""
    ns, op, key = entry.namespace, entry.op, bytes(entry.key)
    value: bytes | None = bytes(entry.value) if op == PUT else None
    if op not in (PUT, DELETE):
        raise StoreError(f"diff entry {index}: unknown op {op}")
    try:
        check_entry(ns, key, value)
    except StoreError as exc:
        raise StoreError(f"diff entry {index}: {exc}") from None
    if value == ZERO_WORD and ns == STORAGE:
        value = None  # the store never holds zero slots
    return ns, key, value


class StateView:
    """A consistent read-only view of the store: one LMDB read transaction."""

    def __init__(self, txn: Any, dbs: dict[str, Any], meta: Any) -> None:
        self.txn = txn
        """The LMDB read transaction (for readers in this package)."""
        self._txn = txn
        self._dbs = dbs
        self._meta = meta

    @property
    def height(self) -> int:
        """Height of the state this view sees."""
        raw = self._txn.get(_META_HEIGHT, db=self._meta)
        return int.from_bytes(raw, "big") if raw else 0

    @property
    def state_hash(self) -> bytes:
        """State hash at :attr:`height`."""
        raw: bytes | None = self._txn.get(_META_HASH, db=self._meta)
        return raw if raw is not None else ZERO_HASH

    @property
    def loading(self) -> bool:
        """True while a bulk load is unfinished (the data is partial)."""
        return self._txn.get(_META_LOADING, db=self._meta) is not None

    def get(self, namespace: str, key: bytes) -> bytes | None:
        """Raw value of ``key`` in ``namespace``, or None."""
        value: bytes | None = self._txn.get(key, db=self._db(namespace))
        return value

    def get_account(self, address: bytes) -> AccountSnapshot | None:
        """The account at ``address``, or None if it does not exist."""
        raw = self.get(ACCOUNT, address)
        return None if raw is None else decode_account(address, raw)

    def get_code(self, code_hash: bytes) -> bytes | None:
        """The code stored under ``code_hash``, or None."""
        return self.get(CODE, code_hash)

    def get_storage(self, address: bytes, slot: bytes) -> bytes:
        """The 32-byte value of a storage slot (zero when unset)."""
        raw = self.get(STORAGE, storage_key(address, slot))
        return ZERO_WORD if raw is None else raw

    def count(self, namespace: str) -> int:
        """Number of entries in ``namespace``."""
        entries: int = self._txn.stat(self._db(namespace))["entries"]
        return entries

    def storage_of(self, address: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every stored (slot, value) of one account, in slot order."""
        cursor = self._txn.cursor(db=self._dbs[STORAGE])
        if not cursor.set_range(address):
            return
        for key, value in cursor:
            if key[:20] != address:
                return
            yield key[20:], value

    def iterate(self, namespace: str) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) of ``namespace`` in key order."""
        it: Iterator[tuple[bytes, bytes]] = self._txn.cursor(db=self._db(namespace)).iternext()
        return it

    def _db(self, namespace: str) -> Any:
        try:
            return self._dbs[namespace]
        except KeyError:
            raise StoreError(
                f"unknown namespace {namespace!r} (expected one of {NAMESPACES})"
            ) from None


class StateStore:
    """The flat state (Account, Code, Storage) at one height, in an LMDB directory."""

    def __init__(
        self,
        path: str | Path,
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        writemap: bool = False,
        sync: bool = True,
    ) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # guards _readers, map growth and reopening
        self._no_readers = threading.Condition(self._lock)
        self._readers = 0
        self._writemap = writemap
        self._sync = sync
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._discard_cut_short_load()
            self._open(map_size, sync=sync)
        except (OSError, lmdb.Error) as exc:
            raise StoreError(f"state store {self.path}: cannot open: {exc}") from exc

    def _open(self, map_size: int, *, sync: bool) -> None:
        self._env = lmdb.open(
            str(self.path),
            map_size=map_size,
            max_dbs=len(NAMESPACES) + 1,
            writemap=self._writemap,
            sync=sync,
            metasync=False,
            readahead=False,
        )
        self._dbs = {ns: self._env.open_db(ns.encode()) for ns in NAMESPACES}
        self._meta = self._env.open_db(b"Meta")

    def _discard_cut_short_load(self) -> None:
        """Delete the LMDB files of a bulk load that never finished (see :meth:`load_batches`)."""
        marker = self.path / _BULK_MARKER
        if not marker.exists():
            return
        _log.warning(
            "state store %s: a bulk load was cut short; discarding its partial files", self.path
        )
        for name in ("data.mdb", "lock.mdb"):
            (self.path / name).unlink(missing_ok=True)
        remove_marker(marker)

    def close(self) -> None:
        """Close the environment; the store is unusable afterwards."""
        self._env.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def map_size(self) -> int:
        """Current LMDB map size in bytes."""
        size: int = self._env.info()["map_size"]
        return size

    # -- reads ------------------------------------------------------------------------------

    @contextmanager
    def view(self) -> Iterator[StateView]:
        """A consistent read view; export from it while diffs keep being applied."""
        with self._lock:
            self._readers += 1
        try:
            with self._translate("read"), self._env.begin(buffers=False) as txn:
                yield StateView(txn, self._dbs, self._meta)
        finally:
            with self._lock:
                self._readers -= 1
                if not self._readers:
                    self._no_readers.notify_all()

    def _read(self, fn: Callable[[StateView], _T]) -> _T:
        with self.view() as v:
            return fn(v)

    @property
    def height(self) -> int:
        """Height of the stored state (0 for a new store)."""
        return self._read(lambda v: v.height)

    @property
    def state_hash(self) -> bytes:
        """32-byte state hash at :attr:`height`."""
        return self._read(lambda v: v.state_hash)

    @property
    def loading(self) -> bool:
        """True if a bulk load started and never finished (the data is partial)."""
        return self._read(lambda v: v.loading)

    def is_empty(self) -> bool:
        """True if no namespace holds an entry and no height was ever set."""
        return self._read(
            lambda v: v.height == 0 and not v.loading and not any(v.count(n) for n in NAMESPACES)
        )

    def get_account(self, address: bytes) -> AccountSnapshot | None:
        """The account at ``address``, or None."""
        return self._read(lambda v: v.get_account(address))

    def get_code(self, code_hash: bytes) -> bytes | None:
        """Code by hash, or None."""
        return self._read(lambda v: v.get_code(code_hash))

    def get_storage(self, address: bytes, slot: bytes) -> bytes:
        """A storage slot's 32-byte value (zero when unset)."""
        return self._read(lambda v: v.get_storage(address, slot))

    def count(self, namespace: str) -> int:
        """Number of entries in ``namespace``."""
        return self._read(lambda v: v.count(namespace))

    def iterate(self, namespace: str) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) of ``namespace`` in key order, from one consistent view.

        The view stays open until the iterator is exhausted or closed.
        """
        with self.view() as v:
            yield from v.iterate(namespace)

    # -- writes -----------------------------------------------------------------------------

    def apply_diff(
        self, height: int, entries: Iterable[DiffEntry], *, expected_hash: bytes | None = None
    ) -> bytes:
        """Apply one block's writes atomically and return the new state hash.

        ``height`` must be the stored height + 1. A Storage put of zero deletes the slot. With
        ``expected_hash`` the transaction is rolled back unless the result hashes to it, so a
        diverging store never moves forward.
        """
        return self._apply_planned([(height, self._normalise_all(entries), expected_hash)])

    def apply_diffs(self, diffs: Iterable[Diff]) -> bytes:
        """Apply consecutive diffs (``StateDiff`` messages) in one transaction; all or none.

        One commit, so one flush, for the whole run instead of one per block, and each key
        written once however many diffs touch it (:mod:`ioswarm.state.diffapply`): the way to
        catch up. A non-empty ``post_state_hash`` is checked like ``expected_hash`` of
        :meth:`apply_diff`; a mismatch raises
        :class:`~ioswarm.errors.HashMismatch` naming the diff. Returns the
        final state hash.
        """
        return self._apply_planned(self._plan(diffs))

    def prepare_diffs(
        self, diffs: Iterable[Diff], after: PreparedGroup | None = None
    ) -> PreparedGroup:
        """Read and check consecutive diffs in a read view, for :meth:`commit_prepared`.

        The diffs follow the stored state, or ``after``, a group prepared before whose commit
        may still be running. Raises like :meth:`apply_diffs`; nothing is written.
        """
        plan = self._plan(diffs)
        with self.view() as view:
            txn = view.txn
            height, digest = (after.height, after.digest) if after else self._read_meta(txn)
            return prepare_group(txn, self._dbs, height, digest, plan, self._where, after)

    def commit_prepared(
        self, group: PreparedGroup, written: Callable[[], object] | None = None
    ) -> bytes:
        """Write a prepared group, its height and hash in one durable transaction.

        Raises :class:`StoreError` (and writes nothing) unless the store is still at the
        height and hash the group was prepared on. ``written``, if given, is called once the
        pages are written and the flush begins (the rest of the commit holds no GIL). Returns
        the new state hash.
        """

        def run(txn: Any) -> bytes:
            height, digest = self._read_meta(txn)
            if (height, digest) != (group.base_height, group.base_digest):
                raise StoreError(
                    f"{self._where}: a group prepared on height {group.base_height} cannot be "
                    f"written at height {height}"
                )
            digest = self._write_group(txn, group)
            if written is not None:
                written()
            return digest

        return self._write(run)

    def _plan(self, diffs: Iterable[Diff]) -> list[Planned]:
        return [
            (d.height, self._normalise_all(d.entries), bytes(d.post_state_hash) or None)
            for d in diffs
        ]

    def _apply_planned(self, plan: list[Planned]) -> bytes:
        def run(txn: Any) -> bytes:
            height, digest = self._read_meta(txn)
            group = prepare_group(txn, self._dbs, height, digest, plan, self._where)
            return self._write_group(txn, group)

        return self._write(run)

    def _write_group(self, txn: Any, group: PreparedGroup) -> bytes:
        write_group(txn, self._dbs, group)
        txn.put(_META_HEIGHT, group.height.to_bytes(8, "big"), db=self._meta)
        txn.put(_META_HASH, group.digest, db=self._meta)
        return group.digest

    @property
    def _where(self) -> str:
        return f"state store {self.path}"

    def _read_meta(self, txn: Any) -> tuple[int, bytes]:
        meta = self._meta
        if txn.get(_META_LOADING, db=meta) is not None:
            raise StoreError(f"state store {self.path}: a bulk load is unfinished")
        raw = txn.get(_META_HEIGHT, db=meta)
        digest: bytes = txn.get(_META_HASH, db=meta) or ZERO_HASH
        return (int.from_bytes(raw, "big") if raw else 0), digest

    def _normalise_all(self, entries: Iterable[DiffEntry]) -> list[_Normalised]:
        return normalise_all(entries)

    def load(
        self,
        entries: Iterable[Entry],
        height: int,
        *,
        commit_entries: int = DEFAULT_LOAD_BATCH_ENTRIES,
    ) -> bytes:
        """Bulk-load a whole state into an empty store at ``height``; return its state hash."""
        return self.load_batches(entry_batches(entries), height, commit_entries=commit_entries)

    def load_batches(
        self,
        batches: Iterable[EntryBatch],
        height: int,
        *,
        commit_entries: int = DEFAULT_LOAD_BATCH_ENTRIES,
        commit_bytes: int = DEFAULT_LOAD_BATCH_BYTES,
    ) -> bytes:
        """Bulk-load :class:`EntryBatch` runs (``SnapshotReader.batches``) into an empty store.

        The state hash is computed from the batches' records as they stream by. Commits every
        ``commit_entries`` entries or ``commit_bytes`` bytes; ``b"loading"`` in Meta marks the
        store partial until the last commit sets height and hash. Any failure clears the store,
        and a store left partial by a crash is cleared before loading. Returns the state hash.
        """
        if self.loading:
            self.clear()
        if not self.is_empty():
            raise StoreError(f"state store {self.path}: bulk load needs an empty store")
        self._write(lambda txn: txn.put(_META_LOADING, height.to_bytes(8, "big"), db=self._meta))
        with self._unflushed_commits():
            try:
                # Built inside the block: the environment (and its handles) was just reopened.
                writer = BulkWriter(self.path, self._write, self._dbs, self._meta)
                return writer.load(batches, height, commit_entries, commit_bytes)
            except BaseException:
                self.clear()
                raise

    @contextmanager
    def _unflushed_commits(self) -> Iterator[None]:
        """Reopen the environment without a flush per commit for the length of a bulk load.

        Commits then return without waiting for the disk; a helper thread flushes in the
        background, and leaving forces one last flush and reopens with the usual durability.
        A crash or power loss in between could leave pages unwritten, so a marker file stands
        for the whole load and the next open discards the files it finds beside it.

        Reopening would invalidate open read views: with views open at the start (an export
        still running) the load keeps flushing every commit instead; views opened during the
        load are waited for before the reopen at the end.
        """
        marker = self.path / _BULK_MARKER
        with self._lock:
            if self._readers:
                exclusive = False
            else:
                exclusive = True
                self._begin_unflushed(marker)
        if not exclusive:
            yield
            return
        flusher = BackgroundFlusher(partial(self._env.sync, True))
        try:
            yield
        finally:
            failure = flusher.stop()
            with self._no_readers:
                self._no_readers.wait_for(lambda: not self._readers)
                with self._translate("finish bulk load"):
                    self._env.sync(True)
                    size = self.map_size
                    self._env.close()
                    self._open(size, sync=self._sync)
                    remove_marker(marker)
            if failure is not None:
                raise StoreError(f"state store {self.path}: flush failed: {failure}") from failure

    def _begin_unflushed(self, marker: Path) -> None:
        with self._translate("start bulk load"):
            write_marker(marker, "a bulk load is in progress; the files beside me are partial\n")
            size = self.map_size
            self._env.close()
            self._open(size, sync=False)

    def clear(self) -> None:
        """Remove every entry, the height and the hash (resync from a snapshot)."""

        def run(txn: Any) -> None:
            for db in self._dbs.values():
                txn.drop(db, delete=False)
            txn.drop(self._meta, delete=False)

        self._write(run)

    # -- LMDB plumbing ----------------------------------------------------------------------

    def _write(self, fn: Callable[[Any], _T]) -> _T:
        """Run ``fn`` in one write transaction; grow a full map once and retry."""
        for attempt in (1, 2):
            try:
                with self._translate("write"), self._env.begin(write=True) as txn:
                    return fn(txn)
            except _MapFull as full:
                if attempt == 2:
                    raise StoreError(
                        f"state store {self.path}: map full at {self.map_size} bytes "
                        "even after growing it; raise the map size"
                    ) from full.__cause__
                self._grow()
        raise AssertionError("unreachable")

    def _grow(self) -> None:
        with self._lock:
            if self._readers:
                raise StoreError(
                    f"state store {self.path}: map full at {self.map_size} bytes and "
                    f"{self._readers} read views open; retry after they close or raise the map size"
                )
            new_size = self.map_size * 2
            with self._translate("grow map"):
                self._env.set_mapsize(new_size)

    @contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        """The one place LMDB errors become :class:`StoreError`."""
        try:
            yield
        except lmdb.MapFullError as exc:
            raise _MapFull() from exc
        except (lmdb.Error, OSError) as exc:
            raise StoreError(f"state store {self.path}: {action} failed: {exc}") from exc


class BulkWriter:
    """Writes a bulk load's batches into an empty store's databases, hashing as they go."""

    def __init__(
        self,
        path: Path,
        write: Callable[[Callable[[Any], None]], None],
        dbs: dict[str, Any],
        meta: Any,
    ) -> None:
        self.path = path
        self._write = write
        self._dbs = dbs
        self._meta = meta

    def load(
        self,
        batches: Iterable[EntryBatch],
        height: int,
        commit_entries: int,
        commit_bytes: int,
    ) -> bytes:
        """Write every batch (commits by count or size); the last commit sets height and hash."""
        pending: dict[str, tuple[list[bytes], list[bytes]]] = {}
        n = size = 0
        # LMDB writes and commits (whose flush waits on the disk) run in a writer thread, one
        # batch in flight, while this thread parses and groups the next batch.
        with SpanHasher() as hasher, ThreadPoolExecutor(1, "state-load") as writer:
            in_flight: Future[None] | None = None
            for batch in batches:
                self.check_batch(batch)
                if batch.spans:
                    hasher.add(batch.spans)
                else:
                    ns = repeat(batch.namespace)
                    hasher.add_records(list(map(encode_record, ns, batch.keys, batch.values)))
                keys, values = pending.setdefault(batch.namespace, ([], []))
                keys += batch.keys
                values += batch.values
                n += len(batch.keys)
                size += _bytes_of(batch.keys, batch.key_len) + _bytes_of(
                    batch.values, batch.value_len
                )
                if n >= commit_entries or size >= commit_bytes:
                    if in_flight is not None:
                        in_flight.result()
                    in_flight = writer.submit(self._commit_pending, pending)
                    pending = {}
                    n = size = 0
            if in_flight is not None:
                in_flight.result()
            digest = hasher.digest()

        def finish(txn: Any) -> None:
            txn.put(_META_HEIGHT, height.to_bytes(8, "big"), db=self._meta)
            txn.put(_META_HASH, digest, db=self._meta)
            txn.delete(_META_LOADING, db=self._meta)

        self._commit_pending(pending, finish)
        return digest

    def check_batch(self, batch: EntryBatch) -> None:
        """Whole-batch layout checks, in C (map/set) unless the reader already vouched."""
        ns = batch.namespace
        want = _KEY_LEN.get(ns)
        if want is None:
            raise StoreError(f"state store {self.path}: unknown namespace {ns!r} in bulk load")
        if batch.key_len != want and set(map(len, batch.keys)) != {want}:
            raise StoreError(f"state store {self.path}: bulk load has a {ns} key of wrong length")
        vlen = _VALUE_LEN.get(ns)
        if vlen is not None and batch.value_len != vlen and set(map(len, batch.values)) != {vlen}:
            raise StoreError(f"state store {self.path}: bulk load has a {ns} value of wrong length")
        if ns == STORAGE and ZERO_WORD in batch.values:
            raise StoreError(f"state store {self.path}: bulk load holds a zero Storage value")

    def _commit_pending(
        self,
        pending: dict[str, tuple[list[bytes], list[bytes]]],
        then: Callable[[Any], None] | None = None,
    ) -> None:
        """Write one load batch in one transaction: appending if sorted, else inserting."""

        def run(txn: Any, append: bool) -> None:
            for ns, (keys, values) in pending.items():
                cursor = txn.cursor(db=self._dbs[ns])
                items = zip(keys, values, strict=True)
                if append:
                    # Sorted input (every export is) appends: no search, pages packed full.
                    # LMDB refuses a key not above the last one, which covers any disorder.
                    _, added = cursor.putmulti(items, append=True)
                    if added != len(keys):
                        raise _OutOfOrder
                else:
                    _, added = cursor.putmulti(items, overwrite=False)
                    if added != len(keys):
                        raise StoreError(f"state store {self.path}: bulk load repeats a {ns} key")
            if then is not None:
                then(txn)

        try:
            self._write(partial(run, append=True))
        except _OutOfOrder:
            self._write(partial(run, append=False))


def _bytes_of(items: list[bytes], each: int) -> int:
    """Total length of ``items``; ``each`` is their common length when the reader knows it."""
    return len(items) * each if each >= 0 else sum(map(len, items))


class _OutOfOrder(Exception):
    """Internal signal: an appending bulk write met a key out of order."""


class _MapFull(Exception):
    """Internal signal from :meth:`StateStore._translate` to :meth:`StateStore._write`."""
