"""keccak-256, from the fastest backend present.

The C implementation in ``sha3`` (safe-pysha3) costs ~2 us per call against ~10 us through
eth_hash's pycryptodome wrapper; on the L1 hot path (signing hash + sender address) that is a
fifth of the whole check.
"""

from __future__ import annotations

from collections.abc import Callable

keccak256: Callable[[bytes], bytes]

try:
    from sha3 import keccak_256 as _keccak_256

    def keccak256(data: bytes) -> bytes:
        """keccak-256 digest of ``data``."""
        return _keccak_256(data).digest()  # type: ignore[no-any-return]

except ImportError:  # pragma: no cover - the dependency is declared; this keeps imports safe
    pass
