"""Integration hygiene: collect garbage after each test, so an unclosed resource (a client
session, a socket) is reported by the test that leaked it, not by whichever test the garbage
collector happens to run in later."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    yield
    gc.collect()
