"""Snapshot export and import report progress: from the library as callbacks, from
``ioswarm snapshot`` as lines on stderr (stdout keeps only the JSON result)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from ioswarm.state import snapshot_io
from ioswarm.state.snapshot_io import SnapshotProgress, export_snapshot, import_snapshot
from ioswarm.state.store import STORAGE, StateStore, Write

pytestmark = pytest.mark.integration

MAP = 1 << 26
ENTRIES = 1000
CLI = [sys.executable, "-m", "ioswarm_cli.main"]


def _filled(path: Path) -> None:
    with StateStore(path, map_size=MAP) as store:
        writes = [
            Write.put(STORAGE, b"\xaa" * 20 + i.to_bytes(32, "big"), (i + 1).to_bytes(32, "big"))
            for i in range(ENTRIES)
        ]
        store.apply_diff(1, writes)


def test_export_and_import_call_back_with_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Export reports entries of the known total as it goes; import reports entries and the
    file bytes read, ending at the whole file."""
    monkeypatch.setattr(snapshot_io, "PROGRESS_EVERY_ENTRIES", 300)
    _filled(tmp_path / "a")
    seen: list[SnapshotProgress] = []
    with StateStore(tmp_path / "a", map_size=MAP) as store:
        info = export_snapshot(store, tmp_path / "s.snap.gz", progress=seen.append)
    assert [p.entries for p in seen] == [300, 600, 900, 1000]
    assert {p.total_entries for p in seen} == {ENTRIES} and info.count == ENTRIES
    loaded: list[SnapshotProgress] = []
    with StateStore(tmp_path / "b", map_size=MAP) as store:
        result = import_snapshot(tmp_path / "s.snap.gz", store, progress=loaded.append)
    assert loaded and loaded[-1].entries == result.count == ENTRIES
    assert loaded[-1].file_bytes == loaded[-1].total_file_bytes == info.file_bytes


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_prints_a_final_progress_line_on_stderr(tmp_path: Path) -> None:
    """``snapshot export`` and ``import`` end with a 'done' line on stderr; stdout is JSON."""
    _filled(tmp_path / "a")
    snap = str(tmp_path / "s.snap.gz")
    code, out, err = await _cli("snapshot", "export", "--store", str(tmp_path / "a"), "-o", snap)
    assert code == 0, err
    assert json.loads(out)["entries"] == ENTRIES
    assert f"snapshot export done: {ENTRIES}/{ENTRIES} entries" in err
    code, out, err = await _cli("snapshot", "import", "--store", str(tmp_path / "b"), snap)
    assert code == 0, err
    assert json.loads(out)["entries"] == ENTRIES
    assert f"snapshot import done: {ENTRIES}/{ENTRIES} entries" in err
