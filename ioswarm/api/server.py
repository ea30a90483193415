"""The HTTP monitoring API (aiohttp): stats JSON, swarm views, health, Prometheus, and the
operator console (a page fed by server-sent events)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ioswarm.api.connections import ConnectionGovernor
from ioswarm.api.console import ConsoleFeed
from ioswarm.core.connbudget import ConnectionTable
from ioswarm.core.timeline import Sample
from ioswarm.errors import ConfigError, StoreError

log = logging.getLogger("ioswarm.api")

# Live figures: a cached copy would show a browser frozen numbers.
STATS_CACHE_CONTROL = "no-store"
NO_STORE = {"Cache-Control": "no-store"}
# The reference's CORS headers; every JSON API route carries them and answers a preflight.
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
}
MAX_AGENT_ID = 64
# Exported snapshot names: no path separators, no leading dot (temporary files).
SNAPSHOT_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.snap\.gz$")


class SwarmView(Protocol):
    """What the API reads from a coordinator (all cheap, in-memory): its ``SwarmViews``."""

    def stats(self) -> dict[str, Any]: ...
    def status(self) -> dict[str, Any]: ...
    def agents(self) -> list[dict[str, Any]]: ...
    def leaderboard(self) -> dict[str, Any]: ...
    def shadow_view(self) -> dict[str, Any]: ...
    def health(self) -> tuple[bool, dict[str, Any]]: ...
    def live_agents(self) -> list[str]: ...
    def epoch_view(self) -> dict[str, Any]: ...
    def rewards_view(self, agent_id: str) -> dict[str, Any]: ...
    def sample(self, at: float) -> Sample: ...


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _cors(handler: Handler) -> Handler:
    """``handler`` with the CORS headers on its response."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        resp = await handler(request)
        resp.headers.update(CORS)
        return resp

    return wrapped


async def _preflight(_: web.Request) -> web.Response:
    """A CORS preflight (``OPTIONS``): 204 with the allowed origin, methods and headers."""
    return web.Response(status=204, headers=CORS)


def wants_json(request: web.Request) -> bool:
    """Whether a /healthz caller asked for ioswarm's JSON detail (``?format=json`` or
    ``Accept: application/json``) rather than the reference's text."""
    return request.query.get("format") == "json" or "application/json" in request.headers.get(
        "Accept", ""
    )


def build_app(
    view: SwarmView,
    registry: CollectorRegistry,
    snapshot_dir: Path | None = None,
    middlewares: Sequence[Middleware] = (),
    console: ConsoleFeed | None = None,
) -> web.Application:
    """The aiohttp application; the caller runs it (tests use a free loopback port).

    With ``snapshot_dir`` (L4 sync on), ``GET /snapshots/<file>`` serves exported snapshots.
    ``console`` feeds ``/api/events`` and ``/api/console`` (default: a feed of ``view``).
    """
    feed = console or ConsoleFeed(view, registry)

    async def stats(_: web.Request) -> web.Response:
        return _json(view.stats(), headers={"Cache-Control": STATS_CACHE_CONTROL})

    async def status(_: web.Request) -> web.Response:
        return _json(view.status())

    async def agents(_: web.Request) -> web.Response:
        rows = view.agents()
        return _json({"count": len(rows), "agents": rows})

    async def leaderboard(_: web.Request) -> web.Response:
        return _json(view.leaderboard())

    async def shadow(_: web.Request) -> web.Response:
        return _json(view.shadow_view())

    async def ready(_: web.Request) -> web.Response:
        ok, detail = view.health()
        return _json({"ok": ok, **detail}, status=200 if ok else 503, headers=NO_STORE)

    async def healthz(request: web.Request) -> web.Response:
        """The reference's check: 200 ``ok (N agents)`` while agents are live, else 503."""
        if wants_json(request):
            return await ready(request)
        live = len(view.live_agents())
        if live:
            return web.Response(text=f"ok ({live} agents)", headers=NO_STORE)
        return web.Response(text="no live agents", status=503, headers=NO_STORE)

    async def rewards(request: web.Request) -> web.Response:
        agent = request.match_info.get("agent") or request.query.get("agent", "")
        if not agent or len(agent) > MAX_AGENT_ID:
            return _json({"error": "query parameter agent=<agent id> is required"}, status=400)
        try:
            return _json(view.rewards_view(agent))
        except StoreError as exc:
            return _json({"error": f"reward ledger unavailable: {exc}"}, status=503)

    async def epoch(_: web.Request) -> web.Response:
        try:
            return _json(view.epoch_view())
        except StoreError as exc:
            return _json({"error": f"reward ledger unavailable: {exc}"}, status=503)

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def console_page(_: web.Request) -> web.Response:
        html = resources.files("ioswarm.api").joinpath("static/console.html").read_text()
        return web.Response(text=html, content_type="text/html", headers=NO_STORE)

    async def console_json(_: web.Request) -> web.Response:
        return _json(feed.snapshot(), headers=NO_STORE)

    async def snapshot(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if snapshot_dir is None or not SNAPSHOT_FILE.match(name):
            return _json({"error": "no such snapshot"}, status=404)
        path = snapshot_dir / name
        if not path.is_file():
            return _json({"error": "no such snapshot"}, status=404)
        return web.FileResponse(path, headers={"Content-Type": "application/gzip"})

    api: dict[str, Handler] = {
        "/api/stats": stats,
        "/swarm/status": status,
        "/swarm/agents": agents,
        "/swarm/leaderboard": leaderboard,
        "/swarm/shadow": shadow,
        "/api/rewards": rewards,
        "/api/rewards/{agent}": rewards,
        "/swarm/epoch": epoch,
        "/healthz": healthz,
        "/readyz": ready,
        "/livez": ready,
        "/api/console": console_json,
    }
    app = web.Application(middlewares=list(middlewares))
    app.router.add_get("/snapshots/{name}", snapshot)
    for path, handler in api.items():
        app.router.add_get(path, _cors(handler))
        app.router.add_route("OPTIONS", path, _preflight)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("OPTIONS", "/api/events", _preflight)
    app.router.add_get("/api/events", feed.events)
    app.router.add_get("/", console_page)
    return app


def http_connection_table(
    budget: int, per_peer: int, idle_timeout: float, request_timeout: float
) -> ConnectionTable:
    """The HTTP listener's table for ``budget`` descriptors: a quarter of them (at least 8)
    hold newcomers on probation while the rest are established."""
    probation = max(8, budget // 4)
    return ConnectionTable(
        max(1, budget - probation),
        per_peer,
        probation,
        idle_timeout=idle_timeout,
        request_timeout=request_timeout,
    )


class ApiServer:
    """Runs the API app on host:port (port 0 picks a free one; ``port`` tells which), behind a
    connection budget (``table``; default: 256 connections, 64 per address, 15 s idle)."""

    def __init__(
        self,
        view: SwarmView,
        registry: CollectorRegistry,
        host: str,
        port: int,
        snapshot_dir: Path | None = None,
        table: ConnectionTable | None = None,
        console: ConsoleFeed | None = None,
    ) -> None:
        """``console`` (default: a feed of ``view`` with 32 streams) must be run by the
        caller (:meth:`ConsoleFeed.run`) for its trends and pushes."""
        self.console = console or ConsoleFeed(view, registry)
        self.governor = ConnectionGovernor(
            table or http_connection_table(256, 64, idle_timeout=15.0, request_timeout=600.0),
            registry,
        )
        self._app = build_app(
            view, registry, snapshot_dir, [self.governor.middleware], self.console
        )
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self.port = port

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        handler = self._runner.server
        assert handler is not None  # set by setup()
        try:
            self._server = await asyncio.get_running_loop().create_server(
                self.governor.wrap(handler),
                self._host,
                self._port,
                reuse_address=True,
                # asyncio accepts up to ``backlog`` connections per wake-up; fewer than the
                # probation slots, so a reconnect storm cannot cycle through all of them between
                # a newcomer's accept and the reading of its request head.
                backlog=max(4, self.governor.table.max_probation // 4),
            )
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            address = f"{self._host}:{self._port}"
            raise ConfigError(
                "swarmApiPort", f"cannot bind {address}: {exc.strerror or exc}"
            ) from exc
        if self._server.sockets:
            self.port = int(self._server.sockets[0].getsockname()[1])
        log.info(
            "http api listening host=%s port=%d max_connections=%d",
            self._host,
            self.port,
            self.governor.table.max_total + self.governor.table.max_probation,
        )

    async def stop(self) -> None:
        self.console.close()  # open event streams end, so shutdown does not wait on them
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
