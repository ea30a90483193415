"""Counting a protobuf message's top-level fields from its bytes, without decoding it.

A request's size alone does not bound what decoding it costs: a few megabytes of empty
repeated sub-messages become millions of objects. The coordinator therefore counts the entries
of a repeated field on the raw bytes first and refuses a body with too many before any object
is built. The scan walks top-level fields only (nested messages are skipped by their length) and
stops after ``max_fields`` of them, so its cost is bounded by the limit it enforces, not by
what the peer sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from ioswarm.errors import ProtocolError

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5
_MAX_VARINT_BYTES = 10


class WireFormatError(ProtocolError):
    """The bytes are not a well-formed protobuf message."""


@dataclass(frozen=True)
class FieldCount:
    """What a scan found: how often the field occurred, and whether the scan stopped early
    because the message had more than ``max_fields`` top-level fields."""

    count: int
    truncated: bool


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    end = min(len(data), pos + _MAX_VARINT_BYTES)
    while pos < end:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise WireFormatError("truncated or overlong varint")


def count_field(data: bytes, field_number: int, max_fields: int) -> FieldCount:
    """Occurrences of top-level ``field_number`` in ``data``, scanning at most ``max_fields``
    top-level fields (``truncated`` says the message has more).

    Raises :class:`WireFormatError` for bytes that cannot be a protobuf message (truncated
    fields, groups, unknown wire types, field number 0).
    """
    pos = seen = count = 0
    size = len(data)
    while pos < size:
        if seen == max_fields:
            return FieldCount(count, truncated=True)
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireFormatError("field number 0")
        if wire == _VARINT:
            _, pos = _varint(data, pos)
        elif wire == _I64:
            pos += 8
        elif wire == _I32:
            pos += 4
        elif wire == _LEN:
            length, pos = _varint(data, pos)
            pos += length
        else:  # groups are not used by ioswarm's protocol; wire types 6 and 7 do not exist
            raise WireFormatError(f"unsupported wire type {wire} in field {number}")
        if pos > size:
            raise WireFormatError(f"field {number} runs past the end of the message")
        seen += 1
        if number == field_number:
            count += 1
    return FieldCount(count, truncated=False)
