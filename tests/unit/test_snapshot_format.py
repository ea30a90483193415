"""The IOSWSNAP byte format: hand-built vectors, round trips and every malformed-input error."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioswarm.core.snapshot import (
    SnapshotHeader,
    SnapshotReader,
    SnapshotTrailer,
    SnapshotWriter,
    decode_snapshot,
    encode_entry,
    encode_snapshot,
    entry_batches,
)
from ioswarm.errors import SnapshotFormatError, StoreError
from ioswarm.state.snapshot_io import inspect_snapshot, verify_snapshot

ADDR = bytes.fromhex("00112233445566778899aabbccddeeff00112233")
ACCOUNT_VALUE = (5).to_bytes(8, "big") + (10**18).to_bytes(32, "big") + b"\xc5" * 32
SLOT_KEY = ADDR + (1).to_bytes(32, "big")
SLOT_VALUE = (42).to_bytes(32, "big")

# Two entries at height 7, every field written out by hand.
BODY = (
    b"IOSWSNAP"
    + (1).to_bytes(4, "big")  # version
    + (7).to_bytes(8, "big")  # height
    + b"\x01"
    + bytes([7])
    + b"Account"
    + (20).to_bytes(4, "big")
    + ADDR
    + (72).to_bytes(4, "big")
    + ACCOUNT_VALUE
    + b"\x01"
    + bytes([7])
    + b"Storage"
    + (52).to_bytes(4, "big")
    + SLOT_KEY
    + (32).to_bytes(4, "big")
    + SLOT_VALUE
    + b"\x00"  # end marker
)
TRAILER = (2).to_bytes(8, "big") + hashlib.sha256(BODY).digest() + b"SNAPEND\x00"
STREAM = BODY + TRAILER
ENTRIES = [("Account", ADDR, ACCOUNT_VALUE), ("Storage", SLOT_KEY, SLOT_VALUE)]
EMPTY_BODY = b"IOSWSNAP" + (1).to_bytes(4, "big") + (0).to_bytes(8, "big") + b"\x00"
EMPTY = EMPTY_BODY + (0).to_bytes(8, "big") + hashlib.sha256(EMPTY_BODY).digest() + b"SNAPEND\x00"


def _reseal(body: bytes, count: int) -> bytes:
    """A stream with a correct trailer for ``body``."""
    return body + count.to_bytes(8, "big") + hashlib.sha256(body).digest() + b"SNAPEND\x00"


def _decode_error(stream: bytes) -> str:
    with pytest.raises(SnapshotFormatError) as info:
        decode_snapshot(stream)
    return str(info.value)


def test_hand_built_vector_decodes() -> None:
    """A byte-by-byte hand-built stream decodes to its header, entries and trailer."""
    header, entries, trailer = decode_snapshot(STREAM)
    assert header == SnapshotHeader(version=1, height=7)
    assert entries == ENTRIES
    assert trailer == SnapshotTrailer(count=2, sha256=hashlib.sha256(BODY).digest())


def test_writer_produces_the_hand_built_bytes() -> None:
    """The writer emits exactly the hand-built bytes, whatever its chunk size."""
    assert encode_snapshot(7, ENTRIES) == STREAM
    for chunk_size in (1, 5, 64, 1 << 20):
        out: list[bytes] = []
        writer = SnapshotWriter(out.append, 7, chunk_size=chunk_size)
        writer.add_many("Account", [(ADDR, ACCOUNT_VALUE)])
        writer.add("Storage", SLOT_KEY, SLOT_VALUE)
        assert writer.finish() == SnapshotTrailer(2, hashlib.sha256(BODY).digest())
        assert b"".join(out) == STREAM
        assert writer.bytes_written == len(STREAM)


def test_empty_snapshot_vector() -> None:
    """A snapshot without entries is header, 0x00 and a zero-count trailer."""
    assert encode_snapshot(0, []) == EMPTY
    assert decode_snapshot(EMPTY)[1] == []


def test_reader_is_independent_of_chunking() -> None:
    """Feeding the stream one byte at a time gives the same entries and verification."""
    reader = SnapshotReader(STREAM[i : i + 1] for i in range(len(STREAM)))
    assert list(reader) == ENTRIES
    assert reader.trailer.count == 2
    assert reader.offset == len(STREAM)


def test_records_are_the_entries_without_marker() -> None:
    """records() yields each entry's encoded bytes, the exact slice of the stream."""
    records = [r for _, _, _, r in SnapshotReader([STREAM]).records()]
    assert b"\x01" + records[0] + b"\x01" + records[1] == BODY[20:-1]


def test_bad_magic() -> None:
    """A stream not starting with IOSWSNAP is refused, with a hint for gzip input."""
    assert "bad magic" in _decode_error(b"IOSWSNAQ" + STREAM[8:])
    assert "still gzip-compressed" in _decode_error(gzip.compress(STREAM))


def test_unsupported_version() -> None:
    """Version 2 is refused by name."""
    stream = _reseal(BODY[:8] + (2).to_bytes(4, "big") + BODY[12:], 2)
    assert "unsupported snapshot version 2" in _decode_error(stream)


def test_truncated_header_and_empty_stream() -> None:
    """Fewer than 20 header bytes, or none at all, are reported as such."""
    assert "truncated header: 12 of 20 bytes" in _decode_error(STREAM[:12])
    assert "empty stream" in _decode_error(b"")


def test_truncated_entry_names_its_offset() -> None:
    """A stream cut inside an entry reports the byte where that entry starts."""
    message = _decode_error(STREAM[:40])
    assert "truncated entry at byte 20" in message


def test_truncated_before_end_marker() -> None:
    """A stream that ends between entries, without 0x00, is truncated."""
    assert "before the 0x00 end marker" in _decode_error(BODY[:-1])


def test_truncated_trailer() -> None:
    """A stream cut inside the trailer says so."""
    assert "truncated trailer" in _decode_error(STREAM[:-10])


def test_bad_marker_byte() -> None:
    """A marker other than 0x01/0x00 is named with its offset."""
    stream = _reseal(BODY[:20] + b"\x02" + BODY[21:], 2)
    assert "bad marker byte 0x02 at byte 20" in _decode_error(stream)


def test_wrong_count() -> None:
    """A trailer count that disagrees with the entries is a count mismatch."""
    stream = BODY + (3).to_bytes(8, "big") + TRAILER[8:]
    assert "count mismatch: trailer says 3 entries, stream holds 2" in _decode_error(stream)


def test_wrong_sha() -> None:
    """A trailer digest that does not match the bytes is a sha256 mismatch."""
    stream = BODY + TRAILER[:8] + bytes(32) + TRAILER[40:]
    assert "sha256 mismatch" in _decode_error(stream)


def test_corrupted_value_byte_fails_the_sha() -> None:
    """Flipping one byte inside a value is caught by the digest."""
    corrupt = bytearray(STREAM)
    corrupt[BODY.index(SLOT_VALUE) + 31] ^= 0xFF
    assert "sha256 mismatch" in _decode_error(bytes(corrupt))


def test_wrong_trailer_magic() -> None:
    """A trailer not ending in SNAPEND\\0 is refused."""
    assert "bad trailer magic" in _decode_error(STREAM[:-8] + b"SNAPEND!")


def test_trailing_garbage() -> None:
    """Bytes after the trailer are refused, in the same or a later chunk."""
    assert "trailing garbage" in _decode_error(STREAM + b"x")
    with pytest.raises(SnapshotFormatError, match="trailing garbage"):
        list(SnapshotReader([STREAM, b"", b"junk"]))


def test_entry_size_limit() -> None:
    """A length field beyond the limit fails before the reader buffers the entry."""
    huge = BODY[:20] + b"\x01\x07Account" + (1 << 31).to_bytes(4, "big") + b"x" * 100
    with pytest.raises(SnapshotFormatError, match="exceeds the 1024-byte limit"):
        list(SnapshotReader([huge], max_entry_bytes=1024))


def test_trailer_only_after_full_read() -> None:
    """The trailer is not available before the entries were consumed."""
    reader = SnapshotReader([STREAM])
    assert reader.header.height == 7
    with pytest.raises(ValueError, match="not fully read"):
        _ = reader.trailer


def _slots(count: int, start: int = 0) -> list[tuple[str, bytes, bytes]]:
    return [
        ("Storage", ADDR + (start + i).to_bytes(32, "big"), (i + 1).to_bytes(32, "big"))
        for i in range(count)
    ]


def test_batches_group_fixed_layout_runs() -> None:
    """Runs of one namespace come out as batches that know their key and value lengths."""
    entries = [("Account", ADDR, ACCOUNT_VALUE), *_slots(1000), ("Code", b"\x01" * 32, b"\x60")]
    batches = list(SnapshotReader([encode_snapshot(3, entries)]).batches(max_entries=300))
    assert [(b.namespace, len(b)) for b in batches] == [
        ("Account", 1),
        ("Storage", 300),
        ("Storage", 300),
        ("Storage", 300),
        ("Storage", 100),
        ("Code", 1),
    ]
    assert (batches[1].key_len, batches[1].value_len) == (52, 32)
    flat = [e for b in batches for e in zip([b.namespace] * len(b), b.keys, b.values, strict=True)]
    assert flat == entries


def test_batches_are_bounded_in_bytes() -> None:
    """A batch stays within max_bytes of encoded entries, except a single larger entry."""
    entries = [("Code", i.to_bytes(32, "big"), bytes(1000)) for i in range(50)]
    entries.append(("Code", b"\xff" * 32, bytes(5000)))
    batches = list(SnapshotReader([encode_snapshot(1, entries)]).batches(max_bytes=4096))
    sizes = [sum(len(r) + 1 for r in b.records()) for b in batches]
    assert max(sizes[:-1]) <= 4096
    assert len(batches[-1]) == 1
    assert sum(map(len, batches)) == 51
    grouped = list(entry_batches(entries, max_bytes=4096))
    assert [len(b) for b in grouped] == [len(b) for b in batches]
    assert grouped[0].records() == batches[0].records()


def test_run_breaks_on_a_different_layout() -> None:
    """An entry of another length inside a run of slots is parsed on its own, not misaligned."""
    entries = [*_slots(50), ("Storage", b"k" * 51, b"v" * 32), *_slots(50, start=100)]
    stream = encode_snapshot(3, entries)
    assert list(SnapshotReader([stream])) == entries
    batch = next(SnapshotReader([stream]).batches())
    assert (batch.key_len, len(batch)) == (-1, 101)


def test_bad_marker_inside_a_run_names_its_offset() -> None:
    """A damaged marker in the middle of a long run of equal entries is found at its byte."""
    stream = bytearray(encode_snapshot(3, _slots(100)))
    at = 20 + 40 * 101  # the 41st entry
    stream[at] = 0x07
    with pytest.raises(SnapshotFormatError, match=f"bad marker byte 0x07 at byte {at}"):
        list(SnapshotReader([bytes(stream)]))


def test_length_field_damage_inside_a_run_is_caught() -> None:
    """A changed value length in the middle of a run is not masked by the fast path."""
    stream = bytearray(encode_snapshot(3, _slots(100)))
    stream[20 + 70 * 101 + 1 + 1 + 7 + 4 + 52 + 3] = 31  # val_len of the 71st entry: 32 -> 31
    with pytest.raises(SnapshotFormatError):
        list(SnapshotReader([bytes(stream)]))


entries_strategy = st.lists(
    st.tuples(
        st.sampled_from(["Account", "Code", "Storage", "x" * 255, ""]),
        st.binary(max_size=80),
        st.binary(max_size=300),
    ),
    max_size=40,
)


@given(
    height=st.integers(0, 2**64 - 1),
    entries=entries_strategy,
    chunk=st.integers(1, 97),
)
@settings(max_examples=300, deadline=None)
def test_round_trip_random_entries(
    height: int, entries: list[tuple[str, bytes, bytes]], chunk: int
) -> None:
    """Any entries survive encode -> decode (in any chunking) -> encode byte for byte."""
    stream = encode_snapshot(height, entries)
    reader = SnapshotReader(stream[i : i + chunk] for i in range(0, len(stream), chunk))
    assert reader.header.height == height
    decoded = list(reader)
    assert decoded == entries
    assert reader.trailer.count == len(entries)
    assert encode_snapshot(height, decoded) == stream


fixed_entries = st.lists(
    st.tuples(
        st.sampled_from(["Account", "Storage"]),
        st.sampled_from([20, 52]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
        st.sampled_from([32, 72]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    ),
    max_size=200,
)


@given(entries=fixed_entries, chunk=st.integers(1, 500), max_entries=st.integers(1, 64))
@settings(max_examples=200, deadline=None)
def test_fast_path_matches_entry_by_entry(
    entries: list[tuple[str, bytes, bytes]], chunk: int, max_entries: int
) -> None:
    """Batches of mostly equal-layout entries decode exactly, in any chunking and batch size."""
    stream = encode_snapshot(1, entries)
    reader = SnapshotReader(stream[i : i + chunk] for i in range(0, len(stream), chunk))
    batches = list(reader.batches(max_entries))
    assert all(0 < len(b) <= max_entries for b in batches)
    assert [
        e for b in batches for e in zip([b.namespace] * len(b), b.keys, b.values, strict=True)
    ] == entries
    records = [r for b in batches for r in b.records()]
    assert records == [encode_entry(*e)[1:] for e in entries]
    assert reader.trailer.count == len(entries)


# -- files: the gzip layer (no LMDB needed) ----------------------------------------------------


def _gz(tmp_path: Path, data: bytes, name: str = "s.snap.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data, mtime=0))
    return path


def test_verify_a_sound_file(tmp_path: Path) -> None:
    """verify_snapshot reads a gzip file written by any gzip writer and counts namespaces."""
    info = verify_snapshot(_gz(tmp_path, STREAM))
    assert (info.height, info.count) == (7, 2)
    assert info.counts == {"Account": 1, "Storage": 1}
    assert info.stream_bytes == len(STREAM)
    assert info.file_sha256 == hashlib.sha256((tmp_path / "s.snap.gz").read_bytes()).digest()


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    """A gzip file cut short is a SnapshotFormatError that names the file."""
    path = tmp_path / "cut.snap.gz"
    path.write_bytes(gzip.compress(STREAM, mtime=0)[:-30])
    with pytest.raises(SnapshotFormatError, match=r"cut\.snap\.gz: .*truncated"):
        verify_snapshot(path)


def test_corrupted_file_byte(tmp_path: Path) -> None:
    """One flipped byte in the compressed file is reported as damage, never accepted."""
    data = bytearray(gzip.compress(STREAM, mtime=0))
    data[len(data) // 2] ^= 0x55
    path = tmp_path / "bad.snap.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotFormatError, match=r"bad\.snap\.gz: "):
        verify_snapshot(path)


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (BODY + (3).to_bytes(8, "big") + TRAILER[8:], "count mismatch"),
        (BODY + TRAILER[:8] + bytes(32) + TRAILER[40:], "sha256 mismatch"),
        (STREAM[:-8] + b"XXXXXXXX", "bad trailer magic"),
    ],
)
def test_bad_trailers_in_files(tmp_path: Path, stream: bytes, expected: str) -> None:
    """Wrong count, wrong sha and wrong trailer magic are caught in a file too."""
    with pytest.raises(SnapshotFormatError, match=expected):
        verify_snapshot(_gz(tmp_path, stream))


def test_not_gzip_and_missing_files(tmp_path: Path) -> None:
    """An uncompressed stream, an empty file and a missing file each get a clear error."""
    raw = tmp_path / "raw.snap"
    raw.write_bytes(STREAM)
    with pytest.raises(SnapshotFormatError, match="uncompressed IOSWSNAP"):
        verify_snapshot(raw)
    empty = tmp_path / "empty.snap.gz"
    empty.write_bytes(b"")
    with pytest.raises(SnapshotFormatError, match="empty file"):
        verify_snapshot(empty)
    with pytest.raises(StoreError, match=r"missing\.snap\.gz: cannot read"):
        verify_snapshot(tmp_path / "missing.snap.gz")


def test_trailing_garbage_after_gzip(tmp_path: Path) -> None:
    """Non-gzip bytes after the compressed stream are refused; a second member is fine."""
    path = _gz(tmp_path, STREAM)
    data = path.read_bytes()
    path.write_bytes(data + b"garbage")
    with pytest.raises(SnapshotFormatError, match="trailing garbage after the gzip stream"):
        verify_snapshot(path)
    path.write_bytes(gzip.compress(STREAM[:50], mtime=0) + gzip.compress(STREAM[50:], mtime=0))
    assert verify_snapshot(path).count == 2


def test_inspect_reports_damage_without_raising(tmp_path: Path) -> None:
    """inspect_snapshot returns header and counts, and describes a bad trailer in problem."""
    report = inspect_snapshot(_gz(tmp_path, BODY + (9).to_bytes(8, "big") + TRAILER[8:]))
    assert report.header.height == 7
    assert report.counts == {"Account": 1, "Storage": 1}
    assert not report.ok
    assert report.problem is not None and "count mismatch" in report.problem
    assert inspect_snapshot(_gz(tmp_path, STREAM, "ok.snap.gz")).ok


@pytest.mark.integration
def test_export_import_export_is_byte_identical(tmp_path: Path) -> None:
    """Export, import into a fresh store and export again give identical stream and gzip bytes."""
    from ioswarm.state.snapshot_io import export_snapshot, import_snapshot
    from ioswarm.state.store import StateStore

    code = bytes(range(256)) * 40
    entries = [
        ("Account", ADDR, ACCOUNT_VALUE),
        ("Code", hashlib.sha256(code).digest(), code),
        *(
            ("Storage", ADDR + i.to_bytes(32, "big"), (i + 1).to_bytes(32, "big"))
            for i in range(500)
        ),
    ]
    with (
        StateStore(tmp_path / "a", map_size=1 << 26) as a,
        StateStore(tmp_path / "b", map_size=1 << 26) as b,
    ):
        a.load(entries, 7)
        first = export_snapshot(a, tmp_path / "a.snap.gz")
        result = import_snapshot(tmp_path / "a.snap.gz", b)
        second = export_snapshot(b, tmp_path / "b.snap.gz")
        assert result.state_hash == a.state_hash == b.state_hash
    raw_a = (tmp_path / "a.snap.gz").read_bytes()
    raw_b = (tmp_path / "b.snap.gz").read_bytes()
    assert gzip.decompress(raw_a) == gzip.decompress(raw_b) == encode_snapshot(7, entries)
    assert raw_a == raw_b
    assert raw_a[3] == 0 and raw_a[4:8] == bytes(4)  # no file name, mtime 0: deterministic
    assert first.file_sha256 == second.file_sha256 == hashlib.sha256(raw_a).digest()
    assert first.counts == {"Account": 1, "Code": 1, "Storage": 500}
