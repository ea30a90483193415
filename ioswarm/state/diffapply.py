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

The transaction that writes a group also moves the height and the hash, so data, height and
hash commit together: a crash leaves the store at the height before the group or after it,
never between. Steps 1-2 (:func:`prepare_group`) only read, so a follower prepares the next
group in a read view while the previous one is still being flushed; step 3
(:func:`write_group`) checks in the write transaction that the store is still at the prepared
group's base.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ioswarm.core.statehash import sum_kv
from ioswarm.errors import HashMismatch, StoreError

_HASH_MASK = (1 << 256) - 1

Planned = tuple[int, list[tuple[str, bytes, bytes | None]], bytes | None]
"""One diff ready to apply: (height, writes as (namespace, key, new value or None), expected
post hash or None)."""


@dataclass(slots=True)
class PreparedGroup:
    """A group of diffs read and hashed, ready to be written on top of its base state."""

    base_height: int
    base_digest: bytes
    height: int
    digest: bytes
    values: dict[str, dict[bytes, bytes | None]]
    """Every key the group writes, with its final value (None: absent)."""
    changed: dict[str, set[bytes]]
    """The keys whose value differs from the base state's."""


def prepare_group(
    txn: Any,
    dbs: dict[str, Any],
    height: int,
    digest: bytes,
    plan: Sequence[Planned],
    where: str,
    after: PreparedGroup | None = None,
) -> PreparedGroup:
    """Read and hash ``plan`` on top of the state at (``height``, ``digest``).

    ``txn`` reads the stored values. ``after``, a group prepared before and perhaps not
    committed yet, stands in front of them: its values are the state the plan follows (a view
    older than ``after``'s commit still reads every other key right, as ``after`` did not
    change them). Raises :class:`StoreError` (:class:`HashMismatch` for a wrong hash) if a diff
    does not follow its predecessor or hashes to something else than expected.
    """
    base_height, base_digest = height, digest
    values = _read_current(txn, dbs, plan, after)
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
    return PreparedGroup(base_height, base_digest, height, digest, values, changed)


def write_group(txn: Any, dbs: dict[str, Any], group: PreparedGroup) -> None:
    """Write each changed key's final value once, in key order (the caller moves the height)."""
    for ns, keys in group.changed.items():
        if not keys:
            continue
        current = group.values[ns]
        db = dbs[ns]
        ordered = sorted(keys)
        puts = [(key, value) for key in ordered if (value := current[key]) is not None]
        if puts:
            txn.cursor(db=db).putmulti(puts)
        for key in ordered:
            if current[key] is None:
                txn.delete(key, db=db)


def _read_current(
    txn: Any, dbs: dict[str, Any], plan: Sequence[Planned], after: PreparedGroup | None
) -> dict[str, dict[bytes, bytes | None]]:
    """The value (None if absent) of every key the plan writes, per namespace."""
    wanted: dict[str, set[bytes]] = {}
    for _, writes, _ in plan:
        for ns, key, _ in writes:
            keys = wanted.get(ns)
            if keys is None:
                keys = wanted[ns] = set()
            keys.add(key)
    values: dict[str, dict[bytes, bytes | None]] = {}
    for ns, keys in wanted.items():
        known = after.values.get(ns, {}) if after is not None else {}
        ordered = sorted(keys.difference(known) if known else keys)
        current: dict[bytes, bytes | None] = dict.fromkeys(ordered)
        current.update(txn.cursor(db=dbs[ns]).getmulti(ordered))
        if known:
            current.update((key, known[key]) for key in keys.intersection(known))
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
