"""The epoch ledger's LMDB environment: open, read, write (durably or not), close.

:class:`LedgerDb` is the one place where lmdb (and file system) errors become
:class:`~ioswarm.errors.StoreError`; a full map is grown once and the write run again.
:class:`~ioswarm.rewards.ledger.EpochLedger` keeps its records in it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from ioswarm.errors import StoreError

_T = TypeVar("_T")


class LedgerDb:
    """One LMDB environment of named databases, opened without per-commit fsync."""

    def __init__(self, path: Path, names: Sequence[bytes], *, map_size: int) -> None:
        self.path = path
        self._closed = False
        with self.translated("cannot open"):
            self.path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(
                str(self.path), map_size=map_size, max_dbs=8, sync=False, metasync=False
            )
            self.dbs = {name: self._env.open_db(name) for name in names}

    def close(self) -> None:
        """Flush and close; further use raises StoreError."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(lmdb.Error):
                self._env.sync(True)
            self._env.close()

    @contextlib.contextmanager
    def translated(self, what: str) -> Iterator[None]:
        """The one place where lmdb (and file system) errors become StoreError."""
        if self._closed:
            raise StoreError(f"epoch ledger {self.path}: closed")
        try:
            yield
        except (lmdb.Error, OSError) as exc:
            raise StoreError(f"epoch ledger {self.path}: {what}: {exc}") from exc

    def read(self, what: str, fn: Callable[[lmdb.Transaction], _T]) -> _T:
        """Run ``fn`` in a read transaction."""
        with self.translated(what), self._env.begin() as txn:
            return fn(txn)

    def write(self, what: str, fn: Callable[[lmdb.Transaction], _T], *, durable: bool) -> _T:
        """Run ``fn`` in a write transaction, flushed to disk when ``durable``."""
        with self.translated(what):
            for attempt in range(2):
                try:
                    with self._env.begin(write=True) as txn:
                        result = fn(txn)
                    break
                except lmdb.MapFullError:
                    if attempt:
                        raise
                    # Grow once; the aborted transaction is simply run again.
                    self._env.set_mapsize(self._env.info()["map_size"] * 2)
            if durable:
                self._env.sync(True)
            return result

    def get_json(self, txn: lmdb.Transaction, db: bytes, key: bytes) -> Any:
        """The JSON document at ``key`` of database ``db``, or None."""
        raw = txn.get(key, db=self.dbs[db])
        return None if raw is None else json.loads(bytes(raw))
