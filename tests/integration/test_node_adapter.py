"""The JSON-RPC node adapter against a real anvil, a method-blocking proxy and garbage servers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from eth_account import Account
from eth_hash.auto import keccak

from ioswarm.core.models import EMPTY_CODE_HASH
from ioswarm.errors import MethodNotSupported, NodeError, NodeUnreachable
from ioswarm.node import JsonRpcNode, JsonRpcTransport, RetryPolicy
from ioswarm.sim.anvil import AnvilError, AnvilProcess
from ioswarm.sim.workload import REVERTER_INITCODE, REVERTER_RUNTIME, contract_address
from tests.helpers import eventually

pytestmark = pytest.mark.integration

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
RECIPIENT = bytes.fromhex("00000000000000000000000000000000000000aa")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def sign(
    key: str,
    nonce: int,
    *,
    kind: str = "eip1559",
    to: bytes | None = RECIPIENT,
    value: int = 1,
    gas: int = 21_000,
    data: bytes = b"",
) -> tuple[bytes, bytes]:
    """A signed tx of the given type; returns (hash, raw)."""
    tx: dict[str, Any] = {
        "chainId": 31337,
        "nonce": nonce,
        "value": value,
        "gas": gas,
        "data": data,
    }
    if to is not None:
        tx["to"] = to
    if kind == "eip1559":
        tx.update(type=2, maxFeePerGas=5 * 10**9, maxPriorityFeePerGas=10**9)
    elif kind == "eip2930":
        tx.update(type=1, gasPrice=5 * 10**9, accessList=[])
    else:
        tx["gasPrice"] = 5 * 10**9
    signed = Account.from_key(key).sign_transaction(tx)
    return bytes(signed.hash), bytes(signed.raw_transaction)


def address_of(key: str) -> bytes:
    return bytes.fromhex(Account.from_key(key).address[2:])


async def serve(handler: Handler) -> tuple[web.AppRunner, str]:
    """Run ``handler`` for POST / on a free loopback port; returns the runner and the URL."""
    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    return runner, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
async def node(anvil_manual: AnvilProcess) -> AsyncIterator[JsonRpcNode]:
    """An adapter on the manually mined anvil."""
    async with JsonRpcNode(anvil_manual.url, retry=FAST_RETRY) as client:
        yield client


@pytest.fixture
async def blocking_proxy(anvil_manual: AnvilProcess) -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A proxy to anvil that answers "method not found" for txpool_content,
    eth_getBlockReceipts and eth_getProof, and counts the methods it sees."""
    blocked = {"txpool_content", "eth_getBlockReceipts", "eth_getProof"}
    seen: dict[str, int] = {}
    session = aiohttp.ClientSession()

    async def forward(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not items:
            return []
        async with session.post(anvil_manual.url, json=items) as resp:
            answer: list[dict[str, Any]] = await resp.json()
            return answer

    async def handler(request: web.Request) -> web.Response:
        payload = await request.json()
        items = payload if isinstance(payload, list) else [payload]
        for item in items:
            seen[item["method"]] = seen.get(item["method"], 0) + 1
        refused = [
            {
                "jsonrpc": "2.0",
                "id": i["id"],
                "error": {"code": -32601, "message": "Method not found"},
            }
            for i in items
            if i["method"] in blocked
        ]
        answers = refused + await forward([i for i in items if i["method"] not in blocked])
        return web.json_response(answers if isinstance(payload, list) else answers[0])

    runner, url = await serve(handler)
    try:
        yield url, seen
    finally:
        await runner.cleanup()
        await session.close()


async def test_chain_id_and_block_number(node: JsonRpcNode, anvil_manual: AnvilProcess) -> None:
    """chain_id and block_number parse the node's hex answers."""
    assert await node.chain_id() == 31337
    assert await node.block_number() == 0
    await anvil_manual.mine(2)
    assert await node.block_number() == 2


async def test_get_block_header_and_transactions(
    node: JsonRpcNode, anvil_manual: AnvilProcess
) -> None:
    """get_block returns a typed header, and with full=True the tx list with sender and nonce."""
    key = anvil_manual.private_keys[0]
    h0, raw0 = sign(key, 0)
    h1, raw1 = sign(key, 1, kind="legacy")
    for raw in (raw0, raw1):
        await node.send_raw_transaction(raw)
    await anvil_manual.mine(1)
    header = await node.get_block(1)
    latest = await node.get_block("latest")
    full = await node.get_block(1, full=True)
    genesis = await node.get_block(0)
    assert header == latest == full.header
    assert header.number == 1
    assert header.parent_hash == genesis.hash
    assert header.gas_limit > 0 and header.base_fee > 0 and header.timestamp >= genesis.timestamp
    assert header.gas_used == 2 * 21_000
    assert set(header.tx_hashes) == {h0, h1}
    assert {(t.hash, t.sender, t.nonce) for t in full.txs} == {
        (h0, address_of(key), 0),
        (h1, address_of(key), 1),
    }


async def test_get_block_missing_raises(node: JsonRpcNode) -> None:
    """A block the node does not have raises NodeError naming the method."""
    with pytest.raises(NodeError, match="eth_getBlockByNumber"):
        await node.get_block(1_000_000)


async def test_pending_transactions_from_txpool_content(
    node: JsonRpcNode, anvil_manual: AnvilProcess
) -> None:
    """txpool_content yields pending and queued txs with their fields, and mined ones leave."""
    key = anvil_manual.private_keys[1]
    h0, raw0 = sign(key, 0, value=7)
    h2, raw2 = sign(key, 2, kind="legacy")  # nonce 1 missing: queued
    for raw in (raw0, raw2):
        await node.send_raw_transaction(raw)
    pending = {p.tx_hash: p for p in await node.pending_transactions()}
    assert set(pending) == {h0, h2}
    first = pending[h0]
    assert (first.sender, first.nonce, first.to, first.value) == (address_of(key), 0, RECIPIENT, 7)
    assert (first.gas, first.max_fee) == (21_000, 5 * 10**9)
    assert pending[h2].nonce == 2
    # The signed bytes of newly listed txs are rebuilt from their fields (no fetch needed).
    assert (node.listed_raw(h0), node.listed_raw(h2)) == (raw0, raw2)
    await anvil_manual.mine(1)
    assert {p.tx_hash for p in await node.pending_transactions()} == {h2}
    assert node.listed_raw(h2) is None  # listed before: its bytes were handed on then


async def test_pending_transactions_via_filter_fallback(anvil_manual: AnvilProcess) -> None:
    """The forced filter fallback reports new pending txs, drops mined ones and survives a lost
    filter."""
    key = anvil_manual.private_keys[2]
    async with JsonRpcNode(anvil_manual.url, force_filter_fallback=True) as node:
        assert await node.pending_transactions() == []
        h0, raw0 = sign(key, 0, kind="eip2930")
        await node.send_raw_transaction(raw0)
        seen = await eventually(node.pending_transactions, what="filter reports the tx")
        assert [(p.tx_hash, p.sender, p.nonce) for p in seen] == [(h0, address_of(key), 0)]
        # The list is the pool, not only what is new since the last poll.
        assert [p.tx_hash for p in await node.pending_transactions()] == [h0]

        await anvil_manual.mine(1)
        await eventually(lambda: _empty(node), what="mined tx leaves the pending list")

        # The node forgets the filter (as after a restart or an idle timeout).
        assert node._filter_id is not None
        assert await node.call("eth_uninstallFilter", [node._filter_id]) is True
        await node.pending_transactions()
        h1, raw1 = sign(key, 1)
        await node.send_raw_transaction(raw1)
        await eventually(lambda: _has(node, h1), what="tx seen through the recreated filter")


async def _empty(node: JsonRpcNode) -> bool:
    return await node.pending_transactions() == []


async def _has(node: JsonRpcNode, tx_hash: bytes) -> bool:
    return tx_hash in {p.tx_hash for p in await node.pending_transactions()}


async def test_raw_transactions_hash_to_their_hash(
    node: JsonRpcNode, anvil_manual: AnvilProcess
) -> None:
    """raw_transactions returns bytes whose keccak is the tx hash and omits unknown hashes."""
    key = anvil_manual.private_keys[3]
    sent = [sign(key, n, kind=k) for n, k in enumerate(("eip1559", "legacy", "eip2930"))]
    for _, raw in sent:
        await node.send_raw_transaction(raw)
    unknown = b"\x11" * 32
    got = await node.raw_transactions([h for h, _ in sent] + [unknown])
    assert got == dict(sent)
    assert all(bytes(keccak(raw)) == h for h, raw in got.items())
    await anvil_manual.mine(1)
    assert await node.raw_transactions([sent[0][0]]) == {sent[0][0]: sent[0][1]}


async def test_send_raw_transaction_twice_returns_the_hash(
    node: JsonRpcNode, anvil_manual: AnvilProcess
) -> None:
    """Resending a tx the node already has returns its hash instead of failing."""
    tx_hash, raw = sign(anvil_manual.private_keys[4], 0)
    assert await node.send_raw_transaction(raw) == tx_hash
    assert await node.send_raw_transaction(raw) == tx_hash


async def test_accounts_from_get_proof(node: JsonRpcNode, anvil_manual: AnvilProcess) -> None:
    """accounts gives balance, nonce and code hash at the requested block."""
    key = anvil_manual.private_keys[5]
    me = address_of(key)
    _, deploy = sign(key, 0, to=None, gas=100_000, data=REVERTER_INITCODE)
    await node.send_raw_transaction(deploy)
    await anvil_manual.mine(1)
    contract = contract_address(me, 0)
    fresh = b"\x42" * 20
    now = await node.accounts([me, contract, fresh], 1)
    before = await node.accounts([me], 0)
    balance = int(await node.call("eth_getBalance", ["0x" + me.hex(), "0x1"]), 16)
    assert (now[me].nonce, now[me].balance, now[me].code_hash) == (1, balance, EMPTY_CODE_HASH)
    assert before[me].nonce == 0 and before[me].balance > balance
    assert now[contract].code_hash == bytes(keccak(REVERTER_RUNTIME))
    assert (now[fresh].balance, now[fresh].nonce, now[fresh].code_hash) == (0, 0, EMPTY_CODE_HASH)
    assert await node.accounts([], 1) == {}
    # Without code (what L2 needs): the same nonces and balances, no code hash read; a sampled
    # proof of the contract (which has code) agrees on what was read.
    node.account_reader.proof_check_sample = 1.0
    light = await node.accounts([me, contract], 1, code=False)
    assert [(s.nonce, s.balance) for s in light.values()] == [
        (now[a].nonce, now[a].balance) for a in light
    ]
    assert {s.code_hash for s in light.values()} == {EMPTY_CODE_HASH}
    assert node.account_reader.proof_mismatches == 0


async def _block_with_revert(node: JsonRpcNode, anvil: AnvilProcess) -> list[bytes]:
    key = anvil.private_keys[6]
    hashes = []
    for nonce, (to, gas, data) in enumerate(
        [(None, 100_000, REVERTER_INITCODE), (RECIPIENT, 21_000, b"")]
    ):
        _, raw = sign(key, nonce, to=to, gas=gas, data=data)
        hashes.append(await node.send_raw_transaction(raw))
    await anvil.mine(1)
    _, raw = sign(key, 2, to=contract_address(address_of(key), 0), gas=50_000)
    hashes.append(await node.send_raw_transaction(raw))
    await anvil.mine(1)
    return hashes


@pytest.mark.parametrize("per_tx", [False, True], ids=["eth_getBlockReceipts", "per-tx"])
async def test_block_receipts(anvil_manual: AnvilProcess, per_tx: bool) -> None:
    """block_receipts returns each tx's status, gas and sender, natively or one tx at a time."""
    async with JsonRpcNode(anvil_manual.url, force_receipt_fallback=per_tx) as node:
        deploy, transfer, revert = await _block_with_revert(node, anvil_manual)
        first = await node.block_receipts(1)
        second = await node.block_receipts(2)
        empty = await node.block_receipts(0)
    sender = address_of(anvil_manual.private_keys[6])
    assert [(r.tx_hash, r.status, r.transaction_index) for r in first] == [
        (deploy, 1, 0),
        (transfer, 1, 1),
    ]
    assert first[1].gas_used == 21_000 and all(r.sender == sender for r in first)
    assert [(r.tx_hash, r.status, r.block_number) for r in second] == [(revert, 0, 2)]
    assert 21_000 < second[0].gas_used < 50_000
    assert empty == []


async def test_fallbacks_when_node_lacks_methods(
    blocking_proxy: tuple[str, dict[str, int]],
    anvil_manual: AnvilProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node without txpool_content, eth_getBlockReceipts and eth_getProof still serves
    mempool, receipts and accounts, with one warning per missing method."""
    url, seen = blocking_proxy
    key = anvil_manual.private_keys[7]
    caplog.set_level(logging.WARNING, logger="ioswarm.node")
    # Every account read sampled for a proof check: the missing method is found at once.
    async with JsonRpcNode(url, proof_check_sample=1.0) as node:
        assert await node.pending_transactions() == []
        tx_hash, raw = sign(key, 0)
        await node.send_raw_transaction(raw)
        await eventually(lambda: _has(node, tx_hash), what="tx seen via the filter fallback")
        await anvil_manual.mine(1)
        for _ in range(2):
            receipts = await node.block_receipts(1)
            accounts = await node.accounts([address_of(key)], 1)
            await node.pending_transactions()
    assert [(r.tx_hash, r.status) for r in receipts] == [(tx_hash, 1)]
    assert accounts[address_of(key)].nonce == 1
    assert seen["eth_getTransactionReceipt"] >= 2 and seen["eth_getTransactionCount"] >= 2
    # Each missing method was tried once, then never again.
    assert seen["txpool_content"] == seen["eth_getBlockReceipts"] == seen["eth_getProof"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert any("txpool_content" in w for w in warnings)


async def test_node_down_then_back(
    anvil_manual: AnvilProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A stopped node raises NodeUnreachable after retries, logged once; the adapter recovers when
    the node returns on the same port."""
    caplog.set_level(logging.INFO, logger="ioswarm.node")
    async with JsonRpcNode(anvil_manual.url, retry=FAST_RETRY) as node:
        assert await node.block_number() == 0
        await anvil_manual.stop()
        for _ in range(2):
            with pytest.raises(NodeUnreachable, match="eth_blockNumber"):
                await node.block_number()
        assert not node.transport.reachable
        await anvil_manual.start()
        assert await node.chain_id() == 31337
        assert node.transport.reachable
    messages = [r.getMessage() for r in caplog.records]
    down = [m for m in messages if m.startswith("node unreachable")]
    assert len(down) == 1 and f"url={anvil_manual.url}" in down[0]
    assert sum(m.startswith("node reachable again") for m in messages) == 1


async def test_garbage_answers_raise_node_error() -> None:
    """Non-JSON bodies, wrong shapes, malformed fields and HTTP errors raise NodeError naming
    the method."""
    state: dict[str, Any] = {"mode": "", "hits": 0}

    async def handler(request: web.Request) -> web.Response:
        state["hits"] += 1
        req = await request.json()
        mode = state["mode"]
        if mode == "text":
            return web.Response(text="<html>502 bad gateway</html>")
        if mode == "list":
            return web.json_response([1, 2])
        if mode == "no-result":
            return web.json_response({"jsonrpc": "2.0", "id": req["id"]})
        if mode == "wrong-id":
            return web.json_response({"jsonrpc": "2.0", "id": 999, "result": "0x1"})
        if mode == "bad-field":
            block = {"number": "0x1", "hash": "0x1234", "transactions": []}
            return web.json_response({"jsonrpc": "2.0", "id": req["id"], "result": block})
        if mode == "bad-hex":
            return web.json_response({"jsonrpc": "2.0", "id": req["id"], "result": "12"})
        if mode == "http-404":
            return web.Response(status=404, text="not here")
        if mode == "flaky" and state["hits"] < 3:
            return web.Response(status=503, text="warming up")
        return web.json_response({"jsonrpc": "2.0", "id": req["id"], "result": "0x7a69"})

    runner, url = await serve(handler)
    try:
        async with JsonRpcNode(url, retry=FAST_RETRY) as node:
            cases = [
                ("text", node.chain_id, "eth_chainId: answer is not JSON"),
                ("list", node.chain_id, "eth_chainId: answer is not a JSON-RPC object"),
                ("no-result", node.block_number, "eth_blockNumber: answer has neither"),
                ("wrong-id", node.chain_id, "eth_chainId: answer id 999"),
                (
                    "bad-field",
                    lambda: node.get_block(1),
                    r"eth_getBlockByNumber: field result\.hash",
                ),
                ("bad-hex", node.block_number, "eth_blockNumber: field result: expected a hex"),
                ("http-404", node.chain_id, "eth_chainId: HTTP 404"),
            ]
            for mode, call, message in cases:
                state["mode"] = mode
                with pytest.raises(NodeError, match=message) as info:
                    await call()
                assert not isinstance(info.value, NodeUnreachable), mode
            state.update(mode="flaky", hits=0)
            assert await node.chain_id() == 31337
            assert state["hits"] == 3
    finally:
        await runner.cleanup()


async def test_batch_orders_answers_and_surfaces_item_errors(anvil_manual: AnvilProcess) -> None:
    """A batch returns answers in call order even when the node reorders them, with per-item
    errors kept per item."""

    async def reversing(request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                anvil_manual.url,
                data=await request.read(),
                headers={"Content-Type": "application/json"},
            ) as resp,
        ):
            answer = json.loads(await resp.read())
        return web.json_response(answer[::-1] if isinstance(answer, list) else answer)

    runner, url = await serve(reversing)
    try:
        async with JsonRpcTransport(url, max_batch=2) as rpc:
            results = await rpc.batch(
                [("eth_chainId", []), ("eth_noSuchMethod", []), ("eth_blockNumber", [])]
            )
            assert await rpc.batch([]) == []
    finally:
        await runner.cleanup()
    assert [r.method for r in results] == ["eth_chainId", "eth_noSuchMethod", "eth_blockNumber"]
    assert results[0].unwrap() == "0x7a69" and results[2].unwrap() == "0x0"
    assert isinstance(results[1].error, MethodNotSupported)
    with pytest.raises(MethodNotSupported, match="eth_noSuchMethod"):
        results[1].unwrap()


async def test_connection_refused_is_unreachable() -> None:
    """A port nobody listens on raises NodeUnreachable, not a raw aiohttp error."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    async with JsonRpcNode(f"http://127.0.0.1:{port}", retry=FAST_RETRY) as node:
        with pytest.raises(NodeUnreachable, match="eth_chainId"):
            await node.chain_id()


async def test_slow_node_times_out_as_unreachable() -> None:
    """A node that does not answer within the timeout raises NodeUnreachable after retries."""
    hits = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        await asyncio.sleep(1.0)
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": "0x1"})

    runner, url = await serve(slow)
    try:
        async with JsonRpcNode(url, timeout=0.1, retry=FAST_RETRY) as node:
            with pytest.raises(NodeUnreachable, match="eth_blockNumber"):
                await node.block_number()
    finally:
        await runner.cleanup()
    assert hits == FAST_RETRY.attempts


async def test_batch_refused_falls_back_to_single_calls(anvil_manual: AnvilProcess) -> None:
    """A node that refuses JSON-RPC batches still answers them, sent one call at a time."""
    batches = 0

    async def no_batches(request: web.Request) -> web.Response:
        nonlocal batches
        payload = await request.json()
        if isinstance(payload, list):
            batches += 1
            error = {"code": -32600, "message": "batch requests are not supported"}
            return web.json_response({"jsonrpc": "2.0", "id": None, "error": error})
        async with (
            aiohttp.ClientSession() as session,
            session.post(anvil_manual.url, json=payload) as resp,
        ):
            return web.json_response(await resp.json())

    runner, url = await serve(no_batches)
    try:
        async with JsonRpcTransport(url) as rpc:
            for _ in range(2):
                results = await rpc.batch([("eth_chainId", []), ("eth_blockNumber", [])])
                assert [r.unwrap() for r in results] == ["0x7a69", "0x0"]
    finally:
        await runner.cleanup()
    assert batches == 1


async def test_anvil_refuses_a_port_in_use(anvil_manual: AnvilProcess) -> None:
    """AnvilProcess on a port another node serves fails instead of adopting that node."""
    other = AnvilProcess(env=os.environ, block_time=None, port=anvil_manual.port)
    with pytest.raises(AnvilError, match="already in use"):
        await other.start()
    assert not other.running
