"""The push stream against a WebSocket server that offers only hash notifications (no anvil
can be made to refuse full transactions, so a small server stands in for such a node)."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import WSMsgType, web

from ioswarm.core.models import PendingTx
from ioswarm.node.ws import PendingTxStream
from tests.helpers import eventually

pytestmark = pytest.mark.integration

TX_HASH = "0x" + "ab" * 32


async def test_hash_only_nodes_are_subscribed_for_hashes() -> None:
    """``eth_subscribe`` with full transactions is refused; the stream subscribes for hashes
    and hands each one on, and says which form it got."""
    asked: list[list[object]] = []

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            req = json.loads(msg.data)
            asked.append(req["params"])
            if len(req["params"]) == 2:
                await ws.send_json(
                    {"jsonrpc": "2.0", "id": req["id"], "error": {"code": -32602, "message": "x"}}
                )
                continue
            await ws.send_json({"jsonrpc": "2.0", "id": req["id"], "result": "0x1"})
            note = {"subscription": "0x1", "result": TX_HASH}
            await ws.send_json({"jsonrpc": "2.0", "method": "eth_subscription", "params": note})
            # Someone else's subscription and garbage are ignored.
            other = {"subscription": "0x2", "result": TX_HASH}
            await ws.send_json({"jsonrpc": "2.0", "method": "eth_subscription", "params": other})
            await ws.send_str("not json")
        return ws

    app = web.Application()
    app.router.add_get("/", ws_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    full: list[tuple[PendingTx, bytes | None]] = []
    hashes: list[bytes] = []
    stream = PendingTxStream(f"ws://127.0.0.1:{port}", full.extend, hashes.extend)
    stop = asyncio.Event()
    running = asyncio.create_task(stream.run(stop))
    try:
        await eventually(lambda: stream.notifications >= 1, 10, what="a notification")
        await asyncio.sleep(0.2)  # the other two messages arrive and are dropped
        assert hashes == [bytes.fromhex(TX_HASH[2:])] and stream.notifications == 1
        assert full == []
        assert stream.live and stream.full is False
        assert asked == [["newPendingTransactions", True], ["newPendingTransactions"]]
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await runner.cleanup()
    assert not stream.live
