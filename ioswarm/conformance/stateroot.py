"""The state root and logs hash a state test expects, computed from plain account data.

State root: the hex-prefix Merkle-Patricia root over keccak(address) of RLP accounts
``[nonce, balance, storage_root, code_hash]``; each storage root is the same kind of trie over
keccak(slot) of RLP-encoded non-zero values. Logs hash: keccak of the RLP list of
``[address, [topics], data]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import rlp
from trie.hexary import HexaryTrie

from ioswarm.core.hashing import keccak256

__all__ = ["PostAccount", "logs_hash", "state_root"]


@dataclass(slots=True)
class PostAccount:
    """An account as the state root commits to it (mutable: changes are applied in place)."""

    balance: int = 0
    nonce: int = 0
    code: bytes = b""
    storage: dict[int, int] = field(default_factory=dict)


def _storage_root(storage: Mapping[int, int]) -> bytes:
    trie = HexaryTrie({})
    for slot, value in storage.items():
        if value:
            trie[keccak256(slot.to_bytes(32, "big"))] = rlp.encode(value)
    return bytes(trie.root_hash)


def state_root(accounts: Mapping[bytes, PostAccount]) -> bytes:
    """The root of the world state holding exactly ``accounts``."""
    trie = HexaryTrie({})
    for address, account in accounts.items():
        trie[keccak256(address)] = rlp.encode(
            [
                account.nonce,
                account.balance,
                _storage_root(account.storage),
                keccak256(account.code),
            ]
        )
    return bytes(trie.root_hash)


def logs_hash(logs: Iterable[tuple[bytes, Iterable[bytes], bytes]]) -> bytes:
    """keccak256(rlp(logs)) for logs given as (address, topics, data)."""
    return keccak256(rlp.encode([[address, list(topics), data] for address, topics, data in logs]))
