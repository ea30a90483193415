"""Log flood control: bounded lines per kind, one traceback, summaries of what was dropped."""

from __future__ import annotations

from ioswarm.core.logthrottle import LogThrottle


def test_a_flood_writes_per_window_lines_then_one_summary() -> None:
    """100,000 lines of one kind in a minute write 10 and report the other 99,990 once."""
    t = LogThrottle(per_window=10, window_sec=60.0)
    written = sum(t.decide("accept-failed", now=i * 0.0005).write for i in range(100_000))
    assert written == 10
    later = t.decide("something-else", now=61.0)
    assert later.write and later.summaries == (("accept-failed", 99_990, 61.0),)
    assert t.decide("something-else", now=62.0).summaries == ()


def test_only_the_first_line_of_a_kind_keeps_its_traceback() -> None:
    """Within a window the first line keeps its traceback and the others are written without."""
    t = LogThrottle(per_window=3)
    keeps = [t.decide("k", now=0.0).keep_traceback for _ in range(3)]
    assert keeps == [True, False, False]


def test_kinds_are_counted_apart() -> None:
    """One flooding kind does not silence another."""
    t = LogThrottle(per_window=2)
    for _ in range(50):
        t.decide("flood", now=1.0)
    assert t.decide("rare", now=1.0).write


def test_a_new_window_writes_again_after_the_summary() -> None:
    """After the window ends the kind is written again, its summary due with that line."""
    t = LogThrottle(per_window=1, window_sec=10.0)
    t.decide("k", now=0.0)
    t.decide("k", now=1.0)
    again = t.decide("k", now=10.0)
    assert again.write and again.summaries == (("k", 1, 10.0),)


def test_the_kind_table_is_bounded_and_drops_nothing_silently() -> None:
    """Past max_kinds the least recently seen kind goes, and its pending count is reported."""
    t = LogThrottle(per_window=1, max_kinds=3)
    t.decide("old", now=0.0)
    t.decide("old", now=0.0)  # one suppressed
    out = [t.decide(f"k{i}", now=1.0) for i in range(3)]
    assert len(t) == 3
    assert ("old", 1, 1.0) in [s for d in out for s in d.summaries]


def test_handler_turns_a_traceback_flood_into_a_few_lines() -> None:
    """10,000 identical failures with tracebacks write 10 lines, one traceback and a summary."""
    import io
    import logging

    from ioswarm.logs import ThrottledHandler

    now = [0.0]
    out = io.StringIO()
    handler = ThrottledHandler(out, repeats_per_min=10, clock=lambda: now[0])
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    log = logging.getLogger("ioswarm.test.flood")
    log.propagate = False
    log.addHandler(handler)
    try:
        for i in range(10_000):
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                log.exception("accept failed fd=%d", i)
        now[0] = 61.0
        log.warning("calm again")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert text.count("Traceback") == 1
    assert text.count("accept failed") == 11  # ten lines and the summary naming the template
    assert "suppressed 9990 repeats in 61s of: accept failed fd=%d (OSError)" in text
    assert "calm again" in text and handler.suppressed_total == 9990
    assert len(text) < 10_000
