"""The canary mint: variants of real tasks, signed by coordinator-owned throwaway keys.

A canary copies its template's transaction type, recipient, value, data, gas limit and fees, so
that on the wire it looks like the traffic around it, and gets a new nonce and a throwaway key's
signature. Where the level lets the coordinator choose the state a task carries (L2, L3), the
sender's state is fabricated to make the intended rule fire; at L4 the agent reads real chain
state, where a throwaway key has nonce 0 and balance 0.

Every canary is checked with the L1/L2 rules an honest agent runs before it is handed out, and
dropped if they disagree with its truth: an honest agent must never fail a canary.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, replace
from typing import Final, TypeAlias

import rlp
from coincurve import PrivateKey, PublicKey

from ioswarm.core.canary import (
    FOREIGN_KEY,
    HIGH_S,
    INSUFFICIENT_BALANCE,
    INTRINSIC_GAS_TOO_LOW,
    KINDS,
    NONCE_TOO_HIGH,
    NONCE_TOO_LOW,
    VALID,
    WRONG_CHAIN_ID,
    CanaryTruth,
    ExecutedCanaryTruth,
)
from ioswarm.core.hashing import keccak256
from ioswarm.core.models import (
    EMPTY_CODE_HASH,
    AccountSnapshot,
    AccountState,
    Level,
    Task,
)
from ioswarm.core.rules import Reject
from ioswarm.core.tx import (
    SECP256K1_N,
    TX_ACCESS_LIST,
    TX_BLOB,
    TX_DYNAMIC_FEE,
    TX_LEGACY,
    TX_SET_CODE,
    DecodedTx,
    decode_tx,
    floor_data_gas,
    intrinsic_gas,
)
from ioswarm.core.validation import Check, check_l1, check_l2
from ioswarm.errors import ValidationError

__all__ = ["Canary", "CanaryMint", "ExecutableVariant"]

# pyrlp's decoded form: bytes, or lists of it.
_Rlp: TypeAlias = "bytes | list[_Rlp]"

_SUPPORTED: Final = (TX_LEGACY, TX_ACCESS_LIST, TX_DYNAMIC_FEE, TX_BLOB, TX_SET_CODE)
# Position of the gas limit in each type's field list (the nonce is at 0 for legacy, else 1).
_GAS_INDEX: Final = {TX_LEGACY: 2, TX_ACCESS_LIST: 3, TX_DYNAMIC_FEE: 4, TX_BLOB: 4, TX_SET_CODE: 4}
# Kinds whose truth is decided by the sender state the task carries.
_STATE_KINDS: Final = frozenset(
    {FOREIGN_KEY, VALID, NONCE_TOO_LOW, NONCE_TOO_HIGH, INSUFFICIENT_BALANCE, INTRINSIC_GAS_TOO_LOW}
)
_REASONS: Final = {
    FOREIGN_KEY: "",
    VALID: "",
    HIGH_S: Reject.HIGH_S,
    WRONG_CHAIN_ID: Reject.WRONG_CHAIN_ID,
    NONCE_TOO_LOW: Reject.NONCE_TOO_LOW,
    NONCE_TOO_HIGH: Reject.NONCE_TOO_HIGH,
    INSUFFICIENT_BALANCE: Reject.INSUFFICIENT_BALANCE,
    INTRINSIC_GAS_TOO_LOW: Reject.INTRINSIC_GAS_TOO_HIGH,  # the gas limit is below it
}
_MAX_NONCE_GAP: Final = 3
# The balance a fabricated sender holds when the template has no sender state to imitate.
_DEFAULT_BALANCE: Final = 10**17
_RECENT_HASHES: Final = 4096
_ATTEMPTS: Final = 4
# Types an executed canary can copy: their call object says all the tx does (blob and set-code
# transactions carry blobs and authorizations a traced call would not).
_EXECUTABLE: Final = (TX_LEGACY, TX_ACCESS_LIST, TX_DYNAMIC_FEE)


@dataclass(frozen=True, slots=True)
class Canary:
    """A task whose true answer the coordinator knows; it is never broadcast."""

    kind: str
    task: Task
    truth: CanaryTruth
    executed: ExecutedCanaryTruth | None = None
    """Kind ``executed``: the execution the answer must report (judge_executed_canary)."""


@dataclass(frozen=True, slots=True)
class ExecutableVariant:
    """A valid signed variant of an L3 template, and the sender state it is valid against."""

    raw_tx: bytes
    tx_hash: bytes
    sender: bytes
    nonce: int
    balance: int


@dataclass(frozen=True, slots=True)
class _Key:
    secret: PrivateKey
    address: bytes


class CanaryMint:
    """Makes canary variants of real tasks, signed by throwaway keys drawn from ``rng``.

    Production passes an rng seeded from the OS (the keys must be unguessable); tests pass a
    seeded one. Key ``i`` is the ``i``-th ``rng.randrange(1, SECP256K1_N)``.
    """

    def __init__(self, chain_id: int, rng: random.Random, keys: int = 16) -> None:
        if keys < 1:
            raise ValueError("keys must be at least 1")
        self.chain_id = chain_id
        self._rng = rng
        self._keys = tuple(_key(rng.randrange(1, SECP256K1_N)) for _ in range(keys))
        # Same key, nonce and fields sign to the same bytes: never hand out one tx twice.
        self._recent: deque[bytes] = deque(maxlen=_RECENT_HASHES)

    @property
    def addresses(self) -> tuple[bytes, ...]:
        """The throwaway keys' addresses, in the order they were drawn."""
        return tuple(k.address for k in self._keys)

    def make(
        self, template: Task, task_id: int, kind: str | None = None, *, base_fee: int = 0
    ) -> Canary | None:
        """A canary shaped like ``template``, or None when the template cannot give this kind.

        ``kind=None`` draws one of the template level's kinds uniformly. ``base_fee`` is the
        predicted block's base fee for L3/L4 templates (the one their batch's context carries):
        executing agents reject a fee cap below it (``fee_cap``) before the rule the canary is
        about, so such a template gives None; and they charge gas at the effective price, which
        bounds an insufficient balance. Left at 0, the bound is the tip alone (always safe).
        """
        kinds = KINDS[template.level]
        if kind is None:
            kind = self._rng.choice(kinds)
        if kind not in kinds:
            return None
        try:
            decoded = decode_tx(template.raw_tx)
        except ValidationError:
            return None
        if decoded.tx_type not in _SUPPORTED:
            return None
        if kind == WRONG_CHAIN_ID and decoded.chain_id is None:
            return None  # a pre-EIP-155 tx names no chain to get wrong
        if template.level >= Level.L3 and decoded.max_fee < base_fee:
            return None
        for _ in range(_ATTEMPTS):
            canary = self._attempt(template, task_id, kind, decoded, base_fee)
            if canary is None:
                return None
            if canary.task.tx_hash not in self._recent:
                self._recent.append(canary.task.tx_hash)
                return canary
        return None

    def executable(self, template: Task, *, base_fee: int) -> ExecutableVariant | None:
        """A VALID variant of an L3 or L4 ``template`` from a throwaway key, or None.

        The variant copies the template's type, recipient, value, data, gas limit and fees and
        gets a plausible nonce; ``balance`` covers value + gas x fee cap with a plausible surplus.
        None when the template does not execute (L1/L2), its type cannot be traced as a call,
        its fee cap is below ``base_fee``, or the honest L2 rules would not call the variant
        valid.
        """
        if template.level < Level.L3:
            return None
        try:
            decoded = decode_tx(template.raw_tx)
        except ValidationError:
            return None
        if decoded.tx_type not in _EXECUTABLE or decoded.max_fee < base_fee:
            return None
        parts = _fields(template.raw_tx, decoded.tx_type)
        if parts is None:
            return None
        fields, sidecar = parts
        eip155 = decoded.chain_id is not None
        cost = decoded.max_cost
        for _ in range(_ATTEMPTS):
            key = self._rng.choice(self._keys)
            nonce = _plausible_nonce(self._rng, template.nonce)
            balance = cost + _plausible_surplus(self._rng, template, cost)
            raw = _sign(
                fields,
                sidecar,
                decoded.tx_type,
                eip155,
                self.chain_id,
                nonce,
                decoded.gas_limit,
                key.secret,
                high_s=False,
            )
            state = AccountSnapshot(key.address, balance, nonce, EMPTY_CODE_HASH)
            check = self._honest_check(raw, Level.L2, state, template.block_gas_limit)
            if not _agrees(check, CanaryTruth(valid=True, reject_reason="", sender=key.address)):
                return None
            tx_hash = decode_tx(raw).tx_hash
            if tx_hash not in self._recent:
                self._recent.append(tx_hash)
                return ExecutableVariant(raw, tx_hash, key.address, nonce, balance)
        return None

    def _attempt(
        self, template: Task, task_id: int, kind: str, decoded: DecodedTx, base_fee: int
    ) -> Canary | None:
        rng = self._rng
        level = template.level
        key = rng.choice(self._keys)
        parts = _fields(template.raw_tx, decoded.tx_type)
        if parts is None:
            return None
        fields, sidecar = parts
        gas = decoded.gas_limit
        if kind == INTRINSIC_GAS_TOO_LOW:
            required = max(intrinsic_gas(decoded), floor_data_gas(decoded))
            gas = required - 1 - rng.randrange(max(1, required // 20))
        cost = (
            decoded.value
            + gas * decoded.max_fee
            + decoded.blob_gas * (decoded.max_fee_per_blob_gas or 0)
        )
        # The balance an insufficient-balance canary must stay below. L2 (like geth's buyGas)
        # wants the full cost at the fee cap; executing agents (py-evm) charge the effective gas
        # price, at least the tip above the base fee, so below that every honest agent rejects.
        short = cost
        if level >= Level.L3:
            price = min(decoded.max_fee, base_fee + decoded.max_priority_fee)
            short = decoded.value + gas * price

        # The sender's state as the task will carry it, and the tx nonce against it.
        if level == Level.L4:
            state_nonce, balance = 0, 0  # real chain state of a fresh key
            nonce = _plausible_nonce(rng, template.nonce)
            if kind == NONCE_TOO_HIGH:
                nonce = max(1, nonce)
            elif kind in (INSUFFICIENT_BALANCE, INTRINSIC_GAS_TOO_LOW):
                nonce = 0
            if kind == INSUFFICIENT_BALANCE and short <= 0:
                return None
        else:
            state_nonce = _plausible_nonce(rng, template.nonce)
            nonce = state_nonce
            if kind == NONCE_TOO_LOW:
                state_nonce = nonce + rng.randint(1, _MAX_NONCE_GAP)
            elif kind == NONCE_TOO_HIGH:
                nonce = state_nonce + rng.randint(1, _MAX_NONCE_GAP)
            if kind == INSUFFICIENT_BALANCE:
                if short <= 0:
                    return None
                balance = short - 1
            else:
                balance = cost + _plausible_surplus(rng, template, cost)
        if level == Level.L2 and kind in _STATE_KINDS and template.sender_state is None:
            return None  # a real L2 task without sender state cannot be given these kinds

        chain_id = self.chain_id + 1 if kind == WRONG_CHAIN_ID else self.chain_id
        eip155 = decoded.chain_id is not None
        raw = _sign(
            fields,
            sidecar,
            decoded.tx_type,
            eip155,
            chain_id,
            nonce,
            gas,
            key.secret,
            high_s=kind == HIGH_S,
        )
        state = AccountSnapshot(
            address=key.address,
            balance=balance,
            nonce=state_nonce,
            code_hash=EMPTY_CODE_HASH,
        )
        truth = CanaryTruth(
            valid=not _REASONS[kind],
            reject_reason=_REASONS[kind],
            sender=b"" if kind in (HIGH_S, WRONG_CHAIN_ID) else key.address,
        )
        if not _agrees(self._honest_check(raw, level, state, template.block_gas_limit), truth):
            return None

        canary_tx = decode_tx(raw)
        task = replace(
            template,
            task_id=task_id,
            tx_hash=canary_tx.tx_hash,
            raw_tx=raw,
            sender=key.address,
            nonce=nonce,
            sender_state=state if template.sender_state is not None else None,
            max_cost=canary_tx.max_cost,
            accounts=_accounts(template, decoded, state) if level == Level.L3 else (),
            read_set=frozenset(),
        )
        return Canary(kind=kind, task=task, truth=truth)

    def _honest_check(
        self, raw: bytes, level: Level, state: AccountSnapshot, block_gas_limit: int
    ) -> Check:
        """What an honest agent's L1/L2 rules say, given what the task will carry."""
        if level == Level.L1:
            return check_l1(raw, self.chain_id)
        # The wire strips the sender's address from its snapshot.
        return check_l2(raw, self.chain_id, replace(state, address=b""), block_gas_limit)


def _agrees(check: Check, truth: CanaryTruth) -> bool:
    return (check.valid, check.reject_reason, check.sender) == (
        truth.valid,
        truth.reject_reason,
        truth.sender,
    )


def _key(secret: int) -> _Key:
    private = PrivateKey(secret.to_bytes(32, "big"))
    public: PublicKey = private.public_key
    return _Key(private, keccak256(public.format(compressed=False)[1:])[12:])


def _plausible_nonce(rng: random.Random, like: int) -> int:
    """A nonce in the range of the template sender's, so canary senders look like real ones."""
    return max(0, like // 2 + rng.randint(0, like + 20))


def _plausible_surplus(rng: random.Random, template: Task, cost: int) -> int:
    """What a fabricated sender holds beyond the cost: around the template sender's balance."""
    held = template.sender_state.balance if template.sender_state is not None else 0
    reference = max(held - cost, cost, _DEFAULT_BALANCE if cost == 0 else 0)
    return reference * rng.randint(50, 200) // 100


def _fields(raw: bytes, tx_type: int) -> tuple[list[_Rlp], list[_Rlp]] | None:
    """The signed tx's field list, and a blob tx's network sidecar (empty in block form)."""
    payload = raw if tx_type == TX_LEGACY else raw[1:]
    decoded = rlp.decode(payload)
    if not isinstance(decoded, list):
        return None
    if tx_type == TX_BLOB and decoded and isinstance(decoded[0], list):
        # Network form: [body, (wrapper version,) blobs, commitments, proofs]. The sidecar
        # stays the template's, which matches the blob hashes the body copies.
        return list(decoded[0]), list(decoded[1:])
    return list(decoded), []


def _sign(
    fields: list[_Rlp],
    sidecar: list[_Rlp],
    tx_type: int,
    eip155: bool,
    chain_id: int,
    nonce: int,
    gas: int,
    secret: PrivateKey,
    *,
    high_s: bool,
) -> bytes:
    """The template's fields with a new chain id, nonce and gas limit, signed by ``secret``."""
    unsigned: list[object] = list(fields[:-3])
    unsigned[_GAS_INDEX[tx_type]] = gas
    if tx_type == TX_LEGACY:
        unsigned[0] = nonce
        payload = rlp.encode([*unsigned, chain_id, 0, 0]) if eip155 else rlp.encode(unsigned)
    else:
        unsigned[0] = chain_id
        unsigned[1] = nonce
        payload = bytes((tx_type,)) + rlp.encode(unsigned)
    signature = secret.sign_recoverable(keccak256(payload), hasher=None)
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    parity = signature[64]
    if high_s:
        # The same point with the other s: recoverable math, but EIP-2 forbids it.
        s, parity = SECP256K1_N - s, parity ^ 1
    if tx_type == TX_LEGACY:
        v = chain_id * 2 + 35 + parity if eip155 else 27 + parity
        return _encode([*unsigned, v, r, s])
    signed = [*unsigned, parity, r, s]
    if sidecar:  # a blob tx in the network form, like its template
        return bytes((tx_type,)) + _encode([signed, *sidecar])
    return bytes((tx_type,)) + _encode(signed)


def _encode(item: object) -> bytes:
    encoded: bytes = rlp.encode(item)
    return encoded


def _accounts(
    template: Task, decoded: DecodedTx, state: AccountSnapshot
) -> tuple[AccountState, ...]:
    """The template's L3 accounts with its sender's state replaced by the canary sender's."""
    mine = AccountState(snapshot=state)
    # A self-send's sender is also the recipient, whose state the canary still needs.
    if decoded.to == template.sender:
        return (*template.accounts, mine)
    replaced = tuple(
        mine if a.snapshot.address == template.sender else a for a in template.accounts
    )
    if mine not in replaced:
        replaced = (*replaced, mine)
    return replaced
