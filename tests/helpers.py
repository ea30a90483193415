"""Shared test helpers: poll for a condition instead of sleeping."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
def eventually(
    condition: Callable[[], Awaitable[T]],
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
) -> Awaitable[T]: ...


@overload
def eventually(
    condition: Callable[[], T],
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
) -> Awaitable[T]: ...


def eventually(
    condition: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Awaitable[Any]:
    """Await this: poll ``condition`` (sync or async) until it returns something truthy.

    Returns that value. Exceptions raised by the condition count as "not yet"; after
    ``timeout`` seconds the test fails with the last value or exception seen.
    """
    return _poll(condition, timeout, interval, what)


async def _poll(condition: Callable[[], Any], limit: float, interval: float, what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    last: object = None
    while True:
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            last = value
        except Exception as exc:
            last = exc
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {limit}s; last: {last!r}")
        await asyncio.sleep(interval)
