"""Shared test helpers: poll for a condition instead of sleeping."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    condition: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``condition`` (sync or async) until it returns something truthy and return that.

    Exceptions raised by the condition count as "not yet"; after ``timeout`` seconds the test
    fails with the last value or exception seen.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    while True:
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value  # type: ignore[return-value]
            last = value
        except Exception as exc:
            last = exc
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s; last: {last!r}")
        await asyncio.sleep(interval)
