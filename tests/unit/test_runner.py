"""The runner guest: its settings (every refusal names the fix) and its apply plan."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from pydantic import ValidationError

from config import GuestSpec
from config.errors import problems_from
from config.fields import STACK_FILE
from config.runner import RunnerSettings
from rendering import runner
from tests.configs import evolve, parse, stack_raw

PAT = "ghp_UNITtestPersonalAccessToken0123456789"
SHA = "a" * 64
GOOD: dict[str, Any] = {
    "url": "https://github.com/smart-smoker/smart-smoker-v2",
    "version": "2.321.0",
    "sha256": SHA,
    "pulumi": {"version": "3.142.0", "sha256": "b" * 64},
}


def settings(**changes: Any) -> RunnerSettings:
    return RunnerSettings.model_validate({**GOOD, **changes}, context={STACK_FILE: True})


DROP = object()  # a change that removes the key


def problems(**changes: Any) -> list[str]:
    raw = {k: v for k, v in {**GOOD, **changes}.items() if v is not DROP}
    with pytest.raises(ValidationError) as caught:
        RunnerSettings.model_validate(raw, context={STACK_FILE: True})
    return [str(p) for p in problems_from(caught.value, ("runner",), RunnerSettings)]


@pytest.fixture(scope="module")
def guest() -> GuestSpec:
    spec = parse(stack_raw("dev"), "dev").guest("dev-cloud")
    return evolve(spec, hostname="github-runner")


def test_defaults() -> None:
    s = settings()
    assert s.download_url == (
        "https://github.com/actions/runner/releases/download/v2.321.0/"
        "actions-runner-linux-x64-2.321.0.tar.gz"
    )
    assert s.pulumi.download_url == (
        "https://get.pulumi.com/releases/sdk/pulumi-v3.142.0-linux-x64.tar.gz"
    )
    assert s.api_url == "https://api.github.com"
    assert s.labels == ("self-hosted", "linux", "x64", "smart-smoker")
    assert (s.user, s.install_dir, s.work_dir, s.check_interval_minutes) == (
        "runner",
        "/opt/actions-runner",
        "_work",
        10,
    )


def test_repository_and_organization_scopes(guest: GuestSpec) -> None:
    assert settings().api_scope == "repos/smart-smoker/smart-smoker-v2"
    assert settings(url="https://github.com/smart-smoker").api_scope == "orgs/smart-smoker"
    assert settings().runner_name(guest) == "github-runner"
    assert settings(name="ci-1").runner_name(guest) == "ci-1"


@pytest.mark.parametrize(
    ("changes", "key", "fix"),
    [
        (
            {"url": "https://github.com/o/r/tree/main"},
            "runner.url",
            "https://github.com/OWNER/REPO",
        ),
        ({"url": "https://github.com/o/r.git"}, "runner.url", "drop the .git suffix"),
        ({"url": "http://github.com/o/r"}, "runner.url", "https://"),
        ({"url": "https://github.com/"}, "runner.url", "https://github.com/ORG"),
        ({"version": "2.321"}, "runner.version", "pin e.g. 2.321.0"),
        ({"sha256": "A" * 64}, "runner.sha256", "sha256sum"),
        ({"sha256": DROP}, "runner.sha256", "release notes"),
        ({"url": DROP}, "runner.url", "https://github.com/OWNER/REPO"),
        ({"labels": []}, "runner.labels", "[self-hosted, smart-smoker]"),
        ({"labels": ["smart smoker"]}, "runner.labels", "rename the label"),
        ({"name": "ci/1"}, "runner.name", "use e.g. github-runner"),
        ({"user": "Runner"}, "runner.user", "use e.g."),
        ({"installDir": "/etc/runner"}, "runner.installDir", "/opt/actions-runner"),
        ({"installDir": "/opt/../etc"}, "runner.installDir", "/opt/actions-runner"),
        ({"workDir": "/tmp/work"}, "runner.workDir", "use e.g. _work"),
        ({"workDir": ".."}, "runner.workDir", "use e.g. _work"),
        ({"checkIntervalMinutes": 0}, "runner.checkIntervalMinutes", "in that range"),
        ({"checkIntervalMinutes": 1441}, "runner.checkIntervalMinutes", "in that range"),
        ({"pulumi": {"version": "3.142.0", "sha256": "B" * 64}}, "runner.pulumi.sha256", "hex"),
        ({"pulumi": {"version": "v3", "sha256": SHA}}, "runner.pulumi.version", "X.Y.Z"),
        ({"apiUrl": "https://u:p@api.github.com"}, "runner.apiUrl", "remove user:password@"),
        ({"token": PAT}, "runner.token", "pulumi config set --secret"),
    ],
)
def test_bad_settings_are_refused_naming_the_fix(changes: dict, key: str, fix: str) -> None:
    found = problems(**changes)
    mine = [p for p in found if p.startswith(f"smoker-infra:{key} ")]
    assert mine and any(fix in p for p in mine), found
    assert all(PAT not in p for p in found)


def test_python_field_names_are_unknown_in_a_stack_file() -> None:
    assert any("runner.install_dir" in p for p in problems(install_dir="/opt/x"))


# ---------------------------------------------------------------------------------------------
# The plan


def plan(guest: GuestSpec, token: str = PAT, node: str | None = "pve", **changes: Any) -> list:
    return runner.runner_plan(settings(**changes), guest, token, "10.20.0.1", node)


def test_steps_in_order_with_stable_names(guest: GuestSpec) -> None:
    assert [s.name for s in plan(guest)] == [
        "runner-packages",
        "runner-user",
        "pulumi-cli",
        "runner-install",
        "runner-token",
        "runner-ensure-registered",
        "runner-service",
        "runner-registration-service",
        "runner-registration-timer",
        "runner-register",
        "proxmox-node-name",
    ]
    assert runner.ca_step().name == "proxmox-ca"


@pytest.mark.parametrize("node", [None, "", "10.20.0.1", "fd00::1"])
def test_no_hosts_line_without_a_node_name(guest: GuestSpec, node: str | None) -> None:
    assert "proxmox-node-name" not in [s.name for s in plan(guest, node=node)]


def test_the_hosts_line_maps_the_node_name(guest: GuestSpec) -> None:
    step = plan(guest)[-1]
    assert "10.20.0.1 pve # smoker-infra: the Proxmox node" in step.script


@pytest.mark.parametrize("token", [PAT, "AABBCCregistrationTOKEN0123456789"])
def test_the_token_is_only_on_the_secret_steps_stdin(guest: GuestSpec, token: str) -> None:
    steps = plan(guest, token=token)
    (secret,) = [s for s in steps if s.secret]
    assert secret.name == "runner-token" and secret.stdin == token
    assert "0600" in secret.script and runner.TOKEN_FILE in secret.script
    for step in steps:
        assert token not in step.script and token not in step.command("smoker")
        assert all(token not in text for text in step.files.values())
        if step is not secret:
            assert token not in (step.stdin or "")


def test_packages_for_the_jobs(guest: GuestSpec) -> None:
    script = plan(guest)[0].script
    for package in (
        "git",
        "make",
        "jq",
        "python3-venv",
        "python3-pip",
        "openssh-client",
        "openssl",
    ):
        assert f" {package} " in f" {script.split('wanted=')[1].splitlines()[0].strip(chr(39))} "


def test_the_runner_user_is_in_neither_docker_nor_sudo(guest: GuestSpec) -> None:
    script = plan(guest)[1].script
    assert "useradd --system --create-home --home-dir /home/runner --shell /bin/bash" in script
    assert "for group in docker sudo" in script and "gpasswd -d" in script
    assert "usermod -aG" not in script


def test_downloads_are_verified_before_anything_is_unpacked(guest: GuestSpec) -> None:
    steps = {s.name: s.script for s in plan(guest)}
    for name, sha in (("pulumi-cli", "$want"), ("runner-install", SHA)):
        text = steps[name]
        assert text.index("sha256sum") < text.index("tar -xzf")
        assert f"checksum mismatch: got $got, want {sha}" in text
    assert f"want={'b' * 64}\n" in steps["pulumi-cli"]  # the pin


def test_an_unpinned_pulumi_cli_is_checked_against_the_release_checksums(
    guest: GuestSpec,
) -> None:
    unpinned = settings(pulumi={"version": "3.142.0"})
    assert unpinned.pulumi.checksums_url == (
        "https://get.pulumi.com/releases/sdk/pulumi-3.142.0-checksums.txt"
    )
    text = runner.pulumi_step(unpinned).script
    assert (
        "curl -fsSL --retry 3 https://get.pulumi.com/releases/sdk/pulumi-3.142.0-checksums.txt"
        in text
    )
    assert "awk -v f=pulumi-v3.142.0-linux-x64.tar.gz '$2 == f {print $1}'" in text
    assert "grep -qxE '[0-9a-f]{64}'" in text and "pin runner.pulumi.sha256" in text
    assert text.index("checksums.txt") < text.index("sha256sum") < text.index("tar -xzf")


def test_a_runner_upgrade_keeps_the_registration(guest: GuestSpec) -> None:
    text = {s.name: s.script for s in plan(guest)}["runner-install"]
    for kept in (".runner", ".credentials", ".credentials_rsaparams", "_work"):
        assert f"! -name {kept}" in text
    assert "2.321.0 " + SHA in text
    # the version is recorded last: a failed unpack or dependency install is retried
    assert text.index("bin/installdependencies.sh") < text.index('> "$home/.smoker-version"')


def ensure_script(guest: GuestSpec, **changes: Any) -> str:
    return runner.ensure_registered(settings(**changes), guest)


def test_ensure_registered_values(guest: GuestSpec) -> None:
    text = ensure_script(guest, labels=["self-hosted", "smart-smoker"], name="ci-1")
    assert "URL='https://github.com/smart-smoker/smart-smoker-v2'" in text
    assert "API_SCOPE='repos/smart-smoker/smart-smoker-v2'" in text
    assert "NAME='ci-1'" in text and "LABELS='self-hosted,smart-smoker'" in text
    org = ensure_script(guest, url="https://github.com/smart-smoker")
    assert "API_SCOPE='orgs/smart-smoker'" in org and "NAME='github-runner'" in org


def test_config_sh_invocation(guest: GuestSpec) -> None:
    text = ensure_script(guest)
    call = text[text.index("runuser -u") :].split("||")[0].replace("\\\n", " ")
    argv = shlex.split(call)
    assert argv[:4] == ["runuser", "-u", "$RUNNER_USER", "--"]
    for flag in ("--unattended", "--replace", "--disableupdate"):
        assert flag in argv
    for option in ("--url", "--name", "--labels", "--work"):
        assert option in argv
    assert "--token" not in argv and "--pat" not in argv
    assert 'export ACTIONS_RUNNER_INPUT_TOKEN="$registration_token"' in text
    assert "env " not in text.replace("environment", "")


def test_both_credential_modes(guest: GuestSpec) -> None:
    text = ensure_script(guest)
    assert "ghp_* | github_pat_*) mode=pat ;;" in text and "*) mode=token ;;" in text
    assert "api POST actions/runners/registration-token" in text
    assert 'api GET "actions/runners?name=$NAME' in text
    assert "registration_token=$credential" in text
    # the PAT reaches curl on stdin only
    assert "curl --config -" in text and "Authorization: Bearer %s" in text
    assert '-H "Authorization' not in text


def test_units(guest: GuestSpec) -> None:
    s = settings(checkIntervalMinutes=15)
    service = runner.runner_service(s)
    for line in (
        "User=runner",
        "WorkingDirectory=/opt/actions-runner",
        "ExecStart=/opt/actions-runner/run.sh",
        "Restart=always",
        "RestartSec=30",
        "KillMode=control-group",
        "Environment=AGENT_TOOLSDIRECTORY=/opt/hostedtoolcache",
        "TimeoutStopSec=5min",
        "NoNewPrivileges=yes",
        "ConditionPathExists=/opt/actions-runner/.runner",
        "WantedBy=multi-user.target",
    ):
        assert line in service.splitlines()
    assert runner.TOKEN_FILE not in service and "TOKEN" not in service
    assert f"ExecStart={runner.ENSURE_REGISTERED}" in runner.registration_service()
    timer = runner.registration_timer(s)
    assert "OnBootSec=1min" in timer and "OnUnitActiveSec=15min" in timer


def test_ca_step_is_validated_and_fed_by_the_component() -> None:
    step = runner.ca_step()
    assert step.stdin is None and not step.secret
    assert 'openssl x509 -noout -in "$new"' in step.script
    assert "update-ca-certificates" in step.script
    assert list(step.files) == [runner.CA_FILE]
