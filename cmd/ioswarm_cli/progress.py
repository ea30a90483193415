"""Progress lines on stderr for the long subcommands (``workload``, ``snapshot``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from ioswarm.core.progress import Progress, ProgressSchedule, progress_line

DEFAULT_EVERY_SEC = 5.0


def add_progress_flag(p: argparse.ArgumentParser) -> None:
    """``--progress-every SEC`` on a subcommand's parser."""
    p.add_argument(
        "--progress-every",
        type=float,
        default=DEFAULT_EVERY_SEC,
        metavar="SEC",
        help=f"seconds between progress lines on stderr (default {DEFAULT_EVERY_SEC:g}; "
        "0: only the final line)",
    )


class ProgressPrinter:
    """Prints a :class:`Progress` when one is due, and always the final one."""

    def __init__(
        self,
        every: float,
        clock: Callable[[], float] = time.monotonic,
        out: Callable[[str], None] | None = None,
    ) -> None:
        self._clock = clock
        self.started = clock()
        self._schedule = ProgressSchedule(every, self.started)
        self._out = out or (lambda line: print(line, file=sys.stderr, flush=True))

    def elapsed(self) -> float:
        return self._clock() - self.started

    def update(self, make: Callable[[float], Progress]) -> None:
        """``make(elapsed)`` builds the report; it is only called when a line is due."""
        if self._schedule.due(self._clock()):
            self._out(progress_line(make(self.elapsed())))

    def finish(self, make: Callable[[float], Progress]) -> None:
        self._out(progress_line(make(self.elapsed()), final=True))
