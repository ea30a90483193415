"""``ioswarm rewards`` renders both ioswarm's and the reference coordinator's documents."""

from __future__ import annotations

from ioswarm_cli.rewards_cmds import render_rewards

REFERENCE_DOC = {
    "agent_id": "go-agent",
    "history": [
        {
            "epoch": 12,
            "amount_iotx": 0.45,
            "tasks": 40,
            "accuracy_pct": 99.5,
            "rank": 1,
            "bonus_applied": True,
        }
    ],
    "totals": {"earned_iotx": 0.45, "total_tasks": 40, "avg_accuracy": 99.5},
}


def test_reference_document_without_wei_amounts() -> None:
    """A reference coordinator's history (float IOTX, no wei, status or paid totals) still
    shows its amount, tasks and accuracy, and the totals from ``earned_iotx``."""
    text = render_rewards(REFERENCE_DOC)
    assert "agent go-agent" in text
    row = text.splitlines()[2].split()
    assert row[:4] == ["12", "0.450000", "40", "99.50%"] and row[5] == "yes"
    assert text.splitlines()[-1] == "total 0.450000 IOTX over 1 epochs (40 tasks)"


def test_ioswarm_document_uses_exact_wei() -> None:
    """ioswarm's own document prints exact IOTX from wei and the paid / pending split."""
    doc = {
        "agent_id": "a",
        "history": [
            {
                "epoch": 1,
                "amount_wei": "900000000000000000",
                "amount_iotx": 0.9,
                "tasks": 3,
                "accuracy_pct": 100.0,
                "rank": 1,
                "total_agents": 1,
                "bonus_applied": False,
                "status": "planned",
            }
        ],
        "totals": {
            "epochs": 1,
            "tasks": 3,
            "amount_wei": "900000000000000000",
            "paid_wei": "0",
            "pending_wei": "900000000000000000",
            "earned_iotx": 0.9,
        },
    }
    text = render_rewards(doc)
    assert "0.9 " in text.splitlines()[2] and "1/1" in text and "planned" in text
    assert text.splitlines()[-1] == "total 0.9 IOTX over 1 epochs (3 tasks); paid 0, pending 0.9"
