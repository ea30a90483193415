"""The raw protobuf field counter that guards decoding."""

from __future__ import annotations

import pytest

from ioswarm.core.wirescan import WireFormatError, count_field
from ioswarm.proto import ioswarm_pb2 as pb

RESULTS = pb.BatchResult.DESCRIPTOR.fields_by_name["results"].number


def batch(n: int, **extra: object) -> bytes:
    msg = pb.BatchResult(
        agent_id="agent-a", results=[pb.TaskResult(task_id=i, valid=True) for i in range(n)]
    )
    for name, value in extra.items():
        setattr(msg, name, value)
    return msg.SerializeToString()


def test_counts_the_repeated_field_of_a_real_message() -> None:
    """The count equals the number of results the message decodes to, other fields aside."""
    found = count_field(batch(37), RESULTS, max_fields=1000)
    assert found.count == 37 and not found.truncated


def test_empty_sub_messages_are_counted_too() -> None:
    """Empty results (two bytes each) count: they are what makes decoding expensive."""
    data = pb.BatchResult(results=[pb.TaskResult() for _ in range(500)]).SerializeToString()
    assert count_field(data, RESULTS, max_fields=1000).count == 500


def test_scan_stops_after_max_fields() -> None:
    """A message with more top-level fields than the limit is reported truncated, at the limit."""
    found = count_field(batch(5000), RESULTS, max_fields=300)
    assert found.truncated and found.count <= 300


def test_unknown_fields_count_against_the_limit() -> None:
    """Padding with unknown fields cannot make the scan walk past its limit."""
    padding = b"\x78\x01" * 10_000  # field 15, varint 1, repeated
    found = count_field(padding + batch(1), RESULTS, max_fields=100)
    assert found.truncated and found.count == 0


@pytest.mark.parametrize(
    "data",
    [
        b"\x1a\x05abc",  # length runs past the end
        b"\x1a",  # length missing
        b"\x08" + b"\xff" * 11,  # overlong varint
        b"\x00\x01",  # field number 0
        b"\x0b",  # group start
        b"\x0e",  # wire type 6
    ],
)
def test_malformed_bytes_are_refused(data: bytes) -> None:
    """Bytes that cannot be a protobuf message raise WireFormatError."""
    with pytest.raises(WireFormatError):
        count_field(data, RESULTS, max_fields=100)


def test_fixed_width_fields_are_skipped() -> None:
    """64- and 32-bit fields are skipped by their width."""
    data = b"\x09" + b"\x00" * 8 + b"\x15" + b"\x00" * 4 + b"\x1a\x00"
    assert count_field(data, RESULTS, max_fields=10).count == 1
