"""The state hash: a multiset hash of the flat state that updates in O(changes).

Definition::

    H(state) = sum over every entry e of keccak256(record(e))  mod 2**256     (32 bytes, BE)
    record(e) = ns_len u8 | ns | key_len u32 BE | key | val_len u32 BE | value

``record`` is the IOSWSNAP entry without its marker byte, so every field is length-prefixed and
two different entries never share a preimage; an importer can hash the bytes it just read.
The empty state hashes to 32 zero bytes.

Because addition is commutative and invertible, the hash does not depend on the order entries
were written, a put is ``remove(old) + add(new)``, and a whole block costs one keccak per
changed entry, whatever the size of the state. This is the additive multiset hash (AdHash,
Bellare and Micciancio, 1997).

How strong it is, honestly: two states that differ by accident (a missed diff, a bug, a flipped
bit on disk) collide with probability about 2**-256 per comparison, which is the job here:
coordinator and agents detect divergence and resync. It is *not* a commitment an adversary
cannot forge. For sums, finding distinct multisets with equal hashes is a generalized birthday
problem (Wagner, 2002): with k freely chosen entries the work drops to about
k * 2**(256 / (1 + log2 k)), far below 2**128 for large k. Exploiting that would need an
attacker who decides the contents of many state entries *and* controls which entries a peer
holds; peers here apply diffs from an authenticated coordinator, and the chain's own state root
remains the authority. Use a Merkle commitment if that threat model ever changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
from importlib import import_module
from itertools import repeat
from operator import methodcaller

from eth_hash.auto import keccak as _eth_keccak

from ioswarm.core.snapshot import Entry, Span, encode_record
from ioswarm.core.speedups import native

_MASK = (1 << 256) - 1
ZERO_HASH = bytes(32)


def _sum_with(hash_fn: Callable[[bytes], bytes]) -> Callable[[Iterable[bytes]], int]:
    def total(records: Iterable[bytes]) -> int:
        return sum(map(_from_be, map(hash_fn, records)))

    return total


def _select_keccak() -> tuple[Callable[[bytes], bytes], Callable[[Iterable[bytes]], int]]:
    """Pick the Keccak-256 implementation: ``safe-pysha3`` when installed, else eth-hash.

    Both compute the same function. eth-hash's pycryptodome backend costs ~13 µs per call
    through its wrappers, while ``sha3.keccak_256`` (the C module behind eth-hash's own
    ``pysha3`` backend) costs ~1 µs. Returns the single-digest function and a summing one that
    runs its whole loop in C (``map``).
    """
    try:  # optional dependency
        ctor = import_module("sha3").keccak_256
    except (ImportError, AttributeError):
        return _eth_keccak, _sum_with(_eth_keccak)
    digest = methodcaller("digest")

    def fast(data: bytes) -> bytes:
        out: bytes = ctor(data).digest()
        return out

    def fast_sum(records: Iterable[bytes]) -> int:
        return sum(map(_from_be, map(digest, map(ctor, records))))

    if fast(b"") != _eth_keccak(b""):  # never trust an optional backend blindly
        return _eth_keccak, _sum_with(_eth_keccak)
    return fast, fast_sum


_from_be = partial(int.from_bytes, byteorder="big")
keccak256, _sum_digests = _select_keccak()
"""``keccak256(data)``; ``_sum_digests(records)``: the unreduced sum of their digests."""


def py_sum_records(records: Iterable[bytes]) -> int:
    """The sum of the digests of ``records``, modulo 2**256 (the definition)."""
    return _sum_digests(records) & _MASK


def py_sum_spans(spans: Iterable[Span]) -> int:
    """The sum of the digests of every record in ``spans``, modulo 2**256 (the definition)."""
    total = 0
    for buf, start, count, stride in spans:
        first = start + 1  # a record is the entry without its marker byte
        size = stride - 1
        total += _sum_digests(
            buf[o : o + size] for o in range(first, first + count * stride, stride)
        )
    return total & _MASK


if native is not None:
    _native_sum_list = native.keccak_sum_list
    _native_sum = native.keccak_sum

    def sum_records(records: Iterable[bytes]) -> int:
        """The sum of the digests of ``records``, modulo 2**256 (C, one call)."""
        return _from_be(_native_sum_list(records if isinstance(records, list) else [*records]))

    def sum_spans(spans: Iterable[Span]) -> int:
        """The sum of the digests of every record in ``spans``, modulo 2**256.

        Runs in C with the GIL released for large spans, so a helper thread can hash while the
        caller parses and writes.
        """
        return (
            sum(_from_be(_native_sum(buf, s, n, stride, 1)) for buf, s, n, stride in spans) & _MASK
        )

else:  # pragma: no cover - depends on the install
    sum_records = py_sum_records
    sum_spans = py_sum_spans


def py_sum_kv(namespace: str, keys: Sequence[bytes], values: Sequence[bytes]) -> int:
    """The sum of the digests of the records of ``namespace`` entries, modulo 2**256."""
    return py_sum_records(map(encode_record, repeat(namespace), keys, values))


# A C module built before keccak_sum_kv existed (an install not rebuilt yet) lacks it.
_KeyValueSum = Callable[[bytes, Sequence[bytes], Sequence[bytes]], bytes]
_native_sum_kv: _KeyValueSum | None = getattr(native, "keccak_sum_kv", None)
if _native_sum_kv is not None:
    _c_sum_kv: _KeyValueSum = _native_sum_kv

    def sum_kv(namespace: str, keys: Sequence[bytes], values: Sequence[bytes]) -> int:
        """The sum of the digests of the records of ``namespace`` entries, modulo 2**256.

        ``keys[i]`` holds ``values[i]``; the records are built and hashed in C.
        """
        head = _NS_HEADS.get(namespace) or _namespace_head(namespace)
        return _from_be(_c_sum_kv(head, keys, values))

else:  # pragma: no cover - depends on the install
    sum_kv = py_sum_kv


def _namespace_head(namespace: str) -> bytes:
    return encode_record(namespace, b"", b"")[:-8]


_NS_HEADS = {ns: _namespace_head(ns) for ns in ("Account", "Code", "Storage")}

HASH_RELEASES_GIL = native is not None
"""True when :func:`sum_spans` runs without the GIL (worth a helper thread)."""


def entry_hash(namespace: str, key: bytes, value: bytes) -> int:
    """The integer one entry contributes to the state hash."""
    return int.from_bytes(keccak256(encode_record(namespace, key, value)), "big")


class StateHash:
    """A running state hash; mutate with add/remove/apply, read with :meth:`digest`."""

    __slots__ = ("_acc",)

    def __init__(self, digest: bytes = ZERO_HASH) -> None:
        if len(digest) != 32:
            raise ValueError(f"a state hash is 32 bytes, got {len(digest)}")
        self._acc = int.from_bytes(digest, "big")

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> StateHash:
        """Hash a whole state from scratch."""
        h = cls()
        for ns, key, value in entries:
            h.add(ns, key, value)
        return h

    def add(self, namespace: str, key: bytes, value: bytes) -> None:
        """Account for an entry that now exists."""
        self._acc = (self._acc + entry_hash(namespace, key, value)) & _MASK

    def remove(self, namespace: str, key: bytes, value: bytes) -> None:
        """Account for an entry that no longer exists (it must have been added)."""
        self._acc = (self._acc - entry_hash(namespace, key, value)) & _MASK

    def add_records(self, records: Iterable[bytes]) -> None:
        """Add entries given as already-encoded records (see the module docstring)."""
        self._acc = (self._acc + sum_records(records)) & _MASK

    def apply(
        self,
        entries: Iterable[tuple[str, bytes, bytes | None]],
        old_values: Iterable[bytes | None],
    ) -> None:
        """Apply writes ``(namespace, key, new value or None for delete)`` in order.

        ``old_values`` gives, for each write, the value the key held just before it (None if
        absent); when one key is written twice, the second old value is the first new one.
        """
        for (ns, key, new), old in zip(entries, old_values, strict=True):
            if old is not None:
                self.remove(ns, key, old)
            if new is not None:
                self.add(ns, key, new)

    def digest(self) -> bytes:
        """The 32-byte big-endian hash."""
        return self._acc.to_bytes(32, "big")

    def copy(self) -> StateHash:
        """An independent copy."""
        return StateHash(self.digest())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StateHash) and other._acc == self._acc

    def __hash__(self) -> int:
        return hash(self._acc)

    def __repr__(self) -> str:
        return f"StateHash({self.digest().hex()})"
