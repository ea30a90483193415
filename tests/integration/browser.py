"""A headless Chromium driven over the DevTools protocol (a websocket, aiohttp's client).

Just enough for the console test: open a page, evaluate JavaScript, take a screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import eventually


def find_chromium() -> str | None:
    """Debian's ``chromium`` (or another Chromium build) on PATH."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class Page:
    """One tab, spoken to over its DevTools websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, width: int) -> None:
        self._ws = ws
        self.width = width
        self._ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call one DevTools method and return its result (events in between are skipped)."""
        call_id = next(self._ids)
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        async for msg in self._ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"DevTools websocket closed during {method}")
            data = json.loads(msg.data)
            if data.get("id") != call_id:
                continue
            if "error" in data:
                raise RuntimeError(f"{method}: {data['error']}")
            return dict(data["result"])
        raise ConnectionError(f"DevTools websocket closed during {method}")

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        """Save the whole page as PNG at ``path``, laid out at the window's width."""
        metrics = await self.send("Page.getLayoutMetrics")
        height = math.ceil(metrics["cssContentSize"]["height"])
        # A viewport as tall as the page: no scrollbar takes width from the layout.
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        try:
            shot = await self.send("Page.captureScreenshot", format="png")
        finally:
            await self.send("Emulation.clearDeviceMetricsOverride")
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@contextlib.asynccontextmanager
async def chromium_page(
    binary: str, profile: Path, url: str, width: int = 1366, height: int = 900
) -> AsyncIterator[Page]:
    """Start headless Chromium with a fresh profile, open ``url`` in its tab, yield the tab."""
    args = [
        binary,
        "--headless=new",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-gpu",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-dev-shm-usage",
    ]
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    proc = await asyncio.create_subprocess_exec(
        *args, "about:blank", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        port_file = profile / "DevToolsActivePort"
        await eventually(
            lambda: proc.returncode is None and port_file.is_file() and port_file.read_text(),
            30,
            what="Chromium's DevToolsActivePort",
        )
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            tab = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws, width)
                await page.send("Page.enable")
                await page.send("Page.navigate", url=url)
                yield page
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
