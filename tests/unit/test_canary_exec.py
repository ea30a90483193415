"""Executed L3 canaries without a node: the mint's variant, the judge, the reader's refusals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pytest

from ioswarm.core.canary import ExecutedCanaryTruth, judge_executed_canary
from ioswarm.core.execshadow import ExecEffects, Log, PredictedContext
from ioswarm.core.models import AccountSnapshot, Level, Verdict
from ioswarm.core.tx import decode_tx
from ioswarm.core.validation import check_l1, check_l2
from ioswarm.errors import MethodNotSupported, NodeError
from ioswarm.node.canarytruth import CanaryTruthReader
from ioswarm.node.rpc import JsonRpcTransport, RpcResult
from tests.unit.test_canary import CHAIN_ID, TOKEN, mint, template

SENDER = bytes.fromhex("ab" * 20)
TRUTH = ExecutedCanaryTruth(
    sender=SENDER,
    effects=ExecEffects(
        success=True,
        gas_used=51_234,
        logs=(Log(TOKEN, (b"\x01" * 32,), b"\x02"),),
        storage={(TOKEN, b"\x00" * 32): b"\x00" * 31 + b"\x07"},
        balances={SENDER: -51_234 * 9},
        nonces={SENDER: 6},
        code={},
        coinbase_fee=51_234 * 2,
    ),
)


def verdict(**changes: object) -> Verdict:
    """The honest answer to TRUTH, with ``changes`` to its effects or to the verdict."""
    effects = {k: v for k, v in changes.items() if hasattr(TRUTH.effects, k)}
    rest = {k: v for k, v in changes.items() if k not in effects}
    base = ExecEffects(**{**TRUTH.effects.__dict__, **effects})
    fields: dict[str, object] = {"task_id": 1, "valid": True, "sender": SENDER, "effects": base}
    fields.update(rest)
    return Verdict(**fields)  # type: ignore[arg-type]


def test_honest_answer_is_right() -> None:
    """An answer equal to the node's truth is judged right ("")."""
    assert judge_executed_canary(TRUTH, verdict()) == ""


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"valid": False}, "valid"),
        ({"declined": True}, "valid"),
        ({"sender": b"\x01" * 20}, "sender"),
        ({"effects": None}, "status"),
        ({"success": False}, "status"),
        ({"gas_used": 51_235}, "gas_used"),
        ({"logs": ()}, "logs"),
        ({"storage": {}}, "storage"),
        ({"balances": {}}, "balance"),
        ({"nonces": {}}, "nonce"),
        ({"code": {TOKEN: b"\x60"}}, "code"),
        ({"coinbase_fee": 0}, "coinbase_fee"),
    ],
)
def test_each_wrong_field_is_named(changes: dict[str, object], field: str) -> None:
    """Each way an answer can differ is judged wrong, naming the first differing field."""
    assert judge_executed_canary(TRUTH, verdict(**changes)) == field


def test_fake_execution_without_state_changes_is_wrong() -> None:
    """A plausible success with the right gas but no logs or state changes is caught."""
    fake = verdict(logs=(), storage={}, balances={}, nonces={}, coinbase_fee=0)
    assert judge_executed_canary(TRUTH, fake) == "logs"


@pytest.mark.parametrize("tx_type", ["legacy", "2930", "1559"])
def test_executable_variant_is_valid_for_its_fabricated_state(tx_type: str) -> None:
    """The variant is signed by a throwaway key, copies the template, and passes the L2 rules."""
    m = mint()
    t = template(tx_type, Level.L3)
    variant = m.executable(t, base_fee=7)
    assert variant is not None
    tx, original = decode_tx(variant.raw_tx), decode_tx(t.raw_tx)
    assert (tx.to, tx.value, tx.data, tx.gas_limit, tx.max_fee) == (
        original.to,
        original.value,
        original.data,
        original.gas_limit,
        original.max_fee,
    )
    assert variant.sender in m.addresses and check_l1(variant.raw_tx, CHAIN_ID).sender == (
        variant.sender
    )
    assert tx.nonce == variant.nonce and tx.tx_hash == variant.tx_hash
    assert variant.balance > tx.value + tx.gas_limit * tx.max_fee
    state = AccountSnapshot(b"", variant.balance, variant.nonce)
    assert check_l2(variant.raw_tx, CHAIN_ID, state, t.block_gas_limit).valid


@pytest.mark.parametrize(
    ("tx_type", "level", "base_fee"),
    [
        ("4844", Level.L3, 7),  # blobs are not part of a traced call
        ("7702", Level.L3, 7),  # nor are authorizations
        ("1559", Level.L2, 7),  # only executing templates
        ("1559", Level.L3, 10**12),  # fee cap below the base fee: not valid
    ],
)
def test_executable_refuses_what_it_cannot_make_valid(
    tx_type: str, level: Level, base_fee: int
) -> None:
    """Templates whose variant would not be a plain valid call give None."""
    assert mint().executable(template(tx_type, level), base_fee=base_fee) is None


def test_executable_never_repeats_a_transaction() -> None:
    """Variants of one template are distinct transactions."""
    m = mint()
    t = template("1559", Level.L3)
    hashes = [v.tx_hash for _ in range(20) if (v := m.executable(t, base_fee=7)) is not None]
    assert len(hashes) == len(set(hashes)) >= 10


class ScriptedTraces:
    """A transport answering the reader's four traces with scripted values (or one error)."""

    safe_url = "scripted"

    def __init__(
        self,
        gas: int = 30_000,
        struct_gas: int = 30_000,
        ops: tuple[str, ...] = (),
        ignores: str = "",
    ):
        self.gas, self.struct_gas, self.ops = gas, struct_gas, ops
        self.error: NodeError | None = None
        self.ignores = ignores  # a block override this node does not honour

    async def call(self, method: str, params: Sequence[Any]) -> Any:
        """The context probe: the six context words, as executed (or one override ignored)."""
        if self.error is not None:
            raise self.error
        asked = params[2]["blockOverrides"]
        words = [asked[k] for k in ("number", "time", "random", "gasLimit", "baseFee", "coinbase")]
        if self.ignores:
            words[["number", "time", "random"].index(self.ignores)] = "0x0"
        return {"output": "0x" + "".join(hex(int(w, 16))[2:].rjust(64, "0") for w in words)}

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[RpcResult]:
        if self.error is not None:
            return [RpcResult(m, error=self.error) for m, _ in calls]
        sender = calls[0][1][0]["from"]
        pre = {sender: {"balance": "0x56bc75e2d63100000", "nonce": 5}}
        post = {sender: {"balance": "0x56bc75e2d63000000", "nonce": 6}}
        values = [
            pre,
            {"pre": pre, "post": post},
            {"gasUsed": hex(self.gas)},
            {"gas": self.struct_gas, "failed": False, "structLogs": [{"op": o} for o in self.ops]},
        ]
        return [RpcResult(m, value=v) for (m, _), v in zip(calls, values, strict=True)]


CONTEXT = PredictedContext(
    number=10,
    timestamp=1_000,
    gas_limit=30_000_000,
    base_fee=7,
    coinbase=b"\xc0" * 20,
    prev_randao=b"\x01" * 32,
    blob_base_fee=1,
)


async def _refusal(transport: ScriptedTraces) -> tuple[object, CanaryTruthReader]:
    reader = CanaryTruthReader(cast(JsonRpcTransport, transport))
    variant = mint().executable(template("1559", Level.L3), base_fee=7)
    assert variant is not None
    truth = await reader.executed(
        variant.raw_tx, variant.sender, variant.balance, variant.nonce, 9, CONTEXT
    )
    return truth, reader


@pytest.mark.parametrize(
    ("transport", "reason"),
    [
        (ScriptedTraces(struct_gas=30_001), "inconsistent"),  # two tracers disagree on gas
        (ScriptedTraces(ops=("PUSH1", "BLOBHASH")), "opcode:BLOBHASH"),
        (ScriptedTraces(ops=("BLOCKHASH",)), "opcode:BLOCKHASH"),  # the context has no hashes
        (ScriptedTraces(), "inconsistent"),  # the coinbase earned nothing, yet a tip was paid
    ],
)
async def test_reader_refuses_what_it_cannot_vouch_for(
    transport: ScriptedTraces, reason: str
) -> None:
    """A trace that is inconsistent or reads an unpinned value gives None, counted by reason."""
    truth, reader = await _refusal(transport)
    assert truth is None and reader.refused == {reason: 1}


@pytest.mark.parametrize("ignored", ["number", "time", "random"])
async def test_a_node_that_ignores_a_block_override_gives_no_executed_canaries(
    ignored: str,
) -> None:
    """The once-only context probe finds a node executing under another context: none at all."""
    truth, reader = await _refusal(ScriptedTraces(ignores=ignored))
    assert truth is None and not reader.supported and reader.refused == {"unsupported": 1}


async def test_reader_without_debug_trace_call_stops_asking() -> None:
    """A node lacking debug_traceCall gives None and is not asked again."""
    transport = ScriptedTraces()
    transport.error = MethodNotSupported("debug_traceCall", "method not found")
    truth, reader = await _refusal(transport)
    assert truth is None and not reader.supported and reader.refused == {"unsupported": 1}
