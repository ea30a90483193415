"""Decoding, sender recovery and intrinsic gas of signed transactions (ioswarm.core.tx)."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import pytest
import rlp
from coincurve import PublicKey
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ioswarm.core.tx import (
    SECP256K1_N,
    Authorization,
    DecodedTx,
    _encode_uint,
    _list_prefix,
    _outer_list,
    _split,
    decode_tx,
    floor_data_gas,
    intrinsic_gas,
    recover_sender,
)
from ioswarm.errors import ValidationError

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
SENDER = bytes.fromhex(Account.from_key(KEY).address[2:])
TO = bytes.fromhex("5ab1" * 10)
DELEGATE = bytes.fromhex("de1e" * 10)
SLOT = bytes(31) + b"\x07"
BLOB_HASH = b"\x01" + bytes(range(31))
CHAIN_ID = 4689


def tx_dict(kind: str, **overrides: Any) -> dict[str, Any]:
    """A transaction of the given kind as eth_account takes it."""
    tx: dict[str, Any] = {
        "nonce": 9,
        "to": to_checksum_address(TO),
        "value": 10**18 + 1,
        "gas": 90_000,
        "data": b"\x00\x00\xa9\x05\x9c\xbb",
    }
    if kind == "pre155":
        tx["gasPrice"] = 3 * 10**9
    elif kind == "legacy":
        tx.update(chainId=CHAIN_ID, gasPrice=3 * 10**9)
    elif kind == "access_list":
        tx.update(type=1, chainId=CHAIN_ID, gasPrice=3 * 10**9)
        tx["accessList"] = [
            {"address": to_checksum_address(TO), "storageKeys": ["0x" + SLOT.hex()]},
            {"address": to_checksum_address(DELEGATE), "storageKeys": []},
        ]
    else:
        tx.update(chainId=CHAIN_ID, maxFeePerGas=40 * 10**9, maxPriorityFeePerGas=2 * 10**9)
        tx["accessList"] = []
        if kind == "dynamic_fee":
            tx["type"] = 2
        elif kind == "blob":
            tx.update(type=3, maxFeePerBlobGas=7, blobVersionedHashes=[BLOB_HASH])
        elif kind == "set_code":
            auth = {"chainId": CHAIN_ID, "address": to_checksum_address(DELEGATE), "nonce": 10}
            tx.update(type=4, authorizationList=[Account.sign_authorization(auth, KEY)])
        else:
            raise AssertionError(kind)
    tx.update(overrides)
    return {k: v for k, v in tx.items() if v is not None}


def sign(tx: dict[str, Any]) -> tuple[bytes, bytes]:
    """Sign with eth_account; return (raw, tx hash)."""
    signed = Account.sign_transaction(tx, KEY)
    return bytes(signed.raw_transaction), bytes(signed.hash)


TYPE_OF = {"pre155": 0, "legacy": 0, "access_list": 1, "dynamic_fee": 2, "blob": 3, "set_code": 4}
KINDS = list(TYPE_OF)


def encode(item: Any) -> bytes:
    """RLP-encode with pyrlp (typed)."""
    return bytes(rlp.encode(item))


def reencode(raw: bytes, edit: dict[int, Any]) -> bytes:
    """Re-encode a signed transaction with some top-level fields replaced (ints or bytes)."""
    typed = raw[0] < 0xC0
    fields = rlp.decode(raw[1:] if typed else raw)
    for index, value in edit.items():
        fields[index] = (
            rlp.sedes.big_endian_int.serialize(value) if isinstance(value, int) else value
        )
    return (raw[:1] if typed else b"") + encode(fields)


def flip_to_high_s(raw: bytes) -> bytes:
    """The same signature in its high-s form: s -> n - s and the parity bit flipped."""
    tx = decode_tx(raw)
    if tx.tx_type == 0:
        new_v = tx.v + 1 if tx.y_parity == 0 else tx.v - 1
        return reencode(raw, {6: new_v, 8: SECP256K1_N - tx.s})
    return reencode(raw, {-3: 1 - tx.y_parity, -1: SECP256K1_N - tx.s})


def reason(raw: bytes) -> str:
    with pytest.raises(ValidationError) as info:
        decode_tx(raw)
    return info.value.reason


# --- round trips against eth_account ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_recover_sender_matches_signer(kind: str) -> None:
    """Every transaction type decodes and recovers the address that signed it."""
    raw, _ = sign(tx_dict(kind))
    assert recover_sender(decode_tx(raw)) == SENDER


@pytest.mark.parametrize("kind", KINDS)
def test_tx_hash_matches_eth_account(kind: str) -> None:
    """The tx hash is eth_account's hash, and raw is the input bytes."""
    raw, tx_hash = sign(tx_dict(kind))
    tx = decode_tx(raw)
    assert tx.tx_hash == tx_hash
    assert tx.raw == raw


@pytest.mark.parametrize("kind", KINDS)
def test_fields_decode_to_signed_values(kind: str) -> None:
    """Common fields decode to the values that were signed, whatever the type."""
    raw, _ = sign(tx_dict(kind))
    tx = decode_tx(raw)
    assert (tx.nonce, tx.gas_limit, tx.to, tx.value) == (9, 90_000, TO, 10**18 + 1)
    assert tx.data == b"\x00\x00\xa9\x05\x9c\xbb"
    assert tx.chain_id == (None if kind == "pre155" else CHAIN_ID)
    assert tx.tx_type == TYPE_OF[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_decoded_instance_has_only_declared_fields(kind: str) -> None:
    """The fast constructor sets no attribute that is not a dataclass field, and equality holds."""
    tx = decode_tx(sign(tx_dict(kind))[0])
    declared = {f.name for f in dataclasses.fields(DecodedTx)}
    assert set(vars(tx)) <= declared
    assert dataclasses.replace(tx) == tx


def test_legacy_fee_fields() -> None:
    """Legacy transactions carry gas_price, which max_fee and max_priority_fee both report."""
    tx = decode_tx(sign(tx_dict("legacy"))[0])
    assert tx.gas_price == 3 * 10**9
    assert tx.max_fee_per_gas is None and tx.max_priority_fee_per_gas is None
    assert tx.max_fee == tx.max_priority_fee == 3 * 10**9
    assert tx.v in (CHAIN_ID * 2 + 35, CHAIN_ID * 2 + 36)
    assert tx.y_parity == tx.v - CHAIN_ID * 2 - 35


def test_pre155_v_is_27_or_28() -> None:
    """A pre-EIP-155 transaction keeps v = 27/28 and has no chain id."""
    tx = decode_tx(sign(tx_dict("pre155"))[0])
    assert tx.v in (27, 28) and tx.y_parity == tx.v - 27 and tx.chain_id is None


def test_access_list_decodes_to_tuples() -> None:
    """An EIP-2930 access list decodes to (address, slots) tuples in order."""
    tx = decode_tx(sign(tx_dict("access_list"))[0])
    assert tx.access_list == ((TO, (SLOT,)), (DELEGATE, ()))
    assert tx.max_fee == 3 * 10**9


def test_dynamic_fee_fields() -> None:
    """EIP-1559 fields decode, and max_fee reports maxFeePerGas."""
    tx = decode_tx(sign(tx_dict("dynamic_fee"))[0])
    assert tx.gas_price is None
    assert tx.max_fee_per_gas == tx.max_fee == 40 * 10**9
    assert tx.max_priority_fee_per_gas == tx.max_priority_fee == 2 * 10**9
    assert tx.y_parity == tx.v and tx.y_parity in (0, 1)


def test_blob_fields() -> None:
    """A blob transaction decodes its blob fee cap and versioned hashes."""
    tx = decode_tx(sign(tx_dict("blob"))[0])
    assert tx.max_fee_per_blob_gas == 7
    assert tx.blob_versioned_hashes == (BLOB_HASH,)
    assert tx.blob_gas == 131_072


def test_set_code_authorizations() -> None:
    """A set-code transaction decodes its signed authorization tuples."""
    auth_in = Account.sign_authorization(
        {"chainId": CHAIN_ID, "address": to_checksum_address(DELEGATE), "nonce": 10}, KEY
    )
    tx = decode_tx(sign(tx_dict("set_code", authorizationList=[auth_in]))[0])
    assert tx.authorization_list == (
        Authorization(
            chain_id=CHAIN_ID,
            address=DELEGATE,
            nonce=10,
            y_parity=auth_in.y_parity,
            r=auth_in.r,
            s=auth_in.s,
        ),
    )


def test_create_has_no_recipient() -> None:
    """A contract creation decodes `to` as None."""
    tx = decode_tx(sign(tx_dict("dynamic_fee", to=None, data=b"\x60\x00"))[0])
    assert tx.to is None and tx.is_create
    assert recover_sender(tx) == SENDER


def test_signed_from_bytearray_and_memoryview() -> None:
    """Byte-like inputs other than bytes decode the same."""
    raw, tx_hash = sign(tx_dict("dynamic_fee"))
    assert decode_tx(bytearray(raw)).tx_hash == tx_hash
    assert decode_tx(memoryview(raw)).tx_hash == tx_hash


# --- the blob network wrapper --------------------------------------------------------------------


def _wrapper(raw: bytes, version: bytes | None) -> bytes:
    body = rlp.decode(raw[1:])
    blobs, commitments, proofs = [b"\x00" * 64], [b"\xc0" * 48], [b"\xaa" * 48]
    parts = [body, blobs, commitments, proofs]
    if version is not None:
        parts.insert(1, version)
    return b"\x03" + encode(parts)


@pytest.mark.parametrize("version", [None, b"\x01"], ids=["eip4844", "eip7594"])
def test_blob_network_wrapper_reduces_to_body(version: bytes | None) -> None:
    """The network wrapper decodes to the block form: same hash, raw and sender."""
    raw, tx_hash = sign(tx_dict("blob"))
    tx = decode_tx(_wrapper(raw, version))
    assert tx.tx_hash == tx_hash
    assert tx.raw == raw
    assert recover_sender(tx) == SENDER


def test_blob_wrapper_with_unknown_version_is_rejected() -> None:
    """A wrapper version other than 1 is rejected."""
    assert reason(_wrapper(sign(tx_dict("blob"))[0], b"\x02")) == "bad_field:wrapper_version"


def test_blob_wrapper_with_wrong_shape_is_rejected() -> None:
    """A wrapper with missing parts, or parts that are not lists, is rejected."""
    raw = sign(tx_dict("blob"))[0]
    body = rlp.decode(raw[1:])
    assert reason(b"\x03" + rlp.encode([body, [], []])) == "bad_field_count"
    assert reason(b"\x03" + rlp.encode([body, b"", [], []])) == "bad_field:blobs"


# --- signature rules ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_high_s_is_rejected(kind: str) -> None:
    """The high-s twin of a valid signature recovers the same key but is rejected (EIP-2)."""
    raw = sign(tx_dict(kind))[0]
    twin = decode_tx(flip_to_high_s(raw))
    assert twin.signing_hash == decode_tx(raw).signing_hash
    signature = twin.r.to_bytes(32, "big") + twin.s.to_bytes(32, "big") + bytes((twin.y_parity,))
    public_key = PublicKey.from_signature_and_message(signature, twin.signing_hash, hasher=None)
    assert keccak(public_key.format(compressed=False)[1:])[12:] == SENDER
    with pytest.raises(ValidationError, match=r"^high_s$"):
        recover_sender(twin)


@pytest.mark.parametrize(
    ("r", "s"),
    [(0, 1), (1, 0), (SECP256K1_N, 1), (1, SECP256K1_N), (2**256 - 1, 1)],
    ids=["r0", "s0", "r=n", "s=n", "r_max"],
)
def test_out_of_range_signature_is_rejected(r: int, s: int) -> None:
    """r and s outside [1, n) are bad signatures."""
    raw = reencode(sign(tx_dict("dynamic_fee"))[0], {-2: r, -1: s})
    with pytest.raises(ValidationError, match=r"^bad_signature$"):
        recover_sender(decode_tx(raw))


def test_unrecoverable_r_is_rejected() -> None:
    """An r that is no curve point's x coordinate is a bad signature."""
    raw = sign(tx_dict("dynamic_fee"))[0]
    for r in range(1, 100):
        try:
            PublicKey.from_signature_and_message(
                r.to_bytes(32, "big") + (1).to_bytes(32, "big") + b"\x00", bytes(32), hasher=None
            )
        except ValueError:
            break
    else:
        raise AssertionError("no unrecoverable r below 100")
    with pytest.raises(ValidationError, match=r"^bad_signature$"):
        recover_sender(decode_tx(reencode(raw, {-3: 0, -2: r, -1: 1})))


def test_typed_parity_above_one_is_bad_v() -> None:
    """A typed transaction's y parity must be 0 or 1."""
    raw = reencode(sign(tx_dict("dynamic_fee"))[0], {-3: 2})
    with pytest.raises(ValidationError, match=r"^bad_v$"):
        recover_sender(decode_tx(raw))


@pytest.mark.parametrize("v", [0, 1, 26, 29, 34])
def test_legacy_v_without_meaning_is_bad_v(v: int) -> None:
    """A legacy v that is neither 27/28 nor EIP-155 (>= 35) cannot be decoded."""
    assert reason(reencode(sign(tx_dict("legacy"))[0], {6: v})) == "bad_v"


def test_legacy_v_on_other_chain_changes_chain_id() -> None:
    """An EIP-155 v decodes the chain id it encodes, so a tampered v recovers someone else."""
    raw = reencode(sign(tx_dict("legacy"))[0], {6: 1 * 2 + 35})
    tx = decode_tx(raw)
    assert tx.chain_id == 1
    assert recover_sender(tx) != SENDER


# --- malformed input -----------------------------------------------------------------------------


def test_empty_input() -> None:
    """Empty bytes are rejected as empty_tx."""
    assert reason(b"") == "empty_tx"


@pytest.mark.parametrize("first", [0x00, 0x05, 0x7F, 0x80, 0xBF])
def test_unknown_type_byte(first: int) -> None:
    """A first byte that is neither a known type (1-4) nor an RLP list is an unknown type."""
    assert reason(bytes((first,)) + rlp.encode([b"\x01"])) == "unknown_tx_type"


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_and_padded_input_is_malformed(kind: str) -> None:
    """Truncation or a trailing byte makes the RLP malformed."""
    raw = sign(tx_dict(kind))[0]
    assert reason(raw[:-1]) == "malformed_rlp"
    assert reason(raw + b"\x00") == "malformed_rlp"
    assert reason(raw[:1]) == "malformed_rlp" or raw[0] >= 0xC0


def test_typed_payload_that_is_not_a_list_is_malformed() -> None:
    """A typed envelope must wrap an RLP list."""
    assert reason(b"\x02" + rlp.encode(b"hello")) == "malformed_rlp"
    assert reason(b"\x02") == "malformed_rlp"


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc2\x81\x05",  # one byte below 0x80 wrapped as a string
        b"\xc3\xb8\x01\x05",  # long string form for a short string
        b"\xc4\xb9\x00\x01\x05",  # long string length with a leading zero
        b"\xf8\x02\x01\x02",  # long list form for a short list
        b"\xc3\x82\x01",  # string running past its list
        b"\xc2\xc3\x01\x02",  # nested list running past its parent
    ],
)
def test_non_canonical_rlp_is_malformed(payload: bytes) -> None:
    """Non-canonical or inconsistent RLP is malformed, as pyrlp also says."""
    with pytest.raises(rlp.DecodingError):
        rlp.decode(payload)
    assert reason(b"\x02" + payload) == "malformed_rlp"
    assert reason(payload) == "malformed_rlp"


def test_deep_nesting_is_rejected_without_recursion() -> None:
    """Deeply nested lists (pyrlp's recursive decoder can overflow on them) are rejected."""
    nested = b"\xc0"
    for _ in range(5_000):
        nested = _list_prefix(len(nested)) + nested
    assert reason(b"\x02" + nested) == "bad_field_count"
    assert reason(nested) == "bad_field_count"
    assert reason(b"\x02" + b"\xc1" * 5_000) == "malformed_rlp"


@pytest.mark.parametrize(("kind", "count"), [("legacy", 9), ("dynamic_fee", 12), ("blob", 14)])
def test_wrong_field_count(kind: str, count: int) -> None:
    """A field more or less than the type defines is rejected."""
    raw = sign(tx_dict(kind))[0]
    typed = raw[0] < 0xC0
    fields = rlp.decode(raw[1:] if typed else raw)
    assert len(fields) == count
    prefix = raw[:1] if typed else b""
    assert reason(prefix + rlp.encode([*fields, b""])) == "bad_field_count"
    assert reason(prefix + rlp.encode(fields[:-1])) == "bad_field_count"


@pytest.mark.parametrize(
    ("kind", "index", "value", "expected"),
    [
        ("dynamic_fee", 1, b"\x00\x09", "bad_field:nonce"),  # leading zero
        ("dynamic_fee", 1, b"\x01" * 9, "bad_field:nonce"),  # beyond uint64
        ("dynamic_fee", 4, b"\x01" * 9, "bad_field:gas_limit"),
        ("dynamic_fee", 6, b"\x01" * 33, "bad_field:value"),  # beyond uint256
        ("dynamic_fee", 0, [], "bad_field:chain_id"),  # a list where an integer belongs
        ("dynamic_fee", 3, b"\x00", "bad_field:max_fee_per_gas"),
        ("dynamic_fee", 5, b"\x01" * 19, "bad_field:to"),
        ("dynamic_fee", 7, [], "bad_field:data"),
        ("dynamic_fee", 8, b"", "bad_field:access_list"),
        ("dynamic_fee", 8, [[TO]], "bad_field:access_list"),
        ("dynamic_fee", 8, [[TO, [b"\x01"]]], "bad_field:access_list"),
        ("dynamic_fee", 8, [[b"\x01", []]], "bad_field:access_list"),
        ("dynamic_fee", 8, [b"\x01"], "bad_field:access_list"),
        ("dynamic_fee", -2, b"\x00\x01", "bad_field:r"),
        ("legacy", 6, b"\x00\x25", "bad_field:v"),
        ("legacy", 1, b"\x00\x01", "bad_field:gas_price"),
        ("access_list", 4, b"\x01" * 21, "bad_field:to"),
        ("blob", 5, b"", "bad_field:to"),  # blob transactions cannot create
        ("blob", 10, [], "bad_field:blob_versioned_hashes"),  # at least one blob
        ("blob", 10, [b"\x02" + bytes(31)], "bad_field:blob_versioned_hashes"),  # version 1 only
        ("blob", 10, [b"\x01" * 31], "bad_field:blob_versioned_hashes"),
        ("blob", 9, [], "bad_field:max_fee_per_blob_gas"),
        ("set_code", 5, b"", "bad_field:to"),  # set-code transactions cannot create
        ("set_code", 9, [], "bad_field:authorization_list"),  # at least one authorization
        ("set_code", 9, [[b"\x01", DELEGATE, b"", b"", b"\x01"]], "bad_field:authorization_list"),
        (
            "set_code",
            9,
            [[b"", b"\x01", b"", b"", b"\x01", b"\x01"]],
            "bad_field:authorization_list",
        ),
        ("set_code", 9, [b"\x01"], "bad_field:authorization_list"),
    ],
)
def test_bad_field(kind: str, index: int, value: Any, expected: str) -> None:
    """Each malformed field is named in the rejection reason."""
    raw = sign(tx_dict(kind))[0]
    typed = raw[0] < 0xC0
    fields = rlp.decode(raw[1:] if typed else raw)
    fields[index] = value
    assert reason((raw[:1] if typed else b"") + rlp.encode(fields)) == expected


# --- gas --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "kind", "expected"),
    [
        ({"data": b""}, "dynamic_fee", 21_000),
        ({"data": b"\x00\x01\x02"}, "dynamic_fee", 21_000 + 4 + 16 * 2),
        # create: 32000 + calldata + 2 per 32-byte initcode word (33 bytes = 2 words)
        ({"to": None, "data": b"\x01" * 33}, "dynamic_fee", 21_000 + 32_000 + 33 * 16 + 2 * 2),
        ({"to": None, "data": b""}, "legacy", 53_000),
        # access list: two addresses, one storage key, plus 2 zero and 4 non-zero data bytes
        ({}, "access_list", 21_000 + 2 * 2_400 + 1_900 + 2 * 4 + 4 * 16),
        # one authorization tuple
        ({"data": b""}, "set_code", 21_000 + 25_000),
        ({"data": b""}, "blob", 21_000),  # blob gas is not intrinsic gas
    ],
)
def test_intrinsic_gas(overrides: dict[str, Any], kind: str, expected: int) -> None:
    """Intrinsic gas follows the Prague schedule."""
    assert intrinsic_gas(decode_tx(sign(tx_dict(kind, **overrides))[0])) == expected


def test_intrinsic_gas_two_authorizations() -> None:
    """Each authorization tuple costs 25000."""
    auths = [
        Account.sign_authorization({"chainId": 0, "address": DELEGATE, "nonce": n}, KEY)
        for n in (1, 2)
    ]
    raw = sign(tx_dict("set_code", data=b"", authorizationList=auths))[0]
    assert intrinsic_gas(decode_tx(raw)) == 21_000 + 2 * 25_000


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 21_000),
        (b"\x00" * 10, 21_000 + 10 * 10),
        (b"\x01" * 10, 21_000 + 10 * 40),
        (b"\x00\x01", 21_000 + 10 * 5),
    ],
)
def test_floor_data_gas(data: bytes, expected: int) -> None:
    """The EIP-7623 floor counts a zero byte as one token and a non-zero byte as four."""
    assert floor_data_gas(decode_tx(sign(tx_dict("dynamic_fee", data=data))[0])) == expected


def test_floor_exceeds_intrinsic_for_heavy_calldata() -> None:
    """For calldata-heavy transactions the floor, not the intrinsic gas, is the binding minimum."""
    tx = decode_tx(sign(tx_dict("dynamic_fee", data=b"\x01" * 1000))[0])
    assert intrinsic_gas(tx) == 21_000 + 16_000
    assert floor_data_gas(tx) == 21_000 + 40_000


# --- fuzzing ----------------------------------------------------------------------------------


def _expand(raw: bytes, span: tuple[int, int]) -> list[Any]:
    items, _ = _split(raw, *span)
    return [_expand(raw, item) if isinstance(item, tuple) else item for item in items]


def _ours(raw: bytes) -> list[Any] | None:
    try:
        return _expand(raw, _outer_list(raw, 0))
    except ValidationError:
        return None


def _pyrlp(raw: bytes) -> list[Any] | None:
    try:
        decoded = rlp.decode(raw)
    except rlp.DecodingError:
        return None
    return decoded if isinstance(decoded, list) else None


_structures = st.recursive(
    st.binary(max_size=70), lambda inner: st.lists(inner, max_size=4), max_leaves=12
)


@st.composite
def _rlp_lists(draw: st.DrawFn) -> bytes:
    """RLP lists, well formed or with one byte changed, cut or added."""
    encoded = encode(draw(st.lists(_structures, max_size=5)))
    edit = draw(st.sampled_from(["none", "flip", "cut", "add"]))
    if edit == "none" or not encoded:
        return encoded
    at = draw(st.integers(0, len(encoded) - 1))
    if edit == "flip":
        return encoded[:at] + bytes((draw(st.integers(0, 255)),)) + encoded[at + 1 :]
    if edit == "cut":
        return encoded[:at]
    return encoded[:at] + bytes((draw(st.integers(0, 255)),)) + encoded[at:]


@given(_rlp_lists() | st.binary(max_size=64).map(lambda b: b"\xc0" + b))
@settings(max_examples=600, deadline=None)
def test_reader_agrees_with_pyrlp(raw: bytes) -> None:
    """The RLP reader accepts exactly what pyrlp's strict decoder accepts, with the same items."""
    assert _ours(raw) == _pyrlp(raw)


@given(st.integers(0, 2**256 - 1) | st.integers(0, 300))
def test_encoders_match_pyrlp(value: int) -> None:
    """The list-header and integer encoders used for signing payloads match pyrlp."""
    assert _encode_uint(value) == encode(value)
    length = value % 2**40
    assert _list_prefix(length) == rlp.codec.length_prefix(length, 0xC0)


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_decode_random_bytes_raises_only_validation_error(raw: bytes) -> None:
    """Arbitrary bytes either decode or raise ValidationError, never anything else."""
    with contextlib.suppress(ValidationError):
        decode_tx(raw)


@given(st.sampled_from([b"", b"\x01", b"\x02", b"\x03", b"\x04"]), _rlp_lists())
@settings(max_examples=800, deadline=None)
def test_decode_random_rlp_raises_only_validation_error(prefix: bytes, body: bytes) -> None:
    """Random RLP under every type byte either decodes or raises ValidationError."""
    try:
        tx = decode_tx(prefix + body)
    except ValidationError:
        return
    with contextlib.suppress(ValidationError):
        recover_sender(tx)


_SIGNED = {kind: sign(tx_dict(kind))[0] for kind in KINDS}


@given(
    st.sampled_from(KINDS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_signed_transactions_never_crash(kind: str, edits: list[tuple[int, int]]) -> None:
    """Byte edits to real signed transactions decode and recover or raise ValidationError."""
    raw = bytearray(_SIGNED[kind])
    for at, value in edits:
        raw[at % len(raw)] = value
    with contextlib.suppress(ValidationError):
        recover_sender(decode_tx(bytes(raw)))
