"""Write deploy/grafana/dashboards/ioswarm.json: the Grafana dashboard over coordinator /metrics.

Run ``python scripts/gen_dashboard.py`` after changing a panel; a test checks the committed JSON
is what this script writes and that every metric it queries is exported by a coordinator.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards" / "ioswarm.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
SEL = 'instance=~"$instance"'
WIDTH = 24


def _targets(exprs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
        for i, (expr, legend) in enumerate(exprs)
    ]


def _panel(
    kind: str, title: str, exprs: list[tuple[str, str]], unit: str, w: int, h: int, desc: str
) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": _targets(exprs),
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "gridPos": {"w": w, "h": h},
        "options": {},
    }
    if kind == "timeseries":
        panel["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}}
    if kind == "stat":
        panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
    return panel


def ts(title: str, exprs: list[tuple[str, str]], unit: str, desc: str, w: int = 12) -> Any:
    return _panel("timeseries", title, exprs, unit, w, 8, desc)


def stat(title: str, expr: str, unit: str, desc: str, w: int = 4) -> Any:
    return _panel("stat", title, [(expr, title)], unit, w, 4, desc)


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"w": WIDTH, "h": 1}}


def _accuracy(level_by: str) -> str:
    matched = f'ioswarm_shadow_comparisons_total{{{SEL},outcome="matched"}}'
    compared = f'ioswarm_shadow_comparisons_total{{{SEL},outcome=~"matched|mismatched"}}'
    return (
        f"sum by ({level_by}) (increase({matched}[{RATE}])) / "
        f"sum by ({level_by}) (increase({compared}[{RATE}]))"
    )


def panels() -> list[dict[str, Any]]:
    """Every panel, top to bottom: overview, tasks, shadow, node and loops, rewards, process."""
    p = "histogram_quantile"
    return [
        row("Overview"),
        stat("Agents", f"sum(ioswarm_agents{{{SEL}}})", "none", "Registered agents."),
        stat("Task streams", f"sum(ioswarm_task_streams{{{SEL}}})", "none", "Open GetTasks."),
        stat(
            "Results / s",
            f'sum(rate(ioswarm_results_total{{{SEL},disposition="accepted"}}[{RATE}]))',
            "ops",
            "Accepted task results per second.",
        ),
        stat("Shadow accuracy", _accuracy("instance"), "percentunit", "Matched / compared."),
        stat("Head block", f"max(ioswarm_head_block{{{SEL}}})", "none", "Newest block seen."),
        stat(
            "Settlement halted",
            f"max(ioswarm_settlement_halted{{{SEL}}})",
            "bool_yes_no",
            "1 while the reward chain is not the recorded one.",
        ),
        row("Tasks"),
        ts(
            "Agents by level",
            [(f"sum by (level) (ioswarm_agents{{{SEL}}})", "{{level}}")],
            "none",
            "Registered agents per capability level.",
        ),
        ts(
            "Throughput",
            [
                (
                    f"sum by (level) (rate(ioswarm_tasks_created_total{{{SEL}}}[{RATE}]))",
                    "created {{level}}",
                ),
                (
                    f"sum by (level) (rate(ioswarm_tasks_dispatched_total{{{SEL}}}[{RATE}]))",
                    "dispatched {{level}}",
                ),
                (
                    f"sum by (level, disposition) (rate(ioswarm_results_total{{{SEL}}}[{RATE}]))",
                    "results {{level}} {{disposition}}",
                ),
                (f"sum(rate(ioswarm_tasks_reassigned_total{{{SEL}}}[{RATE}]))", "reassigned"),
                (
                    f"sum by (reason) (rate(ioswarm_tasks_dropped_total{{{SEL}}}[{RATE}]))",
                    "dropped {{reason}}",
                ),
            ],
            "ops",
            "Tasks sent and results received per second.",
        ),
        ts(
            "Task latency (dispatch to accepted result)",
            [
                (
                    f"{p}({q}, sum by (le, level) "
                    f"(rate(ioswarm_task_latency_seconds_bucket{{{SEL}}}[{RATE}])))",
                    f"p{int(q * 100)} {{{{level}}}}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
            "s",
            "Quantiles of the time from dispatch to an accepted result.",
        ),
        ts(
            "Seen to result (mempool seen to accepted result)",
            [
                (
                    f"{p}({q}, sum by (le, level) (rate(ioswarm_task_stage_seconds_bucket"
                    f'{{{SEL},stage="seen_to_result"}}[{RATE}])))',
                    f"p{int(q * 100)} {{{{level}}}}",
                )
                for q in (0.5, 0.99)
            ],
            "s",
            "Quantiles of the time from the coordinator first seeing a tx to an accepted "
            "result of its task.",
        ),
        ts(
            "Task stages (p99)",
            [
                (
                    f"{p}(0.99, sum by (le, stage) (rate(ioswarm_task_stage_seconds_bucket"
                    f"{{{SEL}}}[{RATE}])))",
                    "{{stage}}",
                )
            ],
            "s",
            "seen_to_queued is the coordinator's own preparation (node reads included), "
            "queued_to_dispatched the wait for an agent, dispatched_to_result the agents'.",
        ),
        ts(
            "Agent validation time",
            [
                (
                    f"{p}(0.95, sum by (le, level) "
                    f"(rate(ioswarm_agent_validation_seconds_bucket{{{SEL}}}[{RATE}])))",
                    "p95 {{level}}",
                )
            ],
            "s",
            "Validation time the agents report.",
        ),
        ts(
            "Queues",
            [
                (f"sum(ioswarm_task_queue_depth{{{SEL}}})", "task queue"),
                (f"sum(ioswarm_shadow_pending{{{SEL}}})", "verdicts waiting for inclusion"),
                (f"sum(ioswarm_agents_throttled{{{SEL}}})", "throttled agents"),
            ],
            "none",
            "Work waiting for an agent or for its transaction to land.",
        ),
        ts(
            "Refused RPCs and evictions",
            [
                (
                    f"sum by (method, code) (rate(ioswarm_rpc_rejected_total{{{SEL}}}[{RATE}]))",
                    "{{method}} {{code}}",
                ),
                (f"sum(rate(ioswarm_agent_evictions_total{{{SEL}}}[{RATE}]))", "evictions"),
            ],
            "ops",
            "RPCs refused by gRPC status, and agents evicted for missed heartbeats.",
        ),
        row("Shadow mode"),
        ts(
            "Shadow accuracy by level",
            [(_accuracy("level"), "{{level}}")],
            "percentunit",
            "Matched / (matched + mismatched); excluded races are not counted.",
        ),
        ts(
            "Verdicts by outcome",
            [
                (
                    f"sum by (level, outcome) "
                    f"(rate(ioswarm_shadow_comparisons_total{{{SEL}}}[{RATE}]))",
                    "{{level}} {{outcome}}",
                )
            ],
            "ops",
            "Agent verdicts judged against the chain.",
        ),
        ts(
            "Excluded comparisons by reason",
            [
                (
                    f"sum by (level, reason) "
                    f"(rate(ioswarm_shadow_excluded_total{{{SEL}}}[{RATE}]))",
                    "{{level}} {{reason}}",
                )
            ],
            "ops",
            "Races between dispatch and inclusion that are not the agent's fault.",
        ),
        ts(
            "Re-verification of excluded comparisons",
            [
                (
                    f"sum by (result) (rate(ioswarm_shadow_reverify_total{{{SEL}}}[{RATE}]))",
                    "{{result}}",
                )
            ],
            "ops",
            "Excluded executing-level answers sent to another agent with the real pre-state and "
            "context (issued), or not (no_agent, no_trace, no_context, queue_full, unassigned).",
        ),
        ts(
            "Canaries",
            [
                (
                    f"sum by (level) (rate(ioswarm_canaries_created_total{{{SEL}}}[{RATE}]))",
                    "created {{level}}",
                ),
                (
                    f"sum by (level, outcome) "
                    f"(rate(ioswarm_canary_verdicts_total{{{SEL}}}[{RATE}]))",
                    "{{level}} {{outcome}}",
                ),
            ],
            "ops",
            "Known-answer tasks and how agents answered them.",
        ),
        row("Node, loops and L4 state"),
        ts(
            "Head block and node syncing",
            [
                (f"max(ioswarm_head_block{{{SEL}}})", "head"),
                (f"max(ioswarm_node_syncing{{{SEL}}})", "syncing"),
            ],
            "none",
            "Latest block seen; syncing is 1 while polling pauses.",
        ),
        ts(
            "Mempool intake",
            [
                (
                    f"sum by (source) (rate(ioswarm_mempool_seen_total{{{SEL}}}[{RATE}]))",
                    "seen by {{source}}",
                ),
                (f"sum(rate(ioswarm_mempool_listings_total{{{SEL}}}[{RATE}]))", "listings"),
                (f"min(ioswarm_mempool_push_up{{{SEL}}})", "push up"),
            ],
            "ops",
            "Pending txs taken in per second by push and by txpool listing; push up is 0 "
            "while the node's WebSocket is down (the poll alone then lists the pool).",
        ),
        ts(
            "Node cost per pending tx",
            [
                (
                    f"sum(rate(ioswarm_mempool_node_requests_total{{{SEL}}}[{RATE}])) / "
                    f"sum(rate(ioswarm_mempool_seen_total{{{SEL}}}[{RATE}]))",
                    "requests per tx",
                ),
                (
                    f"sum(rate(ioswarm_mempool_node_seconds_total{{{SEL}}}[{RATE}])) / "
                    f"sum(rate(ioswarm_mempool_seen_total{{{SEL}}}[{RATE}]))",
                    "node seconds per tx",
                ),
            ],
            "none",
            "JSON-RPC requests and node answer time spent per pending tx taken in (state "
            "reads, raw bytes, L3 prefetch).",
        ),
        ts(
            "Node errors",
            [
                (
                    f"sum by (loop) (rate(ioswarm_node_errors_total{{{SEL}}}[{RATE}]))",
                    "{{loop}}",
                )
            ],
            "ops",
            "Failed node calls by loop.",
        ),
        ts(
            "Loops",
            [
                (f"min by (loop) (ioswarm_loop_up{{{SEL}}})", "up {{loop}}"),
                (
                    f"sum by (loop) (increase(ioswarm_loop_restarts_total{{{SEL}}}[{RATE}]))",
                    "restarts {{loop}}",
                ),
            ],
            "none",
            "1 while each coordinator loop runs; restarts after crashes.",
        ),
        ts(
            "L4 state checks",
            [
                (
                    f"sum by (result) (rate(ioswarm_l4_state_checks_total{{{SEL}}}[{RATE}]))",
                    "{{result}}",
                )
            ],
            "ops",
            "L4 agents' state hashes compared with the coordinator's; different means divergence.",
        ),
        row("Rewards and settlement"),
        ts(
            "Settlement",
            [
                (f"max(ioswarm_reward_epochs_unsettled{{{SEL}}})", "unsettled epochs"),
                (f"max(ioswarm_reward_last_confirmed_epoch{{{SEL}}})", "last confirmed epoch"),
                (f"min(ioswarm_reward_rpc_up{{{SEL}}})", "reward RPC up"),
                (f"max by (reason) (ioswarm_settlement_halted{{{SEL}}})", "halted {{reason}}"),
            ],
            "none",
            "Closed epochs waiting for their settlement, and why settlement may be halted.",
        ),
        ts(
            "Settlements and deposits",
            [
                (
                    f"sum by (outcome) "
                    f"(increase(ioswarm_reward_settlements_total{{{SEL}}}[{RATE}]))",
                    "settled {{outcome}}",
                ),
                (
                    f"sum(increase(ioswarm_reward_tx_replacements_total{{{SEL}}}[{RATE}]))",
                    "replaced txs",
                ),
                (
                    f"sum(increase(ioswarm_reward_deposited_iotx_total{{{SEL}}}[{RATE}]))",
                    "IOTX deposited",
                ),
            ],
            "none",
            "Final settlements, fee-bump replacements and IOTX paid into the pool.",
        ),
        row("Process"),
        ts(
            "CPU",
            [(f"rate(process_cpu_seconds_total{{{SEL}}}[{RATE}])", "{{instance}}")],
            "percentunit",
            "Coordinator CPU use (1 = one core).",
            w=8,
        ),
        ts(
            "Memory",
            [(f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")],
            "bytes",
            "Resident memory.",
            w=8,
        ),
        ts(
            "Open files",
            [(f"process_open_fds{{{SEL}}}", "{{instance}}")],
            "none",
            "Open file descriptors (sockets, LMDB, ledgers).",
            w=8,
        ),
    ]


def layout(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each panel an id and a grid position, filling rows left to right."""
    x = y = row_h = 0
    for i, panel in enumerate(items, start=1):
        grid = panel["gridPos"]
        if x + grid["w"] > WIDTH or panel["type"] == "row":
            x, y, row_h = 0, y + row_h, 0
        grid["x"], grid["y"] = x, y
        panel["id"] = i
        x += grid["w"]
        row_h = max(row_h, grid["h"])
        if panel["type"] == "row":
            x, y, row_h = 0, y + grid["h"], 0
    return items


def dashboard() -> dict[str, Any]:
    """The whole dashboard document (Grafana schema version 39)."""
    return {
        "uid": "ioswarm-coordinator",
        "title": "ioswarm coordinator",
        "description": "Agents, tasks, shadow accuracy, node, loops, L4 state and settlement "
        "of ioswarm coordinators, from their /metrics.",
        "tags": ["ioswarm"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                },
                {
                    "name": "instance",
                    "label": "Coordinator",
                    "type": "query",
                    "datasource": DS,
                    "query": {"query": "label_values(ioswarm_build_info, instance)", "refId": "i"},
                    "definition": "label_values(ioswarm_build_info, instance)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "refresh": 2,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": layout(panels()),
    }


def render() -> str:
    """The dashboard as the committed file's text."""
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(0 if OUT.read_text() == render() else 1)
    OUT.write_text(render())
