"""The node adapter: typed, validated answers from any EVM node's standard JSON-RPC.

:class:`NodeClient` is what the coordinator depends on; :class:`JsonRpcNode` implements it over
:class:`~ioswarm.node.rpc.JsonRpcTransport`. Every field of every answer is checked; a missing or
malformed one raises :class:`~ioswarm.errors.NodeError` naming the method and the field. Where a
node lacks a method (``txpool_content``, ``eth_getBlockReceipts``, ``eth_getProof``) the adapter
logs one warning and switches for good to a slower combination of basic methods.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, overload

from eth_hash.auto import keccak

from ioswarm.core.blockctx import PendingBlock
from ioswarm.core.execshadow import Log
from ioswarm.core.models import AccountSnapshot, BlockHeader, PendingTx
from ioswarm.errors import MethodNotSupported, NodeError, NodeUnreachable
from ioswarm.node.accounts import AccountReader
from ioswarm.node.fields import (
    BlockId,
    Obj,
    block_param,
    data,
    fixed,
    hexstr,
    quantity,
    show,
)
from ioswarm.node.rpc import JsonRpcTransport, RetryPolicy
from ioswarm.node.txjson import raw_from_json

log = logging.getLogger("ioswarm.node")

_ZERO_HASH = b"\x00" * 32
# "already known" (geth), "known transaction" (older geth/parity), "already imported" (anvil).
_ALREADY_KNOWN = re.compile(r"already known|known transaction|already imported", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class IncludedTxInfo:
    """A transaction as listed in a block body."""

    hash: bytes
    sender: bytes
    nonce: int


@dataclass(frozen=True, slots=True)
class BlockWithTxs:
    """A block header plus its transactions in block order."""

    header: BlockHeader
    txs: list[IncludedTxInfo]


@dataclass(frozen=True, slots=True)
class Receipt:
    """The parts of a transaction receipt shadow mode compares."""

    tx_hash: bytes
    status: int
    gas_used: int
    sender: bytes
    block_number: int
    transaction_index: int
    logs: tuple[Log, ...] = ()


class NodeClient(Protocol):
    """What the coordinator needs from a chain node; tests may pass a fake."""

    async def chain_id(self) -> int: ...

    async def block_number(self) -> int: ...

    @overload
    async def get_block(self, number: BlockId, full: Literal[False] = False) -> BlockHeader: ...

    @overload
    async def get_block(self, number: BlockId, full: Literal[True]) -> BlockWithTxs: ...

    async def get_block(
        self, number: BlockId, full: bool = False
    ) -> BlockHeader | BlockWithTxs: ...

    async def pending_transactions(self) -> list[PendingTx]: ...

    async def pending_by_hash(self, hashes: Iterable[bytes]) -> list[PendingTx]: ...

    def listed_raw(self, tx_hash: bytes) -> bytes | None: ...

    async def pending_block(self) -> PendingBlock | None: ...

    async def raw_transactions(self, hashes: Iterable[bytes]) -> dict[bytes, bytes]: ...

    async def accounts(
        self,
        addresses: Iterable[bytes],
        block_number: BlockId,
        block_hash: bytes | None = None,
        code: bool = True,
    ) -> dict[bytes, AccountSnapshot]: ...

    async def block_receipts(self, number: int) -> list[Receipt]: ...

    async def send_raw_transaction(self, raw: bytes) -> bytes: ...

    async def send_raw_transactions(self, raws: Sequence[bytes]) -> list[bytes | NodeError]: ...

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any: ...

    async def close(self) -> None: ...


def _keccak(data: bytes) -> bytes:
    return bytes(keccak(data))


def _parse_header(obj: Obj, tx_hashes: tuple[bytes, ...]) -> BlockHeader:
    return BlockHeader(
        number=obj.quantity("number"),
        hash=obj.fixed("hash", 32),
        parent_hash=obj.fixed("parentHash", 32),
        timestamp=obj.quantity("timestamp"),
        gas_limit=obj.quantity("gasLimit"),
        # Blocks before London (and chains without EIP-1559) have no base fee.
        base_fee=obj.quantity("baseFeePerGas") if obj.has("baseFeePerGas") else 0,
        coinbase=obj.fixed("miner", 20),
        prev_randao=obj.fixed("mixHash", 32) if obj.has("mixHash") else _ZERO_HASH,
        gas_used=obj.quantity("gasUsed"),
        tx_hashes=tx_hashes,
        excess_blob_gas=obj.quantity("excessBlobGas") if obj.has("excessBlobGas") else 0,
        blob_gas_used=obj.quantity("blobGasUsed") if obj.has("blobGasUsed") else 0,
    )


def _parse_pending(obj: Obj) -> PendingTx:
    # Legacy and EIP-2930 txs price with gasPrice; EIP-1559 and later with maxFeePerGas.
    fee_key = "maxFeePerGas" if obj.has("maxFeePerGas") else "gasPrice"
    return PendingTx(
        tx_hash=obj.fixed("hash", 32),
        sender=obj.fixed("from", 20),
        nonce=obj.quantity("nonce"),
        to=obj.opt_fixed("to", 20),
        value=obj.quantity("value"),
        gas=obj.quantity("gas"),
        max_fee=obj.quantity(fee_key),
    )


def pending_from_json(method: str, raw: Any, where: str = "result") -> PendingTx | None:
    """A pending tx from a node's transaction object; None once the object names a block."""
    obj = Obj(method, raw, where)
    return None if obj.has("blockNumber") else _parse_pending(obj)


def _parse_receipt(obj: Obj) -> Receipt:
    return Receipt(
        tx_hash=obj.fixed("transactionHash", 32),
        status=obj.quantity("status"),
        gas_used=obj.quantity("gasUsed"),
        sender=obj.fixed("from", 20),
        block_number=obj.quantity("blockNumber"),
        transaction_index=obj.quantity("transactionIndex"),
        logs=tuple(
            _parse_log(Obj(obj.method, item, f"{obj.where}.logs[{i}]"))
            for i, item in enumerate(obj.items("logs") if obj.has("logs") else [])
        ),
    )


def _parse_log(obj: Obj) -> Log:
    topics = tuple(
        fixed(obj.method, f"{obj.where}.topics[{i}]", t, 32)
        for i, t in enumerate(obj.items("topics"))
    )
    return Log(address=obj.fixed("address", 20), topics=topics, data=obj.data("data"))


# ---------------------------------------------------------------------------- the adapter


class JsonRpcNode:
    """:class:`NodeClient` over standard Ethereum JSON-RPC (owns one HTTP session)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        max_batch: int = 100,
        force_filter_fallback: bool = False,
        force_receipt_fallback: bool = False,
        max_tracked_pending: int = 10_000,
        transport: JsonRpcTransport | None = None,
        proof_check_sample: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        """``proof_check_sample``: see :class:`~ioswarm.node.accounts.AccountReader`."""
        self._parsed: dict[str, PendingTx] = {}
        self._fresh_raw: dict[bytes, bytes] = {}
        self.transport = transport or JsonRpcTransport(
            url, timeout=timeout, retry=retry, max_batch=max_batch
        )
        self.account_reader = AccountReader(self.transport, proof_check_sample, rng)
        self._use_filter = force_filter_fallback
        self._per_tx_receipts = force_receipt_fallback
        self._filter_id: str | None = None
        self._tracked: dict[bytes, PendingTx] = {}
        self._tracked_block = -1
        self._max_tracked = max_tracked_pending

    async def __aenter__(self) -> JsonRpcNode:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.transport.close()

    @property
    def url(self) -> str:
        return self.transport.url

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Any JSON-RPC method, result returned as the node sent it (escape hatch)."""
        return await self.transport.call(method, params)

    async def chain_id(self) -> int:
        """``eth_chainId``."""
        return quantity("eth_chainId", "result", await self.call("eth_chainId"))

    async def block_number(self) -> int:
        """``eth_blockNumber``."""
        return quantity("eth_blockNumber", "result", await self.call("eth_blockNumber"))

    @overload
    async def get_block(self, number: BlockId, full: Literal[False] = False) -> BlockHeader: ...

    @overload
    async def get_block(self, number: BlockId, full: Literal[True]) -> BlockWithTxs: ...

    async def get_block(self, number: BlockId, full: bool = False) -> BlockHeader | BlockWithTxs:
        """The block's header (``full=False``) or header plus transactions; missing raises."""
        method = "eth_getBlockByNumber"
        raw = await self.call(method, [block_param(number), full])
        if raw is None:
            raise NodeError(method, f"block {block_param(number)} not found")
        obj = Obj(method, raw)
        items = obj.items("transactions")
        if not full:
            hashes = tuple(
                fixed(method, f"result.transactions[{i}]", h, 32) for i, h in enumerate(items)
            )
            return _parse_header(obj, hashes)
        txs = []
        for i, item in enumerate(items):
            tx = Obj(method, item, f"result.transactions[{i}]")
            txs.append(
                IncludedTxInfo(
                    hash=tx.fixed("hash", 32),
                    sender=tx.fixed("from", 20),
                    nonce=tx.quantity("nonce"),
                )
            )
        header = _parse_header(obj, tuple(t.hash for t in txs))
        return BlockWithTxs(header=header, txs=txs)

    async def pending_block(self) -> PendingBlock | None:
        """The node's pending block header, or None when it offers none. Checking that it
        really is the next block is the caller's (:func:`~ioswarm.core.blockctx.pending_flaw`)."""
        method = "eth_getBlockByNumber"
        raw = await self.call(method, ["pending", False])
        if raw is None:
            return None
        obj = Obj(method, raw)
        if not obj.has("number"):
            return None  # some nodes null the number of a block they are still building
        return PendingBlock(
            number=obj.quantity("number"),
            parent_hash=obj.fixed("parentHash", 32),
            timestamp=obj.quantity("timestamp"),
            gas_limit=obj.quantity("gasLimit"),
            base_fee=obj.quantity("baseFeePerGas") if obj.has("baseFeePerGas") else None,
            coinbase=obj.opt_fixed("miner", 20),
            excess_blob_gas=obj.quantity("excessBlobGas") if obj.has("excessBlobGas") else None,
        )

    async def send_raw_transaction(self, raw: bytes) -> bytes:
        """Submit a signed tx; returns its hash (also when the node already knew it)."""
        method = "eth_sendRawTransaction"
        try:
            result = await self.call(method, [hexstr(raw)])
        except NodeUnreachable:
            raise
        except NodeError as exc:
            # A retried send whose first try did arrive is not a failure.
            if _ALREADY_KNOWN.search(exc.detail):
                return _keccak(raw)
            raise
        return fixed(method, "result", result, 32)

    async def send_raw_transactions(self, raws: Sequence[bytes]) -> list[bytes | NodeError]:
        """Submit signed txs in JSON-RPC batches; per tx its hash or the node's refusal."""
        method = "eth_sendRawTransaction"
        results = await self.transport.batch([(method, [hexstr(r)]) for r in raws])
        out: list[bytes | NodeError] = []
        for raw, res in zip(raws, results, strict=True):
            if res.error is None:
                out.append(fixed(method, "result", res.value, 32))
            elif _ALREADY_KNOWN.search(res.error.detail):
                out.append(_keccak(raw))
            else:
                out.append(res.error)
        return out

    async def raw_transactions(self, hashes: Iterable[bytes]) -> dict[bytes, bytes]:
        """Signed tx bytes by hash; hashes the node no longer has are absent."""
        method = "eth_getRawTransactionByHash"
        wanted = list(dict.fromkeys(hashes))
        results = await self.transport.batch([(method, [hexstr(h)]) for h in wanted])
        out: dict[bytes, bytes] = {}
        for h, res in zip(wanted, results, strict=True):
            value = res.unwrap()
            if value is None:
                continue
            raw = data(method, f"result[{hexstr(h)}]", value)
            if not raw or _keccak(raw) != h:
                raise NodeError(
                    method, f"field result[{hexstr(h)}]: bytes do not hash to the tx hash"
                )
            out[h] = raw
        return out

    async def accounts(
        self,
        addresses: Iterable[bytes],
        block_number: BlockId,
        block_hash: bytes | None = None,
        code: bool = True,
    ) -> dict[bytes, AccountSnapshot]:
        """Balance, nonce and (``code``) code hash of each address at a block (one batch; see
        :class:`~ioswarm.node.accounts.AccountReader`)."""
        return await self.account_reader.read(addresses, block_number, block_hash, code)

    async def block_receipts(self, number: int) -> list[Receipt]:
        """Receipts of every tx in block ``number``, in block order."""
        if not self._per_tx_receipts:
            method = "eth_getBlockReceipts"
            try:
                raw = await self.call(method, [block_param(number)])
            except MethodNotSupported:
                self._per_tx_receipts = True
                log.warning(
                    "node lacks eth_getBlockReceipts, reading receipts one tx at a time url=%s",
                    self.transport.safe_url,
                )
            else:
                if not isinstance(raw, list):
                    what = "not found" if raw is None else "is not a list"
                    raise NodeError(method, f"receipts of block {number} {what}")
                return self._check_receipts(
                    method, number, [Obj(method, r, f"result[{i}]") for i, r in enumerate(raw)]
                )
        header = await self.get_block(number)
        method = "eth_getTransactionReceipt"
        results = await self.transport.batch([(method, [hexstr(h)]) for h in header.tx_hashes])
        objs = []
        for h, res in zip(header.tx_hashes, results, strict=True):
            value = res.unwrap()
            if value is None:
                # The block was replaced between the two reads (reorg); the caller retries.
                raise NodeError(method, f"receipt of {hexstr(h)} in block {number} is missing")
            objs.append(Obj(method, value, f"result[{hexstr(h)}]"))
        return self._check_receipts(method, number, objs)

    @staticmethod
    def _check_receipts(method: str, number: int, objs: list[Obj]) -> list[Receipt]:
        receipts = [_parse_receipt(o) for o in objs]
        for o, r in zip(objs, receipts, strict=True):
            if r.block_number != number:
                raise NodeError(
                    method, f"field {o.where}.blockNumber: {r.block_number} != {number}"
                )
        return sorted(receipts, key=lambda r: r.transaction_index)

    # ------------------------------------------------------------------------ mempool

    async def pending_transactions(self) -> list[PendingTx]:
        """Every tx in the node's mempool (pending and queued)."""
        if not self._use_filter:
            try:
                return await self._txpool_content()
            except MethodNotSupported:
                self._use_filter = True
                log.warning(
                    "node lacks txpool_content, watching the mempool with "
                    "eth_newPendingTransactionFilter instead url=%s",
                    self.transport.safe_url,
                )
        return await self._pending_via_filter()

    def listed_raw(self, tx_hash: bytes) -> bytes | None:
        """The signed bytes of a tx the last listing showed for the first time, rebuilt from
        its fields (None where they could not be, or the tx was listed before)."""
        return self._fresh_raw.get(tx_hash)

    async def pending_by_hash(self, hashes: Iterable[bytes]) -> list[PendingTx]:
        """The still-pending txs among ``hashes`` (one batch of ``eth_getTransactionByHash``)."""
        method = "eth_getTransactionByHash"
        wanted = list(dict.fromkeys(hashes))
        results = await self.transport.batch([(method, [hexstr(h)]) for h in wanted])
        out = []
        for h, res in zip(wanted, results, strict=True):
            value = res.unwrap()
            tx = None if value is None else pending_from_json(method, value, f"result[{hexstr(h)}]")
            if tx is not None:
                out.append(tx)
        return out

    async def _txpool_content(self) -> list[PendingTx]:
        method = "txpool_content"
        obj = Obj(method, await self.call(method))
        out: dict[bytes, PendingTx] = {}
        # Each tx is parsed and checked once, when first listed; later polls look it up by
        # the hash text (the cache holds only what the last answer listed).
        known, parsed = self._parsed, {}
        self._fresh_raw = {}
        for section in ("pending", "queued"):
            by_sender = obj.child(section)
            for sender, by_nonce in by_sender.raw.items():
                per_sender = Obj(method, by_nonce, f"{by_sender.where}[{sender}]")
                for nonce, tx in per_sender.raw.items():
                    key = tx.get("hash") if isinstance(tx, dict) else None
                    ptx = known.get(key) if isinstance(key, str) else None
                    if ptx is None:
                        ptx = _parse_pending(Obj(method, tx, f"{per_sender.where}[{nonce}]"))
                        raw = raw_from_json(tx, ptx.tx_hash)
                        if raw is not None:
                            self._fresh_raw[ptx.tx_hash] = raw
                    if isinstance(key, str):
                        parsed[key] = ptx
                    out.setdefault(ptx.tx_hash, ptx)
        self._parsed = parsed
        return list(out.values())

    async def _pending_via_filter(self) -> list[PendingTx]:
        """Mempool as seen through a pending-tx filter plus the txs it reported earlier.

        A filter only reports hashes once, so the adapter remembers them and drops each when a
        new block shows it was included, replaced or evicted: the answer has the same meaning
        as ``txpool_content``. Nodes report only executable txs through the filter, so a tx
        behind a nonce gap shows up once the gap is filled.
        """
        if self._filter_id is None:
            self._filter_id = await self._new_filter()
        calls = [("eth_getFilterChanges", [self._filter_id]), ("eth_blockNumber", [])]
        changes_res, number_res = await self.transport.batch(calls)
        head = quantity("eth_blockNumber", "result", number_res.unwrap())
        new_hashes: list[bytes] = []
        if changes_res.error is not None and not isinstance(changes_res.error, NodeUnreachable):
            # Nodes drop filters that were not polled for a while, and forget all on restart.
            log.info(
                "pending-tx filter lost, creating a new one error=%r", changes_res.error.detail
            )
            self._filter_id = await self._new_filter()
        else:
            changes = changes_res.unwrap()
            if not isinstance(changes, list):
                raise NodeError("eth_getFilterChanges", "result is not a list")
            new_hashes = [
                fixed("eth_getFilterChanges", f"result[{i}]", h, 32) for i, h in enumerate(changes)
            ]
        recheck = list(self._tracked) if head != self._tracked_block else []
        fetch = list(dict.fromkeys([*recheck, *(h for h in new_hashes if h not in self._tracked)]))
        method = "eth_getTransactionByHash"
        results = await self.transport.batch([(method, [hexstr(h)]) for h in fetch])
        for h, res in zip(fetch, results, strict=True):
            value = res.unwrap()
            obj = None if value is None else Obj(method, value, f"result[{hexstr(h)}]")
            if obj is None or obj.has("blockNumber"):
                self._tracked.pop(h, None)
                continue
            self._tracked[h] = _parse_pending(obj)
        self._tracked_block = head
        while len(self._tracked) > self._max_tracked:
            self._tracked.pop(next(iter(self._tracked)))
        return list(self._tracked.values())

    async def _new_filter(self) -> str:
        method = "eth_newPendingTransactionFilter"
        fid = await self.call(method)
        if not isinstance(fid, str) or not fid:
            raise NodeError(method, f"field result: expected a filter id, got {show(fid)}")
        return fid
