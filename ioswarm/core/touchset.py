"""Which accounts a transaction can touch beyond what a simulation lists, and whether they exist.

An access-list simulation (``eth_createAccessList``, the prestate tracer) names what one run of
the transaction touched. An executing agent also needs accounts the protocol touches on its own:

- the sender, the recipient, or the address a creation deploys to (from the sender's nonce);
- every EIP-7702 authority (its nonce is checked and bumped, its code set) and each
  authorization's target (calls into the authority run the target's code);
- the current delegation target of any account whose code is a delegation designator
  (``0xef0100 || address``): calling it loads that code.

:func:`tx_touches` gives the first two kinds from the transaction alone; :func:`delegations`
the third from code already read, for a second round of reads. :func:`exists_in_trie` is
EIP-161 existence from an account's fields, which the wire carries so an agent tells an absent
account from an existing empty one. Pure functions; the coordinator's prefetch calls them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import rlp
from coincurve import PrivateKey, PublicKey

from ioswarm.core.execshadow import AccountDiff
from ioswarm.core.hashing import keccak256
from ioswarm.core.tx import SECP256K1_N, Authorization, DecodedTx

__all__ = [
    "DELEGATION_PREFIX",
    "EMPTY_TRIE_ROOT",
    "authority_of",
    "created_address",
    "delegation_target",
    "delegations",
    "exists_in_trie",
    "maybe_cleared",
    "sign_authorization",
    "tx_touches",
]

DELEGATION_PREFIX: Final = b"\xef\x01\x00"
"""EIP-7702: the code of a delegated account is this prefix and the 20-byte target."""
EMPTY_TRIE_ROOT: Final = keccak256(b"\x80")
"""Storage root of an account without storage."""
_AUTH_MAGIC: Final = b"\x05"
_HALF_N: Final = SECP256K1_N // 2
ZERO_ADDRESS: Final = bytes(20)


def created_address(sender: bytes, nonce: int) -> bytes:
    """Address of the contract a CREATE from ``sender`` at ``nonce`` makes."""
    return keccak256(rlp.encode([sender, nonce]))[12:]


def delegation_target(code: bytes) -> bytes | None:
    """The account ``code`` delegates to (EIP-7702 designator), or None for other code."""
    if len(code) == 23 and code.startswith(DELEGATION_PREFIX):
        return code[3:]
    return None


def authority_of(auth: Authorization) -> bytes | None:
    """The address that signed ``auth``, or None where the signature cannot be valid (the
    authorization is then skipped by every client, and touches nothing)."""
    if auth.y_parity > 1 or not (0 < auth.r < SECP256K1_N and 0 < auth.s <= _HALF_N):
        return None
    if auth.nonce >= 2**64 - 1 or auth.chain_id >= 2**256:
        return None
    digest = keccak256(_AUTH_MAGIC + rlp.encode([auth.chain_id, auth.address, auth.nonce]))
    signature = auth.r.to_bytes(32, "big") + auth.s.to_bytes(32, "big") + bytes([auth.y_parity])
    try:
        public_key = PublicKey.from_signature_and_message(signature, digest, hasher=None)
    except ValueError:  # r is not the x coordinate of a curve point
        return None
    return keccak256(public_key.format(compressed=False)[1:])[12:]


def sign_authorization(key: bytes, chain_id: int, address: bytes, nonce: int) -> Authorization:
    """An EIP-7702 authorization signed with the 32-byte secret ``key`` (for simulations)."""
    digest = keccak256(_AUTH_MAGIC + rlp.encode([chain_id, address, nonce]))
    sig = PrivateKey(key).sign_recoverable(digest, hasher=None)
    r, s, y_parity = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
    if s > _HALF_N:  # the low-s form (EIP-2) flips the recovery id
        s, y_parity = SECP256K1_N - s, y_parity ^ 1
    return Authorization(chain_id, address, nonce, y_parity, r, s)


def tx_touches(tx: DecodedTx, sender: bytes) -> set[bytes]:
    """Accounts ``tx`` from ``sender`` touches whatever its code does: sender, recipient or
    created address, EIP-7702 authorities and their targets (not the zero address: that clears
    a delegation), and the accounts of its access list."""
    out = {sender, tx.to if tx.to is not None else created_address(sender, tx.nonce)}
    for auth in tx.authorization_list:
        authority = authority_of(auth)
        if authority is None:
            continue
        out.add(authority)
        if auth.address != ZERO_ADDRESS:
            out.add(auth.address)
    out.update(address for address, _ in tx.access_list)
    return out


def delegations(codes: Mapping[bytes, bytes], known: Iterable[bytes] = ()) -> set[bytes]:
    """Targets of the delegated accounts among ``codes`` (address -> code) not in ``known``."""
    have = set(known)
    out = set()
    for code in codes.values():
        target = delegation_target(code)
        if target is not None and target not in have:
            out.add(target)
    return out


def maybe_cleared(
    pre: Mapping[bytes, AccountDiff], post: Mapping[bytes, AccountDiff]
) -> set[bytes]:
    """Accounts of a diff-mode trace whose EIP-7702 delegation may have been cleared: designator
    code before, changed, and no code after (the trace omits empty code, so a clear and
    unchanged code read alike there)."""
    return {
        addr
        for addr, after in post.items()
        if after.code is None
        and (before := pre.get(addr)) is not None
        and before.code is not None
        and delegation_target(before.code) is not None
    }


def exists_in_trie(
    balance: int, nonce: int, code_hash: bytes, storage_root: bytes, empty_code_hash: bytes
) -> bool:
    """EIP-161 existence as the state holds it: any balance, nonce, code or storage."""
    return bool(
        balance
        or nonce
        or code_hash not in (empty_code_hash, b"", bytes(32))
        or storage_root not in (EMPTY_TRIE_ROOT, b"", bytes(32))
    )
