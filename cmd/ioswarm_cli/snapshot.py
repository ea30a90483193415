"""``ioswarm snapshot export | import | inspect | verify``: IOSWSNAP files of the L4 state store.

``export`` reads the coordinator's state store while the coordinator keeps running (LMDB
readers never block its writer). The store is ``stateStorePath`` or ``<dataDir>/state`` of
``--config``, or ``--store DIR``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ioswarm.config import load_config
from ioswarm.core.progress import Progress
from ioswarm.errors import ConfigError, StoreError
from ioswarm.state.snapshot_io import (
    SnapshotInfo,
    SnapshotProgress,
    export_snapshot,
    import_snapshot,
    inspect_snapshot,
    verify_snapshot,
)
from ioswarm.state.store import NAMESPACES, StateStore
from ioswarm_cli.progress import ProgressPrinter, add_progress_flag


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "snapshot",
        help="export, import, inspect or verify IOSWSNAP state snapshots",
        description="IOSWSNAP snapshots of the coordinator's L4 state store.",
    )
    ops = p.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")

    e = ops.add_parser("export", help="write the state store to a snapshot file")
    _store_flags(e)
    e.add_argument("--height", type=int, help="refuse unless the store is at this height")
    e.add_argument(
        "--namespaces",
        default=",".join(NAMESPACES),
        help=f"comma-separated namespaces to include (default {','.join(NAMESPACES)})",
    )
    e.add_argument("--output", "-o", required=True, help="snapshot file to write (.snap.gz)")
    add_progress_flag(e)
    e.set_defaults(run=run_export)

    i = ops.add_parser("import", help="load a snapshot file into an empty state store")
    _store_flags(i)
    i.add_argument("file", help="snapshot file")
    add_progress_flag(i)
    i.set_defaults(run=run_import)

    n = ops.add_parser("inspect", help="print a snapshot's header, counts and soundness")
    n.add_argument("file", help="snapshot file")
    n.set_defaults(run=run_inspect)

    v = ops.add_parser("verify", help="check a snapshot end to end (trailer digest and count)")
    v.add_argument("file", help="snapshot file")
    v.set_defaults(run=run_verify)


def _store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="coordinator YAML config (locates the state store)")
    p.add_argument("--store", help="state store directory (overrides --config)")


def _store_path(args: argparse.Namespace, env: dict[str, str]) -> Path:
    if args.store:
        return Path(args.store)
    config = load_config(args.config, env)
    return Path(config.state_store_path or Path(config.data_dir) / "state")


def _info_doc(info: SnapshotInfo) -> dict[str, Any]:
    return {
        "file": str(info.path),
        "height": info.height,
        "entries": info.count,
        "counts": info.counts,
        "size": info.file_bytes,
        "sha256": info.file_sha256.hex(),
        "stream_sha256": info.sha256.hex(),
    }


async def run_export(args: argparse.Namespace, env: dict[str, str]) -> int:
    path = _store_path(args, env)
    if not (path / "data.mdb").is_file():
        raise StoreError(f"no state store at {path}")
    namespaces = [n.strip() for n in args.namespaces.split(",") if n.strip()]
    unknown = [n for n in namespaces if n not in NAMESPACES]
    if unknown or not namespaces:
        raise ConfigError("--namespaces", f"expected some of {','.join(NAMESPACES)}")
    printer = ProgressPrinter(args.progress_every)

    def report(p: SnapshotProgress) -> None:
        printer.update(lambda elapsed: _progress("snapshot export", p, elapsed))

    with StateStore(path) as store:
        info = export_snapshot(store, args.output, namespaces, args.height, progress=report)
    done = SnapshotProgress(info.count, info.count)
    printer.finish(lambda elapsed: _progress("snapshot export", done, elapsed, info.file_bytes))
    print(json.dumps(_info_doc(info)))
    return 0


async def run_import(args: argparse.Namespace, env: dict[str, str]) -> int:
    printer = ProgressPrinter(args.progress_every)

    def report(p: SnapshotProgress) -> None:
        printer.update(lambda elapsed: _progress("snapshot import", p, elapsed))

    with StateStore(_store_path(args, env)) as store:
        result = import_snapshot(args.file, store, progress=report)
    done = SnapshotProgress(result.count, result.count)
    printer.finish(lambda elapsed: _progress("snapshot import", done, elapsed))
    print(
        json.dumps(
            {
                "height": result.height,
                "entries": result.count,
                "state_hash": result.state_hash.hex(),
            }
        )
    )
    return 0


def _progress(
    what: str, p: SnapshotProgress, elapsed: float, file_bytes: int | None = None
) -> Progress:
    """Entries against their total (export), or file bytes read against the size (import)."""
    if p.total_entries is None and p.total_file_bytes:
        share = f"{p.file_bytes * 100 // p.total_file_bytes}% of the file read"
        return Progress(what, p.entries, "entries", elapsed, extra=share)
    extra = f"{file_bytes / 1e6:.1f} MB written" if file_bytes is not None else ""
    return Progress(what, p.entries, "entries", elapsed, total=p.total_entries, extra=extra)


async def run_inspect(args: argparse.Namespace, env: dict[str, str]) -> int:
    report = inspect_snapshot(args.file)
    doc: dict[str, Any] = {
        "file": str(report.path),
        "version": report.header.version,
        "height": report.header.height,
        "entries": report.count,
        "counts": report.counts,
        "size": report.file_bytes,
        "ok": report.ok,
    }
    if report.problem is not None:
        doc["problem"] = report.problem
    print(json.dumps(doc))
    return 0 if report.ok else 1


async def run_verify(args: argparse.Namespace, env: dict[str, str]) -> int:
    print(json.dumps({**_info_doc(verify_snapshot(args.file)), "ok": True}))
    return 0
