"""The file-install mechanics every step shares, run for real with sh in a temp directory."""

from __future__ import annotations

import grp
import os
import pwd
import re
import subprocess
from pathlib import Path

import pytest

from rendering.plan import Step, install_file

USER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


def run(script: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], input=stdin, capture_output=True, text=True)


def test_install_reports_changed_then_unchanged_and_runs_hooks_on_change(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "app.conf"
    hook = tmp_path / "hook-ran"
    script = install_file(
        str(target), mode="0640", owner=USER, group=GROUP, on_change=f"touch {hook}"
    )
    first = run(script, "a=1\n")
    assert first.returncode == 0 and f"changed {target}" in first.stdout
    assert target.read_text() == "a=1\n" and oct(target.stat().st_mode & 0o777) == "0o640"
    assert hook.exists()
    hook.unlink()
    again = run(script, "a=1\n")
    assert f"unchanged {target}" in again.stdout and not hook.exists()
    target.chmod(0o644)  # drifted permissions are converged too
    assert f"changed {target}" in run(script, "a=1\n").stdout


def test_a_failing_check_refuses_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "app.conf"
    target.write_text("good\n")
    # an AND-list as check: `! a && b` would negate only `a`, so the group matters
    check = 'true && grep -q good "$new"'
    script = install_file(str(target), owner=USER, group=GROUP, validate=check)
    refused = run(script, "bad\n")
    assert refused.returncode != 0 and f"refused {target}" in refused.stderr
    assert target.read_text() == "good\n"
    assert [p.name for p in tmp_path.iterdir()] == ["app.conf"]  # no candidate left behind
    assert run(script, "good\nmore\n").returncode == 0


def test_non_root_users_run_steps_through_sudo() -> None:
    step = Step("x", "echo 'hi'\n")
    assert step.command("root") == "echo 'hi'\n"
    assert step.command("smoker").startswith("sudo -n sh -c ")


def test_a_locked_step_takes_the_deploy_lock_and_a_held_lock_stops_it(tmp_path: Path) -> None:
    import json

    from deploy.lock import HostLock, Owner
    from deploy.transport import LocalTransport
    from rendering.plan import LOCKED_EXIT, under_lock

    lock_dir = tmp_path / "lock"
    seen = tmp_path / "owner-seen"
    body = f'cp {lock_dir}/owner.json {seen}; echo "changed x"'
    done = run(under_lock(body, "baseline timezone", str(lock_dir)), "")
    assert done.returncode == 0 and "changed x" in done.stdout
    owner = Owner(**json.loads(seen.read_text()))  # the engine's HostLock can read it
    assert owner.what == "baseline timezone" and owner.who.endswith("via pulumi")
    assert not lock_dir.exists()  # released
    failing = run(under_lock("exit 3", "baseline x", str(lock_dir)), "")
    assert failing.returncode == 3 and not lock_dir.exists()

    held = HostLock(LocalTransport(), str(lock_dir))
    held.acquire("alice@laptop via cli", "rollback")
    refused = run(under_lock(f"touch {tmp_path}/ran", "baseline sshd", str(lock_dir)), "")
    assert refused.returncode == LOCKED_EXIT and not (tmp_path / "ran").exists()
    assert "the host is locked:" in refused.stderr and "alice@laptop via cli" in refused.stderr
    assert "not running baseline sshd" in refused.stderr and lock_dir.exists()


def test_the_wrapped_command_passes_shellcheck() -> None:
    from rendering.plan import under_lock
    from tests.tools import tool

    wrapped = under_lock("echo hi", "baseline x")
    checked = subprocess.run(
        [tool("shellcheck"), "-s", "sh", "--severity=style", "-"],
        input=wrapped,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout


@pytest.mark.parametrize("stack", ["host", "dev", "prod"])
def test_every_apt_step_waits_for_first_boot_apt_jobs_and_for_the_locks(stack: str) -> None:
    """A fresh Ubuntu guest runs apt-daily/unattended-upgrades at first boot: an apt step that
    fails at once on their locks breaks the first `pulumi up`."""
    from config import parse_config
    from rendering.files import host_files
    from tests.configs import stack_raw

    apt_steps = {
        path: text
        for path, text in host_files(parse_config(*stack_raw(stack), stack)).items()
        if "/steps/" in path and "apt-get" in text
    }
    assert len(apt_steps) >= 3
    for path, text in apt_steps.items():
        calls = re.findall(r"apt-get[^\n]*", text)
        assert all(c.startswith("apt-get -o DPkg::Lock::Timeout=600 ") for c in calls), path
        wait = text.index("--property=After=apt-daily.service")
        assert wait < text.index("apt-get"), path
