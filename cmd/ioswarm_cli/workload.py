"""``ioswarm workload``: send a realistic stream of signed transactions to a node."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from ioswarm.core.progress import Progress
from ioswarm.errors import ConfigError
from ioswarm.logs import setup_logging
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.sim.workload import Workload, WorkloadCounters
from ioswarm_cli.progress import ProgressPrinter, add_progress_flag


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "workload",
        help="send signed transactions (transfers, replacements, nonce gaps, reverts) to a node",
        description="Fund fresh accounts from --funder-key and send a mix of EIP-1559, legacy and "
        "EIP-2930 transactions: transfers, replacements, nonce gaps later filled, reverting calls.",
    )
    p.add_argument("--rpc-url", default="http://127.0.0.1:8545", help="node JSON-RPC URL")
    p.add_argument(
        "--funder-key",
        help="hex private key that funds the workload accounts (or IOSWARM_FUNDER_KEY)",
    )
    p.add_argument("--rate", type=float, default=10.0, help="transactions per second")
    p.add_argument("--count", type=int, help="stop after this many transactions")
    p.add_argument("--duration", type=float, default=60.0, help="stop after this many seconds")
    p.add_argument("--accounts", type=int, default=16, help="number of fresh accounts")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument(
        "--presigned",
        action="store_true",
        help="plain transfers only, all signed before sending and sent in pipelined batches "
        "(reaches 1,000 tx/s on anvil); prints the achieved rate",
    )
    add_progress_flag(p)
    p.set_defaults(run=run)


async def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    key = args.funder_key or env.get("IOSWARM_FUNDER_KEY")
    if not key:
        raise ConfigError("--funder-key", "is required (or set IOSWARM_FUNDER_KEY)")
    if args.rate <= 0 or args.duration <= 0 or args.accounts < 2:
        raise ConfigError("--rate/--duration/--accounts", "must be positive (accounts >= 2)")
    setup_logging("info")
    async with JsonRpcNode(args.rpc_url) as node:
        chain_id = await node.chain_id()
        wl = Workload(
            node, key, chain_id=chain_id, accounts=args.accounts, rate=args.rate, seed=args.seed
        )
        print(f"workload: funding {args.accounts} accounts", file=sys.stderr, flush=True)
        await wl.setup()
        if args.presigned:
            count = args.count or int(args.rate * args.duration)
            print(f"workload: signing {count} transfers", file=sys.stderr, flush=True)
            report = await wl.run_presigned(count)
            print(
                json.dumps(
                    {
                        **wl.counters.as_dict(),
                        "asked_tx_per_sec": args.rate,
                        "achieved_tx_per_sec": round(report.rate, 1),
                    }
                )
            )
            return 0
        printer = ProgressPrinter(args.progress_every)
        sending = asyncio.ensure_future(wl.run(count=args.count, duration=args.duration))
        try:
            while not sending.done():
                # Wake often enough to keep the promised interval; print only when due.
                await asyncio.wait({sending}, timeout=min(1.0, max(args.progress_every, 0.05)))
                printer.update(lambda elapsed: _progress(wl.counters, args, elapsed))
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
        counters = sending.result()
        printer.finish(lambda elapsed: _progress(counters, args, elapsed))
    print(json.dumps(counters.as_dict()))
    return 0


def _progress(c: WorkloadCounters, args: argparse.Namespace, elapsed: float) -> Progress:
    return Progress(
        "workload",
        c.sent,
        "tx sent",
        elapsed,
        total=args.count,
        duration=None if args.count else args.duration,
        extra=f"transfers {c.transfers}, replacements {c.replacements}, nonce gaps {c.gaps}, "
        f"reverts {c.reverts}, refused {c.errors}",
    )
