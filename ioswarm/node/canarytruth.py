"""The node's truth for an executed L3 canary: one call, traced under the batch's block context.

An executed canary is a valid transaction from a coordinator-owned key whose sender state (nonce,
balance) the coordinator fabricates. The node traces it with ``debug_traceCall`` at the state
block, with ``stateOverrides`` giving the sender that state and ``blockOverrides`` giving the
block context the task's batch carries; four traces of the same call go in one batch:

- ``prestateTracer``: every account the call touches, with code and every storage slot it reads
  (the state the task ships);
- ``prestateTracer`` in diff mode: what it changed (storage, balances, nonces, created code,
  the coinbase's fee);
- ``callTracer`` with ``withLog``: status, gas used and the logs of frames that did not revert;
- the default struct logger (stack, memory and storage off): the opcodes executed, and gas used
  and failure once more as a consistency check.

What the pinned anvil (``@foundry-rs/anvil@1.7.1``, hardfork prague) answers, as probed:

- ``debug_traceCall`` takes ``stateOverrides`` and ``blockOverrides`` inside the trace options
  for every tracer, plain and ``diffMode``. Block override keys it honours (each checked by a
  contract that stores the opcode's value): ``number``, ``time``, ``gasLimit``, ``baseFee``,
  ``coinbase`` (``feeRecipient`` is an alias: both together are refused with "duplicate field
  `coinbase`") and ``random`` (alias ``prevRandao``, same refusal). The sender override
  (``balance``, ``nonce``) shows in the prestate, and gas is charged at the effective price of
  the overridden base fee: the coinbase gains exactly gas used x tip.
- The prestate lists the sender, the coinbase, each called contract with code and read slots,
  called precompiles (balance only) and a contract created by the call (with the slots its
  constructor reads). Absent ``nonce``/``code`` mean 0/empty.
- ``callTracer`` top-level ``gasUsed`` equals what a receipt says (intrinsic gas included,
  refunds applied), and equals the struct logger's ``gas`` and ``eth_simulateV1``'s
  ``gasUsed``; a reverted call has ``error``. Logs carry ``position`` (child calls made before
  the log), which orders them against the frame's children.
- ``BLOCKHASH`` under an overridden ``number`` reads the node's real hash of that block; the
  block hashes a batch carries may not cover it, so a canary that executes ``BLOCKHASH`` is
  refused unless the context carries the whole 256-block window. ``BLOBHASH`` and
  ``BLOBBASEFEE`` are refused (no blob override is sent).
- ``eth_simulateV1`` (``validation: true``) also honours state and block overrides (keys
  ``number``, ``time``, ``gasLimit``, ``baseFeePerGas``, ``feeRecipient``, ``prevRandao``;
  ``coinbase`` together with ``feeRecipient`` is refused as a duplicate) and returns status,
  ``gasUsed`` and flat logs, but no state changes, and its returned header shows a zero
  ``mixHash`` whatever ``prevRandao`` says. It is not used: the traces give all of it under
  one set of overrides.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ioswarm.core.execshadow import (
    AccountDiff,
    ExecEffects,
    Log,
    PredictedContext,
    effects_from_diff,
)
from ioswarm.core.hashing import keccak256
from ioswarm.core.models import EMPTY_CODE_HASH, AccountSnapshot, AccountState
from ioswarm.core.tx import TX_ACCESS_LIST, TX_DYNAMIC_FEE, TX_LEGACY, DecodedTx, decode_tx
from ioswarm.errors import MethodNotSupported, NodeError, ValidationError
from ioswarm.node.execution import PRESTATE, PRESTATE_DIFF, _diff_map, call_object
from ioswarm.node.fields import Obj, block_param, data, fixed, hexstr
from ioswarm.node.rpc import JsonRpcTransport

__all__ = ["CanaryTruthReader", "ExecutedTruth"]

log = logging.getLogger("ioswarm.node")

_METHOD: Final = "debug_traceCall"
# Types whose call object says everything the tx does (blob and set-code txs carry more).
_TYPES: Final = frozenset({TX_LEGACY, TX_ACCESS_LIST, TX_DYNAMIC_FEE})
_CALL_TRACER: Final = {"tracer": "callTracer", "tracerConfig": {"withLog": True}}
# Initcode that returns NUMBER, TIMESTAMP, PREVRANDAO, GASLIMIT, BASEFEE and COINBASE as six
# words: a traced creation shows, in its output, the context the node really executed under.
_CONTEXT_PROBE: Final = bytes.fromhex("43600052426020524460405245606052486080524160a05260c06000f3")
_PROBE_SENDER: Final = b"\x00" * 18 + b"\x01\x0c"
_PROBE_GAS: Final = 200_000
_STRUCT_LOGGER: Final = {
    "disableStack": True,
    "disableMemory": True,
    "disableStorage": True,
    "enableReturnData": False,
}
# Opcodes whose value the overrides cannot pin to what the batch's context says.
_UNPINNED: Final = frozenset({"BLOBHASH", "BLOBBASEFEE"})
_BLOCKHASH_WINDOW: Final = 256
# The struct log grows with every step; a canary above this gas limit is not traced.
DEFAULT_MAX_GAS: Final = 1_000_000


@dataclass(frozen=True)
class ExecutedTruth:
    """What an executed canary's task ships, and what executing it must report."""

    accounts: tuple[AccountState, ...]
    read_set: frozenset[tuple[bytes, bytes]]
    effects: ExecEffects


class _Refused(Exception):
    """The call is not one the node's traces can give an exact, reproducible truth for."""


class CanaryTruthReader:
    """Traces a canary call under given sender state and block context; counts refusals."""

    def __init__(self, transport: JsonRpcTransport, *, max_gas: int = DEFAULT_MAX_GAS) -> None:
        self.transport = transport
        self.max_gas = max_gas
        self.supported = True
        self._context_checked = False
        self.refused: Counter[str] = Counter()
        """Why calls got no truth: ``unsupported``, ``tx_type``, ``gas_limit``, ``node_error``,
        ``opcode:<NAME>``, ``inconsistent``."""

    async def executed(
        self,
        raw_tx: bytes,
        sender: bytes,
        sender_balance: int,
        sender_nonce: int,
        block: int,
        context: PredictedContext,
    ) -> ExecutedTruth | None:
        """The truth of ``raw_tx`` from ``sender`` (with that balance and nonce) on the state
        at ``block``, executed in ``context``; None (counted in ``refused``) when there is none.
        """
        try:
            return await self._executed(
                raw_tx, sender, sender_balance, sender_nonce, block, context
            )
        except _Refused as why:
            self.refused[str(why)] += 1
            return None

    async def _executed(
        self,
        raw_tx: bytes,
        sender: bytes,
        sender_balance: int,
        sender_nonce: int,
        block: int,
        context: PredictedContext,
    ) -> ExecutedTruth:
        if not self.supported:
            raise _Refused("unsupported")
        try:
            tx = decode_tx(raw_tx)
        except ValidationError:
            raise _Refused("tx_type") from None
        if tx.tx_type not in _TYPES:
            raise _Refused("tx_type")
        if tx.gas_limit > self.max_gas:
            raise _Refused("gas_limit")
        if tx.nonce != sender_nonce or tx.max_fee < context.base_fee:
            raise _Refused("inconsistent")
        call = call_object(tx, sender, chain_id=True)
        overrides = {
            "stateOverrides": {
                hexstr(sender): {"balance": hex(sender_balance), "nonce": hex(sender_nonce)}
            },
            "blockOverrides": _block_overrides(context),
        }
        blk = block_param(block)
        if not self._context_checked:
            await self._check_overrides(blk, context)
        configs: list[Mapping[str, Any]] = [PRESTATE, PRESTATE_DIFF, _CALL_TRACER, _STRUCT_LOGGER]
        results = await self.transport.batch(
            [(_METHOD, [call, blk, {**cfg, **overrides}]) for cfg in configs]
        )
        if any(isinstance(r.error, MethodNotSupported) for r in results):
            self.supported = False
            log.warning(
                "node lacks debug_traceCall; no executed canaries url=%s", self.transport.safe_url
            )
            raise _Refused("unsupported")
        try:
            prestate, diff, frames, steps = (r.unwrap() for r in results)
            return _truth(tx, sender, context, prestate, diff, frames, steps)
        except NodeError as exc:
            log.debug("executed canary: node answer unusable error=%r", exc.detail)
            raise _Refused("node_error") from None

    async def _check_overrides(self, blk: str, context: PredictedContext) -> None:
        """Once: does the node execute under the block context we ask for? A node that
        ignores an override would give truth an honest agent fails, so then no executed
        canaries at all."""
        call = {
            "from": hexstr(_PROBE_SENDER),
            "gas": hex(_PROBE_GAS),
            "input": hexstr(_CONTEXT_PROBE),
        }
        options = {
            **_CALL_TRACER,
            "stateOverrides": {hexstr(_PROBE_SENDER): {"balance": hex(10**18)}},
            "blockOverrides": _block_overrides(context),
        }
        try:
            raw = await self.transport.call(_METHOD, [call, blk, options])
            output = Obj(_METHOD, raw, "result").data("output")
        except MethodNotSupported:
            self.supported = False
            raise _Refused("unsupported") from None
        except NodeError as exc:
            log.debug("context probe failed error=%r", exc.detail)
            raise _Refused("node_error") from None
        self._context_checked = True
        expected = b"".join(
            v.to_bytes(32, "big")
            for v in (
                context.number,
                context.timestamp,
                int.from_bytes(context.prev_randao, "big"),
                context.gas_limit,
                context.base_fee,
                int.from_bytes(context.coinbase, "big"),
            )
        )
        if output != expected:
            self.supported = False
            log.warning(
                "node does not execute traced calls under the block context asked for; "
                "no executed canaries url=%s",
                self.transport.safe_url,
            )
            raise _Refused("unsupported")


def _block_overrides(context: PredictedContext) -> dict[str, str]:
    # anvil's names; "feeRecipient"/"prevRandao" are its aliases and may not be sent alongside.
    return {
        "number": hex(context.number),
        "time": hex(context.timestamp),
        "gasLimit": hex(context.gas_limit),
        "baseFee": hex(context.base_fee),
        "coinbase": hexstr(context.coinbase),
        "random": hexstr(context.prev_randao.rjust(32, b"\x00")),
    }


def _truth(
    tx: DecodedTx,
    sender: bytes,
    context: PredictedContext,
    prestate: Any,
    diff: Any,
    frames: Any,
    steps: Any,
) -> ExecutedTruth:
    top = Obj(_METHOD, frames, "result[callTracer]")
    gas_used = top.quantity("gasUsed")
    success = not top.has("error")
    struct = Obj(_METHOD, steps, "result[structLogger]")
    # The struct logger's gas is a JSON number, not a hex quantity (as geth sends it).
    struct_gas = struct.raw.get("gas")
    if not isinstance(struct_gas, int):
        struct_gas = struct.quantity("gas")
    if struct_gas != gas_used or bool(struct.raw.get("failed")) == success:
        raise _Refused("inconsistent")
    _check_opcodes(struct, context)

    diff_obj = Obj(_METHOD, diff, "result[diff]")
    pre = _diff_map(_METHOD, "result[diff].pre", diff_obj.raw.get("pre", {}))
    post = _diff_map(_METHOD, "result[diff].post", diff_obj.raw.get("post", {}))
    logs = _logs(top) if success else ()
    effects = effects_from_diff(success, gas_used, logs, pre, post, context.coinbase)
    price = min(tx.max_fee, context.base_fee + tx.max_priority_fee)
    coinbase_touched = context.coinbase in (sender, tx.to) or context.coinbase in effects.balances
    if not coinbase_touched and effects.coinbase_fee != gas_used * (price - context.base_fee):
        raise _Refused("inconsistent")  # the fee is not what the overridden base fee implies
    if effects.nonces.get(sender) != tx.nonce + 1:
        raise _Refused("inconsistent")

    touched = _diff_map(_METHOD, "result[prestate]", prestate)
    accounts, reads = _state(touched, sender, context.coinbase, tx)
    if sender not in touched:
        raise _Refused("inconsistent")
    return ExecutedTruth(accounts, reads, effects)


def _check_opcodes(struct: Obj, context: PredictedContext) -> None:
    ops = {str(s.get("op")) for s in struct.items("structLogs") if isinstance(s, dict)}
    unpinned = sorted(ops & _UNPINNED)
    if unpinned:
        raise _Refused(f"opcode:{unpinned[0]}")
    if "BLOCKHASH" in ops:
        window = range(max(0, context.number - _BLOCKHASH_WINDOW), context.number)
        if any(n not in context.block_hashes for n in window):
            raise _Refused("opcode:BLOCKHASH")


def _logs(frame: Obj) -> list[Log]:
    """Logs of a call frame and its children in execution order, none from reverted frames."""
    if frame.has("error"):
        return []
    own: dict[int, list[Log]] = {}
    for i, item in enumerate(frame.raw.get("logs") or []):
        entry = Obj(_METHOD, item, f"{frame.where}.logs[{i}]")
        position = entry.quantity("position") if entry.has("position") else None
        if position is None:
            raise _Refused("inconsistent")  # no way to order it against the children
        own.setdefault(position, []).append(
            Log(
                entry.fixed("address", 20),
                tuple(
                    fixed(_METHOD, f"{entry.where}.topics", t, 32) for t in entry.items("topics")
                ),
                data(_METHOD, f"{entry.where}.data", entry.raw.get("data", "0x")),
            )
        )
    children = frame.raw.get("calls") or []
    out: list[Log] = []
    for i in range(len(children) + 1):
        out += own.get(i, [])
        if i < len(children):
            out += _logs(Obj(_METHOD, children[i], f"{frame.where}.calls[{i}]"))
    return out


def _state(
    touched: Mapping[bytes, AccountDiff], sender: bytes, coinbase: bytes, tx: DecodedTx
) -> tuple[tuple[AccountState, ...], frozenset[tuple[bytes, bytes]]]:
    """The touched accounts as a task ships them, and what the execution read."""
    accounts = []
    reads: set[tuple[bytes, bytes]] = set()
    for addr in sorted(touched):
        acct = touched[addr]
        code = acct.code or b""
        snap = AccountSnapshot(
            address=addr,
            balance=acct.balance or 0,
            nonce=acct.nonce or 0,
            code_hash=keccak256(code) if code else EMPTY_CODE_HASH,
        )
        slots = tuple(sorted((k.rjust(32, b"\x00"), v) for k, v in acct.storage.items()))
        accounts.append(AccountState(snap, code, slots))
        if addr == coinbase and addr not in (sender, tx.to):
            continue  # the fee credit is compared as an amount, not as a read
        reads.update(((addr, b"balance"), (addr, b"nonce"), (addr, b"code")))
        reads.update((addr, k) for k, _ in slots)
    return tuple(accounts), frozenset(reads)
