"""Progress lines for long CLI work: what they say and when they are due."""

from __future__ import annotations

from ioswarm_cli.progress import ProgressPrinter

from ioswarm.core.progress import Progress, ProgressSchedule, progress_line


def test_a_line_with_a_total_has_share_rate_and_time_left() -> None:
    """Done of total, percent, rate and an estimate of what is left."""
    line = progress_line(Progress("snapshot export", 250, "entries", 5.0, total=1000))
    assert line == "snapshot export: 250/1000 entries (25%), 50.0/s, 5s elapsed, about 15s left"


def test_a_timed_run_counts_down_its_duration() -> None:
    """Without a total the share and the time left come from the planned duration."""
    line = progress_line(
        Progress("workload", 120, "tx sent", 12.0, duration=60.0, extra="refused 0")
    )
    assert line == "workload: 120 tx sent (20%), 10.0/s, 12s elapsed, about 48s left; refused 0"


def test_the_final_line_says_done_and_how_long() -> None:
    """The last line reads 'done' with the total time and no estimate."""
    line = progress_line(Progress("workload", 600, "tx sent", 75.0, total=600), final=True)
    assert line == "workload done: 600/600 tx sent, 8.0/s, took 1m15s"


def test_lines_are_spaced_by_the_interval() -> None:
    """The schedule allows one line per interval, none before the first; 0 allows none."""
    s = ProgressSchedule(5.0, start=100.0)
    assert [s.due(t) for t in (101.0, 105.0, 106.0, 110.5)] == [False, True, False, True]
    assert not ProgressSchedule(0, start=0.0).due(1e9)


def test_the_printer_prints_due_lines_and_always_the_last() -> None:
    """Updates between due times print nothing; finish always prints."""
    now = [0.0]
    lines: list[str] = []
    printer = ProgressPrinter(2.0, clock=lambda: now[0], out=lines.append)
    for t in (0.5, 1.0, 2.0, 2.5, 4.1):
        now[0] = t
        printer.update(lambda elapsed: Progress("job", int(elapsed * 10), "items", elapsed))
    printer.finish(lambda elapsed: Progress("job", 50, "items", elapsed))
    assert lines == [
        "job: 20 items, 10.0/s, 2s elapsed",
        "job: 41 items, 10.0/s, 4s elapsed",
        "job done: 50 items, 12.2/s, took 4s",
    ]
