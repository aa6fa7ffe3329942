"""The device agent's rendered units, files and install plan (rendering/agent.py)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import layout
from deploy import agent as agent_cli
from deploy.desired import public_key_from_pem, public_pem
from rendering import agent
from rendering.plan import install_file

REPO = Path(__file__).resolve().parents[2]
SETTINGS = agent.AgentSettings(
    "prod", "smoker-pi", "smart-smoker-device", "/opt/smart-smoker-device"
)
PUBLIC_PEM = public_pem(Ed25519PrivateKey.generate())


def unit_value(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def test_the_service_runs_the_agent_cli_with_arguments_it_accepts() -> None:
    service = agent.service_unit(SETTINGS)
    (exec_start,) = unit_value(service, "ExecStart")
    argv = shlex.split(exec_start)
    assert argv[:3] == ["/usr/bin/python3", "-m", "deploy.agent"]
    args = agent_cli.parser().parse_args(argv[3:])
    assert (args.source, args.public_key) == (layout.AGENT_DOCUMENT, layout.AGENT_PUBLIC_KEY)
    assert (args.state_dir, args.env_dir) == (layout.AGENT_STATE_DIR, layout.AGENT_ENV_DIR)
    assert (args.project, args.app_dir) == ("smart-smoker-device", "/opt/smart-smoker-device")
    assert (args.stack, args.guest, args.timeout) == ("prod", "smoker-pi", 30.0)
    assert unit_value(service, "Type") == ["oneshot"]
    assert unit_value(service, "After") == ["network-online.target docker.service"]
    assert unit_value(service, "Wants") == ["network-online.target"]
    assert unit_value(service, "Environment") == [
        f"PYTHONPATH={layout.AGENT_HOME}",
        "PYTHONDONTWRITEBYTECODE=1",
    ]


def test_busy_and_unreachable_are_successes_of_the_unit_and_failures_are_not() -> None:
    (success,) = unit_value(agent.service_unit(SETTINGS), "SuccessExitStatus")
    codes = {int(c) for c in success.split()}
    assert (
        codes
        == {
            agent_cli.EXIT_CODES[agent_cli.BUSY],
            agent_cli.EXIT_CODES[agent_cli.UNREACHABLE],
            agent_cli.EXIT_CODES[agent_cli.WAITING_FOR_SECRETS],
        }
        == {69, 75}
    )
    failing = {o for o, c in agent_cli.EXIT_CODES.items() if c not in codes and c != 0}
    assert failing == {"refused", "rolled-back", "rollback-failed", "failed"}


def test_the_hardening_leaves_root_and_docker_alone() -> None:
    service = agent.service_unit(SETTINGS)
    assert "User=" not in service and "DynamicUser" not in service  # the docker socket is root's
    assert "PrivateDevices" not in service and "ProtectHome" not in service  # ~/.docker
    assert unit_value(service, "ProtectSystem") == ["full"]  # /opt and /var stay writable
    assert unit_value(service, "NoNewPrivileges") == ["yes"]


def test_the_timer_runs_at_boot_and_on_an_interval() -> None:
    timer = agent.timer_unit(
        agent.AgentSettings("dev", "pi", "smart-smoker-device", "/opt/d", interval_seconds=900)
    )
    assert unit_value(timer, "OnBootSec") == ["60s"]
    assert unit_value(timer, "OnUnitActiveSec") == ["900s"]
    assert unit_value(timer, "Persistent") == ["true"]
    assert unit_value(timer, "RandomizedDelaySec") == ["60s"]
    assert unit_value(timer, "Unit") == [layout.AGENT_SERVICE]
    assert unit_value(timer, "WantedBy") == ["timers.target"]


def test_a_percent_in_a_url_source_is_not_a_systemd_specifier() -> None:
    settings = agent.AgentSettings(
        "dev", "pi", "smart-smoker-device", "/opt/d", source="https://h.example/a%20b.json"
    )
    (exec_start,) = unit_value(agent.service_unit(settings), "ExecStart")
    assert "--source https://h.example/a%%20b.json " in exec_start


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"source": "http://h/doc.json"}, "https:// URL or an absolute path"),
        ({"source": "/var/lib/a b.json"}, "https:// URL or an absolute path"),
        ({"guest": "smoker pi"}, "agent guest"),
        ({"interval_seconds": 60}, "interval"),
        ({"randomized_delay_seconds": 3000}, "randomized delay"),
        ({"app_dir": "relative/dir"}, "absolute path"),
    ],
)
def test_settings_the_units_cannot_carry_are_refused(change: dict[str, object], text: str) -> None:
    values: dict[str, object] = {
        "stack": "prod",
        "guest": "smoker-pi",
        "project": "smart-smoker-device",
        "app_dir": "/opt/smart-smoker-device",
        **change,
    }
    with pytest.raises(agent.AgentSettingsError, match=text):
        agent.AgentSettings(**values)  # type: ignore[arg-type]


def test_the_public_key_file_is_the_pem_the_agent_reads() -> None:
    text = agent.public_key_file(PUBLIC_PEM)
    assert text.endswith("-----END PUBLIC KEY-----\n")
    public_key_from_pem(text)  # the agent's own reader accepts it
    private = "-----BEGIN PRIVATE KEY-----\nMC4C\n-----END PRIVATE KEY-----\n"
    with pytest.raises(agent.AgentSettingsError, match="BEGIN PUBLIC KEY") as raised:
        agent.public_key_file(private)
    assert "MC4C" not in str(raised.value)


def test_the_code_is_the_repositorys_deploy_package_and_imports_alone(tmp_path: Path) -> None:
    files = agent.code_files()
    deploy_modules = sorted(p.name for p in (REPO / "deploy").glob("*.py"))
    prefix = f"{layout.AGENT_HOME}/"
    assert sorted(p.removeprefix(prefix + "deploy/") for p in files if "/deploy/" in p) == (
        deploy_modules
    )
    assert {prefix + "layout.py", prefix + "errors.py"} <= set(files)
    assert files[prefix + "deploy/agent.py"] == (REPO / "deploy/agent.py").read_text()
    for path, text in files.items():  # the device's tree, nothing else of the repository
        target = tmp_path / path.removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "import deploy.agent, layout; print(deploy.agent.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "deploy/agent.py")
    usage = subprocess.run(
        [sys.executable, "-m", "deploy.agent", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 0 and "--public-key" in usage.stdout


def test_the_plan_installs_packages_code_key_units_and_enables_the_timer() -> None:
    steps = agent.agent_plan(SETTINGS, PUBLIC_PEM)
    names = [s.name for s in steps]
    assert names[:2] == ["agent-packages", "agent-dirs"] and names[-1] == "agent-timer"
    packages = steps[0].script
    for package in ("python3", "python3-cryptography", "python3-yaml", "python3-paramiko"):
        assert package in packages
    installed = {path for s in steps for path in s.files}
    assert set(agent.code_files()) <= installed
    assert layout.AGENT_PUBLIC_KEY in installed
    assert {f"/etc/systemd/system/{u}" for u in agent.units(SETTINGS)} <= installed
    key_step = next(s for s in steps if s.name == "agent-public-key")
    assert key_step.stdin == agent.public_key_file(PUBLIC_PEM) and not key_step.secret
    assert key_step.script == install_file(layout.AGENT_PUBLIC_KEY, mode="0644")
    assert 'systemctl enable --now "$timer"' in steps[-1].script
    assert f"timer={layout.AGENT_TIMER}" in steps[-1].script
    assert len(set(names)) == len(names)
    assert not [s for s in steps if s.secret]  # nothing the agent installs is secret


def test_the_plan_installs_code_and_units_on_a_directory(tmp_path: Path) -> None:
    """The file steps' shell, run for real with the targets moved under a temp root."""
    steps = agent.agent_plan(SETTINGS, PUBLIC_PEM)
    for step in steps:
        if not step.name.startswith(("agent-code-", "agent-public-key", "unit-")):
            continue
        (path,) = step.files
        target = str(tmp_path) + path
        body = step.script.replace(shlex.quote(path), shlex.quote(target)).replace(
            "chown root:root", "chown $(id -u):$(id -g)"
        )
        body = body.replace("systemctl daemon-reload", "true")
        body = body.replace(":root:root", f":{_user()}:{_group()}")
        first = subprocess.run(
            ["sh", "-c", body], input=step.stdin, capture_output=True, text=True, timeout=60
        )
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith("changed "), first.stdout
        again = subprocess.run(
            ["sh", "-c", body], input=step.stdin, capture_output=True, text=True, timeout=60
        )
        assert again.stdout.startswith("unchanged "), again.stdout + again.stderr
        assert Path(target).read_text() == step.stdin


def _user() -> str:
    return subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()


def _group() -> str:
    return subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()


def test_the_prune_step_removes_only_modules_the_repository_no_longer_has(tmp_path: Path) -> None:
    home = tmp_path / "agent"
    (home / "deploy").mkdir(parents=True)
    kept = [home / "deploy/agent.py", home / "layout.py"]
    stale = [home / "deploy/old_module.py"]
    for path in (*kept, *stale):
        path.write_text("x = 1\n")
    (home / "deploy/notes.txt").write_text("not code\n")
    step = agent.prune_step(sorted(str(p).replace(str(home), layout.AGENT_HOME) for p in kept))
    body = step.script.replace(layout.AGENT_HOME, str(home))
    first = subprocess.run(["sh", "-c", body], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"changed removed {stale[0]}"
    assert all(p.exists() for p in kept) and not stale[0].exists()
    assert (home / "deploy/notes.txt").exists()
    again = subprocess.run(["sh", "-c", body], capture_output=True, text=True, timeout=60)
    assert again.stdout.strip() == "unchanged agent code"
    # the installed plan keeps exactly the repository's files
    (plan_step,) = [s for s in agent.agent_plan(SETTINGS, PUBLIC_PEM) if s.name == "agent-prune"]
    for path in agent.code_files():
        assert f" {path} " in plan_step.script
