"""Structured logging set-up: logfmt (default) or JSON lines, never secrets, and never a
flood: repeated lines are throttled per kind (:mod:`ioswarm.core.logthrottle`).

Call sites log ``"event key=%s key=%d"`` messages; the formatters split the rendered message
into its event and fields (:mod:`ioswarm.core.logfields`), so each field is its own JSON key
or logfmt pair."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Hashable
from typing import Any, TextIO, cast

from ioswarm.core.logfields import Value, logfmt, merge_fields, split_fields
from ioswarm.core.logthrottle import LogThrottle

DEFAULT_REPEATS_PER_MIN = 10
FIELDS_ATTR = "ioswarm_fields"
"""A record carrying ``(event, fields)`` here is formatted from them, not by parsing its text
(the throttle's own lines, whose text quotes a template)."""


def _timestamp(record: logging.LogRecord) -> str:
    """RFC 3339 UTC with milliseconds, one token: ``2026-12-02T07:18:04.123Z``."""
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z"
    )


def record_fields(record: logging.LogRecord) -> dict[str, Value]:
    """The line's own keys (ts, level, logger, msg) then the message's ``key=value`` fields,
    each its own key (a field named like one of the line's keys gets a ``_`` suffix)."""
    given = getattr(record, FIELDS_ATTR, None)
    event, fields = given if given is not None else split_fields(record.getMessage())
    base: dict[str, Value] = {
        "ts": _timestamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": event,
    }
    return merge_fields(base, fields)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (the event) and one key per field."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = record_fields(record)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


class LogfmtFormatter(logging.Formatter):
    """One logfmt line: ``ts=... level=info logger=... msg="..." key=value ...``; a
    traceback follows as an ``exc`` value (one line, newlines escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = record_fields(record)
        if record.exc_info:
            pairs["exc"] = self.formatException(record.exc_info)
        return logfmt(pairs)


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
            text = record.getMessage()
            event, fields = split_fields(text)
            fields.update(exception=repr(exc), traceback="shown once")
            record.msg = f"{text} (exception {exc!r}; traceback shown once)"
            record.args = None
            setattr(record, FIELDS_ATTR, (event, fields))
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
        fields: dict[str, Value] = {"count": count, "span_sec": round(span), "of": template}
        if exc:
            fields["exception"] = exc
        setattr(summary, FIELDS_ATTR, ("suppressed repeats", fields))
        super().handle(summary)


def setup_logging(
    level: str = "info", fmt: str = "kv", repeats_per_min: int = DEFAULT_REPEATS_PER_MIN
) -> None:
    """Configure the root logger once for a CLI process."""
    handler = ThrottledHandler(sys.stderr, repeats_per_min)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # grpc and aiohttp are chatty at info; their warnings still show.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
