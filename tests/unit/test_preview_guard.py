"""The deploy guard over recorded `pulumi preview --json` documents."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tools import preview_guard

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "preview"
LXC_URN = (
    "urn:pulumi:dev::smoker-infra::smoker:proxmox:CloudGuest"
    "$proxmoxve:index/containerLegacy:ContainerLegacy::dev-cloud"
)
VM_URN = (
    "urn:pulumi:dev::smoker-infra::smoker:proxmox:DeviceGuest"
    "$proxmoxve:index/vmLegacy:VmLegacy::virtual-smoker-device"
)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = preview_guard.main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_harmless_preview_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run([str(FIXTURES / "harmless.json")], capsys)
    assert code == 0 and "no guest would be deleted or replaced" in output


def test_a_guest_replacement_is_refused_naming_the_urn(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run([str(FIXTURES / "replace.json")], capsys)
    assert code == 1
    for op in ("create-replacement", "replace", "delete-replaced"):
        assert f"refusing: {op} {LXC_URN}\n" in output
    # the command in the same preview is replaced too, by design: it is not refused
    assert "dev-cloud-sshd-config" not in output


def test_a_guest_deletion_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run([str(FIXTURES / "delete.json")], capsys)
    assert code == 1 and f"refusing: delete {VM_URN}\n" in output


def test_reads_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO((FIXTURES / "delete.json").read_text()))
    assert run([], capsys)[0] == 1


def test_fixtures_are_preview_digests() -> None:
    for name in ("harmless", "replace", "delete"):
        digest = json.loads((FIXTURES / f"{name}.json").read_text())
        assert set(digest) == {"config", "steps", "duration", "changeSummary"}
        assert all({"op", "urn"} <= set(step) for step in digest["steps"])


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"steps": {}}'])
def test_input_that_is_not_a_preview_is_an_error(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "preview.json"
    path.write_text(text)
    code, output = run([str(path)], capsys)
    assert code == 2 and "pulumi preview --json" in output


def test_urn_type() -> None:
    assert preview_guard.urn_type(VM_URN) == "proxmoxve:index/vmLegacy:VmLegacy"
    assert preview_guard.urn_type("not-a-urn") == ""
