"""``make bench``: every benchmark, printed as rates and ratios (never asserted in tests)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import coordinator_throughput, l1_recovery


def main() -> int:
    results = {
        "l1_recovery": l1_recovery.run(),
        "coordinator_throughput": coordinator_throughput.run(),
        "l3_execution": l3_execution.run(),
        "settlement_gas": settlement_gas.run(),
    }
    print("\n== summary (JSON) ==")
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
