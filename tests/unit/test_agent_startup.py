"""``ioswarm agent`` at L1/L2 starts without py-evm, web3 or any other heavy import, and the
CLI imports only the module of the subcommand it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ioswarm_cli import agent
from ioswarm_cli.main import COMMAND_MODULES, build_parser

# Top-level packages an L1/L2 agent never needs: execution (py-evm and its kin), chain access
# and settlement (web3, eth_account, eth_keys), the L4 store, the coordinator's metrics, YAML.
HEAVY = (
    "evm",
    "eth",
    "web3",
    "eth_account",
    "eth_abi",
    "eth_keys",
    "lmdb",
    "aiohttp",
    "requests",
    "prometheus_client",
    "yaml",
)
# ioswarm modules that load only for executing levels (L3/L4).
EXECUTING = ("ioswarm.agent.l3", "ioswarm.agent.l4", "ioswarm.agent.evm", "ioswarm.engine")

PROBE = """
import json, sys
from ioswarm_cli.main import build_parser
from ioswarm.agent.levels import validator_for
from ioswarm.core.models import Level
args = build_parser("agent", help_text=False).parse_args(
    ["agent", "--coordinator=127.0.0.1:1", "--level=L2", "--no-tls"]
)
validator_for(Level.L1)
validator_for(Level.L2)
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(code: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    argv = [sys.executable, "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=True)
    modules: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return modules


def test_the_l1_l2_agent_path_imports_nothing_heavy() -> None:
    """A fresh interpreter that builds the agent command and its L1 and L2 validators has not
    imported py-evm, web3, LMDB, YAML or any executing-level module."""
    modules = _modules_after(PROBE)
    assert "ioswarm.agent.runtime" in modules and "grpc" in modules  # the probe reached them
    heavy = [m for m in modules if m.split(".")[0] in HEAVY or m.startswith(EXECUTING)]
    assert heavy == []


def test_the_probe_would_see_a_heavy_import() -> None:
    """The check is not blind: the full parser (every subcommand) does pull web3 in."""
    modules = _modules_after(
        "import json, sys\nfrom ioswarm_cli.main import build_parser\nbuild_parser()\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    assert "web3" in modules


def test_every_subcommand_is_registered_by_its_module() -> None:
    """The command table matches what the modules register: the full parser has exactly its
    commands, and a parser built for one command has that command."""
    full = build_parser()
    sub = next(a for a in full._actions if a.dest == "command")
    assert set(sub.choices or {}) == set(COMMAND_MODULES)
    for command in COMMAND_MODULES:
        one = build_parser(command)
        action = next(a for a in one._actions if a.dest == "command")
        assert command in (action.choices or {})


def test_the_agent_command_parses_as_before() -> None:
    """``ioswarm agent`` flags reach the agent subcommand's runner."""
    args = build_parser("agent").parse_args(["agent", "--level", "L1", "--agent-id", "a1"])
    assert args.run is agent.run and args.level == "L1" and args.agent_id == "a1"
