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
BACKUP_SHIP_UNIT = f"{BACKUP_TOOL_NAME}-ship.service"  # ships every unshipped dump off the guest
BACKUP_RETENTION = "/usr/local/lib/smart-smoker/backup_retention.py"  # the tool's Python half
RESTIC_DIR = f"{SECRETS_DIR}/restic"  # root-only: the repository, its password, SSH files
RESTIC_CACHE_DIR = "/var/cache/smart-smoker/restic"
INSTANCE_ID = f"{STATUS_DIR}/instance-id"  # made once per guest disk: a rebuilt guest is new
OFFSITE_LAST = f"{STATUS_DIR}/offsite-last.json"  # the newest dump shipped off the guest

# -- the host deploy lock (deploy/lock.py; rendering/plan.py wraps baseline steps in it) --------

LOCK_DIR = "/run/lock/smart-smoker-deploy"  # created atomically with `mkdir`
LOCK_OWNER_FILE = "owner.json"  # in the lock dir: who, what, since, until (deploy.lock.Owner)
LOCKED_EXIT = 75  # EX_TEMPFAIL: a locked-out baseline step; try again once the holder is done

# -- an application directory -----------------------------------------------------------------

RELEASES = "releases"
CURRENT = "current"
BACKUPS = "backups"
LATEST_BACKUP = "latest"  # in backups/: a symlink to the newest complete, verified archive
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
    """The Compose project of a guest's application: container names, labels and filters (an
    existing machine, the physical smoker, keeps the old system's project, `smoker-device`)."""
    if guest_kind == "host":
        return "smoker-device"
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


# -- the cloud guests' reverse proxy (zero-downtime cutover, deploy/cutover.py) ----------------
#
# MongoDB runs in the guest's project (`project_name`) on that project's default network, the
# *data* network. Each release runs `backend` and `frontend` in a Compose project of its own
# (`release_project`); the backend joins the data network, the frontend the *edge* network, and
# the proxy (project `proxy_project`) both. The proxy listens on the loopback ports Tailscale
# serve targets and includes `PROXY_UPSTREAMS`, which only the deploy engine writes.

PROXY_DIR = "proxy"  # under app_dir: compose.yaml, and conf/ mounted into the proxy
PROXY_CONF_DIR = "conf"  # nginx.conf (rendered) and upstreams.conf (the engine's)
PROXY_CONF = "nginx.conf"
PROXY_UPSTREAMS = "upstreams.conf"
PROXY_MOUNT = "/etc/nginx/smoker"  # where conf/ appears inside the proxy container
PROXY_SERVICE = "proxy"
PROXY_STATUS_PORT = 3099  # loopback only: GET /release names the release the proxy serves
NO_RELEASE = "none"  # what the status port says before the first release


def proxy_dir(app_dir: str) -> str:
    return f"{app_dir}/{PROXY_DIR}"


def proxy_conf_dir(app_dir: str) -> str:
    return f"{proxy_dir(app_dir)}/{PROXY_CONF_DIR}"


def proxy_project(project: str) -> str:
    return f"{project}-proxy"


def release_project(project: str, release_id: str) -> str:
    """The Compose project of one release's app services (lower case, as Compose requires)."""
    return f"{project}-{release_id.lower()}"


def data_network(project: str) -> str:
    """The guest project's default network, where MongoDB is `mongo`."""
    return f"{project}_default"


def edge_network(project: str) -> str:
    return f"{project}-edge"


def upstream_name(service: str) -> str:
    """The nginx upstream block of a service (nginx.conf refers to it, the engine fills it)."""
    return f"smoker_{service}"


def container_name(project: str, service: str) -> str:
    """Compose's name of a service's (first) container: what the proxy connects to."""
    return f"{project}-{service}-1"


# -- the device's update agent (deploy/agent.py; rendering/agent.py installs it) ---------------
#
# On the device: the agent's code (the `deploy` package, `layout.py` and `errors.py`) under
# `AGENT_HOME`, its units, the release signing key's public half, the env files the push path
# delivers, the local copy of the desired release the push path writes, and the agent's state.
# On the publisher (the stack's cloud guest): one signed document per device.

AGENT_NAME = "smart-smoker-agent"
AGENT_SERVICE = f"{AGENT_NAME}.service"
AGENT_TIMER = f"{AGENT_NAME}.timer"
AGENT_HOME = "/opt/smart-smoker-agent"  # PYTHONPATH: AGENT_HOME/deploy, layout.py, errors.py
AGENT_STATE_DIR = f"{STATUS_DIR}/agent"  # agent.lock, agent-state.json, agent-report.json
AGENT_STATE_FILE = "agent-state.json"
AGENT_REPORT_FILE = "agent-report.json"
AGENT_DOCUMENT = f"{AGENT_STATE_DIR}/desired-release.json"  # the push path's local copy
AGENT_PUBLIC_KEY = f"{SECRETS_DIR}/release.pub"  # SubjectPublicKeyInfo PEM (public)
AGENT_ENV_DIR = f"{SECRETS_DIR}/release-env"  # root-only: the env files the push delivers
AGENT_BUSY_EXIT = LOCKED_EXIT  # 75: busy or waiting for secrets; not a failure of the unit
AGENT_UNREACHABLE_EXIT = 69  # EX_UNAVAILABLE: the document could not be fetched; not a failure
PUBLISHED_RELEASES_DIR = "/srv/smart-smoker/device-releases"  # on the publisher


def published_release(guest: str) -> str:
    """Where the publisher holds the signed desired release of the device `guest`."""
    return f"{PUBLISHED_RELEASES_DIR}/{guest}.json"


def agent_report(state_dir: str = AGENT_STATE_DIR) -> str:
    return f"{state_dir}/{AGENT_REPORT_FILE}"
