"""Pending transactions pushed by the node: ``eth_subscribe newPendingTransactions`` over a
WebSocket.

The stream asks for full transaction objects (``eth_subscribe`` with ``true``, which anvil,
geth and reth offer) and falls back to hashes when the node refuses that form; hashes are then
fetched by the consumer in batches. A dropped connection is reopened with capped exponential
backoff; a node that does not speak WebSocket at the URL, or has no such subscription, is
reported once and left alone (the consumer's ``txpool_content`` poll then does all the work).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from ioswarm.core.models import PendingTx
from ioswarm.errors import NodeError
from ioswarm.node.adapter import pending_from_json
from ioswarm.node.fields import fixed
from ioswarm.node.rpc import RetryPolicy, backoff_delay, is_method_missing, redact_url
from ioswarm.node.txjson import raw_from_json

log = logging.getLogger("ioswarm.node")

SUBSCRIBE_TIMEOUT_SEC = 5.0
HEARTBEAT_SEC = 10.0
RECONNECT_POLICY = RetryPolicy(attempts=1, base_delay=0.2, max_delay=5.0, jitter=0.5)


def ws_url_for(rpc_url: str) -> str:
    """The WebSocket URL of a node served on the same port as its HTTP JSON-RPC (anvil, reth,
    most gateways): ``http`` becomes ``ws``, ``https`` becomes ``wss``."""
    parts = urlsplit(rpc_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


class PushUnsupported(Exception):
    """The URL does not offer a pending-transaction subscription (not retried)."""


class PendingTxStream:
    """Feeds ``on_txs`` (full transactions, each with its signed bytes where they could be
    rebuilt) or ``on_hashes`` (hash-only notifications) with every transaction the node
    announces, until stopped."""

    def __init__(
        self,
        url: str,
        on_txs: Callable[[list[tuple[PendingTx, bytes | None]]], None],
        on_hashes: Callable[[list[bytes]], None],
        *,
        policy: RetryPolicy = RECONNECT_POLICY,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.safe_url = redact_url(url)
        self._on_txs = on_txs
        self._on_hashes = on_hashes
        self._policy = policy
        self._rng = rng or random.Random()
        self._ids = itertools.count(1)
        self.live = False
        self.supported = True
        self.full: bool | None = None
        self.connects = 0
        self.drops = 0
        self.notifications = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Keep a subscription open until ``stop``; reconnect after drops."""
        failures = 0
        while not stop.is_set():
            try:
                async with aiohttp.ClientSession() as session:
                    await self._serve(session, stop)
                failures = 0  # a connection that worked and ended: reconnect promptly
                if stop.is_set():
                    return
                self.drops += 1
                log.warning("mempool push dropped, reconnecting url=%s", self.safe_url)
            except PushUnsupported as exc:
                self.supported = False
                log.warning(
                    "node offers no pending-tx subscription over WebSocket, mempool by "
                    "polling only url=%s reason=%r",
                    self.safe_url,
                    str(exc),
                )
                await stop.wait()
                return
            except (aiohttp.ClientError, OSError, TimeoutError, NodeError) as exc:
                failures += 1
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "mempool push unavailable, poll fills in url=%s error=%r",
                    self.safe_url,
                    str(exc) or type(exc).__name__,
                )
            finally:
                self.live = False
            delay = backoff_delay(self._policy, max(1, failures), self._rng.random())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _serve(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        try:
            ws = await session.ws_connect(
                self.url, heartbeat=HEARTBEAT_SEC, timeout=aiohttp.ClientWSTimeout(ws_close=2.0)
            )
        except aiohttp.WSServerHandshakeError as exc:
            # Something answered, but not as a WebSocket server (an HTTP-only node port).
            raise PushUnsupported(f"no WebSocket at this URL (HTTP {exc.status})") from exc
        async with ws:
            sub_id = await self._subscribe(ws)
            self.connects += 1
            self.live = True
            log.info(
                "mempool push subscribed url=%s form=%s",
                self.safe_url,
                "full" if self.full else "hashes",
            )
            stopping = asyncio.ensure_future(stop.wait())
            try:
                while True:
                    receiving = asyncio.ensure_future(ws.receive())
                    done, _ = await asyncio.wait(
                        {receiving, stopping}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if stopping in done:
                        receiving.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await receiving
                        return
                    msg = receiving.result()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        return  # closed, closing or an error: the caller reconnects
                    self._deliver(sub_id, msg.data)
            finally:
                stopping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stopping

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Subscribe for full transactions, else for hashes; returns the subscription id."""
        for full in (True, False):
            params: list[Any] = (
                ["newPendingTransactions", True] if full else ["newPendingTransactions"]
            )
            req_id = next(self._ids)
            await ws.send_str(
                json.dumps(
                    {"jsonrpc": "2.0", "id": req_id, "method": "eth_subscribe", "params": params}
                )
            )
            answer = await asyncio.wait_for(self._answer(ws, req_id), SUBSCRIBE_TIMEOUT_SEC)
            error = answer.get("error")
            if error is None and isinstance(answer.get("result"), str):
                self.full = full
                return str(answer["result"])
            message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
            code = error.get("code") if isinstance(error, dict) else None
            if is_method_missing(code if isinstance(code, int) else None, message):
                raise PushUnsupported(f"eth_subscribe: {message}")
        raise PushUnsupported("eth_subscribe newPendingTransactions refused in both forms")

    @staticmethod
    async def _answer(ws: aiohttp.ClientWebSocketResponse, req_id: int) -> dict[str, Any]:
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise aiohttp.ClientConnectionError("WebSocket closed while subscribing")
            answer = json.loads(msg.data)
            if isinstance(answer, dict) and answer.get("id") == req_id:
                return answer

    def _deliver(self, sub_id: str, text: str) -> None:
        method = "eth_subscription"
        try:
            note = json.loads(text)
        except json.JSONDecodeError:
            log.warning("mempool push sent something that is not JSON; ignored")
            return
        params = note.get("params") if isinstance(note, dict) else None
        if not isinstance(params, dict) or params.get("subscription") != sub_id:
            return
        self.notifications += 1
        result = params.get("result")
        try:
            if isinstance(result, str):
                self._on_hashes([fixed(method, "params.result", result, 32)])
                return
            tx = pending_from_json(method, result, "params.result")
        except NodeError as exc:
            # One malformed notification is dropped; the poll still lists the tx.
            log.warning("mempool push notification ignored error=%s", exc)
            return
        if tx is not None:
            self._on_txs([(tx, raw_from_json(result, tx.tx_hash))])
