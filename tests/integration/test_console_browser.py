"""The operator console in a real headless Chromium, against a coordinator with agents doing
real work on anvil.

The test saves a screenshot of the console as ``test-artifacts/console.png`` in the repository
root (git-ignored), whether or not its checks pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ioswarm.core.models import Level
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.browser import Page, chromium_page, find_chromium
from tests.integration.swarm import drive_until_compared, running_coordinator, start_agent

pytestmark = pytest.mark.integration

ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "console.png"
AGENTS = {"console-l1": Level.L1, "console-l2": Level.L2}
MIN_COMPARED = 4

# Everything the page shows with a data-k attribute, by section, raw values from data-v.
READ_PAGE = """(() => {
  const val = (el) => JSON.parse(el.dataset.v === undefined ? "null" : el.dataset.v);
  const out = {seq: Number(document.body.dataset.seq),
               conn: document.querySelector("#conn").dataset.state,
               cards: {}, text: {}, agents: {}, levels: {}, settlements: {},
               charts: [...document.querySelectorAll("svg path")].map((p) => p.closest("svg").id)};
  for (const el of document.querySelectorAll("header [data-k], .cards [data-k], .cap [data-k]")) {
    out.cards[el.dataset.k] = val(el); out.text[el.dataset.k] = el.textContent;
  }
  const table = (sel, key, into) => {
    for (const tr of document.querySelectorAll(sel + " tbody tr")) {
      const row = {};
      for (const td of tr.querySelectorAll("[data-k]")) row[td.dataset.k] = val(td);
      into[tr.dataset[key]] = row;
    }
  };
  table("#agents", "agent", out.agents);
  table("#shadow", "level", out.levels);
  table("#settlements", "epoch", out.settlements);
  return out;
})()"""


async def read_page(page: Page) -> dict[str, Any]:
    value = await page.evaluate(READ_PAGE)
    assert isinstance(value, dict)
    return value


async def api(http: aiohttp.ClientSession, path: str) -> Any:
    async with http.get(path) as resp:
        assert resp.status == 200, path
        return await resp.json()


async def page_matches_api(page: Page, http: aiohttp.ClientSession) -> bool:
    """Whether the page's figures equal the API's JSON read right after (nothing is in
    flight, so only the head and the clocks may move in between), the epoch's tallied agents
    (the reference's ``agents`` count) and the live agents included."""
    shown = await read_page(page)
    status = await api(http, "/swarm/status")
    stats = await api(http, "/api/stats")
    rows = {r["agent_id"]: r for r in (await api(http, "/swarm/agents"))["agents"]}
    shadow = await api(http, "/swarm/shadow")
    cards = shown["cards"]
    judged = stats["shadow_matched"] + sum(c["mismatched"] for c in shadow["levels"].values())
    expected_cards = {
        "chain_id": status["chain_id"],
        "task_level": status["task_level"],
        "agents": status["agents"],
        "tasks_dispatched": status["tasks_dispatched"],
        "results_accepted": status["results_accepted"],
        "tasks_reassigned": status["tasks_reassigned"],
        "shadow_compared": stats["shadow_compared"],
        "accuracy": round(100 * stats["shadow_matched"] / judged, 2),
    }
    if {k: cards.get(k) for k in expected_cards} != expected_cards:
        return False
    if not cards["head_block"] <= status["head_block"]:
        return False
    for agent_id, row in rows.items():
        on_page = shown["agents"].get(agent_id, {})
        counts = row["shadow"] or {"matched": 0, "mismatched": 0}
        want = {
            "level": row["level"],
            "wallet": row["wallet"],
            "results_accepted": row["results_accepted"],
            "inflight": row["inflight"],
            "matched": counts["matched"],
            "mismatched": counts["mismatched"],
        }
        if {k: on_page.get(k) for k in want} != want:
            return False
    epoch = await api(http, "/swarm/epoch")
    ready = await api(http, "/readyz")
    sections = await page.evaluate(
        '({epoch: document.querySelector("#epoch").textContent,'
        ' health: document.querySelector("#health").textContent})'
    )
    if f"{epoch['agents']} agents tallied" not in sections["epoch"]:
        return False
    if f"live agents{ready['live_agents']} (heartbeat" not in sections["health"]:
        return False
    for level, counts in shadow["levels"].items():
        on_page = shown["levels"].get(level, {})
        if (on_page.get("compared"), on_page.get("matched")) != (
            counts["compared"],
            counts["matched"],
        ):
            return False
    return True


async def test_console_shows_live_figures_that_match_the_api(anvil: AnvilProcess) -> None:
    """In headless Chromium the console goes live over server-sent events, shows accuracy as
    "—" before anything is compared, then shows new figures after a workload (charts drawn)
    and they equal the API's JSON; a screenshot is saved to test-artifacts/console.png."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium not found on PATH (make debs installs Debian's chromium)")
    async with running_coordinator(anvil.url) as app:
        agents = [start_agent(app.grpc_port, name, level) for name, level in AGENTS.items()]
        url = f"http://127.0.0.1:{app.api_port}"
        try:
            await eventually(
                lambda: app.coordinator.dispatcher.stream_count() == len(AGENTS), 20, what="streams"
            )
            profile = Path(app.config.data_dir) / "chromium-profile"
            async with (
                aiohttp.ClientSession(url) as http,
                chromium_page(chromium, profile, url + "/") as page,
            ):
                try:
                    before = await eventually(
                        lambda: _live_with_agents(page), 30, what="console live with both agents"
                    )
                    assert before["cards"]["tasks_dispatched"] == 0
                    assert before["cards"]["shadow_compared"] == 0
                    assert before["cards"]["accuracy"] is None
                    assert before["text"]["accuracy"] == "—"
                    assert set(before["agents"]) == set(AGENTS)

                    await drive_until_compared(anvil, app, MIN_COMPARED)
                    after = await eventually(
                        lambda: _moved_on(page, before), 30, what="new figures on the page"
                    )
                    assert after["cards"]["shadow_compared"] >= MIN_COMPARED
                    assert after["text"]["accuracy"] == "100 %"
                    assert "chart-throughput" in after["charts"]
                    assert "chart-latency" in after["charts"]
                    assert await eventually(
                        lambda: page_matches_api(page, http), 30, what="page equals the API"
                    )
                finally:
                    await page.screenshot(ARTIFACT)
            assert ARTIFACT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        finally:
            for a in agents:
                await a.stop()


async def _live_with_agents(page: Page) -> dict[str, Any] | None:
    shown = await read_page(page)
    live = shown["conn"] == "live" and shown["seq"] > 0 and len(shown["agents"]) == len(AGENTS)
    return shown if live else None


async def _moved_on(page: Page, before: dict[str, Any]) -> dict[str, Any] | None:
    shown = await read_page(page)
    moved = (
        shown["seq"] > before["seq"]
        and shown["cards"]["tasks_dispatched"] > before["cards"]["tasks_dispatched"]
        and shown["cards"]["shadow_compared"] >= MIN_COMPARED
    )
    return shown if moved else None
