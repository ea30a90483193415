"""L4 state sync on the coordinator: the state store follows the chain block by block.

:class:`StateSync` owns the :class:`StateStore` (``stateStorePath`` or ``<dataDir>/state``), the
:class:`DiffStore` (``diffStorePath`` or ``<dataDir>/diffs``, pruned to ``diffRetainHeight``)
and the :class:`DiffBroadcaster` that feeds ``StreamStateDiffs``.

- **Bootstrap.** An empty store is loaded from ``stateBootstrapSnapshot`` when set, else from the
  node (:mod:`ioswarm.state.bootstrap`) at its current head, before the block watcher runs.
- **Per block.** The block's per-tx prestate diffs (passed through from the block watcher, or
  traced here) are folded (:mod:`ioswarm.core.statefold`) into one ordered list of writes,
  applied at ``store.height + 1``, persisted as a ``StateDiff`` and published.
- **Gaps** (a missed block, a restart) are caught up block by block from the node.
- **Divergence** (a trace whose prestate disagrees with the store, or a store that is ahead of
  the node) is logged as an error and the store is rebuilt from a fresh bootstrap; the diff
  history is cleared and subscribers are dropped, so agents re-snapshot.
- **Snapshots** are exported every ``snapshotIntervalBlocks`` to ``<dataDir>/snapshots``
  (``state-<height>.snap.gz`` plus a ``.json`` sidecar with height, size and sha256).

Nothing here raises into the block watcher: a node error leaves the store behind, and the next
block catches it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ioswarm.config import CoordinatorConfig
from ioswarm.core.blockctx import context_of
from ioswarm.core.models import BlockHeader
from ioswarm.core.snapshot import Entry
from ioswarm.core.statefold import (
    BEACON_ROOTS_ADDRESS,
    DELETE,
    HISTORY_STORAGE_ADDRESS,
    PUT,
    StateDivergence,
    StateReader,
    TxPrestate,
    beacon_root_slots,
    fold_block,
    history_write,
)
from ioswarm.errors import ConfigError, IoswarmError, MethodNotSupported, NodeError, StoreError
from ioswarm.node.adapter import NodeClient
from ioswarm.node.execution import ExecutionReader, TxDiff
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import context_to_pb
from ioswarm.state.broadcast import DiffBroadcaster
from ioswarm.state.diffstore import DiffStore
from ioswarm.state.snapshot_io import export_snapshot, import_snapshot, verify_snapshot
from ioswarm.state.store import ACCOUNT, StateStore, StateView

log = logging.getLogger("ioswarm.state")

MAX_CATCHUP_BLOCKS = 1024  # a larger gap re-bootstraps instead of tracing every block
SNAPSHOTS_KEPT = 2
_OP_NAMES = {PUT: "PUT", DELETE: "DELETE"}
SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.snap\.gz$")


class StateSource(Protocol):
    """A whole-state bootstrap source (``AnvilDumpSource``)."""

    async def dump(self) -> tuple[int, list[Entry]]: ...


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """An exported snapshot as ``DownloadSnapshot`` advertises it."""

    name: str
    height: int
    size: int
    sha256: bytes


def _reader(view: StateView) -> StateReader:
    return StateReader(
        account=lambda a: view.get(ACCOUNT, a),
        storage=view.get_storage,
        slots=lambda a: [slot for slot, _ in view.storage_of(a)],
        code=view.get_code,
    )


class StateSync:
    """Keeps the coordinator's state store at the chain head and serves its diffs."""

    def __init__(
        self,
        config: CoordinatorConfig,
        node: NodeClient,
        execution: ExecutionReader,
        source: StateSource,
        chain_id: int = 0,
    ) -> None:
        data = Path(config.data_dir)
        self.config = config
        self.chain_id = chain_id
        self.fork = config.evm_fork
        self._node = node
        self._execution = execution
        self._source = source
        self.store = StateStore(config.state_store_path or data / "state")
        self.diffs = DiffStore(
            # diffRetainHeight 0 keeps every diff, as in the Go coordinator.
            config.diff_store_path or data / "diffs",
            retain=config.diff_retain_height or None,
        )
        self.broadcaster = DiffBroadcaster(config.diff_buffer_size)
        self.snapshot_dir = data / "snapshots"
        self.snapshot_base_url = config.snapshot_base_url.rstrip("/")
        self.api_base_url = ""  # set by the app once the HTTP API listens
        self._lock = asyncio.Lock()
        self._export: asyncio.Task[None] | None = None
        self._snapshot_cache: dict[tuple[str, int, int], SnapshotFile] = {}
        self.rebootstraps = 0
        self.ready = False

    @property
    def height(self) -> int | None:
        """The store's height once synced, else None (L4 tasks need a ready store)."""
        return self.store.height if self.ready else None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bootstrap an empty store, then catch up to the node's head."""
        async with self._lock:
            if self.store.loading or self.store.is_empty():
                await self._bootstrap()
            elif self.diffs.last not in (None, self.store.height):
                # A crash between the store commit and the diff append: history has a hole.
                log.warning(
                    "diff store at %s, state store at %d; clearing diff history",
                    self.diffs.last,
                    self.store.height,
                )
                self.diffs.clear()
            head = await self._node.block_number()
            if self.store.height > head:
                log.error(
                    "state store height=%d is ahead of the node head=%d; re-bootstrapping",
                    self.store.height,
                    head,
                )
                await self._rebootstrap()
            self.broadcaster.last_height = self.store.height
            self.ready = True
        with contextlib.suppress(NodeError):
            await self.on_block(await self._node.get_block(head, full=False), None)

    async def close(self) -> None:
        """Wait for a running export, then close both stores."""
        if self._export is not None:
            with contextlib.suppress(Exception):
                await self._export
        self.broadcaster.reset("coordinator stopping")
        self.diffs.close()
        self.store.close()

    async def _bootstrap(self) -> None:
        snap = self.config.state_bootstrap_snapshot
        if snap:
            result = await asyncio.to_thread(import_snapshot, snap, self.store)
            log.info("state store loaded snapshot=%s height=%d", snap, result.height)
            return
        try:
            height, entries = await self._source.dump()
        except MethodNotSupported as exc:
            raise ConfigError(
                "stateBootstrapSnapshot",
                f"the node cannot dump its state ({exc}); set an IOSWSNAP file to start from",
            ) from exc
        digest = await asyncio.to_thread(self.store.load, entries, height)
        log.info(
            "state store bootstrapped from node height=%d entries=%d state_hash=%s",
            height,
            len(entries),
            digest.hex(),
        )

    async def _rebootstrap(self) -> None:
        self.rebootstraps += 1
        self.store.clear()
        self.diffs.clear()
        self.broadcaster.reset("state store rebuilt; download a snapshot")
        # A configured snapshot is old by now: rebuild from the node.
        height, entries = await self._source.dump()
        await asyncio.to_thread(self.store.load, entries, height)
        self.broadcaster.last_height = height
        log.warning("state store rebuilt from node height=%d", height)

    # -- per block ----------------------------------------------------------------------------

    async def on_block(self, header: BlockHeader, diffs: Sequence[TxDiff] | None) -> None:
        """Bring the store to ``header.number``; ``diffs`` are the block's traces if known."""
        if not self.ready:
            return
        async with self._lock:
            try:
                await self._advance(header, diffs)
            except StateDivergence as exc:
                log.error("STATE DIVERGENCE at height=%d: %s; re-bootstrapping", header.number, exc)
                await self._recover()
            except StoreError as exc:
                log.error(
                    "state store error at height=%d: %s; re-bootstrapping", header.number, exc
                )
                await self._recover()
            except NodeError as exc:
                log.warning(
                    "state sync behind height=%d store=%d error=%s",
                    header.number,
                    self.store.height,
                    exc,
                )
            except Exception:
                # A bug must not stop the block watcher; the next block retries from the store.
                log.exception("state sync failed at height=%d", header.number)

    async def _recover(self) -> None:
        try:
            await self._rebootstrap()
        except IoswarmError as exc:
            log.error("state store re-bootstrap failed: %s; retrying at the next block", exc)

    def _check_chain(self, number: int, block_hash: bytes, parent_hash: bytes) -> None:
        """Raise StateDivergence when the node's chain is not the one the store followed."""
        seen = self.diffs.get(number)
        if seen is not None and seen.block_hash and bytes(seen.block_hash) != block_hash:
            raise StateDivergence(f"block {number} changed (reorg or node reset)")
        parent = self.diffs.get(number - 1) if number > 0 else None
        if parent is not None and parent.block_hash and bytes(parent.block_hash) != parent_hash:
            raise StateDivergence(f"block {number} does not extend the followed chain (reorg)")

    async def _advance(self, header: BlockHeader, diffs: Sequence[TxDiff] | None) -> None:
        current = self.store.height
        if header.number <= current:
            self._check_chain(header.number, header.hash, header.parent_hash)
            return
        if header.number - current > MAX_CATCHUP_BLOCKS:
            log.warning("state store %d blocks behind; re-bootstrapping", header.number - current)
            await self._rebootstrap()
            return
        for number in range(current + 1, header.number):
            block = await self._node.get_block(number, full=True)
            traces = await self._traces(number, [tx.hash for tx in block.txs])
            await self._apply(block.header, traces)
        if diffs is None:
            block = await self._node.get_block(header.number, full=True)
            diffs = await self._traces(header.number, [tx.hash for tx in block.txs])
        await self._apply(header, diffs)

    async def _traces(self, number: int, hashes: list[bytes]) -> Sequence[TxDiff]:
        return await self._execution.block_diffs(number, hashes) if hashes else []

    async def _system_writes(self, header: BlockHeader) -> list[tuple[bytes, bytes, bytes]]:
        """Writes the block's system calls made before its transactions (not in any trace)."""
        writes = []
        if self.store.get_account(HISTORY_STORAGE_ADDRESS) is not None:
            writes.append(history_write(header.number, header.parent_hash))
        if self.store.get_account(BEACON_ROOTS_ADDRESS) is not None:
            slots = beacon_root_slots(header.timestamp)
            got = await self._execution.account_data({BEACON_ROOTS_ADDRESS: slots}, header.number)
            data = got.get(BEACON_ROOTS_ADDRESS)
            if data is not None:
                writes += [(BEACON_ROOTS_ADDRESS, s, data.storage.get(s, bytes(32))) for s in slots]
        return writes

    async def _apply(self, header: BlockHeader, traces: Sequence[TxDiff]) -> None:
        self._check_chain(header.number, header.hash, header.parent_hash)
        system = await self._system_writes(header)
        with self.store.view() as view:
            prev = view.state_hash
            writes = fold_block(_reader(view), [TxPrestate(d.pre, d.post) for d in traces], system)
        post = self.store.apply_diff(header.number, writes)
        ctx = context_of(header, self.fork, {})
        diff = pb.StateDiff(
            height=header.number,
            entries=[
                pb.StateDiffEntry(
                    op=pb.StateDiffEntry.Op.Value(_OP_NAMES[w.op]),
                    namespace=w.namespace,
                    key=w.key,
                    value=w.value,
                )
                for w in writes
            ],
            prev_state_hash=prev,
            post_state_hash=post,
            block_context=context_to_pb(ctx, self.chain_id, self.fork),
            block_hash=header.hash,
        )
        self.diffs.append(diff)
        self.broadcaster.publish(diff)
        log.debug(
            "state diff height=%d entries=%d state_hash=%s",
            header.number,
            len(writes),
            post.hex(),
        )
        interval = self.config.snapshot_interval_blocks
        if interval and header.number % interval == 0 and self._export is None:
            self._export = asyncio.create_task(self._export_snapshot(), name="ioswarm-snapshot")

    # -- snapshots ----------------------------------------------------------------------------

    async def _export_snapshot(self) -> None:
        try:
            await asyncio.to_thread(export_to_dir, self.store, self.snapshot_dir)
        except IoswarmError as exc:
            log.error("snapshot export failed: %s", exc)
        finally:
            self._export = None

    def hash_at(self, height: int) -> bytes | None:
        """The coordinator's state hash after block ``height``, if still known.

        The store's own hash at its height, else the diff store's ``post_state_hash`` (None for
        heights pruned, not reached yet, or while the store is not ready).
        """
        if not self.ready:
            return None
        if height == self.store.height:
            return self.store.state_hash
        diff = self.diffs.get(height)
        return None if diff is None else bytes(diff.post_state_hash)

    def latest_snapshot(self) -> SnapshotFile | None:
        """The newest snapshot in the snapshot directory (by height), or None."""
        return latest_snapshot(self.snapshot_dir, self._snapshot_cache)

    def snapshot_url(self, name: str) -> str:
        """Where agents download ``name``: ``snapshotBaseUrl``, else the API's /snapshots."""
        return f"{self.snapshot_base_url or self.api_base_url}/{name}"


def export_to_dir(store: StateStore, directory: Path) -> SnapshotFile:
    """Export the whole store to ``directory/state-<height>.snap.gz`` (+ sidecar); prune old."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / ".export.snap.gz"
    info = export_snapshot(store, tmp)
    name = f"state-{info.height:012d}.snap.gz"
    final = directory / name
    tmp.replace(final)
    entry = SnapshotFile(name, info.height, info.file_bytes, info.file_sha256)
    _write_sidecar(final, entry)
    log.info("snapshot exported file=%s height=%d size=%d", name, info.height, info.file_bytes)
    olds = sorted(directory.glob("state-*.snap.gz"))[:-SNAPSHOTS_KEPT]
    for old in olds:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".json").unlink(missing_ok=True)
    return entry


def _write_sidecar(path: Path, entry: SnapshotFile) -> None:
    doc = {"height": entry.height, "size": entry.size, "sha256": entry.sha256.hex()}
    path.with_name(path.name + ".json").write_text(json.dumps(doc))


def _describe(path: Path, cache: dict[tuple[str, int, int], SnapshotFile]) -> SnapshotFile | None:
    try:
        st = path.stat()
    except OSError:
        return None
    key = (path.name, st.st_mtime_ns, st.st_size)
    if key in cache:
        return cache[key]
    entry: SnapshotFile | None = None
    sidecar = path.with_name(path.name + ".json")
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        doc: dict[str, Any] = json.loads(sidecar.read_text())
        if int(doc["size"]) == st.st_size:
            entry = SnapshotFile(
                path.name, int(doc["height"]), st.st_size, bytes.fromhex(doc["sha256"])
            )
    if entry is None:
        try:
            info = verify_snapshot(path)  # reads the whole file once; the result is cached
        except IoswarmError as exc:
            log.warning("snapshot %s skipped: %s", path, exc)
            return None
        entry = SnapshotFile(path.name, info.height, info.file_bytes, info.file_sha256)
    cache[key] = entry
    return entry


def latest_snapshot(
    directory: Path, cache: dict[tuple[str, int, int], SnapshotFile] | None = None
) -> SnapshotFile | None:
    """The highest-height ``*.snap.gz`` in ``directory``, or None."""
    if not directory.is_dir():
        return None
    best: SnapshotFile | None = None
    for path in directory.glob("*.snap.gz"):
        if not SNAPSHOT_NAME.match(path.name):
            continue
        entry = _describe(path, cache if cache is not None else {})
        if entry is not None and (best is None or entry.height > best.height):
            best = entry
    return best


__all__ = [
    "SnapshotFile",
    "StateSource",
    "StateSync",
    "export_to_dir",
    "latest_snapshot",
]
