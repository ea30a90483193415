"""StateStore and DiffStore on a real LMDB in a temporary directory."""

from __future__ import annotations

import gzip
import logging
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ioswarm.core.statehash import StateHash
from ioswarm.errors import SnapshotFormatError, StoreError
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.state import bulkload
from ioswarm.state.diffstore import DiffStore
from ioswarm.state.snapshot_io import export_snapshot, import_snapshot
from ioswarm.state.store import (
    ACCOUNT,
    CODE,
    NAMESPACES,
    STORAGE,
    StateStore,
    Write,
    encode_account,
)

pytestmark = pytest.mark.integration

MAP = 1 << 26  # 64 MiB keeps the test directories small
ALICE = b"\xaa" * 20
BOB = b"\xbb" * 20
CODE_HASH = b"\xcc" * 32


def _word(n: int) -> bytes:
    return n.to_bytes(32, "big")


def _full_hash(store: StateStore) -> StateHash:
    """The state hash recomputed from scratch over a full iteration."""
    return StateHash.of((ns, k, v) for ns in NAMESPACES for k, v in store.iterate(ns))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state", map_size=MAP) as s:
        yield s


def test_new_store_is_empty_at_height_zero(store: StateStore) -> None:
    """A fresh store has height 0, the zero hash and no entries."""
    assert store.height == 0
    assert store.state_hash == bytes(32)
    assert store.is_empty()


def test_apply_diffs_and_read_back(store: StateStore) -> None:
    """Puts and deletes land in Account, Code and Storage and read back typed."""
    store.apply_diff(
        1,
        [
            Write.put(ACCOUNT, ALICE, encode_account(3, 10**18, CODE_HASH)),
            Write.put(CODE, CODE_HASH, b"\x60\x80"),
            Write.put(STORAGE, ALICE + _word(1), _word(7)),
            Write.put(STORAGE, ALICE + _word(2), _word(8)),
        ],
    )
    store.apply_diff(
        2,
        [
            Write.put(STORAGE, ALICE + _word(1), _word(0)),  # zero deletes
            Write.delete(STORAGE, ALICE + _word(2)),
            Write.delete(STORAGE, ALICE + _word(3)),  # deleting an absent slot is harmless
        ],
    )
    account = store.get_account(ALICE)
    assert account is not None
    assert (account.nonce, account.balance, account.code_hash) == (3, 10**18, CODE_HASH)
    assert store.get_account(BOB) is None
    assert store.get_code(CODE_HASH) == b"\x60\x80"
    assert store.get_storage(ALICE, _word(1)) == _word(0)
    assert store.count(STORAGE) == 0
    assert store.height == 2


def test_protobuf_entries_are_accepted(store: StateStore) -> None:
    """StateDiffEntry messages from the wire apply directly."""
    diff = pb.StateDiff(
        height=1,
        entries=[
            pb.StateDiffEntry(op=pb.StateDiffEntry.PUT, namespace=CODE, key=CODE_HASH, value=b"x")
        ],
    )
    store.apply_diff(diff.height, diff.entries)
    assert store.get_code(CODE_HASH) == b"x"


def test_height_must_follow(store: StateStore) -> None:
    """Only height + 1 applies; a skipped or repeated height changes nothing."""
    store.apply_diff(1, [Write.put(CODE, CODE_HASH, b"a")])
    before = store.state_hash
    for wrong in (1, 3):
        with pytest.raises(StoreError, match=f"height {wrong} does not follow height 1"):
            store.apply_diff(wrong, [Write.put(CODE, CODE_HASH, b"b")])
    assert store.get_code(CODE_HASH) == b"a"
    assert (store.height, store.state_hash) == (1, before)


def test_invalid_entries_apply_nothing(store: StateStore) -> None:
    """A diff with a bad namespace, key length, value length or op is refused whole."""
    good = Write.put(CODE, CODE_HASH, b"a")
    bad = [
        (Write.put("Contract", b"k", b"v"), "unknown namespace"),
        (Write.put(ACCOUNT, b"short", b"v" * 72), "Account key is 5 bytes"),
        (Write.put(STORAGE, ALICE + _word(1), b"\x01"), "Storage value is 1 bytes"),
        (Write(7, CODE, CODE_HASH, b""), "unknown op 7"),
    ]
    for entry, message in bad:
        with pytest.raises(StoreError, match=f"diff entry 1: .*{message}"):
            store.apply_diff(1, [good, entry])
    assert store.is_empty()


def test_expected_hash_mismatch_rolls_back(store: StateStore) -> None:
    """A diff whose result does not hash to the expected value is not applied."""
    with pytest.raises(StoreError, match="state hash mismatch at height 1"):
        store.apply_diff(1, [Write.put(CODE, CODE_HASH, b"a")], expected_hash=b"\x01" * 32)
    assert store.is_empty()
    expected = StateHash.of([(CODE, CODE_HASH, b"a")]).digest()
    assert store.apply_diff(1, [Write.put(CODE, CODE_HASH, b"a")], expected_hash=expected)
    assert store.state_hash == expected


def test_incremental_hash_equals_full_recompute(store: StateStore) -> None:
    """After many random diffs the stored hash equals one recomputed from all entries."""
    rng = random.Random(11)
    addresses = [rng.randbytes(20) for _ in range(8)]
    for height in range(1, 41):
        writes = []
        for _ in range(rng.randrange(1, 30)):
            addr = rng.choice(addresses)
            kind = rng.random()
            if kind < 0.5:
                key = addr + _word(rng.randrange(16))
                value = _word(rng.choice([0, rng.randrange(1, 1 << 64)]))
                writes.append(Write.put(STORAGE, key, value))
            elif kind < 0.7:
                writes.append(Write.delete(STORAGE, addr + _word(rng.randrange(16))))
            elif kind < 0.9:
                value = encode_account(rng.randrange(100), rng.randrange(1 << 80), CODE_HASH)
                writes.append(Write.put(ACCOUNT, addr, value))
            else:
                writes.append(Write.delete(ACCOUNT, addr))
        store.apply_diff(height, writes)
        if height % 10 == 0:
            assert store.state_hash == _full_hash(store).digest()


def _block(height: int, rng: random.Random) -> pb.StateDiff:
    entries = [
        pb.StateDiffEntry(
            op=pb.StateDiffEntry.PUT,
            namespace=STORAGE,
            key=ALICE + _word(rng.randrange(8)),
            value=_word(height),
        )
        for _ in range(5)
    ]
    entries.append(
        pb.StateDiffEntry(
            op=pb.StateDiffEntry.DELETE, namespace=STORAGE, key=ALICE + _word(rng.randrange(8))
        )
    )
    return pb.StateDiff(height=height, entries=entries)


def test_apply_diffs_equals_one_by_one(tmp_path: Path) -> None:
    """Catching up many diffs in one transaction ends at the same height and hash."""
    rng = random.Random(4)
    diffs = [_block(h, rng) for h in range(1, 31)]
    with (
        StateStore(tmp_path / "a", map_size=MAP) as a,
        StateStore(tmp_path / "b", map_size=MAP) as b,
    ):
        for d in diffs:
            d.post_state_hash = a.apply_diff(d.height, d.entries)
        assert b.apply_diffs(diffs) == a.state_hash
        assert (b.height, b.state_hash) == (30, _full_hash(b).digest())


def test_apply_diffs_is_all_or_nothing(store: StateStore) -> None:
    """A wrong post-state hash or a height gap in the run rolls back every diff of the call."""
    rng = random.Random(6)
    diffs = [_block(h, rng) for h in range(1, 6)]
    diffs[3].post_state_hash = b"\x02" * 32
    with pytest.raises(StoreError, match="state hash mismatch at height 4"):
        store.apply_diffs(diffs)
    gap = [_block(1, rng), _block(3, rng)]
    with pytest.raises(StoreError, match="height 3 does not follow height 1"):
        store.apply_diffs(gap)
    assert store.is_empty()


def test_reopen_keeps_height_hash_and_data(tmp_path: Path) -> None:
    """Closing and reopening the store keeps height, state hash and entries."""
    with StateStore(tmp_path / "s", map_size=MAP) as s:
        s.apply_diff(1, [Write.put(ACCOUNT, ALICE, encode_account(1, 2, CODE_HASH))])
        s.apply_diff(2, [Write.put(STORAGE, BOB + _word(5), _word(6))])
        height, digest = s.height, s.state_hash
    with StateStore(tmp_path / "s", map_size=MAP) as s:
        assert (s.height, s.state_hash) == (height, digest)
        assert s.get_storage(BOB, _word(5)) == _word(6)
        s.apply_diff(3, [Write.delete(STORAGE, BOB + _word(5))])
        assert s.state_hash == _full_hash(s).digest()


def test_view_is_a_consistent_snapshot(store: StateStore) -> None:
    """A view opened before a diff keeps seeing the old height and data."""
    store.apply_diff(1, [Write.put(CODE, CODE_HASH, b"old")])
    with store.view() as view:
        store.apply_diff(2, [Write.put(CODE, CODE_HASH, b"new")])
        assert (view.height, view.get_code(CODE_HASH)) == (1, b"old")
    assert (store.height, store.get_code(CODE_HASH)) == (2, b"new")


def test_full_map_grows_once(tmp_path: Path) -> None:
    """A diff larger than the map grows the map and applies; with a view open it fails clearly."""
    big = [Write.put(CODE, i.to_bytes(32, "big"), bytes(4096)) for i in range(200)]
    with StateStore(tmp_path / "g", map_size=1 << 20) as s:
        with s.view(), pytest.raises(StoreError, match="map full"):
            s.apply_diff(1, big)
        s.apply_diff(1, big)
        assert s.map_size >= 2 << 20
        assert s.count(CODE) == 200


def test_bulk_load_sorted_and_unsorted(tmp_path: Path) -> None:
    """load() gives the same hash as diffs, for sorted and for shuffled input."""
    rng = random.Random(5)
    entries = [(STORAGE, rng.randbytes(52), _word(rng.randrange(1, 1 << 30))) for _ in range(3000)]
    entries += [(ACCOUNT, rng.randbytes(20), encode_account(1, 1, CODE_HASH)) for _ in range(50)]
    expected = StateHash.of(entries).digest()
    for name, order in (("sorted", sorted(entries)), ("shuffled", entries)):
        with StateStore(tmp_path / name, map_size=MAP) as s:
            assert s.load(order, 99, commit_entries=700) == expected
            assert (s.height, s.state_hash, s.loading) == (99, expected, False)
            assert s.count(STORAGE) == 3000
            assert _full_hash(s).digest() == expected


def test_import_hash_is_the_same_inline_and_in_the_helper_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state hash of an import does not depend on where the Keccak sums run."""
    rng = random.Random(6)
    entries = [(STORAGE, rng.randbytes(52), rng.randbytes(32)) for _ in range(20_000)]
    entries += [(CODE, rng.randbytes(32), rng.randbytes(rng.randrange(1, 3000))) for _ in range(40)]
    expected = StateHash.of(entries).digest()
    with StateStore(tmp_path / "src", map_size=MAP) as src:
        src.load(entries, 4)
        export_snapshot(src, tmp_path / "s.gz")
    digests = []
    for threaded in (True, False):
        monkeypatch.setattr(bulkload, "HASH_RELEASES_GIL", threaded)
        with StateStore(tmp_path / f"dst-{threaded}", map_size=MAP) as dst:
            digests.append(import_snapshot(tmp_path / "s.gz", dst).state_hash)
            assert dst.state_hash == expected
    assert digests == [expected, expected]


def test_a_failed_early_commit_clears_the_store(store: StateStore) -> None:
    """A duplicate key found by the writer thread, batches before the end, empties the store."""
    entries = [(CODE, i.to_bytes(32, "big"), b"c") for i in range(50)]
    entries.insert(7, (CODE, (3).to_bytes(32, "big"), b"d"))  # out of order and a repeat
    with pytest.raises(StoreError, match="repeats a Code key"):
        store.load(entries, 5, commit_entries=4)
    assert store.is_empty()
    assert not store.loading


def test_bulk_load_refuses_duplicates_and_non_empty_stores(store: StateStore) -> None:
    """A repeated key fails the load and leaves the store empty; a used store is refused."""
    with pytest.raises(StoreError, match="repeats a Code key"):
        store.load([(CODE, CODE_HASH, b"a"), (CODE, CODE_HASH, b"b")], 5)
    assert store.is_empty()
    store.apply_diff(1, [Write.put(CODE, CODE_HASH, b"a")])
    with pytest.raises(StoreError, match="needs an empty store"):
        store.load([], 5)


def test_failed_load_leaves_store_empty(store: StateStore) -> None:
    """An error from the entry source mid-load clears everything already committed."""

    def entries() -> Iterator[tuple[str, bytes, bytes]]:
        for i in range(1000):
            yield CODE, i.to_bytes(32, "big"), b"c"
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        store.load(entries(), 10, commit_entries=100)
    assert store.is_empty()
    assert not store.loading


def test_interrupted_load_is_marked_and_refused(tmp_path: Path) -> None:
    """A store left mid-load refuses diffs, and the next load starts from scratch."""
    with StateStore(tmp_path / "p", map_size=MAP) as s:
        s._write(lambda txn: txn.put(b"loading", (5).to_bytes(8, "big"), db=s._meta))
        s._write(lambda txn: txn.put(CODE_HASH, b"partial", db=s._dbs[CODE]))
    with StateStore(tmp_path / "p", map_size=MAP) as s:
        assert s.loading
        with pytest.raises(StoreError, match="bulk load is unfinished"):
            s.apply_diff(1, [])
        s.load([(ACCOUNT, ALICE, encode_account(0, 1, CODE_HASH))], 5)
        assert s.get_code(CODE_HASH) is None
        assert s.height == 5


def test_corrupt_snapshot_import_leaves_store_empty(store: StateStore, tmp_path: Path) -> None:
    """Importing a damaged snapshot raises and leaves the target store empty."""
    entries = [(STORAGE, ALICE + _word(i), _word(i + 1)) for i in range(2000)]
    with StateStore(tmp_path / "src", map_size=MAP) as src:
        src.load(entries, 3)
        export_snapshot(src, tmp_path / "s.gz")
    stream = bytearray(gzip.decompress((tmp_path / "s.gz").read_bytes()))
    stream[-60] ^= 1  # inside the last entry: only the sha256 check can tell
    (tmp_path / "bad.gz").write_bytes(gzip.compress(bytes(stream), mtime=0))
    with pytest.raises(SnapshotFormatError, match=r"bad\.gz: sha256 mismatch"):
        import_snapshot(tmp_path / "bad.gz", store)
    assert store.is_empty()
    result = import_snapshot(tmp_path / "s.gz", store)
    assert (result.height, result.count, store.height) == (3, 2000, 3)


def test_export_of_a_past_height_is_refused(store: StateStore, tmp_path: Path) -> None:
    """Asking for a height the store is not at fails and leaves no file behind."""
    store.apply_diff(1, [Write.put(CODE, CODE_HASH, b"a")])
    with pytest.raises(StoreError, match="store is at height 1, cannot export 0"):
        export_snapshot(store, tmp_path / "x.gz", height=0)
    assert list(tmp_path.glob("x.gz*")) == []


def test_bulk_load_ends_durable_and_without_marker(tmp_path: Path) -> None:
    """After a load the store is back to flushing every commit and the marker is gone."""
    with StateStore(tmp_path / "s", map_size=MAP) as s:
        s.load([(CODE, CODE_HASH, b"x")], 2)
        assert s._env.flags()["sync"] is True
        assert not (tmp_path / "s" / "bulk-load.pending").exists()
        s.apply_diff(3, [Write.put(CODE, CODE_HASH, b"y")])
    with StateStore(tmp_path / "s", map_size=MAP) as s:
        assert (s.height, s.get_code(CODE_HASH)) == (3, b"y")


def test_bulk_load_leaves_an_open_view_valid(store: StateStore) -> None:
    """With a view open the load does not reopen the environment, so the view keeps working."""
    with store.view() as view:
        store.load([(CODE, CODE_HASH, b"x")], 2)
        assert (view.height, view.get_code(CODE_HASH)) == (0, None)  # its own snapshot
    assert (store.height, store.get_code(CODE_HASH)) == (2, b"x")


def test_bulk_load_waits_for_views_opened_meanwhile(store: StateStore) -> None:
    """A view opened mid-load is still readable when the load ends: the reopen waits for it."""
    outcome: list[object] = []
    started = threading.Event()

    def reader() -> None:
        try:
            with store.view() as view:
                started.set()
                time.sleep(0.3)  # outlives the rest of the load
                outcome.append(view.count(CODE))
        except Exception as exc:  # reported through the assertion below
            outcome.append(exc)

    thread = threading.Thread(target=reader)

    def entries() -> Iterator[tuple[str, bytes, bytes]]:
        for i in range(3000):
            if i == 1500:
                thread.start()
                assert started.wait(10)
            yield CODE, i.to_bytes(32, "big"), b"c"

    store.load(entries(), 7, commit_entries=500)
    thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], int), outcome
    assert (store.height, store.count(CODE)) == (7, 3000)
    store.apply_diff(8, [Write.put(CODE, CODE_HASH, b"y")])


_KILLED_LOADER = """
import sys, time
from pathlib import Path
from ioswarm.state.store import StateStore

def entries():
    for i in range(100_000):
        if i == 30_000:
            Path(sys.argv[2]).write_text("loading")
            time.sleep(60)
        yield "Storage", i.to_bytes(52, "big"), (i + 1).to_bytes(32, "big")

with StateStore(sys.argv[1], map_size=1 << 26) as s:
    s.load(entries(), 9, commit_entries=5_000)
"""


def test_a_killed_bulk_load_is_discarded_on_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL mid-load leaves the marker; the next open discards the partial files."""
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_LOADER, str(tmp_path / "s"), str(ready)]
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():  # the loader has committed some batches
            assert child.poll() is None, "the loader exited early"
            assert time.monotonic() < deadline, "the loader never got going"
            time.sleep(0.05)
        assert (tmp_path / "s" / "bulk-load.pending").exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    with caplog.at_level(logging.WARNING), StateStore(tmp_path / "s", map_size=MAP) as s:
        assert s.is_empty() and not s.loading and s.height == 0
        assert s.count(STORAGE) == 0
        assert any("bulk load was cut short" in r.getMessage() for r in caplog.records)
        assert not (tmp_path / "s" / "bulk-load.pending").exists()
        assert (
            s.load([(STORAGE, ALICE + _word(1), _word(2))], 4)
            == StateHash.of([(STORAGE, ALICE + _word(1), _word(2))]).digest()
        )


# -- DiffStore --------------------------------------------------------------------------------


def _diff(height: int, salt: bytes = b"") -> pb.StateDiff:
    return pb.StateDiff(
        height=height,
        entries=[
            pb.StateDiffEntry(
                op=pb.StateDiffEntry.PUT,
                namespace=STORAGE,
                key=ALICE + _word(height),
                value=_word(1),
            ),
            pb.StateDiffEntry(op=pb.StateDiffEntry.DELETE, namespace=CODE, key=CODE_HASH),
        ],
        post_state_hash=b"\x01" * 32 + salt,
    )


@pytest.fixture
def diffs(tmp_path: Path) -> Iterator[DiffStore]:
    with DiffStore(tmp_path / "diffs", map_size=MAP) as d:
        yield d


def test_append_is_idempotent(diffs: DiffStore) -> None:
    """Appending the same diff again is a no-op that reports False."""
    assert diffs.append(_diff(10))
    assert not diffs.append(_diff(10))
    assert len(diffs) == 1
    assert diffs.get(10) == _diff(10)


def test_conflicting_append_is_an_error(diffs: DiffStore) -> None:
    """Different bytes for a stored height raise and keep the original."""
    diffs.append(_diff(10))
    with pytest.raises(StoreError, match="different diff is already stored at height 10"):
        diffs.append(_diff(10, salt=b"x"))
    assert diffs.get(10) == _diff(10)


def test_heights_are_contiguous(diffs: DiffStore) -> None:
    """After the first diff only last + 1 appends; gaps and pruned heights are refused."""
    for h in range(10, 15):
        diffs.append(_diff(h))
    with pytest.raises(StoreError, match="leaves a gap after 14"):
        diffs.append(_diff(16))
    diffs.prune(2)
    with pytest.raises(StoreError, match="below the retained window"):
        diffs.append(_diff(11))


def test_range_first_last(diffs: DiffStore) -> None:
    """range() is half-open and ordered; first and last track the stored window."""
    assert (diffs.first, diffs.last) == (None, None)
    assert list(diffs.range(0)) == []
    for h in range(5, 25):
        diffs.append(_diff(h))
    assert [d.height for d in diffs.range(10, 13)] == [10, 11, 12]
    assert [d.height for d in diffs.range(0, 7)] == [5, 6]
    assert [d.height for d in diffs.range(22)] == [22, 23, 24]
    assert list(diffs.range(30)) == []
    assert (diffs.first, diffs.last) == (5, 24)


def test_prune_keeps_the_last_heights(diffs: DiffStore) -> None:
    """prune(retain) removes all but the newest ``retain`` diffs."""
    for h in range(1, 101):
        diffs.append(_diff(h))
    assert diffs.prune(10) == 90
    assert (diffs.first, diffs.last, len(diffs)) == (91, 100, 10)
    assert diffs.prune(10) == 0
    assert diffs.prune(1) == 9
    assert (diffs.first, diffs.last) == (100, 100)


def test_retention_bounds_the_store(tmp_path: Path) -> None:
    """With retain set, appends prune as they go and the store never exceeds the window."""
    with DiffStore(tmp_path / "r", retain=5, map_size=MAP) as d:
        for h in range(1, 51):
            d.append(_diff(h))
            assert len(d) <= 5
        assert (d.first, d.last) == (46, 50)
    with DiffStore(tmp_path / "r", map_size=MAP) as d:  # reopened: data kept
        assert [x.height for x in d.range(0)] == [46, 47, 48, 49, 50]
