"""The tests' own layout: shared helpers live in conftest.py or non-test modules, never in a test
module another one imports (so a test module can be read, moved or deleted on its own)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEST_DIRS = ("tests", "testbed")


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_test_module_imports_another() -> None:
    offenders = []
    for top in TEST_DIRS:
        for path in sorted((REPO / top).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for name in sorted(_imported(tree)):
                if name.split(".")[0] in TEST_DIRS and name.split(".")[-1].startswith("test_"):
                    offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert offenders == []
