"""The scaled-down l4sim: anvil, coordinator with L4 sync, churning L4 agents, all checks PASS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ioswarm.sim.l4sim import ROLES, L4SimOptions, run_l4sim

pytestmark = pytest.mark.integration


async def test_l4sim_scaled_passes_every_check(tmp_path: Path) -> None:
    """Every l4sim check passes over 40 blocks with one agent per role."""
    lines: list[str] = []
    opts = L4SimOptions(blocks=40, agents=len(ROLES), datadir=str(tmp_path))
    report = await run_l4sim(opts, dict(os.environ), out=lines.append)
    failed = [c for c in report.checks if not c.ok]
    assert not failed, "\n".join(lines)
    assert len(report.checks) == 7
    assert all(n["snapshot_loads"] == 1 for n in report.numbers.values())


def test_schedule_plans_every_role() -> None:
    """Each churn role gets the stops and starts its name promises."""
    from ioswarm.sim.l4sim import schedule_for

    assert schedule_for("late", 40).start == 10
    assert schedule_for("short_gap", 40).stops == {3: True, 9: False}
    assert schedule_for("long_gap", 40).stops == {4: True, 17: False}
    assert list(schedule_for("quitter", 40).stops.values()) == [True]
    flappy = schedule_for("flappy", 40).stops
    assert sum(flappy.values()) == sum(not v for v in flappy.values()) >= 3
    assert schedule_for("steady", 40).stops == {}
