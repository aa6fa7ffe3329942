"""Tier 3: the runner guest's plan on a fresh test guest, against the GitHub API stand-in
(testbed/standins/github: stand-in runner and Pulumi tarballs, registration with a PAT or a
one-time token); the Proxmox CA and node name against a TLS server with a test CA."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from rendering import runner
from testbed.harness import Guest
from tests.configs import evolve
from tests.tier3.baseline_env import apply_plan
from tests.tier3.runner_env import (
    ONE_TIME_TOKEN,
    PAT,
    PULUMI_VERSION,
    REPOSITORY,
    RunnerEnv,
    argv_sampler,
    runner_env,
    tls_node,
)

NAME = "github-runner"
LABELS = ("self-hosted", "linux", "x64", "smart-smoker")
SERVICE, TIMER = runner.RUNNER_SERVICE, runner.REGISTRATION_TIMER
LEAK_DIRS = "/etc /usr/local /opt /home /var/log /tmp"
WRONG_PAT = "ghp_TIER3refusedPersonalAccessToken987654"


@pytest.fixture(scope="module")
def env(guest_factory: Callable[..., Guest]) -> Iterator[RunnerEnv]:
    with runner_env(guest_factory(hostname=NAME)) as environment:
        yield environment


def run_step(env: RunnerEnv, step: runner.Step) -> str:
    return env.guest.run(step.command("root"), input=(step.stdin or "").encode()).stdout


def wait_for_heartbeats(env: RunnerEnv) -> None:
    deadline = time.monotonic() + 30
    while not any(r.name == NAME and r.heartbeats for r in env.github.runners()):
        diagnostics = env.guest.run(f"systemctl status {SERVICE} --no-pager", check=False).stdout
        assert time.monotonic() < deadline, f"the runner never heartbeat:\n{diagnostics}"
        time.sleep(0.5)


def files_holding(guest: Guest, secret: str) -> set[str]:
    # the secret goes to grep on stdin (-f -), never on a command line
    out = guest.run(f"grep -rlF -f - {LEAK_DIRS} 2>/dev/null || true", input=secret.encode())
    return set(out.stdout.split())


def test_a_wrong_checksum_is_refused_and_nothing_is_unpacked(env: RunnerEnv) -> None:
    run_step(env, env.step("runner-user"))
    bad_pulumi = env.settings.pulumi.model_copy(update={"sha256": "1" * 64})
    for name, changes, got, want in (
        ("runner-install", {"sha256": "0" * 64}, env.settings.sha256, "0" * 64),
        ("pulumi-cli", {"pulumi": bad_pulumi}, env.settings.pulumi.sha256, "1" * 64),
    ):
        result = env.guest.run(env.step(name, **changes).command("root"), check=False)
        assert result.returncode != 0, result.stdout
        assert f"checksum mismatch: got {got}, want {want}" in result.stderr
    assert env.guest.run(f"ls -A {env.settings.install_dir}").stdout == ""
    leftovers = "ls -d /opt/pulumi /opt/pulumi.* /opt/actions-runner.* /tmp/tmp.* 2>/dev/null"
    assert env.guest.run(f"{leftovers} || true").stdout == ""
    assert env.guest.run("command -v pulumi || true").stdout == ""


def test_the_first_apply_registers_the_runner_with_a_pat(env: RunnerEnv) -> None:
    with argv_sampler(env.guest) as samples:
        results = apply_plan(env.guest, env.plan())
    assert all(r.changed for r in results if r.step.name != "runner-user"), [
        (r.step.name, r.stdout) for r in results
    ]
    (registration,) = env.github.registrations()
    assert (registration.name, registration.labels, registration.url) == (NAME, LABELS, REPOSITORY)
    assert registration.token_kind == "minted"
    wait_for_heartbeats(env)
    guest = env.guest
    for unit in (SERVICE, TIMER):
        assert guest.run(f"systemctl is-enabled {unit}").stdout.strip() == "enabled"
        assert guest.run(f"systemctl is-active {unit}").stdout.strip() == "active"
    assert guest.run("pgrep -u runner -f run.sh").stdout.strip()
    assert set(guest.run("id -nG runner").stdout.split()) == {"runner"}
    assert guest.run("pulumi version").stdout.strip() == f"v{PULUMI_VERSION}"
    assert guest.run("readlink /usr/local/bin/pulumi-language-python").stdout.strip() == (
        f"/opt/pulumi/{PULUMI_VERSION}/pulumi-language-python"
    )
    assert guest.run("test -f /run/standin-installdependencies && echo ran").stdout == "ran\n"
    assert guest.run(f"stat -c %a:%U:%G {runner.TOKEN_FILE}").stdout.strip() == "600:root:root"
    # the token never was on a command line, while config.sh ran
    assert "config.sh --unattended" in samples() and PAT not in samples()


def test_reapplying_changes_nothing(env: RunnerEnv) -> None:
    started = env.guest.run(f"systemctl show -p ActiveEnterTimestampMonotonic {SERVICE}").stdout
    for result in apply_plan(env.guest, env.plan()):
        lines = [line for line in result.stdout.splitlines() if line]
        assert lines and all(line.startswith("unchanged") for line in lines), (
            result.step.name,
            result.stdout,
        )
    assert len(env.github.registrations()) == 1
    after = env.guest.run(f"systemctl show -p ActiveEnterTimestampMonotonic {SERVICE}").stdout
    assert after == started


def test_a_runner_deleted_on_github_registers_again(env: RunnerEnv) -> None:
    before = {r.id for r in env.github.runners()}
    env.github.delete_runner(NAME)
    with argv_sampler(env.guest) as samples:
        env.guest.run(f"systemctl start {runner.REGISTRATION_SERVICE}", timeout=120)
    (again,) = env.github.runners()
    assert again.name == NAME and again.id not in before
    assert [r.token_kind for r in env.github.registrations()] == ["minted", "minted"]
    wait_for_heartbeats(env)
    log = env.guest.run(f"journalctl -u {runner.REGISTRATION_SERVICE} -o cat --no-pager").stdout
    assert "changed runner registration" in log
    assert "config.sh --unattended" in samples() and PAT not in samples()


def test_a_one_time_registration_token_registers_once(env: RunnerEnv) -> None:
    env.github.add_one_time_token(ONE_TIME_TOKEN)
    with argv_sampler(env.guest) as samples:
        first = {r.step.name: r for r in apply_plan(env.guest, env.plan(token=ONE_TIME_TOKEN))}
    assert first["runner-token"].changed and first["runner-register"].changed
    assert env.github.registrations()[-1].token_kind == "one-time"
    assert ONE_TIME_TOKEN not in samples()
    wait_for_heartbeats(env)
    again = apply_plan(env.guest, env.plan(token=ONE_TIME_TOKEN))
    assert not any(r.changed for r in again), [(r.step.name, r.stdout) for r in again]
    assert len(env.github.registrations()) == 3


def test_a_new_runner_release_keeps_the_registration(env: RunnerEnv) -> None:
    agent = env.guest.run(f"cat {env.settings.install_dir}/.runner").stdout
    upgrade = env.serve_runner("2.322.0")
    results = {
        r.step.name: r for r in apply_plan(env.guest, env.plan(token=ONE_TIME_TOKEN, **upgrade))
    }
    assert results["runner-install"].changed and not results["runner-register"].changed
    home = env.settings.install_dir
    assert env.guest.run(f"cat {home}/bin/Runner.Listener.version").stdout.strip() == "2.322.0"
    assert env.guest.run(f"cat {home}/.runner").stdout == agent
    assert env.guest.run(f"systemctl is-active {SERVICE}").stdout.strip() == "active"
    assert len(env.github.registrations()) == 3
    env.settings = evolve(env.settings, **upgrade)  # what the guest runs from now on


def test_a_failed_registration_puts_the_previous_one_back(env: RunnerEnv) -> None:
    """A setting changed with a spent one-time token: config.sh fails, the runner keeps running."""
    home = env.settings.install_dir
    agent = env.guest.run(f"cat {home}/.runner").stdout
    relabelled = env.step("runner-ensure-registered", labels=(*LABELS, "extra"))
    run_step(env, relabelled)
    result = env.guest.run(runner.ENSURE_REGISTERED, check=False)
    assert result.returncode != 0, result.stdout
    assert "the previous registration was kept" in result.stderr
    assert env.guest.run(f"cat {home}/.runner").stdout == agent
    assert env.guest.run(f"systemctl is-active {SERVICE}").stdout.strip() == "active"
    assert env.guest.run(f"ls -A {home} | grep -c registration-kept || true").stdout.strip() == "0"
    run_step(env, env.step("runner-ensure-registered"))  # the settings the guest runs with


def test_a_refused_pat_fails_clearly_and_leaves_the_runner_running(env: RunnerEnv) -> None:
    wrong = next(s for s in env.plan(token=WRONG_PAT) if s.name == "runner-token")
    assert f"changed {runner.TOKEN_FILE}" in run_step(env, wrong)
    result = env.guest.run(runner.ENSURE_REGISTERED, check=False)
    assert result.returncode != 0
    assert "registration-token answered HTTP 401: Bad credentials" in result.stderr
    assert WRONG_PAT not in result.stderr + result.stdout
    assert env.guest.run(f"systemctl is-active {SERVICE}").stdout.strip() == "active"
    restored = apply_plan(env.guest, env.plan(token=ONE_TIME_TOKEN))
    assert {r.step.name for r in restored if r.changed} == {"runner-token"}


def test_no_token_leaks_to_logs_processes_or_files(env: RunnerEnv) -> None:
    guest = env.guest
    journal = guest.run("journalctl --no-pager -o cat", timeout=60).stdout
    processes = guest.run("ps -eo user,args").stdout
    for token in (PAT, ONE_TIME_TOKEN, WRONG_PAT):
        assert token not in journal and token not in processes
    assert files_holding(guest, PAT) == files_holding(guest, WRONG_PAT) == set()  # replaced
    assert files_holding(guest, ONE_TIME_TOKEN) == {runner.TOKEN_FILE}
    runner_home = f"{env.settings.install_dir}/.credentials"
    assert guest.run(f"stat -c %a:%U {runner_home}").stdout.strip() == "600:runner"


def test_the_proxmox_ca_lets_the_guest_verify_the_node(env: RunnerEnv) -> None:
    hosts = env.step("proxmox-node-name")
    with tls_node() as node:
        curl = f"curl -fsS --max-time 10 https://pve:{node.port}/"
        assert "changed /etc/hosts" in run_step(env, hosts)
        assert "unchanged /etc/hosts" in run_step(env, hosts)
        refused = env.guest.run(curl, check=False)
        assert refused.returncode == 60, refused.stderr  # the certificate does not verify yet
        ca = runner.ca_step()
        bad = env.guest.run(ca.command("root"), input=b"not a certificate\n", check=False)
        assert bad.returncode != 0 and "refused" in bad.stderr
        changed = env.guest.run(ca.command("root"), input=node.ca_pem.encode()).stdout
        assert f"changed {runner.CA_FILE}" in changed
        assert env.guest.run(curl).stdout == "pve stand-in: verified\n"
        again = env.guest.run(ca.command("root"), input=node.ca_pem.encode()).stdout
        assert f"unchanged {runner.CA_FILE}" in again


def test_an_unpinned_pulumi_cli_is_checked_against_the_release_checksums_file(
    env: RunnerEnv,
) -> None:
    tarball = f"pulumi-v{PULUMI_VERSION}-linux-x64.tar.gz"
    pinned = env.settings.pulumi
    assert pinned.sha256
    for name, digest, ok in (("wrong", "2" * 64, False), ("right", pinned.sha256, True)):
        checksums = f"{'3' * 64}  pulumi-v{PULUMI_VERSION}-darwin-x64.tar.gz\n{digest}  {tarball}\n"
        url = env.github.serve_file(f"{name}-checksums.txt", checksums.encode())
        unpinned = pinned.model_copy(update={"sha256": None, "checksums_url": url})
        result = env.guest.run(env.step("pulumi-cli", pulumi=unpinned).command("root"), check=False)
        if ok:
            assert result.returncode == 0 and "changed pulumi" in result.stdout, result.stderr
        else:
            assert result.returncode != 0
            assert f"checksum mismatch: got {pinned.sha256}, want {digest}" in result.stderr
    assert PULUMI_VERSION in env.guest.run("pulumi version").stdout
    missing = env.github.serve_file("empty-checksums.txt", b"")
    unpinned = pinned.model_copy(
        update={"sha256": None, "checksums_url": missing, "version": "9.9.9"}
    )
    result = env.guest.run(env.step("pulumi-cli", pulumi=unpinned).command("root"), check=False)
    assert result.returncode != 0 and "pin runner.pulumi.sha256" in result.stderr
