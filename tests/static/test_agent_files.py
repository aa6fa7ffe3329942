"""The device agent's units and install plan (rendering/agent.py), checked by the tools that
will read them: `systemd-analyze verify` for the units (their ExecStart, Debian's python3, is
on this machine), shellcheck for the plan's scripts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rendering import agent
from rendering.plan import Step
from tests.tools import tool

SETTINGS = agent.AgentSettings(
    "prod", "smoker-pi", "smart-smoker-device", "/opt/smart-smoker-device"
)
URL_SETTINGS = agent.AgentSettings(
    "dev",
    "smoker-pi",
    "smart-smoker-device",
    "/opt/smart-smoker-device",
    source="https://dev-cloud.example.ts.net/device-releases/smoker-pi.json?v=100%25",
    interval_seconds=900,
)
PUBLIC = (
    "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"
    "-----END PUBLIC KEY-----\n"
)


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("settings", [SETTINGS, URL_SETTINGS], ids=["local-copy", "url"])
@pytest.mark.parametrize("unit", ["smart-smoker-agent.service", "smart-smoker-agent.timer"])
def test_units_pass_systemd_analyze_verify(
    settings: agent.AgentSettings, unit: str, tmp_path: Path
) -> None:
    assert Path(agent.PYTHON).exists()  # verify checks the ExecStart binary: the real one
    for name, text in agent.units(settings).items():  # a timer needs its service next to it
        (tmp_path / name).write_text(text)
    result = run([tool("systemd-analyze"), "verify", "--man=no", str(tmp_path / unit)])
    ours = [line for line in result.stderr.splitlines() if "smart-smoker-agent" in line]
    assert result.returncode == 0 and not ours, result.stderr


def steps() -> list[Step]:
    return agent.agent_plan(SETTINGS, PUBLIC)


@pytest.mark.parametrize("step", steps(), ids=lambda s: s.name)
def test_plan_scripts_pass_shellcheck(step: Step, tmp_path: Path) -> None:
    script = tmp_path / f"{step.name}.sh"
    script.write_text(step.script)
    result = run([tool("shellcheck"), "--shell=sh", "--severity=style", str(script)])
    assert result.returncode == 0, result.stdout + result.stderr
