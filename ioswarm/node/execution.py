"""Reads an executing level (L3) needs: access lists, storage proofs, code, and per-tx state diffs.

``eth_createAccessList`` finds every account and slot a transaction touches; ``eth_getProof``
with many slots reads an account and those slots in one call; code is read once per code hash
(code never changes under a hash). Truth comes from ``debug_traceBlockByNumber`` with the
prestate tracer in diff mode, falling back to per-tx ``debug_traceTransaction``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ioswarm.core.execshadow import AccountDiff
from ioswarm.core.hashing import keccak256
from ioswarm.core.models import EMPTY_CODE_HASH, AccountSnapshot, AccountState
from ioswarm.core.touchset import maybe_cleared, sign_authorization
from ioswarm.core.tx import DecodedTx, intrinsic_gas
from ioswarm.errors import MethodNotSupported, NodeError
from ioswarm.node.fields import (
    BlockId,
    Obj,
    block_param,
    data,
    fixed,
    hexstr,
    proof_matches,
    proof_state_root,
    quantity,
)
from ioswarm.node.rpc import JsonRpcTransport

log = logging.getLogger("ioswarm.node")

PRESTATE_DIFF = {"tracer": "prestateTracer", "tracerConfig": {"diffMode": True}}
PRESTATE = {"tracer": "prestateTracer"}
_ZERO_HASH = b"\x00" * 32


@dataclass(frozen=True)
class AccessList:
    """What ``eth_createAccessList`` says a call touches (``error`` when the call fails)."""

    entries: dict[bytes, tuple[bytes, ...]]
    gas_used: int
    error: str = ""


@dataclass(frozen=True)
class AccountData:
    """An account at a block with the slots asked for and its code."""

    snapshot: AccountSnapshot
    storage: dict[bytes, bytes] = field(default_factory=dict)
    code: bytes = b""
    storage_root: bytes = b""
    """The account's storage root (``storageHash``); b"" when not read."""


@dataclass(frozen=True)
class TxDiff:
    """One transaction's state diff from the prestate tracer in diff mode."""

    tx_hash: bytes
    pre: dict[bytes, AccountDiff]
    post: dict[bytes, AccountDiff]


def _word(method: str, where: str, value: Any) -> bytes:
    """A 32-byte storage word; nodes send it as padded data or as a quantity ("0x1")."""
    if isinstance(value, str) and len(value) % 2 == 1:
        number = quantity(method, where, value)
        if number >= 1 << 256:
            raise NodeError(method, f"field {where}: more than 32 bytes")
        return number.to_bytes(32, "big")
    raw = data(method, where, value)
    if len(raw) > 32:
        raise NodeError(method, f"field {where}: more than 32 bytes")
    return raw.rjust(32, b"\x00")


def _slot_hex(slot: bytes) -> str:
    return "0x" + slot.rjust(32, b"\x00").hex()


def _account_diff(method: str, where: str, raw: Any) -> AccountDiff:
    obj = Obj(method, raw, where)
    storage: dict[bytes, bytes] = {}
    if obj.has("storage"):
        st = obj.raw["storage"]
        if not isinstance(st, dict):
            raise NodeError(method, f"field {where}.storage: expected an object")
        for k, v in st.items():
            storage[_word(method, f"{where}.storage key", k)] = _word(method, f"{where}.storage", v)
    nonce = obj.raw.get("nonce")
    if nonce is not None and not isinstance(nonce, int):
        nonce = quantity(method, f"{where}.nonce", nonce)
    return AccountDiff(
        balance=obj.quantity("balance") if obj.has("balance") else None,
        nonce=nonce,
        code=obj.data("code") if obj.has("code") else None,
        storage=storage,
    )


def _diff_map(method: str, where: str, raw: Any) -> dict[bytes, AccountDiff]:
    if not isinstance(raw, dict):
        raise NodeError(method, f"field {where}: expected an object")
    return {
        fixed(method, f"{where} key", k, 20): _account_diff(method, f"{where}.{k}", v)
        for k, v in raw.items()
    }


def call_object(tx: DecodedTx, sender: bytes, *, chain_id: bool = False) -> dict[str, Any]:
    """The JSON-RPC call object that simulates ``tx`` from ``sender`` (nonce included, so
    CREATE addresses match; with ``chain_id``, the tx's chain id too)."""
    obj: dict[str, Any] = {
        "from": hexstr(sender),
        "gas": hex(tx.gas_limit),
        "value": hex(tx.value),
        "input": hexstr(tx.data),
        "nonce": hex(tx.nonce),
    }
    if tx.to is not None:
        obj["to"] = hexstr(tx.to)
    if tx.max_fee_per_gas is not None:
        obj["maxFeePerGas"] = hex(tx.max_fee_per_gas)
        obj["maxPriorityFeePerGas"] = hex(tx.max_priority_fee_per_gas or 0)
    else:
        obj["gasPrice"] = hex(tx.max_fee)
    if tx.access_list:
        obj["accessList"] = [
            {"address": hexstr(a), "storageKeys": [hexstr(k.rjust(32, b"\x00")) for k in keys]}
            for a, keys in tx.access_list
        ]
    if tx.authorization_list:
        # Simulated with its authorizations, the call runs the delegated code it will run.
        obj["authorizationList"] = [
            {
                "chainId": hex(a.chain_id),
                "address": hexstr(a.address),
                "nonce": hex(a.nonce),
                "yParity": hex(a.y_parity),
                "r": hex(a.r),
                "s": hex(a.s),
            }
            for a in tx.authorization_list
        ]
    if chain_id and tx.chain_id is not None:
        obj["chainId"] = hex(tx.chain_id)
    return obj


class ExecutionReader:
    """L3 reads over a JSON-RPC transport (shared with the node adapter)."""

    def __init__(self, transport: JsonRpcTransport) -> None:
        self.transport = transport
        self._block_trace_ok = True
        self._trace_call_ok = True
        self.access_list_supported = True

    @property
    def calls_per_simulation(self) -> int:
        """JSON-RPC calls one simulated transaction costs (access list, plus a trace if any)."""
        return 2 if self._trace_call_ok else 1

    async def access_lists(
        self, calls: Sequence[Mapping[str, Any]], block: BlockId
    ) -> list[AccessList | None]:
        """Every account and slot each call touches; None for all when the node lacks the method.

        ``eth_createAccessList`` leaves out contracts the call creates (they are warm by rule),
        yet executing needs them; where the node can trace a call, the prestate tracer's list of
        touched accounts is asked for in the same batch and merged in.
        """
        method = "eth_createAccessList"
        if not calls or not self.access_list_supported:
            return [None] * len(calls)
        blk = block_param(block)
        batch: list[tuple[str, Sequence[Any]]] = [(method, [dict(c), blk]) for c in calls]
        if self._trace_call_ok:
            batch += [("debug_traceCall", [dict(c), blk, PRESTATE]) for c in calls]
        results = await self.transport.batch(batch)
        lists, traces = results[: len(calls)], results[len(calls) :]
        if traces and any(isinstance(t.error, MethodNotSupported) for t in traces):
            self._trace_call_ok = False
            log.info("node lacks debug_traceCall; created contracts are not prefetched")
            traces = []
        out: list[AccessList | None] = []
        for i, res in enumerate(lists):
            if isinstance(res.error, MethodNotSupported):
                self.access_list_supported = False
                log.warning(
                    "node lacks eth_createAccessList; L3 tasks fall back to L2 url=%s",
                    self.transport.safe_url,
                )
                return [None] * len(calls)
            traced = traces[i] if traces and traces[i].error is None else None
            if res.error is not None and traced is None:
                # Some nodes refuse to list accesses of a call that reverts; without a trace
                # there is nothing to prefetch from.
                out.append(AccessList({}, 0, error=res.error.detail))
                continue
            entries: dict[bytes, tuple[bytes, ...]] = {}
            gas_used, error = 0, res.error.detail if res.error is not None else ""
            if res.error is None:
                obj = Obj(method, res.value, f"result[{i}]")
                for j, item in enumerate(obj.items("accessList")):
                    e = Obj(method, item, f"result[{i}].accessList[{j}]")
                    keys = tuple(
                        _word(method, f"{e.where}.storageKeys[{k}]", v)
                        for k, v in enumerate(e.items("storageKeys"))
                    )
                    addr = e.fixed("address", 20)
                    entries[addr] = tuple(dict.fromkeys(entries.get(addr, ()) + keys))
                gas_used = obj.quantity("gasUsed")
                error = str(obj.raw.get("error") or "")
            if traced is not None:
                touched = _diff_map("debug_traceCall", f"result[{i}]", traced.value)
                for addr, diff in touched.items():
                    merged = entries.get(addr, ()) + tuple(diff.storage)
                    entries[addr] = tuple(dict.fromkeys(merged))
            out.append(AccessList(entries, gas_used, error))
        return out

    async def absent_accounts_exist(self, chain_id: int, block: BlockId = "latest") -> bool:
        """Whether the node's EVM counts an account it has no record of as existing.

        Simulates a set-code call whose one authority is a random, never-seen key: EIP-7702
        refunds ``PER_EMPTY_ACCOUNT_COST - PER_AUTH_BASE_COST`` only for an existing authority,
        so a node that reports the refund (anvil does) treats absent accounts as existing.
        A node that cannot simulate it is taken to follow the EIP.
        """
        authority_key = secrets.token_bytes(32)
        auth = sign_authorization(authority_key, chain_id, bytes(19) + b"\x01", 0)
        tx = DecodedTx(
            tx_type=4,
            chain_id=chain_id,
            nonce=0,
            gas_limit=100_000,
            to=bytes(19) + b"\x02",
            value=0,
            data=b"",
            v=0,
            y_parity=0,
            r=0,
            s=0,
            signing_hash=b"",
            raw=b"",
            max_fee_per_gas=0,
            max_priority_fee_per_gas=0,
            authorization_list=(auth,),
        )
        obj = call_object(tx, secrets.token_bytes(20))
        for unpaid in ("nonce", "maxFeePerGas", "maxPriorityFeePerGas"):
            del obj[unpaid]  # a random sender with nothing: a free simulation
        try:
            raw = await self.transport.call("eth_createAccessList", [obj, block_param(block)])
            used = Obj("eth_createAccessList", raw, "result").quantity("gasUsed")
        except NodeError as exc:
            log.info("absent accounts unknown, taken as EIP-7702 says error=%r", str(exc))
            return False
        refunded = used < intrinsic_gas(tx)
        log.info("node absent_accounts_exist=%s probe_gas_used=%d", refunded, used)
        return refunded

    async def account_data(
        self, wanted: Mapping[bytes, Iterable[bytes]], block: BlockId
    ) -> dict[bytes, AccountData]:
        """Each address with the given slots, via one ``eth_getProof`` per address (batched).

        The block's header is read in the same batch and each account proof's root node is
        checked against its ``stateRoot``: a node that answers a historical read with the state
        of another block (anvil does, for the previous block while it mines the next) is
        caught here. Such accounts are left out of the result, with a warning, so the caller
        retries or does without them. An empty proof, or any proof at block 0, is taken as is
        (see :func:`~ioswarm.node.fields.proof_state_root`).
        """
        method = "eth_getProof"
        addrs = list(wanted)
        if not addrs:
            return {}
        blk = block_param(block)
        calls = [(method, [hexstr(a), [_slot_hex(s) for s in wanted[a]], blk]) for a in addrs]
        results = await self.transport.batch([("eth_getBlockByNumber", [blk, False]), *calls])
        state_root = proof_state_root(results[0].unwrap(), f"result[{blk}]")
        out: dict[bytes, AccountData] = {}
        stale: list[bytes] = []
        for a, res in zip(addrs, results[1:], strict=True):
            where = f"result[{hexstr(a)}]"
            obj = Obj(method, res.unwrap(), where)
            if not proof_matches(obj, state_root):
                stale.append(a)
                continue
            storage: dict[bytes, bytes] = {}
            for k, item in enumerate(obj.items("storageProof")):
                sp = Obj(method, item, f"{where}.storageProof[{k}]")
                key = _word(method, f"{sp.where}.key", sp.raw.get("key"))
                storage[key] = _word(method, f"{sp.where}.value", sp.raw.get("value"))
            code_hash = obj.fixed("codeHash", 32)
            snap = AccountSnapshot(
                address=a,
                balance=obj.quantity("balance"),
                nonce=obj.quantity("nonce"),
                code_hash=EMPTY_CODE_HASH if code_hash == _ZERO_HASH else code_hash,
            )
            root = obj.fixed("storageHash", 32) if obj.has("storageHash") else b""
            out[a] = AccountData(snap, storage, storage_root=root)
        if stale:
            log.warning(
                "node answered eth_getProof at block %s with another block's state "
                "(proof root != stateRoot) accounts=%d first=%s; not used",
                blk,
                len(stale),
                hexstr(stale[0]),
            )
        return out

    async def codes(self, addresses: Iterable[bytes], block: BlockId) -> dict[bytes, bytes]:
        """Code of each address at a block."""
        method = "eth_getCode"
        addrs = list(dict.fromkeys(addresses))
        blk = block_param(block)
        results = await self.transport.batch([(method, [hexstr(a), blk]) for a in addrs])
        return {
            a: data(method, f"result[{hexstr(a)}]", r.unwrap())
            for a, r in zip(addrs, results, strict=True)
        }

    async def block_hashes(self, numbers: Iterable[int]) -> dict[int, bytes]:
        """Hashes of the given blocks (one batch of header reads)."""
        method = "eth_getBlockByNumber"
        wanted = list(numbers)
        results = await self.transport.batch([(method, [block_param(n), False]) for n in wanted])
        out = {}
        for n, res in zip(wanted, results, strict=True):
            obj = Obj(method, res.unwrap(), f"result[{n}]")
            out[n] = obj.fixed("hash", 32)
        return out

    async def block_diffs(self, number: int, tx_hashes: Sequence[bytes]) -> list[TxDiff]:
        """Per-tx state diffs of a block, in block order.

        A diff-mode trace leaves empty code out of ``post``, so an EIP-7702 delegation cleared
        reads as code unchanged; where that is possible (designator code before, the account
        changed, no code after) the code at the block is read and a clear is written in.
        """
        diffs = await self._block_diffs(number, tx_hashes)
        candidates = {a for d in diffs for a in maybe_cleared(d.pre, d.post)}
        if not candidates:
            return diffs
        codes = await self.codes(sorted(candidates), number)
        cleared = {a for a in candidates if not codes.get(a)}
        return [
            TxDiff(
                d.tx_hash,
                d.pre,
                {
                    a: replace(diff, code=b"") if a in cleared and a in d.pre else diff
                    for a, diff in d.post.items()
                },
            )
            if cleared & maybe_cleared(d.pre, d.post)
            else d
            for d in diffs
        ]

    async def _block_diffs(self, number: int, tx_hashes: Sequence[bytes]) -> list[TxDiff]:
        if self._block_trace_ok:
            method = "debug_traceBlockByNumber"
            try:
                raw = await self.transport.call(method, [block_param(number), PRESTATE_DIFF])
            except MethodNotSupported:
                self._block_trace_ok = False
                log.warning(
                    "node lacks debug_traceBlockByNumber; tracing one tx at a time url=%s",
                    self.transport.safe_url,
                )
            else:
                if not isinstance(raw, list) or len(raw) != len(tx_hashes):
                    raise NodeError(method, f"block {number}: expected {len(tx_hashes)} traces")
                out = []
                for i, (item, h) in enumerate(zip(raw, tx_hashes, strict=True)):
                    obj = Obj(method, item, f"result[{i}]")
                    if obj.has("txHash") and obj.fixed("txHash", 32) != h:
                        raise NodeError(method, f"field result[{i}].txHash: out of block order")
                    res = obj.child("result")
                    out.append(
                        TxDiff(
                            h,
                            _diff_map(method, f"{res.where}.pre", res.raw.get("pre", {})),
                            _diff_map(method, f"{res.where}.post", res.raw.get("post", {})),
                        )
                    )
                return out
        method = "debug_traceTransaction"
        results = await self.transport.batch(
            [(method, [hexstr(h), PRESTATE_DIFF]) for h in tx_hashes]
        )
        out = []
        for h, answer in zip(tx_hashes, results, strict=True):
            tx_obj = Obj(method, answer.unwrap(), f"result[{hexstr(h)}]")
            out.append(
                TxDiff(
                    h,
                    _diff_map(method, f"{tx_obj.where}.pre", tx_obj.raw.get("pre", {})),
                    _diff_map(method, f"{tx_obj.where}.post", tx_obj.raw.get("post", {})),
                )
            )
        return out

    async def tx_prestate(self, tx_hash: bytes) -> dict[bytes, AccountState]:
        """Every account a landed transaction touched, as it was just before the transaction
        ran in its block (balance, nonce, code and each slot it accessed): the prestate tracer
        without diff mode. What a re-verification task carries."""
        method = "debug_traceTransaction"
        raw = await self.transport.call(method, [hexstr(tx_hash), PRESTATE])
        accounts = _diff_map(method, f"result[{hexstr(tx_hash)}]", raw)
        out: dict[bytes, AccountState] = {}
        for address, acc in accounts.items():
            code = acc.code or b""
            snapshot = AccountSnapshot(
                address,
                acc.balance or 0,
                acc.nonce or 0,
                keccak256(code) if code else EMPTY_CODE_HASH,
            )
            out[address] = AccountState(snapshot, code, tuple(sorted(acc.storage.items())))
        return out
