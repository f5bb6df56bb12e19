"""Architecture (issue 12): no function in src/ or benchmarks/ is longer than 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT = 60  # lines from the def line to the body's last line, docstring included


def long_functions(limit: int = LIMIT) -> list[str]:
    found = []
    for root in ("src", "benchmarks"):
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.body[-1].end_lineno - node.lineno + 1
                    if n > limit:
                        found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_is_longer_than_60_lines():
    assert long_functions() == []
