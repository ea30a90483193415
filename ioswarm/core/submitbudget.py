"""The agent's side of the coordinator's SubmitResults rate limit.

The coordinator gives each agent a token bucket of SubmitResults calls (``submitRatePerSec``,
``submitBurst``). The agent keeps a bucket of its own a little inside that one and submits a
result the moment it is ready while its bucket has a token; only when it has none do results
wait, and then they all go in the next call (coalescing under pressure, never a fixed hold).

The agent's bucket starts from the coordinator's default limit and follows the limit a
RESOURCE_EXHAUSTED refusal names (``rate limit R/s burst B; retry in Ts``), so an agent facing a
coordinator configured tighter than the default settles under its limit after one refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ioswarm.core.ratelimit import TokenBucket

# The coordinator's defaults (config ``submitRatePerSec`` / ``submitBurst``).
COORDINATOR_RATE_PER_SEC = 40.0
COORDINATOR_BURST = 40

# Stay inside the coordinator's bucket: a slightly lower rate, and half its burst, so that
# calls bunched up by the network between agent and coordinator still find tokens there.
RATE_MARGIN = 0.9
BURST_SHARE = 0.5

_LIMIT = re.compile(
    r"rate limit (?P<rate>[0-9.eE+-]+)/s burst (?P<burst>\d+)(?:; retry in (?P<retry>[0-9.]+)s)?"
)


@dataclass(frozen=True)
class NamedLimit:
    """The limit a refusal named, and how long it asked to wait."""

    rate: float
    burst: int
    retry_after: float


def limit_from_refusal(detail: str) -> NamedLimit | None:
    """The limit a RESOURCE_EXHAUSTED detail of SubmitResults names, or None if it names none."""
    m = _LIMIT.search(detail)
    if m is None:
        return None
    try:
        rate = float(m["rate"])
    except ValueError:
        return None
    burst = int(m["burst"])
    if not rate > 0 or burst < 1:
        return None
    return NamedLimit(rate, burst, float(m["retry"]) if m["retry"] else 1.0 / rate)


class SubmitBudget:
    """When the agent may send its next SubmitResults (time comes from the caller)."""

    def __init__(
        self, rate: float = COORDINATOR_RATE_PER_SEC, burst: int = COORDINATOR_BURST
    ) -> None:
        self._bucket = self._inside(rate, burst)
        self.refusals = 0

    @staticmethod
    def _inside(rate: float, burst: int) -> TokenBucket:
        return TokenBucket(rate * RATE_MARGIN, max(1, int(burst * BURST_SHARE)))

    @property
    def rate(self) -> float:
        return self._bucket.rate

    @property
    def burst(self) -> int:
        return self._bucket.burst

    def wait(self, now: float) -> float:
        """Take a token and return 0.0, or return the seconds until one is available (nothing
        taken); results that come in meanwhile go in the same call."""
        if self._bucket.try_take(now):
            return 0.0
        return max(self._bucket.retry_after(), 1e-3)

    def refused(self, detail: str, now: float) -> float:
        """The coordinator refused a call as over its rate: follow the limit it names (an
        empty bucket from ``now``) and return how long to wait before trying again."""
        self.refusals += 1
        named = limit_from_refusal(detail)
        if named is not None:
            self._bucket = self._inside(named.rate, named.burst)
            wait = named.retry_after
        else:
            wait = 1.0 / self._bucket.rate
        self._bucket.tokens = 0.0
        self._bucket.updated = now
        return max(wait, 1.0 / self._bucket.rate)
