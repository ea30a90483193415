"""Per-block state diffs in LMDB, kept for a retention window so L4 agents can catch up.

Keys are heights as u64 big-endian (so LMDB's byte order is height order), values the
deterministic serialization of ``ioswarm.StateDiff``. Heights are contiguous: after the first
diff, only ``last + 1`` may be appended, which is what lets a reconnecting agent replay a range
without holes. Re-appending an identical diff is a no-op (a restarted coordinator may re-read a
block); different bytes for a stored height are an error, never an overwrite.

Durability matches :mod:`ioswarm.state.store`: ``metasync=False`` may lose the last append in a
system crash but never corrupts the store; the lost diff is read from the node again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb
from google.protobuf.message import DecodeError

from ioswarm.errors import StoreError
from ioswarm.proto import ioswarm_pb2 as pb

DEFAULT_MAP_SIZE = 8 << 30
_MAX_HEIGHT = (1 << 64) - 1


def _key(height: int) -> bytes:
    return height.to_bytes(8, "big")


def _height(key: bytes) -> int:
    return int.from_bytes(key, "big")


class DiffStore:
    """Serialized ``StateDiff`` messages by height, with pruning to a retention window."""

    def __init__(
        self,
        path: str | Path,
        *,
        retain: int | None = None,
        map_size: int = DEFAULT_MAP_SIZE,
        sync: bool = True,
    ) -> None:
        """Open (or create) the store; with ``retain`` every append prunes to that many."""
        if retain is not None and retain < 1:
            raise ValueError("retain must be at least 1")
        self.path = Path(path)
        self.retain = retain
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # No writemap: diffs are small, and a plain data file keeps the directory copyable.
            self._env = lmdb.open(
                str(self.path), map_size=map_size, max_dbs=1, sync=sync, metasync=False
            )
            self._db = self._env.open_db(b"Diff")
        except (OSError, lmdb.Error) as exc:
            raise StoreError(f"diff store {self.path}: cannot open: {exc}") from exc

    def close(self) -> None:
        """Close the environment."""
        self._env.close()

    def __enter__(self) -> DiffStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, diff: Any) -> bool:
        """Store ``diff`` (a ``StateDiff``); return False if the same bytes were already stored.

        Raises :class:`StoreError` for different bytes at a stored height, a height below the
        retained window, or a gap after the last height.
        """
        height: int = diff.height
        data: bytes = diff.SerializeToString(deterministic=True)
        if not 0 <= height <= _MAX_HEIGHT:
            raise StoreError(f"diff store {self.path}: height {height} does not fit in u64")
        with self._translate("append"), self._env.begin(write=True, db=self._db) as txn:
            key = _key(height)
            stored = txn.get(key)
            if stored is not None:
                if stored == data:
                    return False
                raise StoreError(
                    f"diff store {self.path}: a different diff is already stored at height {height}"
                )
            cursor = txn.cursor()
            if cursor.last():
                last = _height(cursor.key())
                if height < last:
                    raise StoreError(
                        f"diff store {self.path}: height {height} is below the retained "
                        f"window (first {self._first(txn)}, last {last})"
                    )
                if height != last + 1:
                    raise StoreError(
                        f"diff store {self.path}: height {height} leaves a gap after {last}"
                    )
            txn.put(key, data, append=True)
            if self.retain is not None:
                self._prune(txn, height, self.retain)
        return True

    def get(self, height: int) -> Any | None:
        """The ``StateDiff`` at ``height``, or None."""
        with self._translate("get"), self._env.begin(db=self._db) as txn:
            data = txn.get(_key(height))
        return None if data is None else self._parse(height, data)

    def range(self, from_height: int, to_height: int | None = None) -> Iterator[Any]:
        """``StateDiff`` messages for heights in [from_height, to_height), in order.

        ``to_height=None`` means through the last stored height. Reads from one consistent
        view; heights already pruned are simply absent, so compare the first height with
        ``from_height`` to detect that a caller fell behind the window.
        """
        with self._translate("range"), self._env.begin(db=self._db) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(_key(from_height)):
                return
            for key, data in cursor:
                height = _height(key)
                if to_height is not None and height >= to_height:
                    return
                yield self._parse(height, data)

    @property
    def first(self) -> int | None:
        """Lowest stored height, or None when empty."""
        with self._translate("first"), self._env.begin(db=self._db) as txn:
            return self._first(txn)

    @property
    def last(self) -> int | None:
        """Highest stored height, or None when empty."""
        with self._translate("last"), self._env.begin(db=self._db) as txn:
            cursor = txn.cursor()
            return _height(cursor.key()) if cursor.last() else None

    def __len__(self) -> int:
        with self._translate("count"), self._env.begin(db=self._db) as txn:
            entries: int = txn.stat(self._db)["entries"]
            return entries

    def prune(self, retain: int) -> int:
        """Keep only the last ``retain`` heights; return how many diffs were removed."""
        if retain < 1:
            raise ValueError("retain must be at least 1")
        with self._translate("prune"), self._env.begin(write=True, db=self._db) as txn:
            cursor = txn.cursor()
            if not cursor.last():
                return 0
            return self._prune(txn, _height(cursor.key()), retain)

    def clear(self) -> int:
        """Remove every diff (the state store was rebuilt at another height); return how many."""
        with self._translate("clear"), self._env.begin(write=True, db=self._db) as txn:
            removed: int = txn.stat(self._db)["entries"]
            txn.drop(self._db, delete=False)
            return removed

    def _prune(self, txn: Any, last: int, retain: int) -> int:
        cutoff = _key(last - retain + 1) if last >= retain else None
        if cutoff is None:
            return 0
        cursor = txn.cursor()
        removed = 0
        if cursor.first():
            # delete() moves the cursor to the next record, so this walks the prefix once.
            while cursor.key() < cutoff:
                cursor.delete()
                removed += 1
                if not cursor.key():
                    break
        return removed

    def _first(self, txn: Any) -> int | None:
        cursor = txn.cursor()
        return _height(cursor.key()) if cursor.first() else None

    def _parse(self, height: int, data: bytes) -> Any:
        diff = pb.StateDiff()
        try:
            diff.ParseFromString(data)
        except DecodeError as exc:
            raise StoreError(f"diff store {self.path}: diff at height {height} is corrupt") from exc
        return diff

    @contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        """The one place LMDB errors become :class:`StoreError`."""
        try:
            yield
        except lmdb.Error as exc:
            raise StoreError(f"diff store {self.path}: {action} failed: {exc}") from exc
