"""Is the node still syncing? Judged from the age of its latest block (pure)."""

from __future__ import annotations


def node_is_syncing(latest_block_timestamp: int, now: float, max_lag_sec: int) -> bool:
    """True when the latest block is more than ``max_lag_sec`` behind ``now``; 0 disables.

    A block from the future (clock skew between node and coordinator) counts as caught up.
    """
    if max_lag_sec <= 0:
        return False
    return now - latest_block_timestamp > max_lag_sec
