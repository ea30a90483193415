"""Structured logs: fields of a message become JSON keys or logfmt pairs, parsed in the core."""

from __future__ import annotations

import io
import json
import logging
import re

from ioswarm.core.logfields import logfmt, merge_fields, split_fields
from ioswarm.logs import JsonFormatter, LogfmtFormatter, ThrottledHandler


def _record(msg: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("ioswarm.test", level, __file__, 1, msg, args, None)


def test_trailing_pairs_are_split_from_the_event() -> None:
    """The text before the first key=value is the event; each pair is a field, ints typed."""
    event, fields = split_fields("task stream opened agent_id=a-1 level=L2 batches=12")
    assert event == "task stream opened"
    assert fields == {"agent_id": "a-1", "level": "L2", "batches": 12}


def test_values_keep_their_spaces_quotes_and_brackets() -> None:
    """A value runs to the next key; a repr with '=' and spaces inside stays one value."""
    _, fields = split_fields(
        "node unreachable url=http://x error=ConnectionError('refused host=1 port=2') "
        "reason=nothing to send"
    )
    assert fields == {
        "url": "http://x",
        "error": "ConnectionError('refused host=1 port=2')",
        "reason": "nothing to send",
    }
    assert split_fields("auth rejected reason='bad token'")[1] == {"reason": "bad token"}


def test_punctuation_ends_a_value_and_the_rest_is_detail() -> None:
    """``height=5: why`` keeps height an int and puts the words after it in ``detail``."""
    event, fields = split_fields("STATE DIVERGENCE at height=5: hash differs; re-bootstrapping")
    assert event == "STATE DIVERGENCE at"
    assert fields == {"height": 5, "detail": "hash differs; re-bootstrapping"}


def test_a_message_without_pairs_is_all_event() -> None:
    """No key=value tokens: the whole message is the event and there are no fields."""
    assert split_fields("coordinator shutting down") == ("coordinator shutting down", {})


def test_a_field_named_like_a_line_key_does_not_replace_it() -> None:
    """A ``level=L2`` field beside the log level is written as ``level_``."""
    merged = merge_fields({"level": "info", "msg": "x"}, {"level": "L2", "n": 1})
    assert merged == {"level": "info", "msg": "x", "level_": "L2", "n": 1}


def test_logfmt_quotes_only_what_needs_it() -> None:
    """Bare values stay bare; spaces, quotes, '=' and newlines are quoted and escaped."""
    line = logfmt({"a": "x", "b": "two words", "c": 'say "hi"', "d": "k=v", "e": "", "f": 3})
    assert line == 'a=x b="two words" c="say \\"hi\\"" d="k=v" e="" f=3'


def test_json_lines_carry_every_field_as_a_key() -> None:
    """With the JSON formatter each key=value of the message is a queryable key."""
    doc = json.loads(
        JsonFormatter().format(_record("task stream opened agent_id=%s level=%s", "a-1", "L3"))
    )
    assert doc["msg"] == "task stream opened" and doc["agent_id"] == "a-1"
    assert doc["level"] == "info" and doc["level_"] == "L3" and doc["logger"] == "ioswarm.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"])


def test_kv_lines_are_logfmt() -> None:
    """The kv format is logfmt: a one-token ts, the event quoted, values with spaces quoted."""
    line = LogfmtFormatter().format(
        _record("settlement skipped epoch=%d reason=%s", 3, "nothing to send")
    )
    assert re.fullmatch(
        r'ts=\S+Z level=info logger=ioswarm\.test msg="settlement skipped" epoch=3 '
        r'reason="nothing to send"',
        line,
    ), line


def test_a_traceback_stays_inside_its_line() -> None:
    """An exception is one escaped ``exc`` value in logfmt and one key in JSON."""
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "ioswarm.test", logging.ERROR, __file__, 1, "failed x=%d", (1,), sys.exc_info()
        )
    line = LogfmtFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in line and " x=1 " in line
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exc"]


def test_throttle_summaries_are_structured_too() -> None:
    """The throttle's summary line has count, span and the template as fields in JSON."""
    now = [0.0]
    out = io.StringIO()
    handler = ThrottledHandler(out, repeats_per_min=1, clock=lambda: now[0])
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("ioswarm.test.summary")
    log.propagate = False
    log.addHandler(handler)
    try:
        for i in range(5):
            log.warning("refused agent_id=%s", f"a{i}")
        now[0] = 61.0
        log.warning("calm again")
    finally:
        log.removeHandler(handler)
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert docs[0]["agent_id"] == "a0"
    summary = next(d for d in docs if d["msg"] == "suppressed repeats")
    assert summary["count"] == 4 and summary["of"] == "refused agent_id=%s"
    assert summary["span_sec"] == 61 and docs[-1]["msg"] == "calm again"
