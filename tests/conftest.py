"""Shared fixtures: local anvil nodes on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from ioswarm.sim.anvil import AnvilProcess


@pytest.fixture
async def anvil() -> AsyncIterator[AnvilProcess]:
    """An anvil that mines a block every second."""
    async with AnvilProcess(env=os.environ, block_time=1) as node:
        yield node


@pytest.fixture
async def anvil_manual() -> AsyncIterator[AnvilProcess]:
    """An anvil that mines only when the test calls ``mine()``."""
    async with AnvilProcess(env=os.environ, block_time=None) as node:
        yield node
