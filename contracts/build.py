"""Compile the contracts with solc-js into JSON artifacts; ``--check`` fails when they are stale.

Usage::

    python contracts/build.py            # rebuild every artifact
    python contracts/build.py --check    # exit 1 if a committed artifact differs from a rebuild
    python contracts/build.py --solcjs .tools/node_modules/.bin/solcjs

The compiler is ``--solcjs``, else ``$IOSWARM_SOLCJS_BIN``, else the repo's ``.tools`` copy
(``make tools``). Each artifact records the ABI, creation and runtime bytecode, compiler version,
optimizer settings, EVM version and the sha256 of its source. The pool artifact is written twice:
``contracts/AgentRewardPool.json`` and, as package data, ``ioswarm/rewards/AgentRewardPool.json``;
``--check`` verifies both. Exit codes: 0 fresh/written, 1 stale, 2 compiler missing or failing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = ROOT / "contracts"
SOLCJS_ENV = "IOSWARM_SOLCJS_BIN"
DEFAULT_SOLCJS = ROOT / ".tools" / "node_modules" / ".bin" / "solcjs"

EVM_VERSION = "prague"
# Settlement runs every epoch for the life of the pool; deployment happens once. A high run count
# trades a slightly larger deployment for cheaper calls.
OPTIMIZER_RUNS = 20_000
COMPILE_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class Target:
    """One contract to compile and where its artifact goes."""

    source: str
    """Source path relative to ``contracts/``; also its key in the compiler input."""
    contract: str
    """Contract name inside the source."""
    outputs: tuple[str, ...]
    """Artifact paths relative to the repo root; all get identical content."""


TARGETS = (
    Target(
        "AgentRewardPool.sol",
        "AgentRewardPool",
        ("contracts/AgentRewardPool.json", "ioswarm/rewards/AgentRewardPool.json"),
    ),
    # Test-only wallet that accepts, refuses or re-enters payouts.
    Target("test/ClaimReceiver.sol", "ClaimReceiver", ("contracts/test/ClaimReceiver.json",)),
)


class BuildError(Exception):
    """The compiler is missing or rejected the sources."""


def compiler_input(sources: dict[str, str]) -> dict[str, Any]:
    """The solc standard-JSON input for ``sources`` (key -> Solidity text)."""
    return {
        "language": "Solidity",
        "sources": {key: {"content": text} for key, text in sorted(sources.items())},
        "settings": {
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "evmVersion": EVM_VERSION,
            "outputSelection": {
                "*": {
                    "*": [
                        "abi",
                        "metadata",
                        "evm.bytecode.object",
                        "evm.deployedBytecode.object",
                        "evm.methodIdentifiers",
                    ]
                }
            },
        },
    }


def run_solcjs(solcjs: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Run ``solcjs --standard-json`` on ``request``; raise :class:`BuildError` on any error."""
    if not solcjs.is_file():
        raise BuildError(f"solcjs not found at {solcjs} (run `make tools` or pass --solcjs)")
    try:
        done = subprocess.run(
            [str(solcjs), "--standard-json"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_S,
            cwd=CONTRACTS_DIR,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"could not run {solcjs}: {exc}") from exc
    # solcjs may print a notice line before the JSON document.
    start = done.stdout.find("{")
    if done.returncode != 0 or start < 0:
        detail = (done.stderr or done.stdout).strip()[-2000:]
        raise BuildError(f"solcjs exited with {done.returncode}: {detail}")
    output: dict[str, Any] = json.loads(done.stdout[start:])
    problems = output.get("errors", [])
    for problem in problems:
        if problem.get("severity") != "error":
            print(problem.get("formattedMessage", problem), file=sys.stderr)
    errors = [p for p in problems if p.get("severity") == "error"]
    if errors:
        raise BuildError("\n".join(p.get("formattedMessage", str(p)) for p in errors))
    return output


def build_artifacts(solcjs: Path) -> dict[str, str]:
    """Compile every target; map each output path (repo-relative) to its artifact text."""
    sources = {t.source: (CONTRACTS_DIR / t.source).read_text(encoding="utf-8") for t in TARGETS}
    output = run_solcjs(solcjs, compiler_input(sources))
    rendered: dict[str, str] = {}
    for target in TARGETS:
        compiled = output["contracts"][target.source][target.contract]
        metadata = json.loads(compiled["metadata"])
        artifact = {
            "contractName": target.contract,
            "sourceName": f"contracts/{target.source}",
            "sourceSha256": hashlib.sha256(sources[target.source].encode("utf-8")).hexdigest(),
            "compiler": {"name": "solc-js", "version": metadata["compiler"]["version"]},
            "settings": {
                "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
                "evmVersion": EVM_VERSION,
                "viaIR": False,
            },
            "abi": compiled["abi"],
            "methodIdentifiers": compiled["evm"]["methodIdentifiers"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
        }
        text = json.dumps(artifact, indent=2) + "\n"
        for path in target.outputs:
            rendered[path] = text
    return rendered


def stale_reasons(path: Path, fresh_text: str) -> list[str]:
    """Why the artifact at ``path`` does not match ``fresh_text`` (empty when it does)."""
    if not path.is_file():
        return ["missing"]
    try:
        committed = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return ["not valid JSON"]
    fresh = json.loads(fresh_text)
    reasons = [
        f"{key} differs"
        for key in ("sourceSha256", "bytecode", "deployedBytecode", "abi", "compiler", "settings")
        if committed.get(key) != fresh.get(key)
    ]
    if not reasons and path.read_text(encoding="utf-8") != fresh_text:
        reasons.append("formatting differs")
    return reasons


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="verify the committed artifacts, write nothing"
    )
    parser.add_argument(
        "--solcjs",
        type=Path,
        default=Path(os.environ.get(SOLCJS_ENV) or DEFAULT_SOLCJS),
        help=f"solc-js executable (default: ${SOLCJS_ENV}, else {DEFAULT_SOLCJS})",
    )
    args = parser.parse_args(argv)
    try:
        rendered = build_artifacts(args.solcjs)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        stale = {p: r for p, text in rendered.items() if (r := stale_reasons(ROOT / p, text))}
        for path, reasons in stale.items():
            print(f"stale: {path}: {', '.join(reasons)}", file=sys.stderr)
        if stale:
            print("rebuild with: python contracts/build.py", file=sys.stderr)
            return 1
        print(f"fresh: {', '.join(rendered)}")
        return 0
    for path, text in rendered.items():
        (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / path).write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
