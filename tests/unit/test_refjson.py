"""The reference agent's JSON wire: Go field names, level shift, strings, defaults, bounds."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor

from ioswarm.coordinator.wirecodec import MALFORMED, Refused, methods
from ioswarm.core import refjson
from ioswarm.core.refjson import Codec, RefJsonError, check_shape, reject_from_reference, sniff
from ioswarm.core.rules import Reject
from ioswarm.proto import ioswarm_pb2 as pb

U64_MAX = 2**64 - 1
ADDR = "0x" + "ab" * 20

# The Go structs' JSON keys, in field order, as iotex-core ioswarm/proto/types.go (branch
# ioswarm-v2.3.5) and ioswarm-agent types.go declare them.
GO_KEYS: dict[str, tuple[str, ...]] = {
    "RegisterRequest": ("agent_id", "capability", "region", "version", "wallet_address"),
    "RegisterResponse": ("accepted", "reason", "heartbeat_interval_sec"),
    "GetTasksRequest": ("agent_id", "max_level", "max_batch_size"),
    "AccountSnapshot": ("address", "balance", "nonce", "code_hash"),
    "TaskPackage": ("task_id", "tx_raw", "level", "sender", "receiver", "block_height"),
    "TaskBatch": ("batch_id", "tasks", "timestamp"),
    "StateChange": ("address", "slot", "old_value", "new_value"),
    "LogEntry": ("address", "topics", "data"),
    "TaskResult": (
        "task_id",
        "valid",
        "reject_reason",
        "gas_estimate",
        "latency_us",
        "gas_used",
        "return_data",
        "state_changes",
        "logs",
        "exec_error",
    ),
    "BatchResult": ("agent_id", "batch_id", "results", "timestamp"),
    "SubmitResponse": ("accepted", "reason"),
    "HeartbeatRequest": ("agent_id", "tasks_processed", "tasks_pending", "cpu_usage", "mem_usage"),
    "HeartbeatResponse": ("alive", "directive", "payout"),
    "PayoutInfo": ("epoch", "amount_iotx", "rank", "total_agents"),
    "StreamStateDiffsRequest": ("agent_id", "from_height"),
    "DownloadSnapshotRequest": ("agent_id",),
}
SPECS = [
    refjson.REGISTER_REQUEST,
    refjson.REGISTER_RESPONSE,
    refjson.GET_TASKS_REQUEST,
    refjson.ACCOUNT_SNAPSHOT,
    refjson.TASK_PACKAGE,
    refjson.TASK_BATCH,
    refjson.STATE_CHANGE,
    refjson.LOG_ENTRY,
    refjson.TASK_RESULT,
    refjson.BATCH_RESULT,
    refjson.SUBMIT_RESPONSE,
    refjson.HEARTBEAT_REQUEST,
    refjson.HEARTBEAT_RESPONSE,
    refjson.PAYOUT_INFO,
    refjson.STREAM_STATE_DIFFS_REQUEST,
    refjson.DOWNLOAD_SNAPSHOT_REQUEST,
]


def loads(data: bytes) -> Any:
    return json.loads(data)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_keys_are_the_go_structs_json_names_in_order(spec: refjson.MessageSpec) -> None:
    """Every mapped message has exactly the Go struct's JSON keys, in its order, plus only
    keys marked as ioswarm extensions."""
    assert spec.keys(extensions=False) == GO_KEYS[spec.name]


def test_go_agents_register_request_maps_with_the_level_shift() -> None:
    """The Go agent's RegisterRequest (capability 0 = L1) becomes ioswarm's L1; 1 is L2; an
    absent capability is Go's zero value, L1; an absent wallet is empty."""
    body = {"agent_id": "go-1", "capability": 0, "region": "eu", "version": "v1.4.0"}
    msg = refjson.decode(refjson.REGISTER_REQUEST, json.dumps(body).encode(), 256)
    assert (msg.agent_id, msg.capability, msg.region, msg.version) == ("go-1", 1, "eu", "v1.4.0")
    assert msg.wallet_address == ""
    two = refjson.from_json(refjson.REGISTER_REQUEST, {**body, "capability": 1})
    assert two.capability == pb.L2
    assert refjson.from_json(refjson.REGISTER_REQUEST, {"agent_id": "x"}).capability == pb.L1
    four = refjson.from_json(refjson.REGISTER_REQUEST, {**body, "capability": 3})
    assert four.capability == pb.L4


def test_task_batch_is_written_as_the_go_agent_reads_it() -> None:
    """Levels shifted down by one, tx_raw base64, balance a decimal string, addresses 0x hex,
    64-bit numbers as JSON numbers, an absent sender null, an empty code hash left out."""
    raw = bytes(range(200))
    batch = pb.TaskBatch(batch_id="b-7", timestamp=U64_MAX, chain_id=31337)
    t = batch.tasks.add(task_id=42, tx_raw=raw, level=pb.L2, block_height=U64_MAX)
    t.tx_hash = b"\x11" * 32
    t.block_gas_limit = 30_000_000
    t.sender.balance = (10**30).to_bytes(13, "big")
    t.sender.nonce = U64_MAX
    t.receiver.address = bytes.fromhex(ADDR[2:])
    t.receiver.code_hash = b"\x22" * 32
    batch.tasks.add(task_id=43, tx_raw=b"\x01", level=pb.L1)
    obj = loads(refjson.encode(refjson.TASK_BATCH, batch))
    assert list(obj) == ["batch_id", "tasks", "timestamp", "chain_id"]
    assert obj["timestamp"] == U64_MAX and obj["chain_id"] == 31337
    first, second = obj["tasks"]
    assert first == {
        "task_id": 42,
        "tx_raw": base64.b64encode(raw).decode(),
        "level": 1,
        "sender": {"address": "", "balance": str(10**30), "nonce": U64_MAX},
        "receiver": {
            "address": ADDR,
            "balance": "0",
            "nonce": 0,
            "code_hash": base64.b64encode(b"\x22" * 32).decode(),
        },
        "block_height": U64_MAX,
        "tx_hash": "0x" + "11" * 32,
        "block_gas_limit": 30_000_000,
    }
    assert second["level"] == 0 and second["sender"] is None and second["receiver"] is None
    assert b" " not in refjson.encode(refjson.TASK_BATCH, batch)  # compact, as json.Marshal


def test_results_map_reasons_ignore_unknown_fields_and_read_the_sender_extension() -> None:
    """A Go BatchResult: ``note`` and other unknown keys are ignored, the reference's reject
    texts become ioswarm's rules, an unknown text is kept, and ``sender`` is read as bytes."""
    body = {
        "agent_id": "go-1",
        "batch_id": "b-1",
        "results": [
            {"task_id": 1, "valid": True, "gas_estimate": 21000, "latency_us": 12, "note": "x"},
            {
                "task_id": 2,
                "valid": False,
                "reject_reason": "nonce too low: tx=3 account=5",
                "gas_estimate": 0,
                "latency_us": 9,
            },
            {"task_id": 3, "valid": False, "reject_reason": "sender has zero balance"},
            {"task_id": 4, "valid": False, "reject_reason": "tx too short for signature"},
            {"task_id": 5, "valid": True, "sender": ADDR, "future_field": {"a": [1, 2]}},
        ],
        "timestamp": 1_700_000_000_000,
        "extra": None,
    }
    msg = refjson.decode(refjson.BATCH_RESULT, json.dumps(body).encode(), 1024)
    r = msg.results
    assert (r[0].valid, r[0].gas_estimate, r[0].latency_us, r[0].sender) == (True, 21000, 12, b"")
    assert r[1].reject_reason == Reject.NONCE_TOO_LOW
    assert r[2].reject_reason == Reject.INSUFFICIENT_BALANCE
    assert r[3].reject_reason == "tx too short for signature"
    assert r[4].sender == bytes.fromhex(ADDR[2:])
    assert msg.timestamp == 1_700_000_000_000


@pytest.mark.parametrize(
    ("text", "mapped"),
    [
        ("nonce too low: tx=0 account=1", Reject.NONCE_TOO_LOW),
        ("nonce too low: tx=0 account=1 (L4-local)", Reject.NONCE_TOO_LOW),
        ("sender has zero balance", Reject.INSUFFICIENT_BALANCE),
        ("signature r is zero", Reject.BAD_SIGNATURE),
        ("signature s is zero", Reject.BAD_SIGNATURE),
        ("signature r >= curve order", Reject.BAD_SIGNATURE),
        ("signature s >= curve order", Reject.BAD_SIGNATURE),
        ("high_s", Reject.HIGH_S),
        ("bad_field:nonce", "bad_field:nonce"),
        ("missing sender account state", "missing sender account state"),
        ('invalid sender balance: "x"', 'invalid sender balance: "x"'),
        ("nonce too low: tx=a account=1", "nonce too low: tx=a account=1"),
        ("z" * 500, "z" * refjson.MAX_REASON_CHARS),
    ],
)
def test_reject_reasons(text: str, mapped: str) -> None:
    """Reference texts for a rule ioswarm names map to it; others are kept (bounded)."""
    assert reject_from_reference(text) == mapped


def test_directive_defaults_to_continue_and_payout_is_left_out_when_absent() -> None:
    """ioswarm's empty directive is the reference's "continue"; no payout, no key."""
    plain = loads(refjson.encode(refjson.HEARTBEAT_RESPONSE, pb.HeartbeatResponse(alive=True)))
    assert plain == {"alive": True, "directive": "continue"}
    bye = pb.HeartbeatResponse(alive=True, directive="shutdown")
    bye.payout.CopyFrom(pb.PayoutInfo(epoch=U64_MAX, amount_iotx=1.5, rank=2, total_agents=3))
    obj = loads(refjson.encode(refjson.HEARTBEAT_RESPONSE, bye))
    assert obj["directive"] == "shutdown"
    assert obj["payout"] == {"epoch": U64_MAX, "amount_iotx": 1.5, "rank": 2, "total_agents": 3}
    back = refjson.from_json(refjson.HEARTBEAT_RESPONSE, {"alive": True, "directive": "continue"})
    assert back.directive == ""


def test_register_and_submit_responses() -> None:
    """Go's omitempty drops an empty reason; the extensions ride along."""
    reg = pb.RegisterResponse(accepted=True, heartbeat_interval_sec=10, chain_id=4689)
    assert loads(refjson.encode(refjson.REGISTER_RESPONSE, reg)) == {
        "accepted": True,
        "heartbeat_interval_sec": 10,
        "chain_id": 4689,
    }
    sub = pb.SubmitResponse(accepted=True, accepted_count=3)
    assert loads(refjson.encode(refjson.SUBMIT_RESPONSE, sub)) == {
        "accepted": True,
        "accepted_count": 3,
    }


def populated() -> dict[str, Any]:
    """One message per spec with every mapped field set."""
    result = pb.TaskResult(
        task_id=7,
        valid=True,
        reject_reason=Reject.HIGH_S,
        gas_estimate=U64_MAX,
        latency_us=5,
        gas_used=21_000,
        return_data=b"\x01\x02",
        exec_error="boom",
        sender=b"\x05" * 20,
    )
    result.state_changes.add(address=b"\x01" * 20, slot=b"\x02" * 32, new_value=b"\x03" * 32)
    result.logs.add(address=b"\x04" * 20, topics=[b"\x05" * 32, b"\x06" * 32], data=b"\x07")
    batch = pb.TaskBatch(batch_id="b", timestamp=3, chain_id=U64_MAX)
    task = batch.tasks.add(task_id=1, tx_raw=b"\xaa", level=pb.L4, block_height=9)
    task.tx_hash, task.block_gas_limit = b"\x09" * 32, 30_000_000
    task.sender.balance, task.sender.nonce = b"\x01\x00", 4
    task.receiver.address, task.receiver.code_hash = b"\x08" * 20, b"\x07" * 32
    payout = pb.PayoutInfo(epoch=2, amount_iotx=0.25, rank=1, total_agents=4)
    payout.amount_wei, payout.tx_hash = "250000000000000000", "0x" + "ee" * 32
    beat = pb.HeartbeatResponse(alive=False, directive="reregister")
    beat.payout.CopyFrom(payout)
    return {
        "RegisterRequest": pb.RegisterRequest(
            agent_id="a", capability=pb.L2, region="r", version="v", wallet_address=ADDR
        ),
        "RegisterResponse": pb.RegisterResponse(
            accepted=False, reason="no", heartbeat_interval_sec=10, chain_id=1
        ),
        "GetTasksRequest": pb.GetTasksRequest(agent_id="a", max_level=pb.L1, max_batch_size=10),
        "TaskBatch": batch,
        "BatchResult": pb.BatchResult(
            agent_id="a", batch_id="b", results=[result], timestamp=U64_MAX
        ),
        "SubmitResponse": pb.SubmitResponse(accepted=True, reason="r", accepted_count=1),
        "HeartbeatRequest": pb.HeartbeatRequest(
            agent_id="a", tasks_processed=5, tasks_pending=1, cpu_usage=0.5, mem_usage=12.0
        ),
        "HeartbeatResponse": beat,
        "StreamStateDiffsRequest": pb.StreamStateDiffsRequest(agent_id="a", from_height=U64_MAX),
        "DownloadSnapshotRequest": pb.DownloadSnapshotRequest(agent_id="a"),
    }


TOP = [s for s in SPECS if s.name in populated()]


@pytest.mark.parametrize("spec", TOP, ids=lambda s: s.name)
def test_round_trip_through_json_text(spec: refjson.MessageSpec) -> None:
    """Every mapped field survives message -> JSON bytes -> message, and the JSON object
    survives object -> message -> object."""
    msg = populated()[spec.name]
    data = refjson.encode(spec, msg)
    again = refjson.decode(spec, data, 10_000)
    assert again == msg
    obj = json.loads(data)
    assert refjson.to_json(spec, refjson.from_json(spec, obj)) == obj


def test_nulls_are_zero_values() -> None:
    """``null`` for any field is Go's zero value, as json.Unmarshal leaves it."""
    body = {k: None for k in GO_KEYS["TaskResult"]} | {"sender": None}
    msg = refjson.from_json(refjson.TASK_RESULT, body)
    assert msg == pb.TaskResult()
    pkg = refjson.from_json(refjson.TASK_PACKAGE, {"sender": None, "level": None})
    assert not pkg.HasField("sender") and pkg.level == pb.L1


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"not json", "not valid JSON"),
        (b'{"agent_id": "a"', "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"agent_id": 7}', "field agent_id: expected a string, got number"),
        (b'{"agent_id": "a", "capability": "0"}', "field capability: expected a task level"),
        (b'{"agent_id": "a", "capability": 4}', "is not a reference task level"),
        (b'{"agent_id": "a", "capability": -1}', "is not a reference task level"),
        (b'{"agent_id": "a", "capability": 1.0}', "expected a task level number"),
        (b'{"agent_id": "a", "capability": true}', "expected a task level number"),
        (b'{"agent_id": "a", "capability": NaN}', "NaN is not JSON"),
        (b'{"agent_id": "\xff"}', "not UTF-8"),
    ],
)
def test_bad_register_json_names_the_problem(body: bytes, named: str) -> None:
    """Each malformed body raises RefJsonError whose message names the field or problem."""
    with pytest.raises(RefJsonError, match="RegisterRequest") as info:
        refjson.decode(refjson.REGISTER_REQUEST, body, 256)
    assert named in str(info.value)


@pytest.mark.parametrize(
    ("result", "named"),
    [
        ({"task_id": 2**32}, "results[0].task_id: 4294967296 is out of range for uint32"),
        ({"task_id": -1}, "out of range for uint32"),
        ({"task_id": 1, "gas_estimate": 2**64}, "out of range for uint64"),
        ({"task_id": 1, "gas_estimate": 1e3}, "expected an integer (uint64)"),
        ({"task_id": 1, "valid": 1}, "results[0].valid: expected true or false"),
        ({"task_id": 1, "sender": "0x1234"}, "results[0].sender: expected a 0x-prefixed"),
        ({"task_id": 1, "sender": 5}, "results[0].sender: expected a 0x-prefixed"),
        ({"task_id": 1, "return_data": "!!"}, "results[0].return_data: not standard base64"),
        ({"task_id": 1, "logs": {}}, "results[0].logs: expected an array"),
    ],
)
def test_bad_result_fields_are_named_with_their_path(result: dict[str, Any], named: str) -> None:
    """Out-of-range, fractional or mistyped fields are refused with their path."""
    body = json.dumps({"agent_id": "a", "results": [result]}).encode()
    with pytest.raises(RefJsonError) as info:
        refjson.decode(refjson.BATCH_RESULT, body, 1024)
    assert named in str(info.value)


def test_huge_numbers_are_refused_before_conversion() -> None:
    """A number with more digits than uint64 has is refused without building it."""
    body = b'{"agent_id": "a", "timestamp": 1' + b"0" * 5000 + b"}"
    with pytest.raises(RefJsonError, match="too large"):
        refjson.decode(refjson.BATCH_RESULT, body, 1024)


def test_floats_must_be_finite() -> None:
    """cpu_usage 1e999 (infinity after parsing) is refused; integers are fine for a float64."""
    with pytest.raises(RefJsonError, match="not a finite number"):
        refjson.decode(refjson.HEARTBEAT_REQUEST, b'{"agent_id":"a","cpu_usage":1e999}', 64)
    ok = refjson.decode(refjson.HEARTBEAT_REQUEST, b'{"agent_id":"a","cpu_usage":3}', 64)
    assert ok.cpu_usage == 3.0


def test_shape_bounds_count_values_and_depth_outside_strings() -> None:
    """Values and nesting are counted on the raw bytes; brackets inside strings do not count."""
    check_shape(b'{"a": "[[[[[[[[[[[,,,,,,,,:::{{{{"}', max_values=2, max_depth=1)
    with pytest.raises(RefJsonError, match="nested deeper than 3 levels"):
        check_shape(b'{"a": [[[1]]]}', max_values=100, max_depth=3)
    check_shape(b'{"a": [[1]]}', max_values=100, max_depth=3)
    with pytest.raises(RefJsonError, match="6 JSON values; at most 4"):
        check_shape(b"[[],[],[]]", max_values=4)
    escaped = b'{"a": "quote \\" then [[[[ ,,,,"}'
    check_shape(escaped, max_values=2, max_depth=1)


def test_deep_and_wide_json_is_refused_before_decoding() -> None:
    """A million empty arrays or a thousand nested ones never reach json.loads."""
    wide = b'{"agent_id":"a","results":[' + b",".join([b"[]"] * 1_000_000) + b"]}"
    with pytest.raises(RefJsonError, match="JSON values"):
        refjson.decode(refjson.BATCH_RESULT, wide, 64 * 1001)
    deep = b'{"agent_id":"a","note":' + b"[" * 1000 + b"]" * 1000 + b"}"
    with pytest.raises(RefJsonError, match="nested deeper"):
        refjson.decode(refjson.BATCH_RESULT, deep, 10_000)


def test_sniff_tells_json_from_every_ioswarm_protobuf_message() -> None:
    """``{`` is JSON; no field of any ioswarm message can start a message with that byte (it
    would be field 15 with wire type 3, a group), so protobuf is never taken for JSON."""
    assert sniff(b'{"agent_id":"a"}') is Codec.JSON
    assert sniff(b"") is Codec.PROTOBUF
    assert sniff(b"\n\x01a") is Codec.PROTOBUF
    # The key byte 0x7b is (15 << 3) | 3: only a group field numbered 15 writes it.
    assert (15 << 3) | 3 == 0x7B
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        for field in message.fields:
            assert field.type != FieldDescriptor.TYPE_GROUP, (message.name, field.name)
    for name, msg in populated().items():
        assert sniff(msg.SerializeToString()) is Codec.PROTOBUF, name
        assert sniff(refjson.encode(next(s for s in TOP if s.name == name), msg)) is Codec.JSON


def test_method_wire_bounds_json_like_protobuf() -> None:
    """SubmitResults in JSON: oversize is RESOURCE_EXHAUSTED, more results than
    maxInflightPerAgent the same INVALID_ARGUMENT as in protobuf, bad JSON INVALID_ARGUMENT
    naming the problem; protobuf garbage is still "malformed request body"."""
    wire = methods(4096, 3)["SubmitResults"]
    big = wire.decode(b"{" + b" " * 5000 + b"}")
    assert big.codec is Codec.JSON
    assert isinstance(big.message, Refused) and big.message.status == "RESOURCE_EXHAUSTED"
    results = [{"task_id": i} for i in range(4)]
    body = json.dumps({"agent_id": "a", "results": results}).encode()
    many = wire.decode(body)
    proto = wire.decode(
        pb.BatchResult(agent_id="a", results=[pb.TaskResult()] * 4).SerializeToString()
    )
    assert many.message == proto.message
    assert many.message == Refused(
        "INVALID_ARGUMENT", "4 results in one batch; at most 3 (maxInflightPerAgent)"
    )
    bad = wire.decode(b'{"agent_id": "a", "results": [{"task_id": "1"}]}')
    assert isinstance(bad.message, Refused) and bad.message.status == "INVALID_ARGUMENT"
    assert bad.message.message == (
        "malformed JSON request body: BatchResult: field results[0].task_id: "
        "expected an integer (uint32), got string"
    )
    assert wire.decode(b"\xff\xff\xff\xff").message is MALFORMED
    ok = wire.decode(json.dumps({"agent_id": "a", "results": results[:3]}).encode())
    assert ok.codec is Codec.JSON and len(ok.message.results) == 3
    assert (
        wire.encode(Codec.JSON, pb.SubmitResponse(accepted=True))
        == b'{"accepted":true,"accepted_count":0}'
    )
    assert wire.encode(Codec.PROTOBUF, pb.SubmitResponse(accepted=True)) == b"\x08\x01"
