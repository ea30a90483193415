"""The optional C speedups (``ioswarm._speedups``) and the pure-Python code they must match.

The C module is built at install time when a compiler is present. Each function below is the
definition; the C version is used when importable and gives the same result (the tests compare
them on random input). ``NATIVE`` says which one runs; ``native`` is the C module itself (or
None) for the Keccak sums, whose Python definitions live in :mod:`ioswarm.core.statehash`.
"""

from __future__ import annotations

from collections.abc import Iterator

try:  # built by setup.py; absent when the install had no C compiler
    from ioswarm import _speedups as native
except ImportError:  # pragma: no cover - depends on the install
    native = None  # type: ignore[assignment]

__all__ = [
    "NATIVE",
    "encode_entries",
    "native",
    "py_encode_entries",
    "py_same_layout",
    "py_strided_slices",
    "same_layout",
    "strided_slices",
]

NATIVE = native is not None
"""True when the C module is in use."""


def py_strided_slices(
    buf: bytes, start: int, count: int, stride: int, offset: int, length: int
) -> list[bytes]:
    """``count`` slices of ``length`` bytes, at ``offset`` into records of ``stride`` bytes."""
    first = start + offset
    return [buf[o : o + length] for o in range(first, first + count * stride, stride)]


def py_same_layout(buf: bytes, first: int, size: int, head: int, tail_at: int, room: int) -> int:
    """How many of the ``room`` records of ``size`` bytes after the one at ``first`` repeat it.

    A record repeats the first one when its first ``head`` bytes and its 4 bytes at ``tail_at``
    are equal to the first record's (for a snapshot entry: marker, namespace, key length and
    value length, which fix its layout). Compares byte columns with a stride, so a whole run is
    checked by C string methods instead of record by record.
    """
    start = first + size
    limit = start + room * size
    n = room
    for j in (*range(head), *range(tail_at, tail_at + 4)):
        column = buf[start + j : limit : size]
        same = len(column) - len(column.lstrip(buf[first + j : first + j + 1]))
        if same < n:
            n = same
            if not n:
                break
            limit = start + n * size
    return n


_U32_MAX = 0xFFFFFFFF


def py_encode_entries(
    prefix: bytes, items: Iterator[tuple[bytes, bytes]], max_bytes: int
) -> tuple[bytes, int]:
    """IOSWSNAP entries ``prefix | key_len | key | val_len | value`` for items from ``items``.

    Pulls items until the output reaches ``max_bytes`` or the iterator ends (never one more
    than it encodes); returns the bytes and how many entries they hold.
    """
    parts: list[bytes] = []
    used = count = 0
    fixed = len(prefix) + 8
    while used < max_bytes:
        item = next(items, None)
        if item is None:
            break
        key, value = item
        if len(key) > _U32_MAX or len(value) > _U32_MAX:
            raise ValueError("key and value must each be shorter than 4 GiB")
        parts += (prefix, len(key).to_bytes(4, "big"), key, len(value).to_bytes(4, "big"), value)
        used += fixed + len(key) + len(value)
        count += 1
    return b"".join(parts), count


if native is not None:
    strided_slices = native.strided_slices
    encode_entries = native.encode_entries
    same_layout = native.same_layout
else:  # pragma: no cover - depends on the install
    strided_slices = py_strided_slices
    encode_entries = py_encode_entries
    same_layout = py_same_layout
