"""Structured logging set-up: key=value (default) or JSON lines, never secrets, and never a
flood: repeated lines are throttled per kind (:mod:`ioswarm.core.logthrottle`)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Hashable
from typing import TextIO, cast

from ioswarm.core.logthrottle import LogThrottle

DEFAULT_REPEATS_PER_MIN = 10


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def _kind(record: logging.LogRecord) -> Hashable:
    """Lines are alike when logger, level, template and exception type are: a flood of
    refusals naming different agents, or the same failure again and again, is one kind."""
    template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
    exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
    return (record.name, record.levelno, template, exc)


class ThrottledHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes at most ``repeats_per_min`` lines of a kind per minute,
    keeps the traceback of the first only, and summarises what it dropped in one line."""

    def __init__(
        self,
        stream: TextIO,
        repeats_per_min: int = DEFAULT_REPEATS_PER_MIN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(stream)
        self.throttle = LogThrottle(per_window=repeats_per_min, window_sec=60.0)
        self.suppressed_total = 0
        self._clock = clock

    def handle(self, record: logging.LogRecord) -> bool:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            decision = self.throttle.decide(_kind(record), self._clock())
        for kind, count, span in decision.summaries:
            self._summarise(kind, count, span)
        if not decision.write:
            self.suppressed_total += 1
            return False
        if record.exc_info and not decision.keep_traceback:
            record = logging.makeLogRecord(record.__dict__)
            exc = record.exc_info[1] if record.exc_info else None
            record.exc_info, record.exc_text = None, None
            record.msg = f"{record.getMessage()} (exception {exc!r}; traceback shown once)"
            record.args = None
        return bool(super().handle(record))

    def _summarise(self, kind: Hashable, count: int, span: float) -> None:
        name, level, template, exc = cast(tuple[str, int, str, str], kind)
        summary = logging.LogRecord(
            name,
            max(int(level), logging.WARNING),
            __file__,
            0,
            "suppressed %d repeats in %.0fs of: %s%s",
            (count, span, template, f" ({exc})" if exc else ""),
            None,
        )
        super().handle(summary)


def setup_logging(
    level: str = "info", fmt: str = "kv", repeats_per_min: int = DEFAULT_REPEATS_PER_MIN
) -> None:
    """Configure the root logger once for a CLI process."""
    handler = ThrottledHandler(sys.stderr, repeats_per_min)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # grpc and aiohttp are chatty at info; their warnings still show.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
