"""One-line progress reports for long CLI work (workload runs, snapshot export and import).

Pure: what a line says and when the next one is due. The CLI prints them to stderr, so stdout
keeps only the command's result.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a piece of work is. ``total`` (same unit as ``done``) or ``duration`` (seconds)
    gives the share done and the time left; with neither only the rate is known."""

    what: str
    done: int
    unit: str
    elapsed: float
    total: int | None = None
    duration: float | None = None
    extra: str = ""


def _seconds(s: float) -> str:
    n = max(0, round(s))
    return f"{n // 60}m{n % 60:02d}s" if n >= 60 else f"{n}s"


def progress_line(p: Progress, *, final: bool = False) -> str:
    """``export: 120000/1000000 entries (12%), 40000/s, 3s elapsed, about 22s left; ...``."""
    rate = p.done / p.elapsed if p.elapsed > 0 else 0.0
    parts = [f"{p.done}/{p.total} {p.unit}" if p.total else f"{p.done} {p.unit}"]
    share: float | None = None
    if p.total:
        share = min(1.0, p.done / p.total)
    elif p.duration:
        share = min(1.0, p.elapsed / p.duration)
    if share is not None and not final:
        parts[0] += f" ({share * 100:.0f}%)"
    parts.append(f"{rate:.1f}/s" if rate < 100 else f"{rate:.0f}/s")
    parts.append(f"{_seconds(p.elapsed)} elapsed" if not final else f"took {_seconds(p.elapsed)}")
    if not final and share is not None and share > 0:
        left = (
            (p.total - p.done) / rate
            if p.total and rate > 0
            else (p.duration - p.elapsed)
            if p.duration
            else None
        )
        if left is not None:
            parts.append(f"about {_seconds(left)} left")
    head = f"{p.what} done" if final else p.what
    return f"{head}: " + ", ".join(parts) + (f"; {p.extra}" if p.extra else "")


class ProgressSchedule:
    """When the next line is due: at most one per ``every`` seconds, the first after
    ``every`` (quick work prints only its final line); ``every <= 0`` prints none but the last."""

    def __init__(self, every: float, start: float) -> None:
        self.every = every
        self._next = start + every

    def due(self, now: float) -> bool:
        if self.every <= 0 or now < self._next:
            return False
        self._next = now + self.every
        return True
