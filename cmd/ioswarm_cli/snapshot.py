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
from ioswarm.errors import ConfigError, StoreError
from ioswarm.state.snapshot_io import (
    SnapshotInfo,
    export_snapshot,
    import_snapshot,
    inspect_snapshot,
    verify_snapshot,
)
from ioswarm.state.store import NAMESPACES, StateStore


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
    e.set_defaults(run=run_export)

    i = ops.add_parser("import", help="load a snapshot file into an empty state store")
    _store_flags(i)
    i.add_argument("file", help="snapshot file")
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
    with StateStore(path) as store:
        info = export_snapshot(store, args.output, namespaces, args.height)
    print(json.dumps(_info_doc(info)))
    return 0


async def run_import(args: argparse.Namespace, env: dict[str, str]) -> int:
    with StateStore(_store_path(args, env)) as store:
        result = import_snapshot(args.file, store)
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
