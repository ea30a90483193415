"""The pure sync guard: is the latest block too old to trust the mempool?"""

from __future__ import annotations

import pytest

from ioswarm.core.syncguard import node_is_syncing


@pytest.mark.parametrize(
    ("block_ts", "now", "max_lag", "syncing"),
    [
        (1_000, 1_000.0, 120, False),
        (1_000, 1_120.0, 120, False),
        (1_000, 1_120.5, 120, True),
        (1_000, 50_000.0, 120, True),
        (2_000, 1_000.0, 120, False),
        (0, 1_000_000.0, 0, False),
    ],
    ids=["fresh", "at-limit", "just-over", "far-behind", "future-block", "disabled"],
)
def test_node_is_syncing(block_ts: int, now: float, max_lag: int, syncing: bool) -> None:
    """A node counts as syncing only when its latest block is older than the allowed lag."""
    assert node_is_syncing(block_ts, now, max_lag) is syncing
