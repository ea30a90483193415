"""The compiled workload contracts: ABI, bytecode, storage layout, and slot arithmetic."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi.abi import encode
from eth_hash.auto import keccak

from ioswarm.errors import ConfigError

ARTIFACT_PATH = Path(__file__).resolve().parent / "contracts" / "workload.json"


@dataclass(frozen=True, slots=True)
class StorageVar:
    """One state variable from the compiler's storage layout."""

    label: str
    slot: int
    value_size: int | None
    """For a mapping: bytes of its value type (a struct value spans several slots)."""


@dataclass(frozen=True, slots=True)
class CompiledContract:
    """ABI, bytecode and storage layout of one compiled contract."""

    name: str
    abi: tuple[Mapping[str, Any], ...]
    bytecode: bytes
    deployed_bytecode: bytes
    storage: tuple[StorageVar, ...]

    def var(self, label: str) -> StorageVar:
        """The state variable ``label``."""
        found = [v for v in self.storage if v.label == label]
        if not found:
            raise KeyError(f"{self.name} has no state variable {label!r}")
        return found[0]

    def slot(self, label: str) -> int:
        """The storage slot of state variable ``label``."""
        return self.var(label).slot

    def function(self, name: str) -> tuple[bytes, tuple[str, ...]]:
        """Selector and input types of function ``name`` (no overloads in these contracts)."""
        for item in self.abi:
            if item.get("type") == "function" and item.get("name") == name:
                types = tuple(str(arg["type"]) for arg in item.get("inputs", ()))
                selector = bytes(keccak(f"{name}({','.join(types)})".encode()))[:4]
                return selector, types
        raise KeyError(f"{self.name} has no function {name!r}")

    def encode_call(self, name: str, *args: Any) -> bytes:
        """Calldata for ``name(*args)``."""
        selector, types = self.function(name)
        return selector + encode(list(types), list(args))

    def initcode(self, *args: Any) -> bytes:
        """Creation bytecode followed by the ABI-encoded constructor arguments."""
        ctor = [item for item in self.abi if item.get("type") == "constructor"]
        types = [str(arg["type"]) for arg in ctor[0].get("inputs", ())] if ctor else []
        return self.bytecode + (encode(types, list(args)) if types else b"")


@dataclass(frozen=True, slots=True)
class WorkloadArtifact:
    """The compiled workload contracts."""

    compiler: str
    contracts: Mapping[str, CompiledContract]

    def __getitem__(self, name: str) -> CompiledContract:
        return self.contracts[name]


def load_artifact(path: Path = ARTIFACT_PATH) -> WorkloadArtifact:
    """Read the artifact ``contracts/workload/build.py`` writes."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        contracts = {
            name: CompiledContract(
                name=name,
                abi=tuple(c["abi"]),
                bytecode=bytes.fromhex(c["bytecode"][2:]),
                deployed_bytecode=bytes.fromhex(c["deployedBytecode"][2:]),
                storage=tuple(
                    StorageVar(v["label"], v["slot"], v.get("valueBytes")) for v in c["storage"]
                ),
            )
            for name, c in doc["contracts"].items()
        }
        return WorkloadArtifact(compiler=str(doc["compiler"]), contracts=contracts)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            "workload artifact", f"cannot load {path}: {exc!r} (run contracts/workload/build.py)"
        ) from exc


# ---------------------------------------------------------------------------- addresses and slots


def word(value: int | bytes) -> bytes:
    """``value`` as one left-padded 32-byte EVM word."""
    if isinstance(value, bytes):
        if len(value) > 32:
            raise ValueError("a word holds at most 32 bytes")
        return value.rjust(32, b"\x00")
    return value.to_bytes(32, "big")


def mapping_slot(key: int | bytes, slot: int) -> int:
    """Slot of ``mapping[key]`` for a mapping declared at ``slot`` (value-type keys)."""
    return int.from_bytes(keccak(word(key) + word(slot)), "big")


def create2_address(deployer: bytes, salt: bytes, initcode: bytes) -> bytes:
    """Address CREATE2 gives ``initcode`` deployed by ``deployer`` with ``salt`` (EIP-1014)."""
    return bytes(keccak(b"\xff" + deployer + word(salt) + bytes(keccak(initcode))))[12:]


def create2_salt(sender: bytes, n: int) -> bytes:
    """The salt of the ``n``-th CREATE2 the workload sends from ``sender``: deterministic."""
    return bytes(keccak(sender + word(n)))
