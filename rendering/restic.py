"""The restic repository's secret files on a guest (under `layout.RESTIC_DIR`, root-only).

restic reads `env` (sourced by the backup tool: the repository, the password file, S3
credentials); an sftp: repository is reached through `ssh -F ssh_config smoker-restic`, so the
location stays in root-only files and out of every command line on the guest.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from config.backups import SFTP_ALIAS, ResticRepository, parse_restic_repository
from layout import RESTIC_CACHE_DIR, RESTIC_DIR

ENV_FILE = f"{RESTIC_DIR}/env"
PASSWORD_FILE = f"{RESTIC_DIR}/password"
SSH_CONFIG = f"{RESTIC_DIR}/ssh_config"
SSH_KEY = f"{RESTIC_DIR}/ssh_key"
KNOWN_HOSTS = f"{RESTIC_DIR}/known_hosts"
SFTP_COMMAND = f"ssh -F {SSH_CONFIG} {SFTP_ALIAS} -s sftp"


@dataclass(frozen=True)
class ResticSecrets:
    repository: str = field(repr=False)
    password: str = field(repr=False)
    ssh_private_key: str | None = field(default=None, repr=False)
    ssh_known_hosts: str | None = field(default=None, repr=False)
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)


def repository(secrets: ResticSecrets) -> ResticRepository:
    parsed = parse_restic_repository(secrets.repository)
    assert not isinstance(parsed, str), "resticRepository is checked when the config loads"
    return parsed


def env_file(secrets: ResticSecrets) -> str:
    """Sourced by the backup tool before it runs restic (never put on a command line).
    SMOKER_RESTIC_HOST and the repository are also what the tool blanks out of restic's errors."""
    repo = repository(secrets)
    values = {
        "RESTIC_REPOSITORY": repo.text,
        "RESTIC_PASSWORD_FILE": PASSWORD_FILE,
        "RESTIC_CACHE_DIR": RESTIC_CACHE_DIR,
        "SMOKER_RESTIC_KIND": repo.kind,
        "SMOKER_RESTIC_HOST": repo.host,
    }
    if repo.kind == "s3":
        values["AWS_ACCESS_KEY_ID"] = secrets.aws_access_key_id or ""
        values["AWS_SECRET_ACCESS_KEY"] = secrets.aws_secret_access_key or ""
    lines = [f"{key}={shlex.quote(value)}" for key, value in values.items()]
    return (
        "# Managed by smoker-infra: the off-guest backup repository (secret)\n"
        + "\n".join(lines)
        + "\n"
    )


def ssh_config(repo: ResticRepository) -> str:
    return f"""\
# Managed by smoker-infra: how restic reaches its sftp: repository (secret)
Host {SFTP_ALIAS}
  HostName {repo.host}
  Port {repo.port}
  User {repo.user}
  IdentityFile {SSH_KEY}
  IdentitiesOnly yes
  UserKnownHostsFile {KNOWN_HOSTS}
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 15
  ServerAliveInterval 15
  ServerAliveCountMax 4
"""


def secret_files(secrets: ResticSecrets) -> dict[str, str]:
    """path -> content of every restic secret file (all 0600, root)."""
    repo = repository(secrets)
    files = {ENV_FILE: env_file(secrets), PASSWORD_FILE: secrets.password.strip() + "\n"}
    if repo.kind == "sftp":
        assert secrets.ssh_private_key and secrets.ssh_known_hosts
        files[SSH_CONFIG] = ssh_config(repo)
        files[SSH_KEY] = secrets.ssh_private_key.strip() + "\n"
        files[KNOWN_HOSTS] = secrets.ssh_known_hosts.strip() + "\n"
    return files
