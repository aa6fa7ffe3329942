"""Tier 3: the SFTP restic target (testbed.harness.sftp_target) reached from a test guest.

restic runs as production will run it: the repository and password from files
(RESTIC_REPOSITORY_FILE, RESTIC_PASSWORD_FILE) and `-o sftp.command='ssh -F CONFIG ALIAS -s sftp'`,
so neither the target's address nor a secret is on the command line. Also pins the stderr and
exit codes restic 0.14 gives for the failures the backup tool must tell apart.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator

import pytest

from testbed.harness import Engine, Guest, ImageSet
from testbed.harness.sftp_target import SftpTarget, start_sftp_target

DIR = "/etc/smoker-test-restic"
ALIAS = "backup-target"
SFTP = shlex.quote(f"ssh -F {DIR}/ssh_config {ALIAS} -s sftp")


@pytest.fixture(scope="module")
def target(engine: Engine, images: ImageSet, guest: Guest) -> Iterator[SftpTarget]:
    with start_sftp_target(engine, images) as t:
        guest.write_file(f"{DIR}/key", t.private_key.encode(), 0o600)
        guest.write_file(f"{DIR}/known_hosts", t.known_hosts.encode())
        config = t.ssh_config(ALIAS, f"{DIR}/key", f"{DIR}/known_hosts")
        guest.write_file(f"{DIR}/ssh_config", config.encode())
        guest.write_file(f"{DIR}/password", b"tier3-restic-password\n", 0o600)
        guest.write_file(f"{DIR}/wrong", b"not-the-password\n", 0o600)
        yield t


def restic(guest: Guest, repo: str, args: str, password: str = "password") -> tuple[int, str]:
    """restic ARGS against `repo` on the target; (exit code, stderr)."""
    guest.write_file(f"{DIR}/repository", f"sftp:{ALIAS}:/srv/restic/{repo}\n".encode())
    result = guest.run(
        f"RESTIC_REPOSITORY_FILE={DIR}/repository RESTIC_PASSWORD_FILE={DIR}/{password} "
        f"restic --no-cache -o sftp.command={SFTP} {args}",
        check=False,
        timeout=300,
    )
    return result.returncode, result.stderr


def test_restic_0_14_is_in_the_guest(guest: Guest) -> None:
    assert guest.run("restic version").stdout.startswith("restic 0.14.0 ")


def test_init_backup_and_restore_over_sftp(guest: Guest, target: SftpTarget) -> None:
    assert restic(guest, "ok", "init") == (0, "")
    guest.run("head -c 1048576 /dev/urandom > /tmp/restic-small.bin")
    assert restic(guest, "ok", "backup --quiet /tmp/restic-small.bin") == (0, "")
    files = target.files("ok")
    assert "config" in files and any(f.startswith("keys/") for f in files)
    assert {f.split("/")[0] for f in files} >= {"data", "index", "snapshots"}
    assert restic(guest, "ok", "restore latest --target /tmp/restic-out")[0] == 0
    guest.run("cmp /tmp/restic-small.bin /tmp/restic-out/tmp/restic-small.bin")
    # initialising twice is refused (0.14 names no location when it comes from a file)
    assert restic(guest, "ok", "init") == (
        1,
        "Fatal: create repository at  failed: config file already exists\n\n",
    )


def test_wrong_password(guest: Guest, target: SftpTarget) -> None:
    restic(guest, "pw", "init")
    assert restic(guest, "pw", "snapshots", password="wrong") == (
        1,
        "Fatal: wrong password or no key found\n",
    )


def test_repository_that_does_not_exist(guest: Guest, target: SftpTarget) -> None:
    assert restic(guest, "missing", "snapshots") == (
        1,
        "Fatal: unable to open config file: Lstat: file does not exist\n"
        "Is there a repository at the following location?\n"
        f"sftp:{ALIAS}:/srv/restic/missing\n",
    )
    assert target.files("missing") == []


def test_unreachable_repository(guest: Guest, target: SftpTarget) -> None:
    restic(guest, "down", "init")
    target.stop_sshd()
    try:
        code, err = restic(guest, "down", "snapshots")
    finally:
        target.start_sshd()
    assert code == 1
    # how the dead pipe surfaces is a race inside restic: "EOF" or "read |0: file already
    # closed"; the backup tool's classification needs only the first part of the line
    assert err in (
        f"subprocess ssh: ssh: connect to host {target.address} port 22: Connection refused\n"
        f"Fatal: unable to open repository at sftp:{ALIAS}:/srv/restic/down: "
        f"unable to start the sftp session, error: {cause}\n"
        for cause in ("EOF", "read |0: file already closed")
    )
    assert restic(guest, "down", "snapshots --quiet")[0] == 0  # back once sshd is
