"""Compile contracts/workload/*.sol into ioswarm/sim/contracts/workload.json (the one way).

The artifact holds, per contract, its ABI, creation and runtime bytecode and storage layout,
plus the compiler version, the settings and the sha256 of every source. ``--check`` compares
those hashes, the compiler pin and the settings with the tree and exits 1 when the artifact is
stale; it needs no compiler.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_SOLCJS = ROOT / ".tools" / "node_modules" / ".bin" / "solcjs"
DEFAULT_OUT = ROOT / "ioswarm" / "sim" / "contracts" / "workload.json"
SOLCJS_ENV = "IOSWARM_SOLCJS_BIN"
SOLC_VERSION = "0.8.37"
SOURCE_PREFIX = "workload/"
# Everything that changes the bytecode; stored in the artifact so --check sees a change here.
SETTINGS: dict[str, Any] = {
    "evmVersion": "prague",
    "optimizer": {"enabled": True, "runs": 200},
}
_OUTPUTS = ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "storageLayout"]


class BuildError(Exception):
    """The sources could not be compiled into an artifact."""


def read_sources(src_dir: Path = HERE) -> dict[str, str]:
    """Source unit name (``workload/X.sol``) to its text, for every .sol file in ``src_dir``."""
    return {
        SOURCE_PREFIX + path.name: path.read_text(encoding="utf-8")
        for path in sorted(src_dir.glob("*.sol"))
    }


def source_hashes(sources: dict[str, str]) -> dict[str, dict[str, str]]:
    """The artifact's ``sources`` section: the sha256 of each source text."""
    return {
        name: {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
        for name, text in sorted(sources.items())
    }


def parse_solc_output(text: str) -> dict[str, Any]:
    """The JSON document in solc-js output, which may start with informational lines."""
    start = text.find("{")
    if start < 0:
        raise BuildError(f"solc-js printed no JSON: {text[:200]!r}")
    try:
        doc = json.loads(text[start:])
    except json.JSONDecodeError as exc:
        raise BuildError(f"solc-js printed malformed JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BuildError("solc-js output is not a JSON object")
    return doc


def _run(solcjs: Path, args: list[str], stdin: str | None = None) -> str:
    # solcjs calls process.exit() right after console.log(): through a pipe, Node drops what
    # does not fit the pipe buffer (64 KiB). Writes to a regular file are synchronous.
    with tempfile.TemporaryFile() as out:
        try:
            res = subprocess.run(
                [str(solcjs), *args],
                input=(stdin or "").encode("utf-8"),
                stdout=out,
                stderr=subprocess.PIPE,
                check=False,
                timeout=300,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BuildError(f"cannot run {solcjs}: {exc} (run `make tools`)") from exc
        if res.returncode != 0:
            detail = res.stderr.decode("utf-8", "replace").strip()[:500]
            raise BuildError(f"{solcjs} exited with {res.returncode}: {detail}")
        out.seek(0)
        return out.read().decode("utf-8")


def solc_version(solcjs: Path) -> str:
    """The full compiler version solc-js reports; it must be the pinned release."""
    version = _run(solcjs, ["--version"]).strip().splitlines()[-1].strip()
    if not version.startswith(SOLC_VERSION + "+"):
        raise BuildError(f"solc-js is {version}, the artifact is pinned to {SOLC_VERSION}")
    return version


def compile_sources(solcjs: Path, sources: dict[str, str]) -> dict[str, Any]:
    """Run solc-js in standard-JSON mode; raise on any error, print warnings to stderr."""
    request = {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": {**SETTINGS, "outputSelection": {"*": {"*": _OUTPUTS}}},
    }
    output = parse_solc_output(_run(solcjs, ["--standard-json"], json.dumps(request)))
    errors = []
    for item in output.get("errors", []):
        message = str(item.get("formattedMessage") or item.get("message")).strip()
        if item.get("severity") == "error":
            errors.append(message)
        else:
            print(message, file=sys.stderr)
    if errors:
        raise BuildError("compilation failed:\n" + "\n".join(errors))
    return output


def _storage(layout: dict[str, Any]) -> list[dict[str, Any]]:
    """State variables in slot order; ``valueBytes`` is the size of a mapping's value type."""
    types = layout.get("types") or {}
    out = []
    for var in layout.get("storage", []):
        kind = types[var["type"]]
        entry = {
            "label": var["label"],
            "slot": int(var["slot"]),
            "offset": int(var["offset"]),
            "type": kind["label"],
            "bytes": int(kind["numberOfBytes"]),
        }
        if kind.get("encoding") == "mapping":
            entry["valueBytes"] = int(types[kind["value"]]["numberOfBytes"])
        out.append(entry)
    return out


def make_artifact(version: str, sources: dict[str, str], output: dict[str, Any]) -> dict[str, Any]:
    """The artifact document for one compilation."""
    contracts: dict[str, Any] = {}
    for source, by_name in sorted(output.get("contracts", {}).items()):
        for name, compiled in sorted(by_name.items()):
            if name in contracts:
                raise BuildError(f"contract {name} is defined in two sources")
            evm = compiled["evm"]
            contracts[name] = {
                "source": source,
                "abi": compiled["abi"],
                "bytecode": "0x" + evm["bytecode"]["object"],
                "deployedBytecode": "0x" + evm["deployedBytecode"]["object"],
                "storage": _storage(compiled.get("storageLayout") or {}),
            }
    return {
        "compiler": version,
        "settings": SETTINGS,
        "sources": source_hashes(sources),
        "contracts": contracts,
    }


def stale_reasons(artifact_path: Path, sources: dict[str, str]) -> list[str]:
    """Why the artifact at ``artifact_path`` does not match ``sources``; empty when fresh."""
    try:
        artifact = json.loads(artifact_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [f"cannot read {artifact_path}: {exc}"]
    reasons = []
    compiler = str(artifact.get("compiler", ""))
    if not compiler.startswith(SOLC_VERSION + "+"):
        reasons.append(f"compiled with {compiler or 'unknown'}, pinned is {SOLC_VERSION}")
    if artifact.get("settings") != SETTINGS:
        reasons.append("compiler settings changed")
    have = artifact.get("sources", {})
    want = source_hashes(sources)
    for name in sorted(set(have) | set(want)):
        if name not in want:
            reasons.append(f"{name} was removed")
        elif name not in have:
            reasons.append(f"{name} is new")
        elif have[name] != want[name]:
            reasons.append(f"{name} changed")
    return reasons


def build(solcjs: Path, out: Path, src_dir: Path = HERE) -> dict[str, Any]:
    """Compile every source in ``src_dir`` and write the artifact to ``out``."""
    sources = read_sources(src_dir)
    if not sources:
        raise BuildError(f"no .sol files in {src_dir}")
    artifact = make_artifact(solc_version(solcjs), sources, compile_sources(solcjs, sources))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(artifact, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return artifact


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--solcjs",
        type=Path,
        default=Path(os.environ.get(SOLCJS_ENV) or DEFAULT_SOLCJS),
        help=f"the solcjs executable (default: ${SOLCJS_ENV} or {DEFAULT_SOLCJS})",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="artifact path")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the artifact is stale; write nothing"
    )
    args = parser.parse_args(argv)
    if args.check:
        reasons = stale_reasons(args.out, read_sources())
        if reasons:
            print(f"stale {args.out}: " + "; ".join(reasons) + " (run contracts/workload/build.py)")
            return 1
        return 0
    try:
        artifact = build(args.solcjs, args.out)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {args.out} contracts={len(artifact['contracts'])} compiler={artifact['compiler']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
