"""The on-guest layout and protocol: every path, name and exit code that the renderers (what a
guest receives) and the deploy engine (what runs on it later) must agree on, written once.

On a cloud guest, under `app_dir` (`baseline.appDir`, e.g. `/opt/smart-smoker-dev`):

    releases/<release-id>/    compose.yaml, manifest.json, the env files; `.committed` once live
    releases/.staging-<hex>/  a release being staged (moved into place whole, or removed)
    current -> releases/<id>  the live release (a relative symlink, swapped atomically)
    backups/                  the backup tool's archives and their manifests

Elsewhere: the ledger and the logs in `LOG_DIR`, the deploy lock in `LOCK_DIR`, the backup tool
at `BACKUP_TOOL`, the secret files in `SECRETS_DIR`. Pure constants and path arithmetic: this
module imports nothing of the program's, so every layer may import it.
"""

from __future__ import annotations

import shlex

# -- host-wide paths --------------------------------------------------------------------------

LOG_DIR = "/var/log/smart-smoker"
LEDGER_PATH = f"{LOG_DIR}/deployments.jsonl"  # one JSON line per attempt, root-only
BACKUP_FAILURES_LOG = f"{LOG_DIR}/backup-failures.jsonl"
STATUS_DIR = "/var/lib/smart-smoker"
SECRETS_DIR = "/etc/smart-smoker"

BACKUP_TOOL_NAME = "smart-smoker-backup"  # the command, its systemd units, its syslog tag
BACKUP_TOOL = f"/usr/local/sbin/{BACKUP_TOOL_NAME}"

# -- the host deploy lock (deploy/lock.py; rendering/plan.py wraps baseline steps in it) --------

LOCK_DIR = "/run/lock/smart-smoker-deploy"  # created atomically with `mkdir`
LOCK_OWNER_FILE = "owner.json"  # in the lock dir: who, what, since, until (deploy.lock.Owner)
LOCKED_EXIT = 75  # EX_TEMPFAIL: a locked-out baseline step; try again once the holder is done

# -- an application directory -----------------------------------------------------------------

RELEASES = "releases"
CURRENT = "current"
BACKUPS = "backups"
COMMITTED_MARK = ".committed"  # in a release directory: it went live verified
STAGING_PREFIX = ".staging-"  # a release directory being staged
MANIFEST = "manifest.json"
COMPOSE_FILE = "compose.yaml"
BOOTSTRAP_COMPOSE = "bootstrap-compose.yaml"  # MongoDB alone, on a fresh guest (rendering/app.py)


def releases_dir(app_dir: str) -> str:
    return f"{app_dir}/{RELEASES}"


def release_dir(app_dir: str, release_id: str) -> str:
    return f"{releases_dir(app_dir)}/{release_id}"


def current_link(app_dir: str) -> str:
    return f"{app_dir}/{CURRENT}"


def backup_dir(app_dir: str) -> str:
    return f"{app_dir}/{BACKUPS}"


# -- Compose projects -------------------------------------------------------------------------


def project_name(environment: str, guest_kind: str) -> str:
    """The Compose project of a guest's application: container names, labels and filters."""
    return f"smart-smoker-{environment}" if guest_kind == "lxc" else "smart-smoker-device"


PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
MONGO_SERVICE = "mongo"


def running_service(project: str, service: str = MONGO_SERVICE) -> str:
    """`docker ps` of the running containers of one service of a project (ids, one a line)."""
    return (
        f"docker ps -q --filter label={PROJECT_LABEL}={shlex.quote(project)} "
        f"--filter label={SERVICE_LABEL}={service}"
    )
