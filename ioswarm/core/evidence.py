"""Evidence of work: what a complete answer carries at each level.

Agents are strangers paid per correct answer, so an answer counts only when it carries the
evidence that the work was done. Truth at L1/L2 is mostly "the transaction was included", which
a bare ``valid=True`` would match for free; these rules make such an answer wrong instead.

- **L1**: a valid answer names the recovered sender (20 bytes). The task never carries the
  sender, so the only way to know it is to recover it from the signature.
- **L2**: the L1 evidence, and an invalid answer gives its reject reason. A reason that only the
  sender's state can decide (nonce, balance) is reached after recovery, so it comes with the
  recovered sender too.
- **L3/L4**: a valid answer is an execution: the sender, a status, the gas used (at least the
  21,000 every transaction pays), and the state changes, which always include the sender's nonce
  step (every executed transaction moves it). Logs and context reads are compared against the
  chain where they matter; a missing one then shows as a mismatch of that field.

An incomplete answer is judged *mismatched* with detail ``incomplete``; never matched, never
excluded.

**The JSON waiver.** The reference agent's JSON result has no sender field, so its L1/L2
answers cannot carry the sender evidence. For an answer the coordinator itself received in that
codec (``Verdict.sender_waived``, set from the call, never from anything the agent sends) the
sender is not required at L1/L2: such an agent's work is checked by canaries instead, whose
verdicts are exact. A sender it does send is checked like any other (a wrong one is a mismatch).
The waiver never applies at L3/L4, which the JSON codec does not serve.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final

from ioswarm.core.models import Level, Task, Verdict
from ioswarm.core.rules import Reject

INCOMPLETE = "incomplete"
MIN_TX_GAS = 21_000
ADDRESS_BYTES = 20
STATE_REASONS: Final = frozenset(
    {Reject.NONCE_TOO_LOW, Reject.NONCE_TOO_HIGH, Reject.INSUFFICIENT_BALANCE}
)
"""Reject reasons decided by the sender's account state: reached only after recovery."""


def missing_evidence(task: Task, verdict: Verdict) -> str:
    """The first piece of evidence ``verdict`` lacks for ``task``'s level; ``""`` if complete.

    A decline is not an answer and is not held to these rules (declines earn nothing and are
    counted separately).
    """
    if verdict.declined:
        return ""
    # An empty sender is excused for a waived L1/L2 answer; one it does send must be whole.
    sender_missing = len(verdict.sender) != ADDRESS_BYTES and not (
        verdict.sender_waived and task.level < Level.L3 and not verdict.sender
    )
    if not verdict.valid:
        if not verdict.reject_reason:
            return "reject_reason"
        if verdict.reject_reason in STATE_REASONS and sender_missing:
            return "sender"
        return ""
    if sender_missing:
        return "sender"
    if task.level < Level.L3:
        return ""
    effects = verdict.effects
    if effects is None:
        return "status"
    if effects.gas_used < MIN_TX_GAS:
        return "gas_used"
    if verdict.sender not in effects.nonces:
        return "state_changes"
    return ""


_ACCOUNT = re.compile(r"account 0x([0-9a-f]{40})")
_STORAGE = re.compile(r"storage 0x([0-9a-f]{40}) slot 0x([0-9a-f]{1,64})")
_BLOCK_HASH = re.compile(r"block_hash (\d{1,20})")


def false_missing_claim(
    task: Task, detail: str, sent_hashes: Collection[int], context_sent: bool = True
) -> str:
    """Why a ``missing_state`` claim is false on its face, or ``""`` when it may be true.

    An executing agent that lacks state names the key it lacked (``account 0x…``,
    ``storage 0x… slot 0x…`` or ``block_hash N``). A claim that names nothing, or names a key
    the task did carry (``sent_hashes``: the block numbers whose hashes its batch carried), is
    false whatever the chain does later. ``block_context`` claims the batch carried no block
    context (``context_sent``).
    """
    if detail == "block_context":
        return "the block context was sent" if context_sent else ""
    provided_accounts = {a.snapshot.address for a in task.accounts}
    if m := _ACCOUNT.fullmatch(detail):
        return "named account was sent" if bytes.fromhex(m[1]) in provided_accounts else ""
    if m := _STORAGE.fullmatch(detail):
        address, slot = bytes.fromhex(m[1]), bytes.fromhex(m[2].rjust(64, "0"))
        sent = any(
            a.snapshot.address == address and any(key == slot for key, _ in a.storage)
            for a in task.accounts
        )
        return "named slot was sent" if sent else ""
    if m := _BLOCK_HASH.fullmatch(detail):
        return "named block hash was sent" if int(m[1]) in sent_hashes else ""
    return "names no missing key"
