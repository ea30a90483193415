"""The one list of state-test cases that do not pass, each with its reason.

``fail``: the case runs and its failure is known and explained. ``slow``: the case is skipped
by default because py-evm takes too long on it for a routine run (``--include-slow`` runs it).
Entries are ``fnmatch`` patterns over case ids (``<file>::<test>[<fork>-d<i>g<j>v<k>]``).
The goal is an empty list: a case that passes while listed as failing is reported as stale.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["KNOWN", "Listing", "listing_for"]


@dataclass(frozen=True, slots=True)
class Listing:
    """Why a case is listed."""

    kind: Literal["fail", "slow"]
    reason: str


KNOWN: Final[dict[str, Listing]] = {}


def listing_for(case_id: str) -> Listing | None:
    """The listing that names ``case_id``, if any."""
    exact = KNOWN.get(case_id)
    if exact is not None:
        return exact
    for pattern, listing in KNOWN.items():
        if fnmatch.fnmatchcase(case_id, pattern):
            return listing
    return None
