"""`python -m deploy` as an operator runs it, in its own process: every error is one line on
stderr and a non-zero exit, never a traceback; and the CLI does not load Pulumi or tools.synth."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

REPO = Path(__file__).resolve().parents[2]
SITE = Path(__file__).resolve().parent / "cli_site"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHbMWXbmZq4rCkHXHnNaV9zHPkmh0Z3FmQ9YV8oL6yGZ"
CLI = "python -m deploy --stack dev --guest dev-cloud"


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ssh") / "id_rsa"
    paramiko.RSAKey.generate(1024).write_private_key_file(str(path))
    return path


def deploy(key_file: Path, *args: str, fake: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SMOKER_FAKE_HOST", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(SITE)])
    if fake:
        env["SMOKER_FAKE_HOST"] = fake
    argv = ["--guest", "dev-cloud", "--ssh-key", str(key_file), *args]
    return subprocess.run(
        [sys.executable, "-m", "deploy", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_malformed_host_key_is_one_line(key_file: Path) -> None:
    line = one_error_line(deploy(key_file, "--host-key", "ssh-ed25519 !!!", "status"))
    assert "is not a valid public key" in line and "ssh-keyscan" in line


def test_an_unreachable_host_is_one_line(key_file: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = deploy(
        key_file, "--host", "127.0.0.1", "--port", str(port), "--host-key", HOST_KEY, "status"
    )
    assert f"SSH to root@127.0.0.1:{port} failed" in one_error_line(result)


def test_a_missing_stack_file_is_one_line(key_file: Path, tmp_path: Path) -> None:
    result = deploy(key_file, "--stack-dir", str(tmp_path), "--host-key", HOST_KEY, "status")
    assert "cannot read" in one_error_line(result, code=2)


def test_a_held_lock_is_one_line(key_file: Path) -> None:
    result = deploy(key_file, "--host-key", HOST_KEY, "rollback", fake="lock-held")
    line = one_error_line(result)
    assert "the host is locked: deploy by bob@laptop via cli" in line


def test_an_unwritable_ledger_is_one_line(key_file: Path) -> None:
    result = deploy(key_file, "--host-key", HOST_KEY, "rollback", fake="ledger-unwritable")
    line = one_error_line(result)
    assert "could not append to the ledger /var/log/smart-smoker/deployments.jsonl" in line
    assert "was not recorded" in line


def test_a_lost_connection_is_one_line(key_file: Path) -> None:
    result = deploy(key_file, "--host-key", HOST_KEY, "rollback", fake="connection-lost")
    line = one_error_line(result)
    assert "the connection to the host was lost" in line and f"`{CLI} lock break`" in line


def test_status_names_the_problems_of_the_host(key_file: Path) -> None:
    result = deploy(key_file, "--host-key", HOST_KEY, "status", fake="lock-held")
    assert result.returncode == 0, result.stderr
    assert "lock: deploy by bob@laptop via cli" in result.stdout


def test_the_cli_loads_neither_pulumi_nor_synth() -> None:
    program = (
        "import sys, argparse; from deploy import cli; "
        "args = cli.parser().parse_args(['--guest', 'dev-cloud', '--host-key', 'x', "
        "'--ssh-key', sys.argv[1], 'status']); cli.guest_site(args); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pulumi', 'tools')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, __file__], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
