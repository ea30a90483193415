"""``make bench``: every benchmark, printed as rates and ratios (never asserted in tests)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    agent_restart,
    agent_submit,
    conformance,
    coordinator_throughput,
    l1_recovery,
    l3_execution,
    l4_restart,
    latency,
    prefetch_cost,
    settlement_gas,
    snapshot_io,
    soak,
)


def main() -> int:
    results = {
        "l1_recovery": l1_recovery.run(),
        "coordinator_throughput": coordinator_throughput.run(),
        "latency": latency.run(),
        "agent_restart": agent_restart.run(),
        "agent_submit": agent_submit.run(),
        "l3_execution": l3_execution.run(),
        "conformance": conformance.run(),
        "settlement_gas": settlement_gas.run(),
        "l3_prefetch": prefetch_cost.run(),
        "l4_restart": l4_restart.run(),
        # The figure is for a >= 1 GB state; pass a smaller size for a quick look.
        "snapshot_io": snapshot_io.run(size_mb=int(sys.argv[1]) if len(sys.argv) > 1 else 1024),
        "soak": soak.run(minutes=8.0),
    }
    print("\n== summary (JSON) ==")
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
