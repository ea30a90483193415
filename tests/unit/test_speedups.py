"""The C speedups give exactly what their pure-Python definitions give, and check their bounds."""

from __future__ import annotations

import random

import pytest
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from ioswarm.core import snapshot, speedups, statehash
from ioswarm.core.snapshot import SnapshotReader, encode_entry, encode_snapshot

native = speedups.native
MASK = (1 << 256) - 1


def test_the_install_built_the_c_module() -> None:
    """`make` installs with a C compiler, so the fast path is what runs and is tested here."""
    assert speedups.NATIVE, (
        "ioswarm._speedups was not built: install with a C compiler (pip install -e .)"
    )
    assert statehash.HASH_RELEASES_GIL
    assert native.KECCAK_LANES in (1, 4)
    assert hasattr(native, "keccak_sum_kv"), "ioswarm._speedups is stale: rebuild (make venv)"


@pytest.mark.parametrize("stride", [2, 34, 101, 137, 138, 273, 300])
def test_every_count_and_length_sums_right(stride: int) -> None:
    """Counts 0-9 cover the four-way groups and the single-record remainder; strides cover
    one, two and three Keccak blocks."""
    buf = random.Random(stride).randbytes(stride * 9 + 5)
    for count in range(10):
        for start in (0, 5) if count < 9 else (0,):
            got = int.from_bytes(native.keccak_sum(buf, start, count, stride, 1), "big")
            assert got == statehash.py_sum_spans([(buf, start, count, stride)])


@pytest.mark.parametrize("size", [0, 1, 55, 135, 136, 137, 271, 272, 273, 1000, 10_240, 70_000])
def test_keccak256_matches_eth_hash(size: int) -> None:
    """Every padding case: empty, one byte short of, exactly at and past the 136-byte rate."""
    data = random.Random(size).randbytes(size)
    assert native.keccak256(data) == keccak(data)


def _runs(rng: random.Random) -> tuple[bytes, list[tuple[bytes, int, int, int]]]:
    """A buffer of random entries and spans over equal-sized stretches of it."""
    buf = rng.randbytes(rng.randrange(2000, 6000))
    spans = []
    for _ in range(rng.randrange(1, 6)):
        stride = rng.randrange(1, 300)
        count = rng.randrange(0, len(buf) // stride)
        start = rng.randrange(0, len(buf) - count * stride + 1)
        spans.append((buf, start, count, stride))
    return buf, spans


def test_span_sums_match_the_definition() -> None:
    """keccak_sum over strided records equals the Python sum of digests, mod 2**256."""
    rng = random.Random(11)
    for _ in range(40):
        _, spans = _runs(rng)
        assert statehash.sum_spans(spans) == statehash.py_sum_spans(spans)
        for buf, start, count, stride in spans:
            records = [buf[start + i * stride + 1 : start + (i + 1) * stride] for i in range(count)]
            expected = sum(int.from_bytes(keccak(r), "big") for r in records) & MASK
            got = native.keccak_sum(buf, start, count, stride, 1)
            assert int.from_bytes(got, "big") == expected


def test_large_span_sum_wraps_modulo_2_256() -> None:
    """A sum of thousands of digests overflows 256 bits many times; only the residue is kept."""
    buf = random.Random(5).randbytes(101 * 5000)
    got = int.from_bytes(native.keccak_sum(buf, 0, 5000, 101, 1), "big")
    assert got == statehash.py_sum_spans([(buf, 0, 5000, 101)])


@given(st.lists(st.binary(max_size=300), max_size=40))
@settings(max_examples=100, deadline=None)
def test_record_list_sum_matches_the_definition(records: list[bytes]) -> None:
    """keccak_sum_list equals the Python sum for any list of records."""
    assert statehash.sum_records(records) == statehash.py_sum_records(records)
    assert statehash.sum_records(iter(records)) == statehash.py_sum_records(records)


@given(st.binary(min_size=1, max_size=600), st.data())
@settings(max_examples=200, deadline=None)
def test_strided_slices_match_the_definition(buf: bytes, data: st.DataObject) -> None:
    """strided_slices equals slicing in Python for every in-bounds run."""
    stride = data.draw(st.integers(1, len(buf)))
    offset = data.draw(st.integers(0, stride - 1))
    length = data.draw(st.integers(0, len(buf) - offset))
    start = data.draw(st.integers(0, len(buf) - offset - length))
    count = data.draw(st.integers(0, (len(buf) - start - offset - length) // stride + 1))
    want = speedups.py_strided_slices(buf, start, count, stride, offset, length)
    assert native.strided_slices(buf, start, count, stride, offset, length) == want
    assert all(len(s) == length for s in want)


@given(st.integers(1, 40), st.integers(0, 30), st.data())
@settings(max_examples=200, deadline=None)
def test_same_layout_matches_the_definition(size: int, room: int, data: st.DataObject) -> None:
    """same_layout counts the same repeated records as the Python column comparison."""
    size = max(size, 4)
    first_record = data.draw(st.binary(min_size=size, max_size=size))
    head = data.draw(st.integers(0, size))
    tail_at = data.draw(st.integers(0, size - 4))
    records = [first_record]
    for _ in range(room):
        # Mostly copies with random changes, so long runs and every kind of break both occur.
        record = bytearray(first_record)
        if data.draw(st.integers(0, 3)) == 0:
            record[data.draw(st.integers(0, size - 1))] ^= data.draw(st.integers(1, 255))
        records.append(bytes(record))
    buf = b"pad" + b"".join(records)
    args = (buf, 3, size, head, tail_at, room)
    assert native.same_layout(*args) == speedups.py_same_layout(*args)


@given(
    st.lists(st.tuples(st.binary(max_size=80), st.binary(max_size=300)), max_size=60),
    st.integers(1, 4000),
)
@settings(max_examples=150, deadline=None)
def test_encode_entries_matches_the_definition(
    items: list[tuple[bytes, bytes]], max_bytes: int
) -> None:
    """Same bytes, same count, and both leave the iterator at the same item."""
    prefix = b"\x01\x07Storage"
    fast_it, slow_it = iter(items), iter(items)
    fast = native.encode_entries(prefix, fast_it, max_bytes)
    slow = speedups.py_encode_entries(prefix, slow_it, max_bytes)
    assert fast == slow
    assert list(fast_it) == list(slow_it) == items[fast[1] :]
    assert fast[0] == b"".join(encode_entry("Storage", k, v) for k, v in items[: fast[1]])


def test_encode_entries_refuses_what_is_not_a_pair() -> None:
    """A non-tuple item or a non-bytes field is a TypeError naming the problem."""
    with pytest.raises(TypeError, match="tuples"):
        native.encode_entries(b"\x01", iter([[b"k", b"v"]]), 100)
    with pytest.raises(TypeError):
        native.encode_entries(b"\x01", iter([(b"k", 5)]), 100)
    with pytest.raises(TypeError, match="iterator"):
        native.encode_entries(b"\x01", [(b"k", b"v")], 100)


def test_writer_output_is_the_same_without_the_c_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot written with the pure-Python encoder is byte-identical, chunking included."""
    rng = random.Random(4)
    entries = [("Storage", rng.randbytes(52), rng.randbytes(32)) for _ in range(5000)]
    entries += [
        ("Code", rng.randbytes(32), rng.randbytes(rng.randrange(1, 5000))) for _ in range(20)
    ]

    def write() -> list[bytes]:
        out: list[bytes] = []
        writer = snapshot.SnapshotWriter(out.append, 3, chunk_size=7000)
        for ns in ("Storage", "Code"):
            writer.add_many(ns, ((k, v) for n, k, v in entries if n == ns))
        writer.finish()
        return out

    fast = write()
    monkeypatch.setattr(snapshot, "encode_entries", speedups.py_encode_entries)
    slow = write()
    assert fast == slow
    assert len(fast) > 10  # really chunked
    assert b"".join(fast) == encode_snapshot(3, sorted(entries, key=lambda e: e[0] != "Storage"))


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("strided_slices", (b"abcdef", 0, 2, 3, 0, 4)),  # the second slice runs past the end
        ("strided_slices", (b"abcdef", 5, 1, 1, 0, 2)),
        ("strided_slices", (b"abcdef", -1, 1, 1, 0, 1)),
        ("strided_slices", (b"abcdef", 0, 1, 0, 0, 1)),  # stride 0
        ("keccak_sum", (b"abcdef", 0, 3, 3, 1)),
        ("keccak_sum", (b"abcdef", 0, 1, 3, 4)),  # skip beyond the record
        ("same_layout", (b"abcdef", 0, 3, 2, 0, 1)),  # tail field would not fit in a record
        ("same_layout", (b"abcdefgh", 0, 4, 2, 0, 2)),  # room beyond the buffer
    ],
)
def test_out_of_bounds_runs_raise(call: str, args: tuple[object, ...]) -> None:
    """A run that would read outside the buffer is refused with ValueError, never read."""
    with pytest.raises(ValueError):
        getattr(native, call)(*args)


def test_reader_gives_the_same_batches_without_the_c_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The snapshot reader's pure-Python path yields identical keys, values and spans."""
    rng = random.Random(9)
    entries = [("Account", rng.randbytes(20), rng.randbytes(72)) for _ in range(300)]
    entries += [("Code", rng.randbytes(32), rng.randbytes(rng.randrange(1, 900))) for _ in range(9)]
    entries += [("Storage", rng.randbytes(52), rng.randbytes(32)) for _ in range(3000)]
    stream = encode_snapshot(7, entries)
    chunks = [stream[i : i + 4093] for i in range(0, len(stream), 4093)]

    def batches() -> list[tuple[str, list[bytes], list[bytes], list[bytes]]]:
        reader = SnapshotReader(iter(chunks))
        return [(b.namespace, b.keys, b.values, b.records()) for b in reader.batches()]

    fast = batches()
    monkeypatch.setattr(snapshot, "strided_slices", speedups.py_strided_slices)
    monkeypatch.setattr(snapshot, "same_layout", speedups.py_same_layout)
    slow = batches()
    assert fast == slow
    flat = []
    for ns, keys, values, recs in fast:
        flat += [(ns, k, v, r) for k, v, r in zip(keys, values, recs, strict=True)]
    assert [(ns, k, v) for ns, k, v, _ in flat] == entries
    assert [r for *_, r in flat] == [encode_entry(*e)[1:] for e in entries]


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["Account", "Code", "Storage", "x" * 40]),
    st.lists(st.tuples(st.binary(max_size=80), st.binary(max_size=300)), max_size=12),
)
def test_key_value_sum_matches_the_definition(
    namespace: str, items: list[tuple[bytes, bytes]]
) -> None:
    """keccak_sum_kv over equal- and mixed-length key/value records (four-way groups and the
    remainder) equals the sum of the digests of their encoded records."""
    keys = [k for k, _ in items]
    values = [v for _, v in items]
    want = statehash.py_sum_kv(namespace, keys, values)
    assert statehash.sum_kv(namespace, keys, values) == want
    fixed = [k.ljust(52, b"\x00")[:52] for k in keys]
    words = [v.ljust(32, b"\x01")[:32] for v in values]
    assert statehash.sum_kv(namespace, fixed, words) == statehash.py_sum_kv(namespace, fixed, words)


def test_key_value_sum_refuses_what_is_not_bytes() -> None:
    """Keys and values must be bytes, in sequences of equal length."""
    with pytest.raises(TypeError):
        native.keccak_sum_kv(b"\x07Storage", [bytearray(52)], [bytes(32)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="differ in length"):
        native.keccak_sum_kv(b"\x07Storage", [bytes(52)], [])
