"""The demo's adversary lines: verdicts, reasons and claimable, before and after defences."""

from __future__ import annotations

from ioswarm.sim.demo import adversary_lines


def test_adversary_line_names_the_reasons_and_flags_a_paid_adversary() -> None:
    """A refused, unpaid adversary reads OK with its reasons; one with a claimable reads PAID."""
    unpaid = {
        "kind": "replayer",
        "level": "L1",
        "shadow": {"compared": 3, "matched": 1, "mismatched": 2, "excluded": {}},
        "refused": {"PERMISSION_DENIED": 4},
        "throttled": False,
        "earning": {"eligible": False, "reasons": ["refusals", "below_accuracy_floor"]},
        "ledger_wei": "0",
        "claimable_wei": "0",
    }
    paid = {"kind": "lazy", "level": "L2", "shadow": None, "claimable_wei": "7", "ledger_wei": "7"}
    first, second = adversary_lines({"adv-replayer-0": unpaid, "adv-lazy-1": paid})
    assert first.startswith("adv-replayer-0 (replayer, L1): matched 1/3, mismatched 2")
    assert "refused PERMISSION_DENIED 4" in first
    assert "earning nothing: refusals, below_accuracy_floor" in first and first.endswith("OK")
    assert "earning: not reported" in second and second.endswith("PAID")
