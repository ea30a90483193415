"""The incremental state hash: a sum of per-entry keccak digests modulo 2**256."""

from __future__ import annotations

import random

import pytest
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from ioswarm.core import statehash
from ioswarm.core.snapshot import encode_record
from ioswarm.core.statehash import ZERO_HASH, StateHash, entry_hash

Entry = tuple[str, bytes, bytes]

entries_strategy = st.lists(
    st.tuples(
        st.sampled_from(["Account", "Code", "Storage"]),
        st.binary(min_size=1, max_size=52),
        st.binary(max_size=64),
    ),
    max_size=30,
    unique_by=lambda e: (e[0], e[1]),
)


def test_empty_state_is_zero() -> None:
    """An empty state hashes to 32 zero bytes."""
    assert StateHash().digest() == ZERO_HASH
    assert StateHash.of([]).digest() == ZERO_HASH


def test_known_value_of_one_entry() -> None:
    """One entry hashes to keccak256 of its length-prefixed record."""
    record = b"\x07Storage" + (2).to_bytes(4, "big") + b"k1" + (1).to_bytes(4, "big") + b"v"
    assert encode_record("Storage", b"k1", b"v") == record
    assert StateHash.of([("Storage", b"k1", b"v")]).digest() == keccak(record)


def test_fields_are_length_prefixed() -> None:
    """Moving a byte between key and value, or namespace and key, changes the hash."""
    a = entry_hash("Storage", b"ab", b"c")
    assert a != entry_hash("Storage", b"a", b"bc")
    assert entry_hash("Code", b"x", b"") != entry_hash("Cod", b"ex", b"")


def test_fast_keccak_matches_eth_hash() -> None:
    """Whichever Keccak backend was selected computes eth-hash's keccak256."""
    rng = random.Random(3)
    for size in (0, 1, 135, 136, 137, 1000):
        data = rng.randbytes(size)
        assert statehash.keccak256(data) == keccak(data)
    records = [rng.randbytes(n) for n in range(50)]
    expected = sum(int.from_bytes(keccak(r), "big") for r in records) % (1 << 256)
    assert statehash.sum_records(records) == expected
    assert statehash.py_sum_records(records) == expected


@given(entries_strategy, st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_order_independence(entries: list[Entry], rng: random.Random) -> None:
    """Adding the same entries in any order gives the same hash."""
    shuffled = list(entries)
    rng.shuffle(shuffled)
    assert StateHash.of(entries) == StateHash.of(shuffled)


@given(entries_strategy, entries_strategy)
@settings(max_examples=200, deadline=None)
def test_remove_is_the_inverse_of_add(base: list[Entry], extra: list[Entry]) -> None:
    """Adding then removing entries returns to the previous hash."""
    h = StateHash.of(base)
    before = h.digest()
    for e in extra:
        h.add(*e)
    for e in reversed(extra):
        h.remove(*e)
    assert h.digest() == before


@given(
    entries_strategy,
    st.lists(
        st.tuples(
            st.sampled_from(["Account", "Code", "Storage"]),
            st.binary(min_size=1, max_size=3),
            st.none() | st.binary(max_size=8),
        ),
        max_size=40,
    ),
)
@settings(max_examples=300, deadline=None)
def test_incremental_equals_from_scratch(
    initial: list[Entry], writes: list[tuple[str, bytes, bytes | None]]
) -> None:
    """apply() of writes (puts, deletes, repeated keys) equals hashing the final state anew."""
    state = {(ns, k): v for ns, k, v in initial}
    h = StateHash.of(initial)
    old_values = []
    for ns, key, new in writes:
        old_values.append(state.get((ns, key)))
        if new is None:
            state.pop((ns, key), None)
        else:
            state[(ns, key)] = new
    h.apply(writes, old_values)
    assert h == StateHash.of((ns, k, v) for (ns, k), v in state.items())


def test_digest_round_trips_and_copy_is_independent() -> None:
    """A hash restored from its digest continues identically; copies do not share state."""
    h = StateHash.of([("Account", b"a", b"1")])
    restored = StateHash(h.digest())
    clone = h.copy()
    h.add("Code", b"c", b"x")
    restored.add("Code", b"c", b"x")
    assert h == restored != clone
    assert repr(h).startswith("StateHash(")


def test_subtraction_wraps_modulo_2_256() -> None:
    """Removing an entry from the empty hash wraps around instead of going negative."""
    h = StateHash()
    h.remove("Storage", b"k", b"v")
    assert len(h.digest()) == 32
    h.add("Storage", b"k", b"v")
    assert h.digest() == ZERO_HASH


def test_bad_digest_length() -> None:
    """A state hash must be 32 bytes."""
    with pytest.raises(ValueError, match="32 bytes"):
        StateHash(b"\x00" * 31)


def test_apply_requires_aligned_old_values() -> None:
    """apply() refuses old values that do not line up with the writes."""
    with pytest.raises(ValueError):
        StateHash().apply([("Code", b"k", b"v")], [])


def test_falls_back_to_eth_hash_without_pysha3(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the optional safe-pysha3 module the hash uses eth-hash's keccak."""

    def missing(name: str) -> object:
        raise ImportError(name)

    monkeypatch.setattr(statehash, "import_module", missing)
    fast, total = statehash._select_keccak()
    assert fast is keccak
    assert total([b"a", b"b"]) == sum(int.from_bytes(keccak(x), "big") for x in (b"a", b"b"))
