"""Tier 2: the runner guest's steps and files, checked by the tools that will read them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from config.fields import STACK_FILE
from config.runner import RunnerSettings
from rendering import runner
from rendering.plan import Step
from tests.configs import evolve, parse, stack_raw
from tests.tools import tool

SETTINGS = RunnerSettings.model_validate(
    {
        "url": "https://github.com/smart-smoker/smart-smoker-v2",
        "version": "2.321.0",
        "sha256": "a" * 64,
        "pulumi": {"version": "3.142.0", "sha256": "b" * 64},
    },
    context={STACK_FILE: True},
)
GUEST = evolve(parse(stack_raw("dev"), "dev").guest("dev-cloud"), hostname="github-runner")
STEPS: dict[str, Step] = {
    s.name: s
    for s in [
        *runner.runner_plan(SETTINGS, GUEST, "ghp_static0123456789", "10.20.0.1", "pve"),
        runner.ca_step(),
    ]
}


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def shellcheck(text: str, path: Path, shell: str = "sh") -> subprocess.CompletedProcess[str]:
    path.write_text(text)
    return run([tool("shellcheck"), f"--shell={shell}", "--severity=style", str(path)])


@pytest.mark.parametrize("name", sorted(STEPS))
def test_steps_pass_shellcheck(name: str, tmp_path: Path) -> None:
    result = shellcheck(STEPS[name].script, tmp_path / f"{name}.sh")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_ensure_registered_passes_shellcheck(tmp_path: Path) -> None:
    text = runner.ensure_registered(SETTINGS, GUEST)
    assert text.startswith("#!/bin/sh\n")
    result = shellcheck(text, tmp_path / "ensure-registered")
    assert result.returncode == 0, result.stdout + result.stderr
