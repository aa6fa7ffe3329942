"""Tier 2: every rendered host file checked by the tool that will read it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from rendering.files import host_files
from tests.configs import parse, stack_raw
from tests.tools import tool

FILES = {
    f"{stack}/{path}": text
    for stack in ("dev", "prod")
    for path, text in host_files(parse(stack_raw(stack), stack)).items()
}


def by_suffix(*suffixes: str) -> list[str]:
    return sorted(p for p in FILES if p.endswith(suffixes))


def test_owner_stack_renders_the_node_files() -> None:
    assert by_suffix(".sh") == ["dev/proxmox-node/nat-apply.sh", "dev/proxmox-node/nat-remove.sh"]
    assert by_suffix(".service") == ["dev/proxmox-node/smart-smoker-nat.service"]


@pytest.mark.parametrize("path", by_suffix(".sh"))
def test_scripts_pass_shellcheck(path: str, tmp_path: Path) -> None:
    script = tmp_path / Path(path).name
    script.write_text(FILES[path])
    result = subprocess.run(
        [tool("shellcheck"), "--severity=style", str(script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", by_suffix(".service"))
def test_units_pass_systemd_analyze_verify(path: str, tmp_path: Path) -> None:
    unit = tmp_path / Path(path).name
    unit.write_text(FILES[path])
    result = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", str(unit)], capture_output=True, text=True
    )
    # verify also reports unrelated units of this machine; only ours must be clean
    ours = [line for line in result.stderr.splitlines() if unit.name in line]
    assert result.returncode == 0 and not ours, result.stderr


@pytest.mark.parametrize("path", by_suffix(".yaml"))
def test_vendor_data_is_cloud_config(path: str) -> None:
    text = FILES[path]
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    assert "qemu-guest-agent" in data["packages"]
    assert ["systemctl", "enable", "--now", "qemu-guest-agent"] in data["runcmd"]


def test_sysctl_enables_forwarding() -> None:
    lines = [
        line
        for line in FILES["dev/proxmox-node/sysctl-nat.conf"].splitlines()
        if line and not line.startswith("#")
    ]
    assert lines == ["net.ipv4.ip_forward = 1"]
