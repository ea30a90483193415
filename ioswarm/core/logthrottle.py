"""Log flood control: at most N lines of one kind per window, the rest counted and summarised.

A *kind* is whatever the caller says makes lines alike (the logging shell uses logger, level and
message template, so a flood of refusals naming different agents is one kind). Within a window a
kind writes its first ``per_window`` lines; the first of them alone keeps its traceback. The
suppressed lines are reported as one summary when the window ends, due the next time anything
is logged. The table of kinds is bounded: the least recently seen kind is dropped first (its
pending count is reported then, not lost).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

DEFAULT_MAX_KINDS = 1024


@dataclass
class _Window:
    start: float
    written: int = 0
    suppressed: int = 0
    traceback_shown: bool = False


@dataclass(frozen=True)
class Decision:
    """Whether to write this line, with or without its traceback, and the summaries now due:
    (kind, lines suppressed, seconds they span)."""

    write: bool
    keep_traceback: bool
    summaries: tuple[tuple[Hashable, int, float], ...] = ()


@dataclass
class LogThrottle:
    """Decides line by line; time is passed in (monotonic seconds)."""

    per_window: int
    window_sec: float = 60.0
    max_kinds: int = DEFAULT_MAX_KINDS
    _windows: OrderedDict[Hashable, _Window] = field(default_factory=OrderedDict)
    _pending: dict[Hashable, _Window] = field(default_factory=dict)
    """Kinds with suppressed lines not yet summarised (the only ones ever scanned)."""

    def __len__(self) -> int:
        return len(self._windows)

    def decide(self, kind: Hashable, now: float) -> Decision:
        due = self._due(now)
        win = self._windows.get(kind)
        if win is None or now - win.start >= self.window_sec:
            win = _Window(now)  # an ended window's count was summarised by _due above
            self._windows[kind] = win
            if len(self._windows) > self.max_kinds:
                old_kind, old = self._windows.popitem(last=False)
                self._pending.pop(old_kind, None)
                if old.suppressed:
                    due.append((old_kind, old.suppressed, now - old.start))
        self._windows.move_to_end(kind)
        if win.written >= self.per_window:
            win.suppressed += 1
            self._pending[kind] = win
            return Decision(False, False, tuple(due))
        win.written += 1
        keep = not win.traceback_shown
        win.traceback_shown = True
        return Decision(True, keep, tuple(due))

    def _due(self, now: float) -> list[tuple[Hashable, int, float]]:
        """Summaries of other kinds whose window has ended with lines suppressed."""
        due: list[tuple[Hashable, int, float]] = []
        for kind, win in list(self._pending.items()):
            if now - win.start >= self.window_sec:
                due.append((kind, win.suppressed, now - win.start))
                win.suppressed = 0
                del self._pending[kind]
        return due
