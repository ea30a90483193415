"""Applying consecutive state diffs inside one LMDB write transaction, in key order.

A store much larger than memory's caches pays for every write with a B-tree descent and a
dirty 4 KiB page, and every durable commit with a flush of all the pages it dirtied (on a 1 GB
state one block of 500 random writes dirties ~900 pages, most of the cost). So a run of diffs is
applied as one group:

1. the current value of every key the group touches is read once, in key order
   (``getmulti``: neighbouring keys share pages, and each page is read once);
2. each diff's state hash is computed in turn from those values and the diff's writes, with
   an in-memory overlay standing for the earlier diffs of the group, and checked against the
   diff's expected hash (a mismatch aborts the whole transaction);
3. the final value of each changed key is written once, in key order (``putmulti``), however
   many diffs of the group wrote it.

The caller's transaction also moves the height and the hash, so data, height and hash commit
together: a crash leaves the store at the height before the group or after it, never between.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ioswarm.core.statehash import sum_kv
from ioswarm.errors import StoreError

_HASH_MASK = (1 << 256) - 1

Planned = tuple[int, list[tuple[str, bytes, bytes | None]], bytes | None]
"""One diff ready to apply: (height, writes as (namespace, key, new value or None), expected
post hash or None)."""


class HashMismatch(StoreError):
    """A diff of a group does not hash to the state hash it claims (the group is rolled back).

    ``height`` is the diff that failed; the diffs of the group before it were consistent.
    """

    def __init__(self, message: str, height: int) -> None:
        super().__init__(message)
        self.height = height


def apply_group(
    txn: Any,
    dbs: dict[str, Any],
    height: int,
    digest: bytes,
    plan: Sequence[Planned],
    where: str,
) -> tuple[int, bytes]:
    """Apply ``plan`` in ``txn`` on top of the state at (``height``, ``digest``).

    Returns the new height and state hash; the caller writes them in the same transaction.
    Raises :class:`StoreError` (:class:`HashMismatch` for a wrong hash) before writing anything
    if a diff does not follow its predecessor or hashes to something else than expected.
    """
    values = _read_current(txn, dbs, plan)
    changed: dict[str, set[bytes]] = {ns: set() for ns in values}
    acc = int.from_bytes(digest, "big")
    for diff_height, writes, expected in plan:
        if diff_height != height + 1:
            raise StoreError(
                f"{where}: diff for height {diff_height} does not follow height {height}"
            )
        height = diff_height
        acc = (acc + _hash_delta(writes, values, changed)) & _HASH_MASK
        digest = acc.to_bytes(32, "big")
        if expected is not None and digest != expected:
            raise HashMismatch(
                f"{where}: state hash mismatch at height {height}: "
                f"computed {digest.hex()}, expected {expected.hex()}",
                height,
            )
    _write_final(txn, dbs, values, changed)
    return height, digest


def _read_current(
    txn: Any, dbs: dict[str, Any], plan: Sequence[Planned]
) -> dict[str, dict[bytes, bytes | None]]:
    """The stored value (None if absent) of every key the plan writes, per namespace."""
    wanted: dict[str, set[bytes]] = {}
    for _, writes, _ in plan:
        for ns, key, _ in writes:
            keys = wanted.get(ns)
            if keys is None:
                keys = wanted[ns] = set()
            keys.add(key)
    values: dict[str, dict[bytes, bytes | None]] = {}
    for ns, keys in wanted.items():
        ordered = sorted(keys)
        current: dict[bytes, bytes | None] = dict.fromkeys(ordered)
        current.update(txn.cursor(db=dbs[ns]).getmulti(ordered))
        values[ns] = current
    return values


def _hash_delta(
    writes: list[tuple[str, bytes, bytes | None]],
    values: dict[str, dict[bytes, bytes | None]],
    changed: dict[str, set[bytes]],
) -> int:
    """Apply one diff's writes to the overlay ``values``; return the change of the hash sum."""
    # Per namespace: keys and values removed from and added to the state.
    removed: dict[str, tuple[list[bytes], list[bytes]]] = {}
    added: dict[str, tuple[list[bytes], list[bytes]]] = {}
    for ns, key, new in writes:
        current = values[ns]
        old = current[key]
        if old == new:
            continue  # rewriting the same value changes neither data nor hash
        if old is not None:
            keys, vals = removed.setdefault(ns, ([], []))
            keys.append(key)
            vals.append(old)
        if new is not None:
            keys, vals = added.setdefault(ns, ([], []))
            keys.append(key)
            vals.append(new)
        current[key] = new
        changed[ns].add(key)
    delta = 0
    for ns, (keys, vals) in added.items():
        delta += sum_kv(ns, keys, vals)
    for ns, (keys, vals) in removed.items():
        delta -= sum_kv(ns, keys, vals)
    return delta


def _write_final(
    txn: Any,
    dbs: dict[str, Any],
    values: dict[str, dict[bytes, bytes | None]],
    changed: dict[str, set[bytes]],
) -> None:
    """Write each changed key's final value once, in key order."""
    for ns, keys in changed.items():
        if not keys:
            continue
        current = values[ns]
        db = dbs[ns]
        ordered = sorted(keys)
        puts = [(key, value) for key in ordered if (value := current[key]) is not None]
        if puts:
            txn.cursor(db=db).putmulti(puts)
        for key in ordered:
            if current[key] is None:
                txn.delete(key, db=db)
