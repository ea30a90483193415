"""The IOSWSNAP snapshot byte format: a streamed, pure codec (no I/O, no compression).

The uncompressed stream, byte-exact with the reference implementation::

    header   "IOSWSNAP" | version u32 BE (1) | height u64 BE
    entry*   0x01 | ns_len u8 | ns | key_len u32 BE | key | val_len u32 BE | val
    end      0x00
    trailer  count u64 BE | sha256 of every byte above (32) | "SNAPEND\\0"

On disk the stream is gzip-compressed; that layer lives in ``ioswarm.state.snapshot_io`` so
this module stays pure. :class:`SnapshotWriter` pushes encoded bytes to a sink callable in
chunks; :class:`SnapshotReader` parses a byte-chunk iterator holding about one chunk plus one
batch of entries (4 MiB by default) in memory, and checks count, digest and trailer once the
entries are consumed.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import repeat

from ioswarm.core.speedups import encode_entries, same_layout, strided_slices
from ioswarm.errors import SnapshotFormatError

MAGIC = b"IOSWSNAP"
END_MAGIC = b"SNAPEND\x00"
VERSION = 1
ENTRY_MARKER = 0x01
END_MARKER = 0x00
HEADER_SIZE = len(MAGIC) + 4 + 8
TRAILER_SIZE = 8 + 32 + len(END_MAGIC)
MAX_NAMESPACE_LEN = 0xFF
MAX_FIELD_LEN = 0xFFFFFFFF
# Code is at most 24 KiB on EVM chains; 64 MiB leaves room for any future value while keeping a
# forged length field from making the reader buffer gigabytes before it notices truncation.
DEFAULT_MAX_ENTRY_BYTES = 64 << 20
DEFAULT_CHUNK_SIZE = 1 << 20
DEFAULT_BATCH_ENTRIES = 8192
DEFAULT_BATCH_BYTES = 4 << 20

_HEADER = struct.Struct(">8sIQ")
_TRAILER = struct.Struct(">Q32s8s")
_U32 = struct.Struct(">I")
_U32_AT = _U32.unpack_from

Entry = tuple[str, bytes, bytes]
"""One snapshot entry: (namespace, key, value)."""

Span = tuple[bytes, int, int, int]
"""``(buf, start, count, stride)``: ``count`` encoded entries of ``stride`` bytes each from
``buf[start]``, marker byte included."""


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """The fixed-size header at the start of every snapshot stream."""

    version: int
    height: int


@dataclass(frozen=True, slots=True)
class SnapshotTrailer:
    """The trailer: number of entries and sha256 of all bytes before the trailer."""

    count: int
    sha256: bytes


def encode_header(height: int, version: int = VERSION) -> bytes:
    """Encode the 20-byte header."""
    return _HEADER.pack(MAGIC, version, height)


def encode_record(namespace: str, key: bytes, value: bytes) -> bytes:
    """Encode one entry without its marker byte (the bytes the state hash digests)."""
    head = _NS_HEADS.get(namespace)
    if head is None:
        head = _namespace_prefix(namespace)[1:]
    if len(key) > MAX_FIELD_LEN or len(value) > MAX_FIELD_LEN:
        raise ValueError("key and value must each be shorter than 4 GiB")
    return b"".join((head, _U32.pack(len(key)), key, _U32.pack(len(value)), value))


def encode_entry(namespace: str, key: bytes, value: bytes) -> bytes:
    """Encode one entry as it appears in the stream, marker byte included."""
    return b"\x01" + encode_record(namespace, key, value)


def encode_trailer(count: int, sha256: bytes) -> bytes:
    """Encode the 48-byte trailer."""
    return _TRAILER.pack(count, sha256, END_MAGIC)


_NS_HEADS: dict[str, bytes] = {}  # namespace -> ns_len | ns, for the few names in use


def _namespace_prefix(namespace: str) -> bytes:
    """Marker, ns_len and ns: the part every entry of one namespace shares."""
    ns = namespace.encode()
    if len(ns) > MAX_NAMESPACE_LEN:
        raise ValueError(f"namespace {namespace!r} is longer than {MAX_NAMESPACE_LEN} bytes")
    head = bytes((len(ns),)) + ns
    if len(_NS_HEADS) < 64:
        _NS_HEADS[namespace] = head
    return bytes((ENTRY_MARKER,)) + head


_UNSET = -2
_MIXED = -1


@dataclass(frozen=True, slots=True)
class EntryBatch:
    """Consecutive entries of one namespace as parallel lists.

    ``spans`` locate the encoded entries, ``(buf, start, count, stride)`` runs of equal-sized
    entries as read (empty when not requested): the state hash digests them in place, without a
    per-entry copy. ``key_len``/``value_len`` give the length every key/value in the batch has,
    or -1 when they differ, so a consumer can skip per-entry length checks.
    """

    namespace: str
    keys: list[bytes]
    values: list[bytes]
    spans: list[Span]
    key_len: int = _MIXED
    value_len: int = _MIXED

    def __len__(self) -> int:
        return len(self.keys)

    def records(self) -> list[bytes]:
        """Each entry without its marker byte (what the state hash digests), in order."""
        out: list[bytes] = []
        for buf, start, count, stride in self.spans:
            out += strided_slices(buf, start, count, stride, 1, stride - 1)
        return out


def entry_batches(
    entries: Iterable[Entry],
    max_entries: int = DEFAULT_BATCH_ENTRIES,
    max_bytes: int = DEFAULT_BATCH_BYTES,
) -> Iterator[EntryBatch]:
    """Group entries into :class:`EntryBatch` runs (entries encoded), for bulk loaders."""
    ns_cur = ""
    keys: list[bytes] = []
    values: list[bytes] = []
    spans: list[Span] = []
    held = 0
    for ns, key, value in entries:
        entry = encode_entry(ns, key, value)
        if ns != ns_cur or len(keys) >= max_entries or held + len(entry) > max_bytes:
            if keys:
                yield EntryBatch(ns_cur, keys, values, spans)
                keys, values, spans = [], [], []
            ns_cur = ns
            held = 0
        keys.append(key)
        values.append(value)
        spans.append((entry, 0, 1, len(entry)))
        held += len(entry)
    if keys:
        yield EntryBatch(ns_cur, keys, values, spans)


class SnapshotWriter:
    """Encode a snapshot incrementally, handing uncompressed chunks to ``sink``.

    The header is emitted on construction; call :meth:`add` / :meth:`add_many` for the entries
    and :meth:`finish` once. Memory stays at about ``chunk_size`` plus one entry.
    """

    def __init__(
        self,
        sink: Callable[[bytes], object],
        height: int,
        *,
        version: int = VERSION,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if not 0 <= height < 1 << 64:
            raise ValueError(f"height {height} does not fit in u64")
        self._sink = sink
        self._chunk_size = chunk_size
        self._sha = hashlib.sha256()
        self._parts: list[bytes] = [encode_header(height, version)]
        self._pending = HEADER_SIZE
        self._count = 0
        self._bytes = 0
        self._trailer: SnapshotTrailer | None = None
        self.height = height

    @property
    def count(self) -> int:
        """Entries written so far."""
        return self._count

    @property
    def bytes_written(self) -> int:
        """Uncompressed bytes handed to the sink so far (the trailer included once finished)."""
        return self._bytes

    def add(self, namespace: str, key: bytes, value: bytes) -> None:
        """Append one entry."""
        self.add_many(namespace, ((key, value),))

    def add_many(self, namespace: str, items: Iterable[tuple[bytes, bytes]]) -> int:
        """Append every (key, value) tuple of ``items`` under ``namespace``; return how many.

        Entries are encoded a chunk at a time by :func:`encode_entries` (in C when the speedups
        are built), which pulls from ``items`` only what fits the current chunk.
        """
        if self._trailer is not None:
            raise ValueError("snapshot already finished")
        prefix = _namespace_prefix(namespace)
        it = iter(items)
        limit = self._chunk_size
        added = 0
        while True:
            room = max(limit - self._pending, 1)
            chunk, n = encode_entries(prefix, it, room)
            if n:
                self._parts.append(chunk)
                self._pending += len(chunk)
                added += n
                if self._pending >= limit:
                    self._flush()
            if len(chunk) < room:  # the items ran out before the chunk filled
                break
        self._count += added
        return added

    def finish(self) -> SnapshotTrailer:
        """Write the end marker and trailer; return the trailer. Call once."""
        if self._trailer is not None:
            raise ValueError("snapshot already finished")
        self._parts.append(b"\x00")
        self._flush()
        trailer = SnapshotTrailer(self._count, self._sha.digest())
        self._trailer = trailer
        tail = encode_trailer(trailer.count, trailer.sha256)
        self._sink(tail)
        self._bytes += len(tail)
        return trailer

    def _flush(self) -> None:
        if not self._parts:
            return
        chunk = b"".join(self._parts)
        self._parts.clear()
        self._pending = 0
        self._sha.update(chunk)
        self._bytes += len(chunk)
        self._sink(chunk)


class SnapshotReader:
    """Parse a snapshot stream from an iterable of byte chunks.

    ``header`` is read on first access; iterating yields :data:`Entry` tuples and, after the
    last entry, checks the end marker, trailer magic, entry count, sha256 and that nothing
    follows the trailer. Any deviation raises :class:`SnapshotFormatError` naming the byte
    offset in the uncompressed stream. ``trailer`` is set once iteration completed cleanly.
    """

    def __init__(
        self,
        chunks: Iterable[bytes],
        *,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    ) -> None:
        self._chunks = iter(chunks)
        self._max_entry = max_entry_bytes
        self._buf = b""
        self._pos = 0
        self._base = 0  # stream offset of _buf[0]
        self._hashed = 0  # index in _buf up to which the sha256 has consumed
        self._sha = hashlib.sha256()
        self._header: SnapshotHeader | None = None
        self._trailer: SnapshotTrailer | None = None
        self._count = 0
        self._started = False

    @property
    def header(self) -> SnapshotHeader:
        """The parsed header (reads it from the stream on first access)."""
        if self._header is None:
            self._header = self._read_header()
        return self._header

    @property
    def trailer(self) -> SnapshotTrailer:
        """The verified trailer; available only after every entry was read."""
        if self._trailer is None:
            raise ValueError("snapshot not fully read yet")
        return self._trailer

    @property
    def count(self) -> int:
        """Entries read so far."""
        return self._count

    @property
    def offset(self) -> int:
        """Uncompressed bytes consumed so far."""
        return self._base + self._pos

    def __iter__(self) -> Iterator[Entry]:
        for batch in self.batches(with_spans=False):
            yield from zip(repeat(batch.namespace), batch.keys, batch.values)

    def records(self) -> Iterator[tuple[str, bytes, bytes, bytes]]:
        """Yield (namespace, key, value, record); record is the entry without its marker."""
        for batch in self.batches():
            yield from zip(repeat(batch.namespace), batch.keys, batch.values, batch.records())

    def batches(
        self,
        max_entries: int = DEFAULT_BATCH_ENTRIES,
        *,
        max_bytes: int = DEFAULT_BATCH_BYTES,
        with_spans: bool = True,
    ) -> Iterator[EntryBatch]:
        """Yield the entries as :class:`EntryBatch` runs of one namespace, in stream order.

        A batch holds at most ``max_entries`` entries and, unless one entry is larger, about
        ``max_bytes`` of encoded entries.

        This is the fast path: a run of entries that share namespace and key/value lengths
        (Storage slots, Account records) is validated by comparing its layout bytes and sliced
        with strided copies (in C when the speedups are built) instead of being parsed entry by
        entry.
        """
        if self._started:
            raise ValueError("a snapshot stream can be iterated only once")
        self._started = True
        _ = self.header
        names: dict[bytes, str] = {}
        max_entry = self._max_entry
        u32_at = _U32_AT
        ns_cur = ""
        keys: list[bytes] = []
        values: list[bytes] = []
        spans: list[Span] = []
        klen_all = vlen_all = _UNSET
        held = 0  # encoded bytes in the pending batch
        while True:
            buf = self._buf
            pos = self._pos
            end = len(buf)
            while pos < end and buf[pos] == ENTRY_MARKER:
                # Parse the first entry of a run the general way.
                if pos + 2 > end:
                    break
                kpos = pos + 2 + buf[pos + 1]
                if kpos + 4 > end:
                    break
                klen: int = u32_at(buf, kpos)[0]
                vpos = kpos + 4 + klen
                if vpos + 4 > end:
                    if klen > max_entry:
                        self._pos = pos
                        self._too_large("key", klen)
                    break
                vlen: int = u32_at(buf, vpos)[0]
                stop = vpos + 4 + vlen
                if stop > end:
                    if klen + vlen > max_entry:
                        self._pos = pos
                        self._too_large("entry", klen + vlen)
                    break
                raw_ns = buf[pos + 2 : kpos]
                ns = names.get(raw_ns)
                if ns is None:
                    self._pos = pos
                    ns = self._namespace(raw_ns, names)
                size = stop - pos
                if ns != ns_cur or len(keys) >= max_entries or held + size > max_bytes:
                    if keys:
                        yield EntryBatch(ns_cur, keys, values, spans, klen_all, vlen_all)
                        keys, values, spans = [], [], []
                    ns_cur = ns
                    klen_all = vlen_all = _UNSET
                    held = 0
                # Extend the run over every following entry with the same layout.
                room = min(
                    (end - stop) // size,
                    max_entries - len(keys) - 1,
                    max(0, (max_bytes - held) // size - 1),
                )
                koff = kpos + 4 - pos
                n = 1 + (same_layout(buf, pos, size, koff, koff + klen, room) if room else 0)
                run_end = pos + n * size
                voff = koff + klen + 4
                keys += strided_slices(buf, pos, n, size, koff, klen)
                values += strided_slices(buf, pos, n, size, voff, vlen)
                if with_spans:
                    spans.append((buf, pos, n, size))
                klen_all = klen if klen_all in (_UNSET, klen) else _MIXED
                vlen_all = vlen if vlen_all in (_UNSET, vlen) else _MIXED
                self._count += n
                held += n * size
                pos = run_end
            self._pos = pos
            if pos < end:
                marker = buf[pos]
                if marker == END_MARKER:
                    if keys:  # before the trailer check, so a report can count them
                        yield EntryBatch(ns_cur, keys, values, spans, klen_all, vlen_all)
                    self._finish()
                    return
                if marker != ENTRY_MARKER:
                    raise SnapshotFormatError(
                        f"bad marker byte 0x{marker:02x} at byte {self.offset} "
                        f"(expected 0x01 entry or 0x00 end)"
                    )
            # A partial entry (or an empty buffer): pull more bytes, or report truncation.
            if not self._refill(self._bytes_needed()):
                if self._pos >= len(self._buf):
                    raise SnapshotFormatError(
                        f"truncated snapshot: stream ends at byte {self.offset} "
                        f"after {self._count} entries, before the 0x00 end marker"
                    )
                raise SnapshotFormatError(
                    f"truncated entry at byte {self.offset}: stream ends at byte "
                    f"{self._base + len(self._buf)}"
                )

    def _namespace(self, raw: bytes, names: dict[bytes, str]) -> str:
        try:
            ns = raw.decode()
        except UnicodeDecodeError as exc:
            raise SnapshotFormatError(
                f"entry at byte {self.offset}: namespace {raw!r} is not UTF-8"
            ) from exc
        if len(names) < 1024:  # a forged stream must not grow the cache without bound
            names[raw] = ns
        return ns

    def _too_large(self, what: str, size: int) -> None:
        raise SnapshotFormatError(
            f"entry at byte {self.offset}: {what} of {size} bytes exceeds the "
            f"{self._max_entry}-byte limit"
        )

    def _bytes_needed(self) -> int:
        """How many bytes past the current position the pending entry needs, at least."""
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < 1 or buf[pos] != ENTRY_MARKER:
            return 1  # the marker alone decides what follows
        if avail < 2:
            return 2
        kpos = 2 + buf[pos + 1]
        if avail < kpos + 4:
            return kpos + 4
        klen: int = _U32_AT(buf, pos + kpos)[0]
        vpos = kpos + 4 + klen
        if avail < vpos + 4:
            return vpos + 4
        vlen: int = _U32_AT(buf, pos + vpos)[0]
        return vpos + 4 + vlen

    def _refill(self, need: int) -> bool:
        """Make at least ``need`` bytes available from the current position; False at EOF."""
        self._hash_consumed()
        buf, pos = self._buf, self._pos
        parts = [buf[pos:]] if pos < len(buf) else []
        have = len(buf) - pos
        self._base += pos
        self._pos = 0
        self._hashed = 0
        eof = False
        while have < need:
            chunk = next(self._chunks, None)
            if chunk is None:
                eof = True
                break
            if chunk:
                parts.append(bytes(chunk))
                have += len(chunk)
        self._buf = parts[0] if len(parts) == 1 else b"".join(parts)
        return not eof

    def _hash_consumed(self) -> None:
        if self._pos > self._hashed:
            self._sha.update(memoryview(self._buf)[self._hashed : self._pos])
            self._hashed = self._pos

    def _read_header(self) -> SnapshotHeader:
        self._refill(HEADER_SIZE)
        got = len(self._buf)
        if got >= len(MAGIC) and not self._buf.startswith(MAGIC):
            hint = " (still gzip-compressed?)" if self._buf.startswith(b"\x1f\x8b") else ""
            raise SnapshotFormatError(
                f"bad magic {self._buf[: len(MAGIC)]!r}: not an IOSWSNAP stream{hint}"
            )
        if got < HEADER_SIZE:
            raise SnapshotFormatError(
                f"truncated header: {got} of {HEADER_SIZE} bytes"
                if got
                else "empty stream: no IOSWSNAP header"
            )
        _, version, height = _HEADER.unpack_from(self._buf, 0)
        if version != VERSION:
            raise SnapshotFormatError(
                f"unsupported snapshot version {version} (this reader knows {VERSION})"
            )
        self._pos = HEADER_SIZE
        return SnapshotHeader(version, height)

    def _finish(self) -> None:
        self._pos += 1  # the end marker belongs to the hashed part
        self._hash_consumed()
        end_at = self.offset
        if not self._refill(TRAILER_SIZE):
            raise SnapshotFormatError(
                f"truncated trailer at byte {end_at}: {len(self._buf)} of {TRAILER_SIZE} bytes"
            )
        count, digest, magic = _TRAILER.unpack_from(self._buf, 0)
        if magic != END_MAGIC:
            raise SnapshotFormatError(
                f"bad trailer magic {magic!r} at byte {end_at + 40} (expected {END_MAGIC!r})"
            )
        if count != self._count:
            raise SnapshotFormatError(
                f"count mismatch: trailer says {count} entries, stream holds {self._count}"
            )
        computed = self._sha.digest()
        if digest != computed:
            raise SnapshotFormatError(
                f"sha256 mismatch: trailer says {digest.hex()}, stream hashes to {computed.hex()}"
            )
        extra = len(self._buf) - TRAILER_SIZE
        if extra <= 0:
            extra = next((len(c) for c in self._chunks if c), 0)
        if extra:
            raise SnapshotFormatError(
                f"trailing garbage: {extra}+ bytes after the trailer at byte "
                f"{end_at + TRAILER_SIZE}"
            )
        self._trailer = SnapshotTrailer(count, digest)
        self._buf = self._buf[:TRAILER_SIZE]
        self._pos = TRAILER_SIZE  # so offset reports the whole stream, trailer included


def decode_snapshot(data: bytes) -> tuple[SnapshotHeader, list[Entry], SnapshotTrailer]:
    """Decode a whole uncompressed snapshot held in memory (tests, small files)."""
    reader = SnapshotReader((data,))
    entries = list(reader)
    return reader.header, entries, reader.trailer


def encode_snapshot(height: int, entries: Iterable[Entry]) -> bytes:
    """Encode a whole snapshot in memory (tests, small files)."""
    out: list[bytes] = []
    writer = SnapshotWriter(out.append, height)
    for ns, key, value in entries:
        writer.add(ns, key, value)
    writer.finish()
    return b"".join(out)
