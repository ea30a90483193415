"""ioswarm/core stays pure: no event loop, network, database or EVM imports."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "ioswarm" / "core"
FORBIDDEN = ("asyncio", "grpc", "web3", "lmdb", "aiohttp", "eth", "socket", "subprocess")


def test_core_modules_import_nothing_with_io() -> None:
    """Every module under ioswarm/core imports none of the I/O or EVM packages."""
    offenders = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []
    assert len(list(CORE.glob("*.py"))) > 10  # the glob really found the package
