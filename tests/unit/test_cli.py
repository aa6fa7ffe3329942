"""The operator CLI: arguments, config and errors, and its commands over the fake host."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import deploy.engine as engine_module
from deploy import cli
from deploy.transport import SshTarget
from tests.unit.engine_kit import Clock, fake_host, make_engine, spec
from tests.unit.fake_host import FakeHost

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHbMWXbmZq4rCkHXHnNaV9zHPkmh0Z3FmQ9YV8oL6yGZ"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519"
    path.write_text("KEY")
    return path


def main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code, err = 2, io.StringIO(str(exc))
    return code, out.getvalue(), err.getvalue()


def test_an_unknown_guest_names_the_guests_of_the_stack(key_file: Path) -> None:
    code, _, err = main("--guest", "nope", "--ssh-key", str(key_file), "status")
    assert code == 2 and "dev-cloud, virtual-smoker-device" in err


def test_a_missing_key_file_and_a_missing_host_key_say_how_to_fix_them(
    key_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, _, err = main("--guest", "dev-cloud", "--ssh-key", "/nonexistent", "status")
    assert code == 2 and "SMOKER_SSH_KEY" in err
    monkeypatch.setenv("HOME", str(tmp_path))  # no known_hosts
    code, _, err = main("--guest", "dev-cloud", "--ssh-key", str(key_file), "status")
    assert code == 2 and "guests.dev-cloud.sshHostKey" in err and "--host-key" in err


def test_the_host_key_comes_from_known_hosts(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"10.20.0.20 {HOST_KEY}\n")
    assert cli.known_host_key("10.20.0.20", known) == HOST_KEY
    assert cli.known_host_key("10.20.0.99", known) == ""


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    """The CLI's connection leads to a fake host that has two releases deployed."""
    host = fake_host()
    clock = Clock()
    for version in ("1.0.0", "1.1.0"):
        clock.t += 60
        make_engine(host, clock).deploy(spec(version))

    @contextlib.contextmanager
    def connect(target: SshTarget) -> Iterator[FakeHost]:
        assert (target.host, target.host_key, target.private_key) == ("10.20.0.20", HOST_KEY, "KEY")
        yield host

    monkeypatch.setattr(engine_module, "connect", connect)
    monkeypatch.setattr(engine_module, "Engine", lambda *a, **k: make_engine(host, clock))
    return host


def run(key_file: Path, *args: str) -> tuple[int, str, str]:
    return main("--guest", "dev-cloud", "--ssh-key", str(key_file), "--host-key", HOST_KEY, *args)


def test_status_history_rollback_and_lock(fake: FakeHost, key_file: Path) -> None:
    first, second = [r["release"] for r in fake.ledger()]
    code, out, _ = run(key_file, "status", "--json")
    assert code == 0 and json.loads(out)["release"] == second
    code, out, _ = run(key_file, "rollback")
    assert code == 0 and f"release {first} is live and verified" in out
    code, out, _ = run(key_file, "history")
    assert code == 0 and out.splitlines()[-1].split()[1:4] == ["rollback", "deployed", first]
    code, out, _ = run(key_file, "lock", "status")
    assert out.strip() == "unlocked"
    make_engine(fake, Clock()).lock.acquire("bob", "deploy")
    code, _, err = run(key_file, "rollback")
    assert code == 1 and "the host is locked: deploy by bob" in err
    code, _, err = run(key_file, "lock", "break")
    assert code == 1 and "active, not stale" in err
    code, out, _ = run(key_file, "lock", "break", "--force")
    assert code == 0 and "broke the lock of bob (deploy)" in out


def test_restore_runs_the_drill_and_refuses_a_guest_with_data(
    fake: FakeHost, key_file: Path
) -> None:
    code, out, _ = run(key_file, "restore", "--json")
    assert code == 0 and json.loads(out)["documents"] == 42
    code, _, err = run(key_file, "restore")
    assert code == 1 and "already holds 42 documents" in err and "restore --force" in err
    code, out, _ = run(key_file, "restore", "--force", "--snapshot", max(fake.offsite))
    assert code == 0 and "replaced: 42" in out


def test_the_physical_smoker_is_reached_with_its_configured_key_and_project(
    key_file: Path,
) -> None:
    """A kind: host guest: its tailnet name, its own user, the pinned key, project smoker-device,
    updated in place with no backup (no MongoDB on the device)."""
    args = cli.parser().parse_args(
        ["--stack", "prod", "--guest", "smoker", "--ssh-key", str(key_file), "status"]
    )
    site = cli.guest_site(args)
    assert (site.target.host, site.target.user) == ("smoker", "smoker")
    assert site.target.host_key.startswith("ssh-ed25519 ")
    assert site.site.project == "smoker-device" and not site.site.proxied
    assert site.policy.backup is False
