"""The committed AgentRewardPool artifact: fresh, complete, and ABI-compatible with the v2 pool."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ioswarm.rewards.pool import load_artifact

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "contracts" / "build.py"
SOURCE = ROOT / "contracts" / "AgentRewardPool.sol"
ARTIFACT = ROOT / "contracts" / "AgentRewardPool.json"
PACKAGE_COPY = ROOT / "ioswarm" / "rewards" / "AgentRewardPool.json"

# Function signatures of the deployed v2 pool (ABI compatibility means these selectors exist).
V2_FUNCTIONS = {
    "depositAndSettle(address[],uint256[])": "payable",
    "depositSettleAndClaim(address[],uint256[],address[])": "payable",
    "claim()": "nonpayable",
    "claimFor(address)": "nonpayable",
    "batchClaimFor(address[])": "nonpayable",
    "claimable(address)": "view",
    "setCoordinator(address)": "nonpayable",
    "coordinator()": "view",
    "cumulativeRewardPerWeight()": "view",
    "totalWeight()": "view",
    "agents(address)": "view",
}


def _build_module() -> Any:
    spec = importlib.util.spec_from_file_location("contracts_build", BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve their module through sys.modules while the class is created.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _solcjs() -> Path:
    configured = os.environ.get("IOSWARM_SOLCJS_BIN")
    return Path(configured) if configured else ROOT / ".tools" / "node_modules" / ".bin" / "solcjs"


def _functions(abi: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{e['name']}({','.join(i['type'] for i in e['inputs'])})": e
        for e in abi
        if e["type"] == "function"
    }


def test_artifacts_are_not_stale() -> None:
    """A rebuild with solc-js reproduces every committed artifact byte for byte."""
    solcjs = _solcjs()
    if shutil.which("node") is None or not solcjs.is_file():
        pytest.skip(f"node or solcjs missing ({solcjs}); `make tools` installs them")
    done = subprocess.run(
        [sys.executable, str(BUILD), "--check", "--solcjs", str(solcjs)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_package_copy_is_identical() -> None:
    """The package-data copy loaded at runtime equals contracts/AgentRewardPool.json."""
    assert PACKAGE_COPY.read_bytes() == ARTIFACT.read_bytes()
    assert load_artifact().bytecode == json.loads(ARTIFACT.read_text())["bytecode"]


def test_artifact_records_its_build_inputs() -> None:
    """The artifact names the source hash, compiler, optimizer and EVM version it came from."""
    artifact = json.loads(ARTIFACT.read_text())
    assert artifact["sourceSha256"] == hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    assert artifact["compiler"]["version"].startswith("0.8.37+")
    assert artifact["settings"]["optimizer"]["enabled"] is True
    assert artifact["settings"]["optimizer"]["runs"] > 0
    assert artifact["settings"]["evmVersion"] == "prague"
    assert artifact["bytecode"].startswith("0x60")
    assert len(artifact["deployedBytecode"]) > 2


def test_abi_matches_the_v2_pool() -> None:
    """Every v2 function exists with the same signature and mutability; agents() returns three
    uint256 values (weight, reward snapshot, pending)."""
    functions = _functions(load_artifact().abi)
    for signature, mutability in V2_FUNCTIONS.items():
        assert signature in functions, signature
        assert functions[signature]["stateMutability"] == mutability, signature
    outputs = functions["agents(address)"]["outputs"]
    assert [(o["name"], o["type"]) for o in outputs] == [
        ("weight", "uint256"),
        ("rewardSnapshot", "uint256"),
        ("pending", "uint256"),
    ]
    for name in ("claimable(address)", "cumulativeRewardPerWeight()", "totalWeight()"):
        assert [o["type"] for o in functions[name]["outputs"]] == ["uint256"]
    assert [o["type"] for o in functions["coordinator()"]["outputs"]] == ["address"]


def test_abi_emits_the_v2_events() -> None:
    """Indexers of the v2 pool keep working: Settled, AgentUpdated and Claimed are unchanged."""
    events = {
        f"{e['name']}({','.join(i['type'] for i in e['inputs'])})"
        for e in load_artifact().abi
        if e["type"] == "event"
    }
    assert {
        "Settled(uint256,uint256)",
        "AgentUpdated(address,uint256)",
        "Claimed(address,uint256)",
    } <= events


def test_check_names_what_is_stale(tmp_path: Path) -> None:
    """A tampered or missing artifact is reported with the field that differs."""
    build = _build_module()
    fresh = ARTIFACT.read_text()
    tampered = json.loads(fresh)
    tampered["sourceSha256"] = "0" * 64
    tampered["bytecode"] = tampered["bytecode"][:-2] + "00"
    path = tmp_path / "AgentRewardPool.json"
    path.write_text(json.dumps(tampered, indent=2) + "\n")
    assert build.stale_reasons(path, fresh) == ["sourceSha256 differs", "bytecode differs"]
    assert build.stale_reasons(tmp_path / "absent.json", fresh) == ["missing"]
    path.write_text(fresh)
    assert build.stale_reasons(path, fresh) == []
