"""Each RPC's request decoding and response encoding, in the codec its caller speaks.

The methods are registered with identity (bytes) serializers, so that one port serves both
ioswarm's protobuf agents and the Go reference agent, whose JSON codec sends Go
``encoding/json`` text as ``application/grpc`` (:mod:`ioswarm.core.refjson`). A call's codec is
read from its request's first byte (:func:`~ioswarm.core.refjson.sniff`); the handler answers
every message of the call, stream messages included, in that codec.

Both decoders are bounded before any object is built: size first; for result batches, protobuf
results are counted on the raw bytes (:mod:`ioswarm.core.wirescan`) and JSON values and depth
likewise (:func:`~ioswarm.core.refjson.check_shape`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message

from ioswarm.core import refjson
from ioswarm.core.refjson import Codec, MessageSpec, RefJsonError
from ioswarm.core.wirescan import WireFormatError, count_field
from ioswarm.proto import ioswarm_pb2 as pb

__all__ = ["SMALL_REQUEST_BYTES", "Decoded", "MethodWire", "Refused", "methods"]

# Requests other than SubmitResults carry a few ids and numbers; none needs more.
SMALL_REQUEST_BYTES = 64 * 1024
# JSON values (keys, items, containers) such a request may have: a few ids and numbers.
SMALL_REQUEST_VALUES = 256
RESULTS_FIELD = pb.BatchResult.DESCRIPTOR.fields_by_name["results"].number
# Top-level fields a BatchResult may have besides its results (agent id, batch id, ...).
BATCH_OTHER_FIELDS = 8


@dataclass(frozen=True)
class Refused:
    """Stands in for a request refused before it was decoded, so the handler (which checks
    the caller first) can answer with this status."""

    status: str
    message: str


MALFORMED = Refused("INVALID_ARGUMENT", "malformed request body")


@dataclass(frozen=True)
class Decoded:
    """A call's request: the codec it came in and its message (or why it was refused)."""

    codec: Codec
    message: Any  # the request's protobuf message, or a Refused


def _too_many(found: int, limit: int, more: bool) -> Refused:
    return Refused(
        "INVALID_ARGUMENT",
        f"{'more than ' if more else ''}{found} results in one batch; at most {limit} "
        "(maxInflightPerAgent)",
    )


@dataclass(frozen=True)
class MethodWire:
    """One RPC's messages in both codecs. ``request_json``/``response_json`` None: the method
    has no reference JSON shape (a JSON call is decoded but answered with a refusal)."""

    request: type[Message]
    request_json: MessageSpec
    response_json: MessageSpec | None
    max_bytes: int = SMALL_REQUEST_BYTES
    max_results: int | None = None

    def decode(self, data: bytes) -> Decoded:
        """The request in its codec; a size, count or format problem is a :class:`Refused`."""
        codec = refjson.sniff(data)
        name = self.request.DESCRIPTOR.name
        if len(data) > self.max_bytes:
            return Decoded(
                codec,
                Refused(
                    "RESOURCE_EXHAUSTED", f"{name} of {len(data)} bytes; at most {self.max_bytes}"
                ),
            )
        if codec is Codec.JSON:
            return Decoded(codec, self._decode_json(data))
        return Decoded(codec, self._decode_protobuf(data))

    def _decode_protobuf(self, data: bytes) -> Message | Refused:
        if self.max_results is not None:
            try:
                found = count_field(data, RESULTS_FIELD, self.max_results + BATCH_OTHER_FIELDS)
            except WireFormatError:
                return MALFORMED
            if found.truncated or found.count > self.max_results:
                return _too_many(found.count, self.max_results, found.truncated)
        try:
            return self.request.FromString(data)
        except (DecodeError, ValueError, RuntimeError):
            return MALFORMED

    def _decode_json(self, data: bytes) -> Message | Refused:
        limit = SMALL_REQUEST_VALUES
        if self.max_results is not None:
            limit += refjson.RESULT_VALUES * self.max_results
        try:
            msg: Message = refjson.decode(self.request_json, data, limit)
        except RefJsonError as exc:
            return Refused("INVALID_ARGUMENT", f"malformed JSON request body: {exc}")
        if self.max_results is not None:
            count = len(msg.results)
            if count > self.max_results:
                return _too_many(count, self.max_results, False)
        return msg

    def encode(self, codec: Codec, msg: Message) -> bytes:
        """A response (or stream message) in the call's codec."""
        if codec is Codec.JSON:
            if self.response_json is None:  # pragma: no cover - handlers refuse such calls
                raise ValueError(f"{type(msg).__name__} has no reference JSON shape")
            return refjson.encode(self.response_json, msg)
        data: bytes = msg.SerializeToString()
        return data


def methods(max_message_bytes: int, max_results: int) -> dict[str, MethodWire]:
    """Every RPC's wire, with the result batch bounded by the configured limits."""
    return {
        "Register": MethodWire(
            pb.RegisterRequest, refjson.REGISTER_REQUEST, refjson.REGISTER_RESPONSE
        ),
        "GetTasks": MethodWire(pb.GetTasksRequest, refjson.GET_TASKS_REQUEST, refjson.TASK_BATCH),
        "SubmitResults": MethodWire(
            pb.BatchResult,
            refjson.BATCH_RESULT,
            refjson.SUBMIT_RESPONSE,
            max_bytes=max_message_bytes,
            max_results=max_results,
        ),
        "Heartbeat": MethodWire(
            pb.HeartbeatRequest, refjson.HEARTBEAT_REQUEST, refjson.HEARTBEAT_RESPONSE
        ),
        "StreamStateDiffs": MethodWire(
            pb.StreamStateDiffsRequest, refjson.STREAM_STATE_DIFFS_REQUEST, None
        ),
        "DownloadSnapshot": MethodWire(
            pb.DownloadSnapshotRequest, refjson.DOWNLOAD_SNAPSHOT_REQUEST, None
        ),
    }
