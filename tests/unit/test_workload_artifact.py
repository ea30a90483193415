"""The compiled workload contracts: fresh, complete, and addressed as the EVM does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ioswarm.sim.artifacts import ARTIFACT_PATH, create2_address, load_artifact
from ioswarm.sim.l3calls import CATEGORIES
from ioswarm.sim.l3workload import DEFAULT_WEIGHTS, DEPLOYED

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "contracts" / "workload" / "build.py"


def _check(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BUILD), "--check", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_artifact_is_not_stale() -> None:
    """The committed artifact matches contracts/workload/*.sol, the compiler pin and settings."""
    res = _check(ARTIFACT_PATH)
    assert res.returncode == 0, res.stdout + res.stderr


def test_check_names_a_changed_source(tmp_path: Path) -> None:
    """--check fails and names the source whose hash no longer matches."""
    doc = json.loads(ARTIFACT_PATH.read_text())
    doc["sources"]["workload/Reverter.sol"]["sha256"] = "0" * 64
    stale = tmp_path / "workload.json"
    stale.write_text(json.dumps(doc))
    res = _check(stale)
    assert res.returncode == 1
    assert "workload/Reverter.sol changed" in res.stdout


def test_artifact_has_every_deployed_contract() -> None:
    """Each contract the workload deploys, and the factory's child, has an ABI and bytecode."""
    artifact = load_artifact()
    assert artifact.compiler.startswith("0.8.37+")
    for name in (*DEPLOYED, "Child"):
        assert artifact[name].bytecode and artifact[name].deployed_bytecode, name
        assert artifact[name].abi, name


def test_every_category_is_weighted() -> None:
    """The default mix gives every category a positive weight."""
    assert set(DEFAULT_WEIGHTS) == set(CATEGORIES)
    assert all(w > 0 for w in DEFAULT_WEIGHTS.values())


def test_create2_address_matches_eip1014_examples() -> None:
    """create2_address reproduces the worked examples of EIP-1014."""
    zero = bytes(20)
    assert create2_address(zero, bytes(32), b"\x00").hex() == (
        "4d1a2e2bb4f88f0250f26ffff098b0b30b26bf38"
    )
    deadbeef = bytes.fromhex("deadbeef" + "00" * 16)
    assert create2_address(deadbeef, bytes(32), b"\x00").hex() == (
        "b928f69bb1d91cd65274e3c79d8986362984fda3"
    )
    assert create2_address(
        bytes.fromhex("00" * 16 + "deadbeef"),
        bytes.fromhex("00" * 28 + "cafebabe"),
        bytes.fromhex("deadbeef"),
    ).hex() == ("60f3f640a8508fc6a86d45df051962668e1e8ac7")
