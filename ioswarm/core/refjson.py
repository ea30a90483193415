"""The reference agent's JSON wire, mapped field by field onto ioswarm's protobuf messages.

The Go reference (iotex-core ``ioswarm/proto/types.go``; ioswarm-agent ``types.go``) registers
a JSON codec under gRPC's codec name ``proto``: its messages travel as Go ``encoding/json`` text
with the content-type ``application/grpc``, on the same method paths as ioswarm's. The
coordinator tells the two apart by the first byte of a call's first message
(:func:`sniff`): ``{`` opens a JSON object, and in a protobuf message that byte would be field 15
with wire type 3 (start group), which ioswarm never emits.

The mapping is explicit, one table per message (:data:`REGISTER_REQUEST` ...), in the Go
struct's field order, with the Go JSON names:

- task levels shift by one: the reference numbers L1 as 0, ioswarm as 1;
- addresses are ``0x`` hex strings (lowercase, as the reference writes them), balances decimal
  strings, ``[]byte`` fields standard base64, 64-bit integers JSON numbers;
- ``null`` and absent fields are the zero value and unknown fields (the agent's ``note``) are
  ignored, as Go's decoder does; field names match exactly;
- ``omitempty`` fields are left out when empty, as Go leaves them out;
- the heartbeat directive ``""`` ("carry on") is the reference's ``"continue"``;
- a reject reason in the reference's free text is mapped to the ioswarm rule that means the same
  (:func:`reject_from_reference`); any other text is kept as an unknown reason.

A few ioswarm fields travel as *extensions*, extra keys that Go's decoder ignores: ``chain_id``
(register response and task batch), ``tx_hash`` and ``block_gas_limit`` (task), ``accepted_count``
(submit response), ``amount_wei``/``tx_hash`` (payout) and, from an agent, ``sender`` (the
recovered sender of a result, checked like protobuf evidence when present).

Decoding is bounded before any object is built (:func:`check_shape`): the number of JSON values
and the nesting depth are counted on the raw bytes, as :mod:`ioswarm.core.wirescan` counts
protobuf fields. Every problem raises :class:`RefJsonError` naming the field.

The reference's L3/L4 task shapes (``evm_tx``, ``contract_code``, ``storage_slots``,
``block_context``) carry IoTeX-native state; they are not mapped, and the coordinator serves
this wire at L1 and L2 only.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from ioswarm.core.models import Level
from ioswarm.core.rules import BAD_FIELD_PREFIX, Reject
from ioswarm.errors import ProtocolError
from ioswarm.proto import ioswarm_pb2 as pb

__all__ = [
    "BATCH_RESULT",
    "DOWNLOAD_SNAPSHOT_REQUEST",
    "GET_TASKS_REQUEST",
    "HEARTBEAT_REQUEST",
    "HEARTBEAT_RESPONSE",
    "JSON_LEVELS",
    "MAX_DEPTH",
    "REGISTER_REQUEST",
    "REGISTER_RESPONSE",
    "RESULT_VALUES",
    "STREAM_STATE_DIFFS_REQUEST",
    "SUBMIT_RESPONSE",
    "TASK_BATCH",
    "Codec",
    "MessageSpec",
    "RefJsonError",
    "check_shape",
    "decode",
    "encode",
    "from_json",
    "reject_from_reference",
    "sniff",
    "to_json",
]


class Codec(StrEnum):
    """How a call's messages are encoded on the wire."""

    PROTOBUF = "protobuf"
    JSON = "json"
    """The Go reference agent's JSON codec."""


JSON_LEVELS: Final = frozenset({Level.L1, Level.L2})
"""The levels served in JSON: the reference's L3/L4 tasks carry IoTeX-native state (its
``evm_tx``, ``contract_code`` and ``storage_slots`` read from IoTeX's own state namespaces),
which an EVM node cannot provide."""

MAX_DEPTH: Final = 8
"""Deepest nesting a reference message needs is 6 (a batch's results' logs' topics)."""
RESULT_VALUES: Final = 64
"""JSON values (keys, items, containers) one result may use: an L1/L2 result needs ~15."""
MAX_REASON_CHARS: Final = 128
"""An unknown reject reason is kept, cut to this length."""

_OPEN_BRACE: Final = 0x7B


class RefJsonError(ProtocolError):
    """A JSON message that is not the reference's shape; the message names the field."""


def sniff(data: bytes) -> Codec:
    """The codec of a call, from its first message's first byte (empty is protobuf)."""
    return Codec.JSON if data[:1] == b"{" else Codec.PROTOBUF


# -- bounds on the raw bytes -------------------------------------------------------------------

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
_VALUE_MARKS: Final = (b",", b":", b"[", b"{")


def check_shape(data: bytes, max_values: int, max_depth: int = MAX_DEPTH) -> None:
    """Refuse JSON with more than ``max_values`` values or nested deeper than ``max_depth``,
    counted on the bytes (strings blanked first) before anything is decoded.

    The count is of commas, colons and opening brackets outside strings, which is at least the
    number of objects, arrays, keys and items decoding would build, less one.
    """
    bare = _STRING.sub(b'""', data)
    values = sum(bare.count(mark) for mark in _VALUE_MARKS)
    if values > max_values:
        raise RefJsonError(f"{values} JSON values; at most {max_values}")
    depth = 0
    for m in _BRACKET.finditer(bare):  # at most 2 * max_values brackets
        if m[0] in b"[{":
            depth += 1
            if depth > max_depth:
                raise RefJsonError(f"JSON nested deeper than {max_depth} levels")
        else:
            depth -= 1


# -- scalar kinds ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scalar:
    """How one kind of field travels: JSON value to protobuf value and back."""

    name: str
    decode: Callable[[object, str], object]
    encode: Callable[[Any], object]


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _wrong(where: str, expected: str, value: object) -> RefJsonError:
    return RefJsonError(f"field {where}: expected {expected}, got {_type_name(value)}")


def _string(value: object, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _wrong(where, "a string", value)
    return value


def _boolean(value: object, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _wrong(where, "true or false", value)
    return value


def _unsigned(bits: int) -> Callable[[object, str], int]:
    top = (1 << bits) - 1

    def decode(value: object, where: str) -> int:
        if value is None:
            return 0
        if type(value) is not int:  # bool is an int subclass; 1.0 and 1e3 are not integers
            raise _wrong(where, f"an integer (uint{bits})", value)
        if not 0 <= value <= top:
            raise RefJsonError(f"field {where}: {value} is out of range for uint{bits}")
        return value

    return decode


def _number(value: object, where: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong(where, "a number", value)
    number = float(value)
    if not math.isfinite(number):
        raise RefJsonError(f"field {where}: {value} is not a finite number")
    return number


def _level(value: object, where: str) -> int:
    if value is None:
        value = 0  # Go's zero value: the reference's L1
    if type(value) is not int:
        raise _wrong(where, "a task level number", value)
    if not 0 <= value < len(Level):
        raise RefJsonError(
            f"field {where}: {value} is not a reference task level (0=L1, 1=L2, 2=L3, 3=L4)"
        )
    return value + 1


def _level_out(value: int) -> int:
    if not Level.L1 <= value <= Level.L4:
        raise ValueError(f"no reference number for task level {value}")
    return value - 1


def _base64(value: object, where: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise _wrong(where, "a base64 string", value)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RefJsonError(f"field {where}: not standard base64 ({exc})") from exc


def _base64_out(value: bytes) -> str | None:
    return base64.b64encode(value).decode() if value else None  # Go writes a nil slice as null


_HEX = re.compile(r"(?:0[xX])?([0-9a-fA-F]*)")


def _hex_bytes(value: object, where: str, size: int | None, what: str) -> bytes:
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise _wrong(where, what, value)
    m = _HEX.fullmatch(value)
    if m is None or len(m[1]) % 2 or (size is not None and len(m[1]) != 2 * size):
        raise RefJsonError(f"field {where}: expected {what}, got {value[:80]!r}")
    return bytes.fromhex(m[1])


def _address(value: object, where: str) -> bytes:
    return _hex_bytes(value, where, 20, "a 0x-prefixed 20-byte hex address")


def _hex(value: object, where: str) -> bytes:
    return _hex_bytes(value, where, None, "a 0x-prefixed hex string")


def _hex_out(value: bytes) -> str:
    return "0x" + value.hex() if value else ""


def _decimal(value: object, where: str) -> bytes:
    text = _string(value, where)
    if not text:
        return b""
    if not (text.isascii() and text.isdigit()) or len(text) > 78 or int(text) >= 1 << 256:
        raise RefJsonError(f"field {where}: expected a decimal uint256, got {text[:80]!r}")
    number = int(text)
    return number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""


def _decimal_out(value: bytes) -> str:
    return str(int.from_bytes(value, "big"))


def _reason(value: object, where: str) -> str:
    return reject_from_reference(_string(value, where))


def _directive(value: object, where: str) -> str:
    text = _string(value, where)
    return "" if text == "continue" else text


def _directive_out(value: str) -> str:
    return value or "continue"


def _same(value: Any) -> object:
    return value


STRING: Final = Scalar("string", _string, _same)
BOOL: Final = Scalar("bool", _boolean, _same)
UINT32: Final = Scalar("uint32", _unsigned(32), _same)
UINT64: Final = Scalar("uint64", _unsigned(64), _same)
FLOAT64: Final = Scalar("float64", _number, _same)
LEVEL: Final = Scalar("level", _level, _level_out)
BYTES: Final = Scalar("base64", _base64, _base64_out)
ADDRESS: Final = Scalar("address", _address, _hex_out)
HEX: Final = Scalar("hex", _hex, _hex_out)
DECIMAL: Final = Scalar("decimal", _decimal, _decimal_out)
REASON: Final = Scalar("reason", _reason, _same)
DIRECTIVE: Final = Scalar("directive", _directive, _directive_out)


# -- reject reasons ----------------------------------------------------------------------------

_REJECTS: Final = frozenset(r.value for r in Reject)
_REFERENCE_REASONS: Final[tuple[tuple[re.Pattern[str], Reject], ...]] = (
    (re.compile(r"nonce too low: tx=\d+ account=\d+( \(L4-local\))?"), Reject.NONCE_TOO_LOW),
    # A zero balance cannot pay a non-zero fee: geth's "insufficient funds".
    (re.compile(r"sender has zero balance( \(L4-local\))?"), Reject.INSUFFICIENT_BALANCE),
    # r or s outside (0, n): the signature cannot be valid.
    (re.compile(r"signature [rs] (is zero|>= curve order)"), Reject.BAD_SIGNATURE),
)


def reject_from_reference(text: str) -> str:
    """ioswarm's name for a reject reason: an ioswarm reason as it is, the reference's text
    for a rule ioswarm names (``nonce too low: tx=.. account=..``, ``sender has zero
    balance``, ``signature r is zero`` ...) as that rule, any other text kept (cut to
    :data:`MAX_REASON_CHARS`) as a reason no rule has."""
    if text in _REJECTS or text.startswith(BAD_FIELD_PREFIX):
        return text[:MAX_REASON_CHARS]
    for pattern, reject in _REFERENCE_REASONS:
        if pattern.fullmatch(text):
            return reject.value
    return text[:MAX_REASON_CHARS]


# -- message tables ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """One JSON key and the protobuf field it maps to.

    ``kind`` is a :class:`Scalar` or a :class:`MessageSpec`; ``repeated`` fields are JSON
    arrays. ``omitempty`` leaves the key out when empty, as the Go tag does; ``extension``
    marks an ioswarm key the Go structs do not have (their decoder ignores it).
    """

    json: str
    pb: str
    kind: Scalar | MessageSpec
    repeated: bool = False
    omitempty: bool = False
    extension: bool = False


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """A reference message: its Go name, its ioswarm message and its fields in Go order."""

    name: str
    message: Callable[[], Any]
    fields: tuple[Field, ...]

    def keys(self, extensions: bool = True) -> tuple[str, ...]:
        """The JSON keys, in order (without the ioswarm extensions when asked)."""
        return tuple(f.json for f in self.fields if extensions or not f.extension)


def _f(
    json_name: str,
    kind: Scalar | MessageSpec,
    *,
    pb_name: str = "",
    repeated: bool = False,
    omitempty: bool = False,
    extension: bool = False,
) -> Field:
    return Field(json_name, pb_name or json_name, kind, repeated, omitempty, extension)


REGISTER_REQUEST: Final = MessageSpec(
    "RegisterRequest",
    pb.RegisterRequest,
    (
        _f("agent_id", STRING),
        _f("capability", LEVEL),
        _f("region", STRING),
        _f("version", STRING),
        _f("wallet_address", STRING, omitempty=True),
    ),
)
REGISTER_RESPONSE: Final = MessageSpec(
    "RegisterResponse",
    pb.RegisterResponse,
    (
        _f("accepted", BOOL),
        _f("reason", STRING, omitempty=True),
        _f("heartbeat_interval_sec", UINT32),
        _f("chain_id", UINT64, extension=True),
    ),
)
GET_TASKS_REQUEST: Final = MessageSpec(
    "GetTasksRequest",
    pb.GetTasksRequest,
    (_f("agent_id", STRING), _f("max_level", LEVEL), _f("max_batch_size", UINT32)),
)
ACCOUNT_SNAPSHOT: Final = MessageSpec(
    "AccountSnapshot",
    pb.AccountSnapshot,
    (
        _f("address", ADDRESS),
        _f("balance", DECIMAL),
        _f("nonce", UINT64),
        _f("code_hash", BYTES, omitempty=True),
    ),
)
TASK_PACKAGE: Final = MessageSpec(
    "TaskPackage",
    pb.TaskPackage,
    (
        _f("task_id", UINT32),
        _f("tx_raw", BYTES),
        _f("level", LEVEL),
        _f("sender", ACCOUNT_SNAPSHOT),
        _f("receiver", ACCOUNT_SNAPSHOT),
        _f("block_height", UINT64),
        _f("tx_hash", HEX, extension=True),
        _f("block_gas_limit", UINT64, extension=True),
    ),
)
TASK_BATCH: Final = MessageSpec(
    "TaskBatch",
    pb.TaskBatch,
    (
        _f("batch_id", STRING),
        _f("tasks", TASK_PACKAGE, repeated=True),
        _f("timestamp", UINT64),
        _f("chain_id", UINT64, extension=True),
    ),
)
STATE_CHANGE: Final = MessageSpec(
    "StateChange",
    pb.StorageChange,
    (
        _f("address", ADDRESS),
        _f("slot", HEX),
        _f("old_value", HEX),
        _f("new_value", HEX),
    ),
)
LOG_ENTRY: Final = MessageSpec(
    "LogEntry",
    pb.LogEntry,
    (_f("address", ADDRESS), _f("topics", HEX, repeated=True), _f("data", BYTES)),
)
TASK_RESULT: Final = MessageSpec(
    "TaskResult",
    pb.TaskResult,
    (
        _f("task_id", UINT32),
        _f("valid", BOOL),
        _f("reject_reason", REASON, omitempty=True),
        _f("gas_estimate", UINT64),
        _f("latency_us", UINT64),
        _f("gas_used", UINT64, omitempty=True),
        _f("return_data", BYTES, omitempty=True),
        _f("state_changes", STATE_CHANGE, repeated=True, omitempty=True),
        _f("logs", LOG_ENTRY, repeated=True, omitempty=True),
        _f("exec_error", STRING, omitempty=True),
        _f("sender", ADDRESS, omitempty=True, extension=True),
    ),
)
BATCH_RESULT: Final = MessageSpec(
    "BatchResult",
    pb.BatchResult,
    (
        _f("agent_id", STRING),
        _f("batch_id", STRING),
        _f("results", TASK_RESULT, repeated=True),
        _f("timestamp", UINT64),
    ),
)
SUBMIT_RESPONSE: Final = MessageSpec(
    "SubmitResponse",
    pb.SubmitResponse,
    (
        _f("accepted", BOOL),
        _f("reason", STRING, omitempty=True),
        _f("accepted_count", UINT32, extension=True),
    ),
)
HEARTBEAT_REQUEST: Final = MessageSpec(
    "HeartbeatRequest",
    pb.HeartbeatRequest,
    (
        _f("agent_id", STRING),
        _f("tasks_processed", UINT32),
        _f("tasks_pending", UINT32),
        _f("cpu_usage", FLOAT64),
        _f("mem_usage", FLOAT64),
    ),
)
PAYOUT_INFO: Final = MessageSpec(
    "PayoutInfo",
    pb.PayoutInfo,
    (
        _f("epoch", UINT64),
        _f("amount_iotx", FLOAT64),
        _f("rank", UINT32),
        _f("total_agents", UINT32),
        _f("amount_wei", STRING, omitempty=True, extension=True),
        _f("tx_hash", STRING, omitempty=True, extension=True),
    ),
)
HEARTBEAT_RESPONSE: Final = MessageSpec(
    "HeartbeatResponse",
    pb.HeartbeatResponse,
    (
        _f("alive", BOOL),
        _f("directive", DIRECTIVE),
        _f("payout", PAYOUT_INFO, omitempty=True),
    ),
)
STREAM_STATE_DIFFS_REQUEST: Final = MessageSpec(
    "StreamStateDiffsRequest",
    pb.StreamStateDiffsRequest,
    (_f("agent_id", STRING), _f("from_height", UINT64)),
)
DOWNLOAD_SNAPSHOT_REQUEST: Final = MessageSpec(
    "DownloadSnapshotRequest", pb.DownloadSnapshotRequest, (_f("agent_id", STRING),)
)


# -- mapping -----------------------------------------------------------------------------------


def _fill(spec: MessageSpec, obj: object, msg: Any, where: str) -> None:
    if not isinstance(obj, Mapping):
        raise _wrong(where or spec.name, f"a JSON object ({spec.name})", obj)
    for f in spec.fields:
        value = obj.get(f.json)
        path = f"{where}.{f.json}" if where else f.json
        kind = f.kind
        if f.repeated:
            if value is None:
                continue
            if not isinstance(value, list):
                raise _wrong(path, "an array", value)
            target = getattr(msg, f.pb)
            for i, item in enumerate(value):
                if isinstance(kind, MessageSpec):
                    _fill(kind, item, target.add(), f"{path}[{i}]")
                else:
                    target.append(kind.decode(item, f"{path}[{i}]"))
        elif isinstance(kind, MessageSpec):
            if value is not None:  # a nil pointer in Go: the field stays unset
                sub = getattr(msg, f.pb)
                sub.SetInParent()
                _fill(kind, value, sub, path)
        else:
            setattr(msg, f.pb, kind.decode(value, path))


def from_json(spec: MessageSpec, obj: object) -> Any:
    """The ioswarm message of a decoded reference JSON object."""
    msg = spec.message()
    _fill(spec, obj, msg, "")
    return msg


def to_json(spec: MessageSpec, msg: Any) -> dict[str, object]:
    """The reference JSON object of an ioswarm message, keys in Go field order."""
    out: dict[str, object] = {}
    for f in spec.fields:
        kind = f.kind
        if f.repeated:
            items = getattr(msg, f.pb)
            if f.omitempty and not items:
                continue
            if isinstance(kind, MessageSpec):
                out[f.json] = [to_json(kind, item) for item in items]
            else:
                out[f.json] = [kind.encode(item) for item in items]
        elif isinstance(kind, MessageSpec):
            if msg.HasField(f.pb):
                out[f.json] = to_json(kind, getattr(msg, f.pb))
            elif not f.omitempty:
                out[f.json] = None
        else:
            value = getattr(msg, f.pb)
            if f.omitempty and not value:
                continue
            out[f.json] = kind.encode(value)
    return out


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 20:  # uint64 has 20 digits; a longer number fits no field
        raise RefJsonError(f"number {text[:24]}... is too large for any field")
    return int(text)


def _no_constant(name: str) -> float:
    raise RefJsonError(f"{name} is not JSON")


def decode(spec: MessageSpec, data: bytes, max_values: int) -> Any:
    """The ioswarm message of reference JSON bytes, bounded by :func:`check_shape` first.

    Raises :class:`RefJsonError` naming the problem: not JSON, too big, a field of the wrong
    type or out of range.
    """
    try:
        check_shape(data, max_values)
        obj = json.loads(data, parse_int=_bounded_int, parse_constant=_no_constant)
        return from_json(spec, obj)
    except RefJsonError as exc:
        raise RefJsonError(f"{spec.name}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise RefJsonError(f"{spec.name}: not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise RefJsonError(f"{spec.name}: not valid JSON: {exc.msg} at offset {exc.pos}") from exc
    except RecursionError as exc:  # pragma: no cover - check_shape refuses deep nesting first
        raise RefJsonError(f"{spec.name}: JSON nested too deep") from exc


def encode(spec: MessageSpec, msg: Any) -> bytes:
    """Reference JSON bytes of an ioswarm message (compact, as Go's ``json.Marshal``)."""
    return json.dumps(to_json(spec, msg), separators=(",", ":")).encode()
