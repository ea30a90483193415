"""Token bucket rate limiting with an injected clock."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    """Classic token bucket: ``rate`` tokens/s refill up to ``burst``; one token per call.

    Time comes from the caller (monotonic seconds) so tests drive it exactly.
    """

    rate: float
    burst: int
    tokens: float = -1.0
    updated: float | None = None

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def try_take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if available at time ``now``; False (and no change) otherwise."""
        if self.updated is not None and now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        if self.updated is None or now > self.updated:
            self.updated = now
        if self.tokens + 1e-9 >= cost:
            self.tokens -= cost
            return True
        return False

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens will be available."""
        missing = cost - self.tokens
        return max(0.0, missing / self.rate)
