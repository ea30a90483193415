"""Where a coordinator's state store starts: the node's whole state at one known height.

Supported sources:

- **Nodes with ``anvil_dumpState``** (anvil): it returns hex of gzip'd JSON
  ``{"best_block_number": N, "accounts": {address: {nonce, balance, code, storage}}}``. The
  dump is taken at a known height: the block number is read before and after, and the dump is
  retried if the chain moved meanwhile (or if the dump's own ``best_block_number`` differs).
- **Any node**, through an IOSWSNAP file (``stateBootstrapSnapshot``), loaded by
  :mod:`ioswarm.state.snapshot_io`; the store then follows the node from the file's height.

Not supported: geth's ``debug_accountRange`` / ``debug_storageRangeAt``. They return accounts
and slots by the *hash* of address and slot, with the plain keys only where the node kept
preimages (``--cache.preimages``), and ``debug_storageRangeAt`` reads the state before a given
transaction rather than after a block; a flat store keyed by address and slot cannot be built
from them in general. A node without ``anvil_dumpState`` and no snapshot file configured stops
the coordinator with a configuration error naming ``stateBootstrapSnapshot``.

Entries follow the store layout (:mod:`ioswarm.state.store`); accounts that EIP-161 treats as
absent (nonce 0, balance 0, no code, no storage) are left out, as the per-block fold does.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ioswarm.core.models import EMPTY_CODE_HASH
from ioswarm.core.snapshot import Entry
from ioswarm.core.statefold import FlatAccount
from ioswarm.core.statehash import keccak256
from ioswarm.errors import NodeError
from ioswarm.state.store import ACCOUNT, CODE, STORAGE, ZERO_WORD

log = logging.getLogger("ioswarm.state")

DUMP_ATTEMPTS = 5


class RawRpc(Protocol):
    """A JSON-RPC caller (``ioswarm.node.rpc.JsonRpcTransport`` satisfies it)."""

    async def call(self, method: str, params: Sequence[Any] = ...) -> Any: ...


def _int(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value, 16) if value.startswith(("0x", "0X")) else int(value)
    raise ValueError(f"not a number: {value!r}")


def _hex_bytes(value: Any) -> bytes:
    if value in (None, "", "0x"):
        return b""
    if not isinstance(value, str):
        raise ValueError(f"not hex data: {value!r}")
    text = value[2:] if value.startswith(("0x", "0X")) else value
    return bytes.fromhex(text if len(text) % 2 == 0 else "0" + text)


def entries_from_dump(accounts: Mapping[str, Any]) -> list[Entry]:
    """Store entries (Account, Code, Storage; each sorted by key) from a dump's accounts."""
    acc: list[Entry] = []
    code: dict[bytes, bytes] = {}
    storage: list[Entry] = []
    for addr_hex, raw in accounts.items():
        address = _hex_bytes(addr_hex).rjust(20, b"\x00")
        body = _hex_bytes(raw.get("code"))
        code_hash = keccak256(body) if body else EMPTY_CODE_HASH
        slots = {
            _hex_bytes(k).rjust(32, b"\x00"): _hex_bytes(v).rjust(32, b"\x00")
            for k, v in (raw.get("storage") or {}).items()
        }
        slots = {k: v for k, v in slots.items() if v != ZERO_WORD}
        account = FlatAccount(_int(raw.get("nonce", 0)), _int(raw.get("balance", 0)), code_hash)
        if account.empty and not slots:
            continue
        acc.append((ACCOUNT, address, account.encode()))
        if body:
            code[code_hash] = body
        storage.extend((STORAGE, address + k, v) for k, v in slots.items())
    acc.sort(key=lambda e: e[1])
    storage.sort(key=lambda e: e[1])
    return acc + sorted(((CODE, k, v) for k, v in code.items()), key=lambda e: e[1]) + storage


class AnvilDumpSource:
    """Reads the whole state of an anvil (or Hardhat-style) node at a known height."""

    def __init__(self, rpc: RawRpc) -> None:
        self._rpc = rpc

    async def dump(self) -> tuple[int, list[Entry]]:
        """(height, entries) of one consistent dump; retried while blocks land meanwhile."""
        for attempt in range(1, DUMP_ATTEMPTS + 1):
            before = _int(await self._rpc.call("eth_blockNumber", []))
            raw = await self._rpc.call("anvil_dumpState", [])
            after = _int(await self._rpc.call("eth_blockNumber", []))
            try:
                doc = json.loads(gzip.decompress(_hex_bytes(raw)))
                height = _int(doc.get("best_block_number", after))
                accounts = doc["accounts"]
            except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
                raise NodeError("anvil_dumpState", f"unreadable dump: {exc}") from exc
            if before == after == height:
                return height, entries_from_dump(accounts)
            log.info(
                "state dump raced a block before=%d after=%d dump=%d attempt=%d",
                before,
                after,
                height,
                attempt,
            )
        raise NodeError("anvil_dumpState", f"chain kept moving over {DUMP_ATTEMPTS} dumps")
