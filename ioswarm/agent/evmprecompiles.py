"""Precompiles the engine replaces in py-evm's tables, each for a stated reason.

- MODEXP (0x05): py-evm answers 0 whenever the base is empty, but the spec computes
  ``base ** exponent % modulus`` with an empty base read as 0, and ``0 ** 0 % m`` is 1 for any
  modulus above 1. The output here follows EIP-198 exactly; the gas is py-evm's EIP-2565 price.
- point evaluation (0x0a, EIP-4844): py-evm loads the KZG trusted setup from disk on every
  call, several seconds each; it is loaded once per process here, on first use.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from ckzg import load_trusted_setup, verify_kzg_proof
from eth.abc import ComputationAPI
from eth.exceptions import VMError
from eth.precompiles.modexp import extract_lengths
from eth.precompiles.point_evaluation import TRUSTED_SETUP_PATH, kzg_to_versioned_hash
from eth.vm.forks.berlin.computation import _compute_modexp_gas_fee_eip_2565
from eth.vm.forks.cancun.constants import (
    BLS_MODULUS,
    FIELD_ELEMENTS_PER_BLOB,
    POINT_EVALUATION_PRECOMPILE_GAS,
)

__all__ = ["MODEXP_ADDRESS", "POINT_EVALUATION_ADDRESS", "modexp", "point_evaluation"]

MODEXP_ADDRESS: Final = (5).to_bytes(20, "big")
POINT_EVALUATION_ADDRESS: Final = (10).to_bytes(20, "big")
_HEADER: Final = 96
_POINT_INPUT_SIZE: Final = 192


def _field(data: bytes, start: int, length: int) -> int:
    """Big-endian integer of ``data[start:start+length]``, zero-padded on the right."""
    return int.from_bytes(data[start : start + length].ljust(length, b"\x00"), "big")


def modexp_output(data: bytes) -> bytes:
    """EIP-198: ``base ** exponent % modulus`` as ``modulus_length`` bytes (0 for modulus 0)."""
    base_length, exponent_length, modulus_length = extract_lengths(data)
    if modulus_length == 0:
        return b""
    exponent_start = _HEADER + base_length
    modulus_start = exponent_start + exponent_length
    modulus = _field(data, modulus_start, modulus_length)
    if modulus == 0:
        return b"\x00" * modulus_length
    base = _field(data, _HEADER, base_length)
    exponent = _field(data, exponent_start, exponent_length)
    return pow(base, exponent, modulus).to_bytes(modulus_length, "big")


def modexp(computation: ComputationAPI) -> ComputationAPI:
    """The MODEXP precompile: EIP-2565 gas, EIP-198 output."""
    data = computation.msg.data_as_bytes
    computation.consume_gas(_compute_modexp_gas_fee_eip_2565(data), reason="MODEXP Precompile")
    computation.output = modexp_output(data)
    return computation


@functools.cache
def _trusted_setup() -> Any:
    return load_trusted_setup(TRUSTED_SETUP_PATH, 0)


def point_evaluation(computation: ComputationAPI) -> ComputationAPI:
    """The EIP-4844 point evaluation precompile, as py-evm's with the setup loaded once."""
    computation.consume_gas(POINT_EVALUATION_PRECOMPILE_GAS, reason="Point Evaluation Precompile")
    data = computation.msg.data_as_bytes
    if len(data) != _POINT_INPUT_SIZE:
        raise VMError("Point evaluation invalid input length.")
    versioned_hash, z, y = data[:32], data[32:64], data[64:96]
    commitment, proof = data[96:144], data[144:192]
    if kzg_to_versioned_hash(commitment) != versioned_hash:
        raise VMError("Point evaluation commitment does not match versioned hash.")
    try:
        valid = verify_kzg_proof(commitment, z, y, proof, _trusted_setup())
    except RuntimeError as exc:  # ckzg's way of saying the inputs are not valid points
        raise VMError("Point evaluation KZG proof verification failed.") from exc
    if not valid:
        raise VMError("Point evaluation KZG proof verification failed.")
    computation.output = FIELD_ELEMENTS_PER_BLOB.to_bytes(32, "big") + BLS_MODULUS.to_bytes(
        32, "big"
    )
    return computation
