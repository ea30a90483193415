"""Class size limit: no class in ioswarm/ over 300 lines of code (docstrings, comments, blanks
not counted)."""

from __future__ import annotations

import ast
from pathlib import Path

import ioswarm

MAX_CLASS_LOC = 300
ROOT = Path(ioswarm.__file__).parent


def _docstring_lines(node: ast.AST) -> set[int]:
    lines: set[int] = set()
    for n in ast.walk(node):
        if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) or not n.body:
            continue
        first = n.body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def _class_loc(lines: list[str], node: ast.ClassDef) -> int:
    doc = _docstring_lines(node)
    end = node.end_lineno or node.lineno
    return sum(
        1
        for i in range(node.lineno, end + 1)
        if (text := lines[i - 1].strip()) and not text.startswith("#") and i not in doc
    )


def class_sizes() -> list[tuple[int, str, str]]:
    """(lines of code, file, class name) of every class in ioswarm/ but the generated proto."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        if "proto" in path.relative_to(ROOT).parts:
            continue
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                out.append((_class_loc(lines, node), str(path.relative_to(ROOT)), node.name))
    return out


def test_no_class_over_300_lines_of_code() -> None:
    """No class in ioswarm/ has more than 300 lines of code; big ones are split along seams."""
    over = [(n, f"{path}:{name}") for n, path, name in class_sizes() if n > MAX_CLASS_LOC]
    assert not over, f"classes over {MAX_CLASS_LOC} lines of code: {sorted(over, reverse=True)}"


def test_measure_counts_code_only() -> None:
    """The measure skips docstrings, comments and blank lines, and counts everything else."""
    source = (
        'class A:\n    """Doc\n    more."""\n\n    # why\n'
        '    def f(self) -> None:\n        """D."""\n        x = 1\n'
    )
    tree = ast.parse(source)
    node = tree.body[0]
    assert isinstance(node, ast.ClassDef)
    assert _class_loc(source.splitlines(), node) == 3
