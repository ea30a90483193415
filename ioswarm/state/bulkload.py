"""Helpers of the state store's bulk load: background hashing, background flushing, markers.

A bulk load (a snapshot import) writes a whole state into an empty store. It is disposable
until it finishes, so it runs without a flush per commit: :class:`BackgroundFlusher` pushes
committed pages to disk from a helper thread while loading continues, one forced flush ends
it, and a marker file (:func:`write_marker`) present for the whole load tells the next open
that a load was cut short, by a process kill or a power loss, so the files can be discarded
rather than trusted.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ioswarm.core.snapshot import Span
from ioswarm.core.statehash import HASH_RELEASES_GIL, sum_records, sum_spans

_MASK = (1 << 256) - 1


class SpanHasher:
    """The state hash of a bulk load, summed in a helper thread while the caller writes LMDB.

    With the C speedups the Keccak sums release the GIL, so hashing runs on another core in
    parallel with parsing and LMDB writes; without them it runs inline (a thread would only
    contend for the GIL). At most ``_MAX_PENDING`` batches wait, bounding the memory their
    buffers hold.
    """

    _MAX_PENDING = 8

    def __init__(self) -> None:
        self._total = 0
        self._pending: deque[Future[int]] = deque()
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="state-hash") if HASH_RELEASES_GIL else None
        )

    def __enter__(self) -> SpanHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def add(self, spans: list[Span]) -> None:
        """Account for the entries the spans locate."""
        if self._pool is None:
            self._total += sum_spans(spans)
            return
        self._pending.append(self._pool.submit(sum_spans, spans))
        if len(self._pending) > self._MAX_PENDING:
            self._total += self._pending.popleft().result()

    def add_records(self, records: list[bytes]) -> None:
        """Account for entries given as encoded records (no marker byte)."""
        self._total += sum_records(records)

    def digest(self) -> bytes:
        """The 32-byte hash of everything added; waits for the helper thread."""
        while self._pending:
            self._total += self._pending.popleft().result()
        return (self._total & _MASK).to_bytes(32, "big")


class BackgroundFlusher:
    """Call ``flush`` every ``interval`` seconds in a helper thread until :meth:`stop`.

    Disk writes of earlier commits then overlap with building the next ones, instead of each
    commit waiting for its own. A failure stops the thread and is returned by :meth:`stop`.
    """

    def __init__(self, flush: Callable[[], object], interval: float = 0.05) -> None:
        self._flush = flush
        self._interval = interval
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="state-flush", daemon=True)
        self._thread.start()

    def stop(self) -> BaseException | None:
        """Stop and join the thread; return the exception that ended it early, if any."""
        self._stop.set()
        self._thread.join()
        return self._error

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._flush()
            except BaseException as exc:  # handed to the caller through stop()
                self._error = exc
                return


def fsync_directory(directory: Path) -> None:
    """Make a create, rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_marker(path: Path, text: str) -> None:
    """Create the marker file ``path`` durably (its content is for people reading the dir)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    fsync_directory(path.parent)


def remove_marker(path: Path) -> None:
    """Remove the marker file durably; a missing marker is fine."""
    path.unlink(missing_ok=True)
    fsync_directory(path.parent)
