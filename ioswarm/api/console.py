"""The operator console's live feed: one JSON snapshot a second, pushed as server-sent events.

A supervised loop samples the coordinator's running totals every second (the trends) and,
while anyone watches, builds one snapshot and serialises it once; every open stream then
writes the same bytes. A slow viewer only ever gets the newest snapshot, never a queue, and
the number of streams is capped (each holds a connection busy, see
:mod:`ioswarm.api.connections`). Reward figures cost ledger reads and contract calls, so they
are refreshed every :data:`REWARDS_REFRESH_SEC` while someone watches, not per snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from ioswarm.core.rewards import wei_to_iotx
from ioswarm.core.timeline import Sample, Timeline, accuracy_pct
from ioswarm.errors import IoswarmError, StoreError

log = logging.getLogger("ioswarm.api")

SNAPSHOT_INTERVAL_SEC = 1.0
REWARDS_REFRESH_SEC = 15.0
CLAIMABLE_PER_REFRESH = 50
"""Contract reads per refresh at most; the rest of a large swarm waits for the next one."""
RETRY_MS = 2000
"""How soon a browser reconnects a dropped stream (the SSE ``retry`` field)."""


class ConsoleSource(Protocol):
    """What the console reads: the coordinator's :class:`~ioswarm.api.views.SwarmViews`."""

    def sample(self, at: float) -> Sample: ...
    def status(self) -> dict[str, Any]: ...
    def agents(self) -> list[dict[str, Any]]: ...
    def shadow_view(self) -> dict[str, Any]: ...
    def health(self) -> tuple[bool, dict[str, Any]]: ...
    def epoch_view(self) -> dict[str, Any]: ...
    def rewards_view(self, agent_id: str) -> dict[str, Any]: ...


class ConsoleFeed:
    """Samples trends, builds snapshots and serves ``GET /api/events`` (at most
    ``max_streams`` at once; more are refused 503)."""

    def __init__(
        self,
        view: ConsoleSource,
        registry: CollectorRegistry,
        max_streams: int = 32,
        claimable: Callable[[str], Awaitable[int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``claimable(wallet)`` reads the reward pool (None: no settlement, shown as —)."""
        self._view = view
        self._claimable_of = claimable
        self._clock = clock
        self._wall = wall_clock
        self.max_streams = max_streams
        self.timeline = Timeline()
        self.streams = 0
        self.seq = 0
        self._latest = b""
        self._latest_at: float | None = None
        self._changed = asyncio.Event()
        self._closed = False
        self._earned: dict[str, float] = {}
        self._claimable: dict[str, float] = {}
        self._rewards_at: float | None = None
        self._open_streams = Gauge(
            "ioswarm_console_streams", "Open operator-console event streams.", registry=registry
        )
        self._refused = Counter(
            "ioswarm_console_streams_refused",
            "Console event streams refused because maxConsoleStreams were open.",
            registry=registry,
        )

    # -- the loop --------------------------------------------------------------------------

    def step(self) -> None:
        """Take one trend sample; while anyone watches, publish a fresh snapshot."""
        self.timeline.add(self._view.sample(self._clock()))
        if self.streams:
            self.publish()

    async def run(self) -> None:
        """Sample every second until cancelled (supervised by the coordinator)."""
        while True:
            self.step()
            if self.streams and self._rewards_due():
                await self.refresh_rewards()
            await asyncio.sleep(SNAPSHOT_INTERVAL_SEC)

    def _rewards_due(self) -> bool:
        at = self._rewards_at
        return at is None or self._clock() - at >= REWARDS_REFRESH_SEC

    async def refresh_rewards(self) -> None:
        """Re-read each agent's earned total from the ledger and claimable from the pool."""
        self._rewards_at = self._clock()
        earned: dict[str, float] = {}
        wallets: list[str] = []
        for row in self._view.agents():
            agent_id = str(row["agent_id"])
            with contextlib.suppress(StoreError):
                totals = self._view.rewards_view(agent_id).get("totals")
                if totals:
                    earned[agent_id] = float(totals["amount_iotx"])
            if row.get("wallet"):
                wallets.append(str(row["wallet"]))
        self._earned = earned
        if self._claimable_of is None:
            return
        # Wallets never read go first, then the longest unread, so a big swarm rotates.
        known = set(self._claimable)
        order = [w for w in wallets if w not in known] + [w for w in wallets if w in known]
        for wallet in order[:CLAIMABLE_PER_REFRESH]:
            try:
                self._claimable[wallet] = wei_to_iotx(await self._claimable_of(wallet))
            except (IoswarmError, ValueError) as exc:
                log.debug("console claimable read failed wallet=%s error=%s", wallet, exc)
                self._claimable.pop(wallet, None)
            else:
                # Re-inserted last: the dict's order is oldest read first.
                self._claimable[wallet] = self._claimable.pop(wallet)
        live = set(wallets)
        for wallet in [w for w in self._claimable if w not in live]:
            del self._claimable[wallet]

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole console document (also ``GET /api/console``)."""
        status = self._view.status()
        ok, health = self._view.health()
        shadow = self._view.shadow_view()
        for counts in [*shadow["levels"].values(), shadow["total"]]:
            counts["accuracy_pct"] = accuracy_pct(counts["matched"], counts["mismatched"])
        try:
            epoch = self._view.epoch_view()
        except StoreError as exc:
            epoch = {"enabled": True, "error": f"reward ledger unavailable: {exc}"}
        agents = self._view.agents()
        for row in agents:
            counts = row.get("shadow") or {}
            row["accuracy_pct"] = accuracy_pct(
                counts.get("matched", 0), counts.get("mismatched", 0)
            )
            row["earned_iotx"] = self._earned.get(str(row["agent_id"]))
            row["claimable_iotx"] = self._claimable.get(str(row["wallet"]))
        return {
            "seq": self.seq,
            "at": round(self._wall(), 3),
            "status": status,
            "health": {"ok": ok, **health},
            "shadow": shadow,
            "agents": agents,
            "epoch": epoch,
            "l4": _l4_summary(status, agents),
            "trends": self.timeline.series(self._clock()),
        }

    def publish(self) -> bytes:
        """Build, serialise and hand the next snapshot to every open stream."""
        self._latest_at = self._clock()
        self.seq += 1
        body = json.dumps(self.snapshot(), separators=(",", ":"))
        self._latest = f"id: {self.seq}\ndata: {body}\n\n".encode()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return self._latest

    def _current(self) -> bytes:
        """The newest snapshot, rebuilt when it is older than the sampling interval."""
        at = self._latest_at
        if at is None or self._clock() - at >= SNAPSHOT_INTERVAL_SEC:
            return self.publish()
        return self._latest

    def close(self) -> None:
        """End every open stream (server shutdown); new ones are refused."""
        self._closed = True
        self._changed.set()

    # -- the HTTP side ---------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/events``: ``text/event-stream`` of snapshots until the client leaves,
        the server stops, or the request timeout cuts it (the browser then reconnects)."""
        if self._closed or self.streams >= self.max_streams:
            self._refused.inc()
            return web.json_response(
                {"error": f"console streams full ({self.max_streams}); retry shortly"},
                status=503,
                headers={"Retry-After": "5", "Cache-Control": "no-store"},
            )
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # a proxy in front must not buffer the stream
            }
        )
        self.streams += 1
        self._open_streams.set(self.streams)
        try:
            await resp.prepare(request)
            await resp.write(f"retry: {RETRY_MS}\n\n".encode() + self._current())
            while not self._closed:
                await self._changed.wait()
                if self._closed:
                    break
                await resp.write(self._latest)
        except ConnectionError:
            pass  # the viewer left
        finally:
            self.streams -= 1
            self._open_streams.set(self.streams)
        return resp


def _l4_summary(status: dict[str, Any], agents: list[dict[str, Any]]) -> dict[str, Any]:
    """L4 state agreement: the coordinator's state height, and how many L4 agents' state
    hashes agreed at every height checked (diverged: at least one mismatch)."""
    rows = [a["l4_state"] for a in agents if a.get("l4_state")]
    return {
        "enabled": "l4_state_height" in status,
        "state_height": status.get("l4_state_height"),
        "subscribers": status.get("l4_diff_subscribers"),
        "agents": len(rows),
        "agreeing": sum(1 for r in rows if r["heights_checked"] and not r["mismatched"]),
        "diverged": sum(1 for r in rows if r["mismatched"]),
        "heights_checked": sum(r["heights_checked"] for r in rows),
    }
