"""Every rendered host file of both stacks against tests/golden (a change must be deliberate).

Regenerate after an intended change with `UPDATE_GOLDEN=1 make test-unit` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config import parse_config
from rendering.files import host_files
from tests.configs import stack_raw

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


@pytest.mark.parametrize("stack", ["host", "dev", "prod"])
def test_rendered_files_match_golden(stack: str) -> None:
    files = host_files(parse_config(*stack_raw(stack), stack))
    root = GOLDEN / stack
    if os.environ.get("UPDATE_GOLDEN") == "1":
        for old in root.rglob("*"):
            if old.is_file():
                old.unlink()
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
    on_disk = {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}
    assert sorted(on_disk) == sorted(files), "files added or removed: UPDATE_GOLDEN=1 to accept"
    for rel, text in files.items():
        assert on_disk[rel] == text, f"{stack}/{rel} changed: UPDATE_GOLDEN=1 to accept"
