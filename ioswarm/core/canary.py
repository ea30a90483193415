"""Canary tasks: what each kind's true answer is, and how an agent's answer is judged.

A canary is a transaction whose true verdict the coordinator knows because it made it: signed by
a coordinator-owned throwaway key, with the state its task carries fabricated where the level
lets the coordinator choose that state. This module holds the pure half (kinds, truth, judging);
the coordinator's mint builds and signs the transactions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ioswarm.core.execshadow import ExecEffects, first_difference
from ioswarm.core.models import Level, Verdict

__all__ = [
    "EXECUTED",
    "FOREIGN_KEY",
    "HIGH_S",
    "INSUFFICIENT_BALANCE",
    "INTRINSIC_GAS_TOO_LOW",
    "KINDS",
    "NONCE_TOO_HIGH",
    "NONCE_TOO_LOW",
    "VALID",
    "WRONG_CHAIN_ID",
    "CanaryTruth",
    "ExecutedCanaryTruth",
    "judge_canary",
    "judge_executed_canary",
]

# A valid tx from a throwaway key: its sender is known nowhere else (no node has seen it).
FOREIGN_KEY: Final = "foreign_key"
# The signature's s replaced by n - s (parity flipped): the same point, but EIP-2 forbids it.
HIGH_S: Final = "high_s"
# Signed for chain_id + 1.
WRONG_CHAIN_ID: Final = "wrong_chain_id"
# Against the sender snapshot the task carries (fabricated at L2/L3, the real empty one at L4).
NONCE_TOO_LOW: Final = "nonce_too_low"
NONCE_TOO_HIGH: Final = "nonce_too_high"
INSUFFICIENT_BALANCE: Final = "insufficient_balance"
INTRINSIC_GAS_TOO_LOW: Final = "intrinsic_gas_too_low"
VALID: Final = "valid"

# The kinds each level can be given. L3 has no valid kind: its truth would need an execution
# trace. L4 agents read their own copy of chain state, where a throwaway key has nonce 0 and
# balance 0, so only kinds that real empty state makes invalid remain.
KINDS: Final[Mapping[Level, tuple[str, ...]]] = {
    Level.L1: (FOREIGN_KEY, HIGH_S, WRONG_CHAIN_ID),
    Level.L2: (
        FOREIGN_KEY,
        HIGH_S,
        WRONG_CHAIN_ID,
        NONCE_TOO_LOW,
        NONCE_TOO_HIGH,
        INSUFFICIENT_BALANCE,
        INTRINSIC_GAS_TOO_LOW,
        VALID,
    ),
    Level.L3: (
        HIGH_S,
        WRONG_CHAIN_ID,
        NONCE_TOO_LOW,
        NONCE_TOO_HIGH,
        INSUFFICIENT_BALANCE,
        INTRINSIC_GAS_TOO_LOW,
    ),
    Level.L4: (HIGH_S, WRONG_CHAIN_ID, NONCE_TOO_HIGH, INSUFFICIENT_BALANCE, INTRINSIC_GAS_TOO_LOW),
}


@dataclass(frozen=True, slots=True)
class CanaryTruth:
    """The exact L1/L2 answer to a canary, as ``check_l1``/``check_l2`` give it."""

    valid: bool
    reject_reason: str  # "" when valid
    sender: bytes  # what L1 recovers; b"" when it recovers nothing (high_s, wrong_chain_id)


def judge_canary(truth: CanaryTruth, level: Level, verdict: Verdict) -> str:
    """ "" when the verdict is right, else the first wrong field: valid, reject_reason, sender."""
    if verdict.valid != truth.valid:
        return "valid"
    # Every level names a rule the same way (ioswarm.core.rules), so the reason is exact.
    if not truth.valid and verdict.reject_reason != truth.reject_reason:
        return "reject_reason"
    # The recovered sender is the evidence of L1 work, so it is required wherever it exists,
    # except from an answer the coordinator received in the reference JSON codec, which has no
    # field for it (ioswarm.core.evidence); a sender such an answer does carry must be right.
    waived = verdict.sender_waived and level < Level.L3 and not verdict.sender
    if truth.sender and not waived and verdict.sender != truth.sender:
        return "sender"
    return ""


# A valid call from a throwaway key with fabricated sender state, executed at L3; its truth is
# the node's trace of the same call under the batch's block context (ExecutedCanaryTruth).
EXECUTED: Final = "executed"


@dataclass(frozen=True, slots=True)
class ExecutedCanaryTruth:
    """The exact answer to an executed canary: its sender and what executing it does."""

    sender: bytes
    effects: ExecEffects


def judge_executed_canary(truth: ExecutedCanaryTruth, verdict: Verdict) -> str:
    """ "" when the verdict is right, else the first wrong field: ``valid``, ``sender``, or an
    :data:`~ioswarm.core.execshadow.FIELD_ORDER` field (``status`` when no execution was
    reported at all: an answer without effects executed nothing)."""
    if not verdict.valid or verdict.declined:
        return "valid"
    if verdict.sender != truth.sender:
        return "sender"
    if verdict.effects is None:
        return "status"
    return first_difference(verdict.effects, truth.effects) or ""
