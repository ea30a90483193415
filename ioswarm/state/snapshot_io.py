"""Snapshot files: the IOSWSNAP stream, gzip-compressed, to and from a :class:`StateStore`.

Everything streams in chunks of about 1 MiB, so a snapshot larger than memory exports and
imports. (De)compression runs in a helper thread (zlib and ISA-L release the GIL), so it
overlaps with reading or writing LMDB and with encoding or parsing entries.

The gzip layer is one single-member stream written with ``compressobj(wbits=31)``: no file
name and mtime 0, so the same state and backend always give the same bytes. ISA-L (the
``isal`` package, the engine behind ``isal.igzip``) is used when importable: it writes the same
gzip format about ten times faster than zlib. Without it, zlib at level 3 is a moderate trade
of speed for size. Files from either backend read with both, and with any gzip reader
(``gzip -d``, Go's compress/gzip).

Errors name the file: OS problems (missing, unreadable) are :class:`StoreError`; damaged or
truncated content is :class:`SnapshotFormatError`.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from importlib import import_module
from itertools import islice
from pathlib import Path
from types import ModuleType
from typing import Any

from ioswarm.core.snapshot import (
    EntryBatch,
    SnapshotHeader,
    SnapshotReader,
    SnapshotTrailer,
    SnapshotWriter,
)
from ioswarm.errors import SnapshotFormatError, StoreError
from ioswarm.state.bulkload import fsync_directory
from ioswarm.state.store import NAMESPACES, StateStore

_isal_zlib: ModuleType | None
try:  # optional: ISA-L, the same gzip format ~10x faster
    _isal_zlib = import_module("isal.isal_zlib")
except ImportError:  # pragma: no cover - depends on the environment
    _isal_zlib = None

GZIP_BACKEND = "isal" if _isal_zlib is not None else "zlib"
# ISA-L level 1 compresses as well as zlib level 6 on state data at ~10x the speed.
DEFAULT_LEVEL = 1 if _isal_zlib is not None else 3
_GZIP_WBITS = 31  # 16 + 15: gzip wrapper, 32 KiB window
_READ_SIZE = 1 << 20
_MAX_OUT = 4 << 20  # bound on one decompressed chunk, whatever the compression ratio
_QUEUE_DEPTH = 8  # chunks in flight between the threads: at most ~8-32 MiB
_DECOMPRESS_ERRORS: tuple[type[Exception], ...] = (zlib.error,) + (
    (_isal_zlib.error,) if _isal_zlib is not None else ()
)


PROGRESS_EVERY_ENTRIES = 1 << 16


@dataclass(frozen=True, slots=True)
class SnapshotProgress:
    """How far an export or import is: entries so far (of ``total_entries`` when known) and,
    for an import, compressed file bytes read of ``total_file_bytes``."""

    entries: int
    total_entries: int | None = None
    file_bytes: int = 0
    total_file_bytes: int | None = None


ProgressCallback = Callable[[SnapshotProgress], None]


def _reporting(
    items: Iterable[tuple[bytes, bytes]],
    base: int,
    total: int | None,
    progress: ProgressCallback,
) -> Iterator[tuple[bytes, bytes]]:
    """``items`` unchanged, calling ``progress`` after every ``PROGRESS_EVERY_ENTRIES``."""
    it = iter(items)
    done = base
    while chunk := list(islice(it, PROGRESS_EVERY_ENTRIES)):
        yield from chunk
        done += len(chunk)
        progress(SnapshotProgress(done, total))


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What an export wrote, or what a full verification found."""

    path: Path
    height: int
    count: int
    sha256: bytes  # the trailer digest, over the uncompressed stream
    counts: dict[str, int]  # entries per namespace
    stream_bytes: int  # uncompressed size, trailer included
    file_bytes: int
    file_sha256: bytes  # of the gzip file: what DownloadSnapshot advertises


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import loaded."""

    height: int
    count: int
    state_hash: bytes
    stream_bytes: int


@dataclass(slots=True)
class SnapshotReport:
    """The result of :func:`inspect_snapshot`; ``problem`` is None for a sound file."""

    path: Path
    header: SnapshotHeader
    counts: dict[str, int] = field(default_factory=dict)
    count: int = 0
    stream_bytes: int = 0
    file_bytes: int = 0
    trailer: SnapshotTrailer | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """True when the whole file checked out."""
        return self.problem is None


def export_snapshot(
    store: StateStore,
    path: str | Path,
    namespaces: Sequence[str] = NAMESPACES,
    height: int | None = None,
    *,
    compresslevel: int | None = None,
    progress: ProgressCallback | None = None,
) -> SnapshotInfo:
    """Stream ``namespaces`` of ``store`` into a gzip IOSWSNAP file at ``path``.

    Reads one consistent LMDB view, so diffs may keep being applied meanwhile (the open view
    keeps the pages it reads alive, so the store file grows by what those diffs rewrite).
    ``height``, if given, must equal the store's height (LMDB keeps no history). The file is
    written under a temporary name, fsynced, then renamed: readers never see a partial
    snapshot. ``compresslevel`` is the backend's level (ISA-L 0-3, zlib 0-9). ``progress``, if
    given, is called every ``PROGRESS_EVERY_ENTRIES`` entries with the count so far and the
    total (the view's entry counts).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    level = DEFAULT_LEVEL if compresslevel is None else compresslevel
    try:
        with store.view() as view:
            at_height = view.height
            if height is not None and height != at_height:
                raise StoreError(
                    f"snapshot {path}: store is at height {at_height}, cannot export {height}"
                )
            counts: dict[str, int] = {}
            with open(tmp, "wb") as raw:
                out = _GzipFileWriter(raw, level)
                sink = _ThreadedSink(out.write)
                try:
                    writer = SnapshotWriter(sink.put, at_height)
                    total = sum(view.count(ns) for ns in namespaces) if progress else None
                    done = 0
                    for ns in namespaces:
                        items: Iterable[tuple[bytes, bytes]] = view.iterate(ns)
                        if progress is not None:
                            items = _reporting(items, done, total, progress)
                        counts[ns] = writer.add_many(ns, items)
                        done += counts[ns]
                    trailer = writer.finish()
                finally:
                    sink.close()
                out.close()
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(tmp, path)
            fsync_directory(path.parent)  # make the rename itself durable
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"snapshot {path}: cannot write: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return SnapshotInfo(
        path=path,
        height=at_height,
        count=trailer.count,
        sha256=trailer.sha256,
        counts=counts,
        stream_bytes=writer.bytes_written,
        file_bytes=out.size,
        file_sha256=out.sha256.digest(),
    )


def import_snapshot(
    path: str | Path, store: StateStore, progress: ProgressCallback | None = None
) -> ImportResult:
    """Load a gzip IOSWSNAP file into an empty ``store``; set its height and state hash.

    Entries are written in large transactions; until the last one commits the store is
    marked partial, and any failure (a damaged file included) leaves it empty again.
    ``progress``, if given, is called after each batch of entries with the entries so far and
    the compressed bytes read of the file's size.
    """
    path = Path(path)
    with _wrap_errors(path), _gunzip_threaded(path, hash_file=False) as chunks:
        reader = SnapshotReader(chunks)
        header = reader.header  # a wrong file fails here, before the store is touched
        batches: Iterable[EntryBatch] = reader.batches()
        if progress is not None:
            batches = _batch_reporting(batches, chunks, path.stat().st_size, progress)
        state_hash = store.load_batches(batches, header.height)
        return ImportResult(header.height, reader.count, state_hash, reader.offset)


def _batch_reporting(
    batches: Iterable[EntryBatch],
    source: _gunzip_threaded,
    size: int,
    progress: ProgressCallback,
) -> Iterator[EntryBatch]:
    done = 0
    for batch in batches:
        yield batch
        done += len(batch.keys)
        progress(SnapshotProgress(done, None, source.file_bytes, size))


def inspect_snapshot(path: str | Path) -> SnapshotReport:
    """Read the whole file and report header, counts per namespace and the trailer check.

    A file whose header cannot be read raises; later damage is reported in ``problem``
    together with what was counted up to it.
    """
    path = Path(path)
    with _wrap_errors(path), _gunzip_threaded(path) as chunks:
        reader = SnapshotReader(chunks)
        report = SnapshotReport(path=path, header=reader.header)
        try:
            _count(reader, report.counts)
            report.trailer = reader.trailer
        except SnapshotFormatError as exc:
            report.problem = str(exc)
        report.count = reader.count
        report.stream_bytes = reader.offset
        report.file_bytes = chunks.file_bytes
        return report


def verify_snapshot(path: str | Path) -> SnapshotInfo:
    """Check every byte of the file (gzip CRCs, format, count, sha256); raise on any fault."""
    path = Path(path)
    with _wrap_errors(path), _gunzip_threaded(path) as chunks:
        reader = SnapshotReader(chunks)
        counts = _count(reader, {})
        trailer = reader.trailer
    return SnapshotInfo(
        path=path,
        height=reader.header.height,
        count=trailer.count,
        sha256=trailer.sha256,
        counts=counts,
        stream_bytes=reader.offset,
        file_bytes=chunks.file_bytes,
        file_sha256=chunks.file_sha256,
    )


def _count(reader: SnapshotReader, counts: dict[str, int]) -> dict[str, int]:
    for batch in reader.batches(with_spans=False):
        counts[batch.namespace] = counts.get(batch.namespace, 0) + len(batch)
    return counts


class _wrap_errors:  # noqa: N801 - used like a function, as a context manager
    """Prefix content errors with the file name; turn OS errors into :class:`StoreError`."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, SnapshotFormatError) and not str(exc).startswith("snapshot "):
            raise SnapshotFormatError(f"snapshot {self._path}: {exc}") from exc
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            raise StoreError(f"snapshot {self._path}: cannot read: {reason}") from exc


# -- gzip ---------------------------------------------------------------------------------------


def _compressobj(level: int) -> Any:
    if _isal_zlib is not None:  # ISA-L has levels 0-3; higher asks mean "its best"
        return _isal_zlib.compressobj(min(level, 3), zlib.DEFLATED, _GZIP_WBITS)
    return zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)


def _decompressobj() -> Any:
    if _isal_zlib is not None:
        return _isal_zlib.decompressobj(_GZIP_WBITS)
    return zlib.decompressobj(_GZIP_WBITS)


class _GzipFileWriter:
    """Compress into a binary file, keeping the size and sha256 of the compressed bytes."""

    def __init__(self, raw: Any, level: int) -> None:
        self._raw = raw
        self._z = _compressobj(level)
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._emit(self._z.compress(data))

    def close(self) -> None:
        self._emit(self._z.flush())

    def _emit(self, data: bytes) -> None:
        if data:
            self.sha256.update(data)
            self.size += len(data)
            self._raw.write(data)


class _Gunzip:
    """Decompressed chunks of a gzip file (all members), with the file's size and sha256.

    ``hash_file=False`` skips the sha256 of the compressed bytes (an import needs only the
    stream's own checks: gzip CRCs, the trailer's count and sha256, the state hash).
    """

    def __init__(self, path: Path, *, hash_file: bool = True) -> None:
        self._path = path
        self._sha = hashlib.sha256()
        self._hash_file = hash_file
        self.file_bytes = 0

    @property
    def file_sha256(self) -> bytes:
        return self._sha.digest()

    def chunks(self) -> Generator[bytes, None, None]:
        with open(self._path, "rb") as f:
            z: Any = None
            started = False
            while data := f.read(_READ_SIZE):
                if not started:
                    _check_gzip_magic(data)
                    started = True
                if self._hash_file:
                    self._sha.update(data)
                self.file_bytes += len(data)
                while data:
                    at = self.file_bytes - len(data)
                    if z is None:
                        # A new gzip member (gzip allows several); anything else is garbage.
                        if at and not data.startswith(b"\x1f"):
                            raise SnapshotFormatError(
                                f"trailing garbage after the gzip stream at compressed byte {at}"
                            )
                        z = _decompressobj()
                    try:
                        out = z.decompress(data, _MAX_OUT)
                    except _DECOMPRESS_ERRORS as exc:
                        raise SnapshotFormatError(
                            f"corrupt gzip data within compressed bytes {at}-{self.file_bytes}: "
                            f"{exc}"
                        ) from exc
                    if out:
                        yield out
                    if z.eof:
                        data = z.unused_data
                        z = None
                    else:
                        data = z.unconsumed_tail
            if not started:
                raise SnapshotFormatError("empty file")
            if z is not None:
                raise SnapshotFormatError(
                    f"truncated gzip stream: the file ends after {self.file_bytes} bytes "
                    "inside a compressed member"
                )


def _check_gzip_magic(data: bytes) -> None:
    if data.startswith(b"\x1f\x8b"):
        return
    hint = " (an uncompressed IOSWSNAP stream? it must be gzip-compressed)"
    raise SnapshotFormatError("not a gzip file" + (hint if data.startswith(b"IOSWSNAP") else ""))


class _gunzip_threaded:  # noqa: N801 - used like a function, as a context manager
    """Decompress a file in a helper thread; iterate the chunks in the caller's thread."""

    def __init__(self, path: Path, *, hash_file: bool = True) -> None:
        self._gunzip = _Gunzip(path, hash_file=hash_file)
        self._source: _ThreadedSource | None = None

    def __enter__(self) -> _gunzip_threaded:
        self._source = _ThreadedSource(self._gunzip.chunks)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._source is not None:
            self._source.close()

    def __iter__(self) -> Iterator[bytes]:
        assert self._source is not None
        return iter(self._source)

    @property
    def file_bytes(self) -> int:
        return self._gunzip.file_bytes

    @property
    def file_sha256(self) -> bytes:
        return self._gunzip.file_sha256


# -- threads ------------------------------------------------------------------------------------


class _ThreadedSink:
    """Hand chunks to ``consume`` in a helper thread through a bounded queue."""

    def __init__(self, consume: Callable[[bytes], None]) -> None:
        self._consume = consume
        self._queue: queue.Queue[bytes | None] = queue.Queue(_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="snapshot-compress", daemon=True)
        self._thread.start()

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> None:
        """Wait until every chunk is consumed; re-raise a failure of the helper thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:  # after a failure keep draining so put() never blocks
                try:
                    self._consume(chunk)
                except BaseException as exc:  # handed to the producer thread
                    self._error = exc


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class _ThreadedSource:
    """Run a chunk generator in a helper thread; iterate its output through a bounded queue."""

    def __init__(self, produce: Callable[[], Generator[bytes, None, None]]) -> None:
        self._produce = produce
        self._queue: queue.Queue[object] = queue.Queue(_QUEUE_DEPTH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="snapshot-gunzip", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            assert isinstance(item, bytes)
            yield item

    def close(self) -> None:
        """Stop the helper thread (the consumer may stop early) and wait for it."""
        self._stop.set()
        self._thread.join()

    def _offer(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            with closing(self._produce()) as chunks:
                for chunk in chunks:
                    if not self._offer(chunk):
                        return
            self._offer(_END)
        except BaseException as exc:  # handed to the consumer thread
            self._offer(_Failure(exc))
