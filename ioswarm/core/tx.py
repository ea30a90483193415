"""Decoding, sender recovery and intrinsic gas of EIP-2718 signed transactions.

Covers legacy (pre-EIP-155 and EIP-155), EIP-2930 (type 1), EIP-1559 (type 2), EIP-4844
(type 3, the block form and the network wrapper) and EIP-7702 (type 4) transactions, with the
gas rules of Prague.

The RLP reader here is deliberately small and schema-driven instead of a generic ``rlp.decode``:
L1 validation is dominated by secp256k1 recovery, and everything around it has to be cheap. The
reader keeps the byte offset of every top-level field, so the signing payload of a typed
transaction is a slice of the original bytes under a new list header (no re-encoding), and its
nesting depth is bounded by the schema, so hostile input cannot exhaust the stack. It is
exactly as strict as pyrlp about canonical encodings (a test holds the two side by side).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Final, TypeAlias

from coincurve import PublicKey

from ioswarm.core.hashing import keccak256 as keccak
from ioswarm.core.rules import MAX_INITCODE_SIZE, Reject, bad_field
from ioswarm.errors import ValidationError

__all__ = [
    "ACCESS_LIST_ADDRESS_GAS",
    "ACCESS_LIST_STORAGE_KEY_GAS",
    "GAS_PER_BLOB",
    "MAX_INITCODE_SIZE",
    "PER_EMPTY_ACCOUNT_COST",
    "SECP256K1_N",
    "TX_ACCESS_LIST",
    "TX_BLOB",
    "TX_DYNAMIC_FEE",
    "TX_LEGACY",
    "TX_SET_CODE",
    "AccessList",
    "Authorization",
    "DecodedTx",
    "decode_tx",
    "floor_data_gas",
    "intrinsic_gas",
    "recover_sender",
]

TX_LEGACY: Final = 0
TX_ACCESS_LIST: Final = 1
TX_DYNAMIC_FEE: Final = 2
TX_BLOB: Final = 3
TX_SET_CODE: Final = 4

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N: Final = SECP256K1_N // 2

# Prague gas schedule.
TX_BASE_GAS: Final = 21_000
TX_CREATE_GAS: Final = 32_000
TX_DATA_ZERO_GAS: Final = 4
TX_DATA_NONZERO_GAS: Final = 16
INITCODE_WORD_GAS: Final = 2  # EIP-3860
ACCESS_LIST_ADDRESS_GAS: Final = 2_400  # EIP-2930
ACCESS_LIST_STORAGE_KEY_GAS: Final = 1_900  # EIP-2930
PER_EMPTY_ACCOUNT_COST: Final = 25_000  # EIP-7702, charged per authorization tuple
FLOOR_GAS_PER_TOKEN: Final = 10  # EIP-7623
GAS_PER_BLOB: Final = 131_072  # EIP-4844
BLOB_HASH_VERSION_KZG: Final = 1  # EIP-4844: first byte of every versioned hash

_UINT64_BYTES: Final = 8
_UINT256_BYTES: Final = 32
_ADDRESS_LEN: Final = 20
_HASH_LEN: Final = 32

AccessList: TypeAlias = tuple[tuple[bytes, tuple[bytes, ...]], ...]

# A nested RLP list inside the raw bytes, as the [start, stop) span of its payload; strings are
# returned as bytes. Spans let the reader descend lazily and slice encodings out unchanged.
_Span: TypeAlias = tuple[int, int]
_Item: TypeAlias = bytes | _Span

_MALFORMED: Final = Reject.MALFORMED_RLP
_RECOVERY_ID: Final = (b"\x00", b"\x01")


@dataclass(frozen=True, slots=True)
class Authorization:
    """One EIP-7702 authorization tuple; its validity is checked at execution, not here."""

    chain_id: int
    address: bytes
    nonce: int
    y_parity: int
    r: int
    s: int


@dataclass(frozen=True)
class DecodedTx:
    """A decoded signed transaction; fields a type does not have are None or empty."""

    tx_type: int
    chain_id: int | None  # None only for pre-EIP-155 legacy transactions
    nonce: int
    gas_limit: int
    to: bytes | None  # None for contract creation
    value: int
    data: bytes
    v: int  # as encoded: 27/28 or chain_id*2+35/36 for legacy, the y parity for typed
    y_parity: int
    r: int
    s: int
    signing_hash: bytes  # keccak of the payload the sender signed
    raw: bytes  # canonical encoding (a blob network wrapper is reduced to the block form)
    gas_price: int | None = None  # legacy and EIP-2930
    max_fee_per_gas: int | None = None  # EIP-1559 style (types 2, 3, 4)
    max_priority_fee_per_gas: int | None = None
    access_list: AccessList = ()
    max_fee_per_blob_gas: int | None = None  # type 3
    blob_versioned_hashes: tuple[bytes, ...] = ()  # type 3
    authorization_list: tuple[Authorization, ...] = ()  # type 4

    @cached_property
    def tx_hash(self) -> bytes:
        """Keccak of the canonical encoding; computed on first use (L1 does not need it)."""
        return keccak(self.raw)

    @property
    def max_fee(self) -> int:
        """The most the sender pays per gas: maxFeePerGas, or gasPrice for legacy / 2930."""
        if self.max_fee_per_gas is not None:
            return self.max_fee_per_gas
        assert self.gas_price is not None  # every type has one of the two
        return self.gas_price

    @property
    def max_cost(self) -> int:
        """value + gas limit x max fee: what a task's ``max_cost`` holds (blob gas apart)."""
        return self.value + self.gas_limit * self.max_fee

    @property
    def max_priority_fee(self) -> int:
        """The tip cap: maxPriorityFeePerGas, or gasPrice for legacy / 2930."""
        if self.max_priority_fee_per_gas is not None:
            return self.max_priority_fee_per_gas
        assert self.gas_price is not None
        return self.gas_price

    @property
    def is_create(self) -> bool:
        """Whether the transaction deploys a contract."""
        return self.to is None

    @property
    def blob_gas(self) -> int:
        """Blob gas the transaction consumes (0 unless type 3)."""
        return GAS_PER_BLOB * len(self.blob_versioned_hashes)


def _new_tx(**fields: object) -> DecodedTx:
    """Build a DecodedTx without running its generated ``__init__``.

    A frozen dataclass sets each field through ``object.__setattr__``; for these twenty fields
    that costs about 3 us, an eighth of a whole decode on the L1 hot path. Fields left out keep
    their class-level defaults; a test checks that every key is a declared field.
    """
    tx = object.__new__(DecodedTx)
    tx.__dict__.update(fields)
    return tx


# --- RLP reading -------------------------------------------------------------------------------


def _long_header(raw: bytes, pos: int, end: int, short_limit: int) -> tuple[int, int]:
    """Payload span of a long-form string or list whose prefix byte is at ``pos``."""
    len_of_len = raw[pos] - short_limit
    start = pos + 1 + len_of_len
    if start > end or raw[pos + 1] == 0:  # truncated, or a length with leading zeros
        raise ValidationError(_MALFORMED)
    length = int.from_bytes(raw[pos + 1 : start], "big")
    if length < 56:  # long form used where the short form fits
        raise ValidationError(_MALFORMED)
    stop = start + length
    if stop > end:
        raise ValidationError(_MALFORMED)
    return start, stop


def _split(raw: bytes, pos: int, end: int) -> tuple[list[_Item], list[int]]:
    """Split the RLP list payload ``raw[pos:end]`` into items, with each item's start offset."""
    items: list[_Item] = []
    starts: list[int] = []
    append = items.append
    while pos < end:
        starts.append(pos)
        b0 = raw[pos]
        if b0 < 0x80:
            append(raw[pos : pos + 1])
            pos += 1
        elif b0 < 0xB8:
            stop = pos + b0 - 0x7F
            if stop > end or (b0 == 0x81 and raw[pos + 1] < 0x80):
                raise ValidationError(_MALFORMED)
            append(raw[pos + 1 : stop])
            pos = stop
        elif b0 < 0xC0:
            start, pos = _long_header(raw, pos, end, 0xB7)
            append(raw[start:pos])
        elif b0 < 0xF8:
            stop = pos + b0 - 0xBF
            if stop > end:
                raise ValidationError(_MALFORMED)
            append((pos + 1, stop))
            pos = stop
        else:
            span = _long_header(raw, pos, end, 0xF7)
            append(span)
            pos = span[1]
    return items, starts


def _outer_list(raw: bytes, pos: int) -> _Span:
    """Payload span of the list at ``pos``, which must run exactly to the end of ``raw``."""
    end = len(raw)
    if pos >= end:
        raise ValidationError(_MALFORMED)
    b0 = raw[pos]
    if b0 < 0xC0:
        raise ValidationError(_MALFORMED)
    span = (pos + 1, pos + b0 - 0xBF) if b0 < 0xF8 else _long_header(raw, pos, end, 0xF7)
    if span[1] != end:  # truncated or trailing bytes
        raise ValidationError(_MALFORMED)
    return span


def _list_prefix(length: int) -> bytes:
    if length < 56:
        return bytes((0xC0 + length,))
    if length < 256:  # most signing payloads: skip the general int encoding
        return bytes((0xF8, length))
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((0xF7 + len(encoded),)) + encoded


def _encode_uint(value: int) -> bytes:
    if value == 0:
        return b"\x80"
    if value < 0x80:
        return bytes((value,))
    encoded = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes((0x80 + len(encoded),)) + encoded


# --- field conversion --------------------------------------------------------------------------


def _bad(name: str) -> ValidationError:
    return ValidationError(bad_field(name))


def _uint(item: _Item, name: str, max_len: int = _UINT256_BYTES) -> int:
    """A canonical big-endian unsigned integer (no leading zero bytes) of at most max_len."""
    if not isinstance(item, bytes) or len(item) > max_len or (item and item[0] == 0):
        raise _bad(name)
    return int.from_bytes(item, "big")


def _bytes(item: _Item, name: str) -> bytes:
    if not isinstance(item, bytes):
        raise _bad(name)
    return item


def _address(item: _Item, name: str) -> bytes:
    if not isinstance(item, bytes) or len(item) != _ADDRESS_LEN:
        raise _bad(name)
    return item


def _to(item: _Item, allow_create: bool) -> bytes | None:
    if not isinstance(item, bytes):
        raise _bad("to")
    if len(item) == _ADDRESS_LEN:
        return item
    if not item and allow_create:
        return None
    raise _bad("to")


def _list(raw: bytes, item: _Item, name: str) -> list[_Item]:
    if not isinstance(item, tuple):
        raise _bad(name)
    return _split(raw, item[0], item[1])[0]


def _hashes(raw: bytes, item: _Item, name: str) -> tuple[bytes, ...]:
    out: list[bytes] = []
    for entry in _list(raw, item, name):
        if not isinstance(entry, bytes) or len(entry) != _HASH_LEN:
            raise _bad(name)
        out.append(entry)
    return tuple(out)


def _access_list(raw: bytes, item: _Item) -> AccessList:
    if isinstance(item, tuple) and item[0] == item[1]:
        return ()  # the common case: an empty list
    out: list[tuple[bytes, tuple[bytes, ...]]] = []
    for entry in _list(raw, item, "access_list"):
        pair = _list(raw, entry, "access_list")
        if len(pair) != 2:
            raise _bad("access_list")
        out.append(
            (_address(pair[0], "access_list"), _hashes(raw, pair[1], "access_list")),
        )
    return tuple(out)


def _authorization_list(raw: bytes, item: _Item) -> tuple[Authorization, ...]:
    name = "authorization_list"
    out: list[Authorization] = []
    for entry in _list(raw, item, name):
        fields = _list(raw, entry, name)
        if len(fields) != 6:
            raise _bad(name)
        out.append(
            Authorization(
                chain_id=_uint(fields[0], name),
                address=_address(fields[1], name),
                nonce=_uint(fields[2], name, _UINT64_BYTES),
                y_parity=_uint(fields[3], name),
                r=_uint(fields[4], name),
                s=_uint(fields[5], name),
            )
        )
    if not out:  # EIP-7702: an empty authorization list makes the transaction invalid
        raise _bad(name)
    return tuple(out)


# --- decoding ----------------------------------------------------------------------------------

_FIELD_COUNTS: Final = {TX_ACCESS_LIST: 11, TX_DYNAMIC_FEE: 12, TX_BLOB: 14, TX_SET_CODE: 13}
_TYPE_PREFIX: Final = {tx_type: bytes((tx_type,)) for tx_type in _FIELD_COUNTS}


def decode_tx(data: bytes | bytearray | memoryview) -> DecodedTx:
    """Decode a signed transaction; raise ValidationError with a short reason if malformed."""
    # Slices of the input become fields, so they must be plain bytes (not bytearray, HexBytes).
    raw = data if type(data) is bytes else bytes(data)
    if not raw:
        raise ValidationError(Reject.EMPTY_TX)
    tx_type = raw[0]
    if tx_type >= 0xC0:
        return _decode_legacy(raw)
    if tx_type not in _FIELD_COUNTS:
        raise ValidationError(Reject.UNKNOWN_TX_TYPE)

    start, stop = _outer_list(raw, 1)
    fields, starts = _split(raw, start, stop)
    canonical = raw
    if tx_type == TX_BLOB and fields and isinstance(fields[0], tuple):
        # Network wrapper: [body, blobs, commitments, proofs] (EIP-4844) or
        # [body, wrapper_version, blobs, commitments, proofs] (EIP-7594 cell proofs). The
        # blobs are the node's business (KZG); the hash and the signature cover the body.
        if len(fields) == 5:
            if fields[1] != b"\x01":
                raise _bad("wrapper_version")
            sidecar = fields[2:]
        elif len(fields) == 4:
            sidecar = fields[1:]
        else:
            raise ValidationError(Reject.BAD_FIELD_COUNT)
        if not all(isinstance(part, tuple) for part in sidecar):
            raise _bad("blobs")
        body_start, (start, stop) = starts[0], fields[0]
        canonical = b"\x03" + raw[body_start:stop]
        fields, starts = _split(raw, start, stop)

    if len(fields) != _FIELD_COUNTS[tx_type]:
        raise ValidationError(Reject.BAD_FIELD_COUNT)
    # Everything before the signature, reused verbatim from the input.
    unsigned = raw[start : starts[-3]]
    signing_hash = keccak(_TYPE_PREFIX[tx_type] + _list_prefix(len(unsigned)) + unsigned)
    y_parity = _uint(fields[-3], "y_parity")
    r = _uint(fields[-2], "r")
    s = _uint(fields[-1], "s")
    chain_id = _uint(fields[0], "chain_id")
    nonce = _uint(fields[1], "nonce", _UINT64_BYTES)

    if tx_type == TX_ACCESS_LIST:
        return _new_tx(
            tx_type=tx_type,
            chain_id=chain_id,
            nonce=nonce,
            gas_price=_uint(fields[2], "gas_price"),
            gas_limit=_uint(fields[3], "gas_limit", _UINT64_BYTES),
            to=_to(fields[4], allow_create=True),
            value=_uint(fields[5], "value"),
            data=_bytes(fields[6], "data"),
            access_list=_access_list(raw, fields[7]),
            v=y_parity,
            y_parity=y_parity,
            r=r,
            s=s,
            signing_hash=signing_hash,
            raw=canonical,
        )

    # Types 2, 3 and 4 share their first nine fields.
    max_priority_fee_per_gas = _uint(fields[2], "max_priority_fee_per_gas")
    max_fee_per_gas = _uint(fields[3], "max_fee_per_gas")
    gas_limit = _uint(fields[4], "gas_limit", _UINT64_BYTES)
    # Blob and set-code transactions cannot create contracts.
    to = _to(fields[5], allow_create=tx_type == TX_DYNAMIC_FEE)
    value = _uint(fields[6], "value")
    data = _bytes(fields[7], "data")
    access_list = _access_list(raw, fields[8])
    max_fee_per_blob_gas: int | None = None
    blob_hashes: tuple[bytes, ...] = ()
    authorizations: tuple[Authorization, ...] = ()
    if tx_type == TX_BLOB:
        max_fee_per_blob_gas = _uint(fields[9], "max_fee_per_blob_gas")
        blob_hashes = _hashes(raw, fields[10], "blob_versioned_hashes")
        # A blob transaction without blobs, or with a hash of an unknown commitment
        # version, can never be included.
        if not blob_hashes or any(h[0] != BLOB_HASH_VERSION_KZG for h in blob_hashes):
            raise _bad("blob_versioned_hashes")
    elif tx_type == TX_SET_CODE:
        authorizations = _authorization_list(raw, fields[9])
    return _new_tx(
        tx_type=tx_type,
        chain_id=chain_id,
        nonce=nonce,
        max_priority_fee_per_gas=max_priority_fee_per_gas,
        max_fee_per_gas=max_fee_per_gas,
        gas_limit=gas_limit,
        to=to,
        value=value,
        data=data,
        access_list=access_list,
        max_fee_per_blob_gas=max_fee_per_blob_gas,
        blob_versioned_hashes=blob_hashes,
        authorization_list=authorizations,
        v=y_parity,
        y_parity=y_parity,
        r=r,
        s=s,
        signing_hash=signing_hash,
        raw=canonical,
    )


def _decode_legacy(raw: bytes) -> DecodedTx:
    start, stop = _outer_list(raw, 0)
    fields, starts = _split(raw, start, stop)
    if len(fields) != 9:
        raise ValidationError(Reject.BAD_FIELD_COUNT)
    v = _uint(fields[6], "v")
    unsigned = raw[start : starts[6]]
    chain_id: int | None
    if v in (27, 28):
        chain_id = None
        y_parity = v - 27
    elif v >= 35:
        # EIP-155: the chain id is folded into v and signed as [..., chain_id, 0, 0].
        chain_id, y_parity = divmod(v - 35, 2)
        unsigned += _encode_uint(chain_id) + b"\x80\x80"
    else:
        # No chain id or parity can be read from such a v, so there is no signing payload.
        raise ValidationError(Reject.BAD_V)
    return _new_tx(
        tx_type=TX_LEGACY,
        chain_id=chain_id,
        nonce=_uint(fields[0], "nonce", _UINT64_BYTES),
        gas_price=_uint(fields[1], "gas_price"),
        gas_limit=_uint(fields[2], "gas_limit", _UINT64_BYTES),
        to=_to(fields[3], allow_create=True),
        value=_uint(fields[4], "value"),
        data=_bytes(fields[5], "data"),
        v=v,
        y_parity=y_parity,
        r=_uint(fields[7], "r"),
        s=_uint(fields[8], "s"),
        signing_hash=keccak(_list_prefix(len(unsigned)) + unsigned),
        raw=raw,
    )


# --- signatures --------------------------------------------------------------------------------


def recover_sender(tx: DecodedTx) -> bytes:
    """Recover the 20-byte sender address; raise ValidationError on an invalid signature."""
    if tx.y_parity > 1:
        raise ValidationError(Reject.BAD_V)
    r, s = tx.r, tx.s
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise ValidationError(Reject.BAD_SIGNATURE)
    if s > _HALF_N:  # EIP-2: only the low-s form of a signature is valid
        raise ValidationError(Reject.HIGH_S)
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big") + _RECOVERY_ID[tx.y_parity]
    try:
        public_key = PublicKey.from_signature_and_message(signature, tx.signing_hash, hasher=None)
    except ValueError as exc:  # r is not the x coordinate of a curve point
        raise ValidationError(Reject.BAD_SIGNATURE) from exc
    return keccak(public_key.format(compressed=False)[1:])[12:]


# --- gas ---------------------------------------------------------------------------------------


def intrinsic_gas(tx: DecodedTx) -> int:
    """Gas charged before execution starts, under the Prague rules (without the 7623 floor)."""
    data = tx.data
    zeros = data.count(0)
    gas = (
        TX_BASE_GAS
        + TX_DATA_ZERO_GAS * zeros
        + TX_DATA_NONZERO_GAS * (len(data) - zeros)
        + PER_EMPTY_ACCOUNT_COST * len(tx.authorization_list)
    )
    if tx.to is None:
        gas += TX_CREATE_GAS + INITCODE_WORD_GAS * ((len(data) + 31) // 32)
    for _, keys in tx.access_list:
        gas += ACCESS_LIST_ADDRESS_GAS + ACCESS_LIST_STORAGE_KEY_GAS * len(keys)
    return gas


def floor_data_gas(tx: DecodedTx) -> int:
    """EIP-7623 minimum gas: 21000 + 10 per calldata token (zero byte 1, non-zero byte 4)."""
    data = tx.data
    zeros = data.count(0)
    tokens = zeros + 4 * (len(data) - zeros)
    return TX_BASE_GAS + FLOOR_GAS_PER_TOKEN * tokens
