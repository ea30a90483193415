"""ioswarm/agent modules import each other without a cycle, and not each other's privates."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

AGENT = Path(__file__).resolve().parents[2] / "ioswarm" / "agent"
PREFIX = "ioswarm.agent."


def _imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in AGENT.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module in modules:
        for node in _imports(AGENT / f"{module}.py"):
            # Every import counts, deferred and TYPE_CHECKING ones too: a cycle hidden inside a
            # function is still a cycle.
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.startswith(PREFIX) and name[len(PREFIX) :] in modules:
                    graph[module].add(name[len(PREFIX) :])
    return graph


def test_agent_modules_have_no_import_cycle() -> None:
    """The import graph among ioswarm.agent.* modules is acyclic (lazy imports included)."""
    graph = _graph()
    assert len(graph) > 5  # the glob really found the package
    assert "l3" in graph["l4"]  # the graph sees real edges
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle in ioswarm.agent: {exc.args[1]}") from None


def test_agent_modules_import_no_private_names_of_each_other() -> None:
    """No ioswarm.agent module imports an underscore-prefixed name from a sibling module."""
    offenders = []
    for path in sorted(AGENT.glob("*.py")):
        for node in _imports(path):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PREFIX):
                private = [a.name for a in node.names if a.name.startswith("_")]
                offenders += [f"{path.stem}: {name}" for name in private]
    assert offenders == []
