"""Tier 3: the real apply plan of a cloud guest, over real SSH, on the systemd test guest."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import replace

import pytest

import layout
from config import ServeDirectory
from rendering.baseline import sshd_step, ufw_rules
from testbed.harness import Guest
from tests.configs import evolve
from tests.tier3.baseline_env import AUTH_KEY, Baselined, apply_plan, plan

SERVICES = ("ssh", "fail2ban", "docker", "tailscaled")


def start_times(guest: Guest) -> dict[str, str]:
    return {
        unit: guest.run(f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}").stdout
        for unit in SERVICES
    }


@pytest.fixture(scope="module")
def applied(baselined: Baselined) -> Baselined:
    return baselined


def test_first_apply_changes_the_guest(applied: Baselined) -> None:
    changed = {r.step.name for r in applied.first if r.changed}
    assert {"users", "sshd-config", "firewall", "fail2ban", "docker-config"} <= changed


def test_sshd_runs_hardened(applied: Baselined) -> None:
    effective = dict(
        line.split(" ", 1)
        for line in applied.guest.run("sshd -T").stdout.splitlines()
        if " " in line
    )
    assert {k: effective[k] for k in (
        "port", "permitrootlogin", "pubkeyauthentication", "passwordauthentication",
        "kbdinteractiveauthentication", "maxauthtries", "maxsessions", "logingracetime",
        "permitemptypasswords", "x11forwarding", "allowgroups",
    )} == {
        "port": "22", "permitrootlogin": "without-password", "pubkeyauthentication": "yes",
        "passwordauthentication": "no", "kbdinteractiveauthentication": "no",
        "maxauthtries": "3", "maxsessions": "10", "logingracetime": "60",
        "permitemptypasswords": "no", "x11forwarding": "no", "allowgroups": "sshd-users",
    }  # fmt: skip


def test_key_login_works_and_password_login_is_refused(applied: Baselined) -> None:
    assert applied.guest.run("id -un").stdout.strip() == "root"
    attempt = applied.guest.from_client(
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o PubkeyAuthentication=no "
        "-o PreferredAuthentications=password,keyboard-interactive -o ConnectTimeout=5 "
        'smoker@"$GUEST" true',
        check=False,
    )
    assert attempt.returncode != 0
    assert "Permission denied (publickey)" in attempt.stderr, attempt.stderr


def test_ufw_lists_exactly_the_declared_rules(applied: Baselined) -> None:
    added = applied.guest.run("ufw show added").stdout.splitlines()
    assert [line.removeprefix("ufw ") for line in added[1:]] == ufw_rules(applied.spec)
    status = applied.guest.run("ufw status verbose").stdout
    assert "Status: active" in status
    assert "deny (incoming), allow (outgoing), deny (routed)" in status


def test_undeclared_port_is_unreachable_and_declared_port_answers(applied: Baselined) -> None:
    guest = applied.guest
    guest.run(
        "systemd-run --unit=probe-listener python3 -m http.server 8081 --bind 0.0.0.0",
    )
    try:
        guest.run("timeout 10 sh -c 'until ss -ltn | grep -q :8081; do sleep 0.2; done'")
        assert (
            guest.run("curl -fsS -o /dev/null http://127.0.0.1:8081/", check=False).returncode == 0
        )
        blocked = guest.from_client('nc -z -w 3 "$GUEST" 8081', check=False)
        assert blocked.returncode != 0, "port 8081 is not declared but answered"
        assert guest.from_client('nc -z -w 3 "$GUEST" 22', check=False).returncode == 0
    finally:
        guest.run("systemctl stop probe-listener", check=False)


def test_rules_added_by_hand_are_removed_and_reported(applied: Baselined) -> None:
    guest = applied.guest
    guest.run("ufw allow 9999/tcp")
    firewall = next(s for s in plan(applied.cfg, applied.spec) if s.name == "firewall")
    out = apply_plan(guest, [firewall])[0].stdout
    assert "removed undeclared ufw rule: allow 9999/tcp" in out
    assert "9999" not in guest.run("ufw show added").stdout


def test_fail2ban_bans_after_three_failures_and_unban_lifts_it(applied: Baselined) -> None:
    guest = applied.guest
    client_ip = guest.from_client("hostname -i").stdout.split()[0]
    for _ in range(4):
        guest.from_client(
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o ConnectTimeout=5 "
            'no-such-user@"$GUEST" true',
            check=False,
        )
    guest.run(
        "timeout 30 sh -c 'until fail2ban-client get sshd banned | grep -q "
        f"{client_ip}; do sleep 0.5; done'"
    )
    # the ban is recorded before its action has inserted the ufw rule: wait for the rule
    guest.run(f"timeout 30 sh -c 'until ufw status | grep -q {client_ip}; do sleep 0.2; done'")
    assert guest.from_client('nc -z -w 3 "$GUEST" 22', check=False).returncode != 0
    guest.run(f"fail2ban-client set sshd unbanip {client_ip}")
    assert client_ip not in guest.run("fail2ban-client get sshd banned").stdout
    guest.run(f"timeout 10 sh -c 'while ufw status | grep -q {client_ip}; do sleep 0.2; done'")
    assert guest.from_client('nc -z -w 3 "$GUEST" 22', check=False).returncode == 0


def test_docker_uses_crun_and_the_log_options(applied: Baselined) -> None:
    guest = applied.guest
    info = json.loads(guest.run("docker info --format '{{json .}}'").stdout)
    assert info["DefaultRuntime"] == "crun" and info["LoggingDriver"] == "json-file"
    assert info["LiveRestoreEnabled"] is True
    assert "crun" in info["Runtimes"]
    guest.load_image(guest.images.base)
    created = guest.run(f"docker create {guest.images.base} true").stdout.strip()
    try:
        host_config = json.loads(guest.run(f"docker inspect {created}").stdout)[0]["HostConfig"]
        assert host_config["LogConfig"] == {
            "Type": "json-file",
            "Config": {"max-file": "3", "max-size": "10m"},
        }
        assert host_config["Runtime"] == "crun"
        guest.run(f"docker start -a {created}")
    finally:
        guest.run(f"docker rm -f {created}", check=False)
    assert re.fullmatch(r"v?\d+\.\d+\.\d+\n", guest.run("docker compose version --short").stdout)


def recorded_args(guest: Guest) -> list[list[str]]:
    """The arguments of every `tailscale` call the stand-in recorded (without argv[0])."""
    lines = guest.run("cat /var/log/tailscale-stub/calls.jsonl").stdout.splitlines()
    return [json.loads(line)["argv"][1:] for line in lines if line.strip()]


def test_tailscale_joined_with_identity_and_serve_mappings(applied: Baselined) -> None:
    calls = recorded_args(applied.guest)
    ups = [args for args in calls if args[:1] == ["up"]]
    assert ups, calls
    first = ups[0]
    assert "--hostname=smart-smoker-dev-cloud" in first
    assert "--advertise-tags=tag:development,tag:server" in first
    assert "--accept-dns=true" in first
    assert any(str(a).startswith("--auth-key=file:/run/smart-smoker/") for a in first)
    serve = [args for args in calls if args[:2] == ["serve", "--bg"]]
    assert ["serve", "--bg", "--https=443", "http://127.0.0.1:80"] in serve
    assert ["serve", "--bg", "--https=8443", "http://127.0.0.1:3001"] in serve
    assert not [args for args in calls if args[:1] == ["funnel"]]


def test_the_auth_key_is_never_on_a_command_line_or_left_on_disk(applied: Baselined) -> None:
    guest = applied.guest
    assert AUTH_KEY not in guest.run("cat /var/log/tailscale-stub/calls.jsonl").stdout
    assert AUTH_KEY not in guest.run("journalctl --no-pager -o cat", timeout=60).stdout
    assert guest.run("ls -A /run/smart-smoker").stdout.strip() == ""
    for result in applied.first:
        assert AUTH_KEY not in result.stdout


def test_identity_changes_converge(applied: Baselined) -> None:
    guest, cfg, spec = applied.guest, applied.cfg, applied.spec
    assert spec.tailscale is not None
    renamed = evolve(
        spec,
        tailscale=evolve(
            spec.tailscale,
            hostname="renamed-node",
            tags=("tag:server",),
            serve=(),
            serve_directories=(),
        ),
    )
    steps = [s for s in plan(cfg, renamed) if s.name.startswith("tailscale")]
    try:
        apply_plan(guest, steps)
        status = json.loads(guest.run("tailscale status --json").stdout)
        assert status["Self"]["HostName"] == "renamed-node"
        assert status["Self"]["Tags"] == ["tag:server"]
        assert json.loads(guest.run("tailscale serve status --json").stdout or "{}") in ({}, None)
    finally:
        apply_plan(guest, [s for s in plan(cfg, spec) if s.name.startswith("tailscale")])


def test_a_served_directory_converges_on_the_tailnet_only(applied: Baselined) -> None:
    """dev-cloud's `serveDirectories` (the device VM's published releases): from a guest that
    serves none, the directory is made, served with `tailscale serve --set-path` (never funnel),
    recorded as a Path handler at its mount with a trailing '/'; a second apply changes nothing,
    and dropping the entry removes the handler."""
    guest, cfg, spec = applied.guest, applied.cfg, applied.spec
    assert spec.tailscale is not None
    directory = layout.PUBLISHED_RELEASES_DIR
    served = ServeDirectory(https_port=9443, path="/device-releases", directory=directory)
    assert spec.tailscale.serve_directories == (served,)  # Pulumi.dev.yaml
    without = evolve(spec, tailscale=evolve(spec.tailscale, serve_directories=()))
    steps = [s for s in plan(cfg, spec) if s.name.startswith("tailscale")]
    not_serving = [s for s in plan(cfg, without) if s.name.startswith("tailscale")]
    try:
        apply_plan(guest, not_serving)
        guest.run(f"rmdir {directory} /srv/smart-smoker 2>/dev/null || true", check=False)
        first = apply_plan(guest, steps)
        assert [r.step.name for r in first if r.changed] == ["tailscale-serve"]
        assert guest.run(f"stat -c %a:%U {directory}").stdout.strip() == "755:root"
        status = json.loads(guest.run("tailscale serve status --json").stdout)
        web = {host.rsplit(":", 1)[1]: conf["Handlers"] for host, conf in status["Web"].items()}
        assert web["9443"] == {"/device-releases/": {"Path": directory}}
        assert web["443"] == {"/": {"Proxy": "http://127.0.0.1:80"}}
        assert not status.get("AllowFunnel")
        calls = recorded_args(guest)
        assert [
            "serve",
            "--bg",
            "--https=9443",
            "--set-path=/device-releases",
            directory,
        ] in calls
        assert not [args for args in calls if args[:1] == ["funnel"]]
        second = apply_plan(guest, steps)
        assert [r.step.name for r in second if r.changed] == []
        apply_plan(guest, not_serving)
        status = json.loads(guest.run("tailscale serve status --json").stdout or "{}") or {}
        assert not [host for host in status.get("Web") or {} if host.endswith(":9443")]
    finally:
        apply_plan(guest, steps)


def test_second_apply_changes_nothing_and_restarts_nothing(applied: Baselined) -> None:
    guest = applied.guest
    files = "/etc/ssh/sshd_config /etc/fail2ban/jail.local /etc/docker/daemon.json"
    mtimes = guest.run(f"stat -c '%n %Y' {files} /usr/local/bin/crun").stdout
    before = start_times(guest)
    second = apply_plan(guest, plan(applied.cfg, applied.spec))
    assert [r.step.name for r in second if r.changed] == []
    assert start_times(guest) == before
    assert guest.run(f"stat -c '%n %Y' {files} /usr/local/bin/crun").stdout == mtimes


def test_a_broken_sshd_render_is_refused_and_the_guest_stays_reachable(applied: Baselined) -> None:
    guest = applied.guest
    before = guest.run("sha256sum /etc/ssh/sshd_config").stdout
    good = sshd_step()
    broken = replace(good, stdin=(good.stdin or "") + "PermitRootLogin maybe\n")
    result = guest.run(broken.command("root"), input=broken.stdin.encode(), check=False)  # type: ignore[union-attr]
    assert result.returncode != 0 and "refused /etc/ssh/sshd_config" in result.stderr
    assert guest.run("sha256sum /etc/ssh/sshd_config").stdout == before
    assert guest.run("echo still-here").stdout.strip() == "still-here"
    assert not guest.run("ls /etc/ssh/ | grep smoker-new || true").stdout.strip()


def test_crun_with_a_wrong_checksum_is_refused(applied: Baselined) -> None:
    guest, cfg = applied.guest, applied.cfg
    crun = evolve(cfg.baseline.docker.crun, sha256="0" * 64)
    docker = evolve(cfg.baseline.docker, crun=crun)
    bad_cfg = evolve(cfg, baseline=evolve(cfg.baseline, docker=docker))
    step = next(s for s in plan(bad_cfg, applied.spec) if s.name == "docker-config")
    before = guest.run("sha256sum /usr/local/bin/crun").stdout
    result = guest.run(step.command("root"), input=(step.stdin or "").encode(), check=False)
    assert result.returncode != 0 and "crun checksum mismatch" in result.stderr
    assert guest.run("sha256sum /usr/local/bin/crun").stdout == before
    assert guest.run("systemctl is-active docker").stdout.strip() == "active"


def test_steps_run_through_sudo_for_a_non_root_user(applied: Baselined) -> None:
    # the device VM's connection user is `smoker`; its commands go through `sudo -n sh -c`
    step = next(s for s in plan(applied.cfg, applied.spec) if s.name == "timezone")
    command = step.command("smoker")
    assert command.startswith("sudo -n sh -c ")
    assert shlex.split(command)[-1] == step.command("root")  # the script under the host lock
    assert step.script in step.command("root")
