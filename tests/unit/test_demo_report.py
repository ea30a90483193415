"""The demo's adversary lines: verdicts, reasons and claimable, before and after defences."""

from __future__ import annotations

from ioswarm.sim.demo import adversary_lines, format_report


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


def _report(**agent: object) -> dict[str, object]:
    return {
        "duration_s": 61.2,
        "blocks": 60,
        "agents": 1,
        "agent_levels": ["L2"],
        "workload": {"sent": 10, "errors": 0},
        "tasks": {"created": 10, "dispatched": 10, "results": 10},
        "epochs": {"settled": 2, "pending": 0, "reverted": 0, "paid_wei": str(2 * 10**18)},
        "per_agent": {"a-1": {"level": "L2", "canaries": {"matched": 3, "failed": 0}, **agent}},
        "shadow": {
            "L2": {"compared": 9, "matched": 8, "mismatched": 0, "excluded": {"raced": 1}},
        },
        "adversaries": {},
    }


def test_a_claimable_that_differs_from_the_ledger_is_shown_not_a_crash() -> None:
    """Claimable != ledger prints both in IOTX and CHECK; a ledger figure missing does not
    raise KeyError either."""
    text = format_report(
        _report(
            claimable_wei=str(15 * 10**17),
            ledger_claimable_wei=str(10**18),
            claimable_equals_ledger=False,
        )
    )
    assert "a-1: can claim 1.5 IOTX, but the ledger says 1 IOTX -> CHECK" in text
    text = format_report(_report(claimable_wei="5", claimable_equals_ledger=False))
    assert "can claim 0.000000000000000005 IOTX" in text


def test_the_report_uses_iotx_and_plain_words() -> None:
    """Amounts are IOTX (never wei) and the shadow line says what was compared with what."""
    text = format_report(
        _report(
            claimable_wei=str(10**18),
            ledger_claimable_wei=str(10**18),
            claimable_equals_ledger=True,
        )
    )
    assert "wei" not in text
    assert "2 paid on-chain" in text and "2 IOTX paid into the pool" in text
    assert "a-1: can claim 1 IOTX, as the ledger says" in text
    assert (
        "L2 answers checked against the chain: 9 compared, 8 agreed, 0 disagreed, "
        "1 not counted (raced 1) -> OK"
    ) in text


def test_an_agent_without_reward_figures_and_an_empty_report_print() -> None:
    """An agent that left before the end, and a report with nothing in it, still format."""
    assert "a-1: no reward figures" in format_report(_report())
    assert "== ioswarm demo report ==" in format_report({})


def test_contract_workload_counts_per_category_are_summed() -> None:
    """The contract workload reports per-category counts; the report prints their totals."""
    report = dict(_report())
    report["contract_workload"] = {
        "sent": {"erc20_transfer": 7, "create": 3},
        "errors": {"erc20_transfer": 1, "create": 0},
    }
    text = format_report(report)
    assert "the contract workload 10 (1 refused)" in text and "erc20_transfer" not in text
