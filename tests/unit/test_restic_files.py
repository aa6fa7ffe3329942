"""The restic repository's secret files: the location moves into root-only files, restic on the
guest only ever sees the alias, and synth never shows a secret."""

from __future__ import annotations

import shlex

import pytest

from config.backups import parse_restic_repository
from rendering import restic
from rendering.files import app_plan
from rendering.restic import ResticSecrets
from tests.configs import parse, stack_raw

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nk\n-----END OPENSSH PRIVATE KEY-----"
KNOWN = "nas.lan ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey"


def env_of(text: str) -> dict[str, str]:
    return {
        k: shlex.split(v)[0] if v else ""
        for k, _, v in (line.partition("=") for line in text.splitlines() if "=" in line)
    }


@pytest.mark.parametrize(
    ("repository", "host", "port", "user", "path"),
    [
        ("sftp:backup@nas.lan:/srv/restic/prod", "nas.lan", 22, "backup", "/srv/restic/prod"),
        (
            "sftp://backup@nas.lan:2222//srv/restic/prod",
            "nas.lan",
            2222,
            "backup",
            "/srv/restic/prod",
        ),
        ("sftp:nas.lan:restic/prod", "nas.lan", 22, "root", "restic/prod"),
    ],
)
def test_sftp_location_lives_in_the_ssh_config(
    repository: str, host: str, port: int, user: str, path: str
) -> None:
    files = restic.secret_files(ResticSecrets(repository, "pw", KEY, KNOWN))
    env = env_of(files[restic.ENV_FILE])
    assert env["RESTIC_REPOSITORY"] == f"sftp:smoker-restic:{path}"
    assert (
        env["RESTIC_PASSWORD_FILE"] == restic.PASSWORD_FILE and "pw" not in files[restic.ENV_FILE]
    )
    config = files[restic.SSH_CONFIG]
    assert f"HostName {host}\n" in config and f"Port {port}\n" in config
    assert f"User {user}\n" in config and "StrictHostKeyChecking yes" in config
    assert files[restic.KNOWN_HOSTS].strip() == KNOWN and files[restic.SSH_KEY].strip() == KEY
    assert host not in restic.SFTP_COMMAND


def test_s3_and_rest_keep_their_repository_and_s3_gets_its_keys() -> None:
    s3 = restic.secret_files(
        ResticSecrets(
            "s3:https://s3.test/b/prod", "pw", aws_access_key_id="id", aws_secret_access_key="sk"
        )
    )
    env = env_of(s3[restic.ENV_FILE])
    assert env["RESTIC_REPOSITORY"] == "s3:https://s3.test/b/prod"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("id", "sk")
    assert restic.SSH_CONFIG not in s3
    rest = restic.secret_files(ResticSecrets("rest:https://u:p@r.test:8000/prod", "pw"))
    assert env_of(rest[restic.ENV_FILE])["RESTIC_REPOSITORY"] == "rest:https://u:p@r.test:8000/prod"


@pytest.mark.parametrize("bad", ["sftp:", "ftp://x/y", "sftp://host", "sftp:host:/a b", "s3"])
def test_unusable_repositories_are_explained(bad: str) -> None:
    assert isinstance(parse_restic_repository(bad), str)


def test_synth_lists_the_secret_files_and_never_their_content() -> None:
    cfg = parse(stack_raw("prod"), "prod")
    guest = next(g for g in cfg.guests if g.kind == "lxc")
    steps = [s for s in app_plan(cfg, guest) if s.name.startswith("restic-")]
    assert {p for s in steps for p in s.files} == {
        restic.ENV_FILE,
        restic.PASSWORD_FILE,
        restic.SSH_CONFIG,
        restic.SSH_KEY,
        restic.KNOWN_HOSTS,
    }
    assert all(s.secret and "content never rendered" in "".join(s.files.values()) for s in steps)
