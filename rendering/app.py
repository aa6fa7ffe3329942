"""The Compose projects and the secret files the services read.

`compose_file()` is a release's compose file with the image references from config (what
`make synth` shows); the deploy engine pins every reference to its digest when it stages the
release. Secrets never appear in a compose file: the services read them from root-only env files
that sit next to it in the release directory, so a rollback brings back the exact previous env.
On a fresh cloud guest MongoDB is first started from a mongo-only bootstrap file, so that the users
exist before the first release's backend connects.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

import yaml

import layout
from config import AppSettings, Guest, HostSpec, StackConfig
from layout import SECRETS_DIR
from rendering.plan import Step, file_step, script
from rendering.restic import ResticSecrets
from rendering.tailscale import serve_urls

MONGO_ENV = f"{SECRETS_DIR}/mongo.env"  # the bootstrap's; a release carries its own copy
BACKEND_ENV_FILE = "backend.env"  # in the release directory, next to compose.yaml
MONGO_ENV_FILE = "mongo.env"
MONGO_TOOLS_CONFIG = f"{SECRETS_DIR}/mongo-tools.yaml"  # mongodump/mongorestore --config
MONGO_ADMIN_USER = "admin"
MONGO_APP_USER = "smartsmoker"
MONGO_APP_DATABASE = "smartsmoker"
MONGO_PORT = 27017
BACKEND_PORT = 3001
FRONTEND_PORT = 80
SMOKER_UI_PORT = 8080
DEVICE_SERVICE_PORT = 3003
DEVICE_SERIAL = "/dev/ttyS0"  # where the device service reads the Arduino, in its container
KIOSK_SERVICE = "electron_shell"  # the old system's name of the kiosk service
KIOSK_START_PERIOD_SECONDS = 60
DATA_PROFILE = "data"  # MongoDB's: only started by name, in the guest's own project
# What the proxy serves on the loopback ports Tailscale serve targets: port -> (service, port).
PROXY_ROUTES = {BACKEND_PORT: ("backend", 3001), FRONTEND_PORT: ("frontend", 3000)}


def project_name(cfg: StackConfig, guest: Guest) -> str:
    return layout.project_name(cfg.environment, guest.kind)


def mongo_data_dir(cfg: StackConfig) -> str:
    """Where MongoDB keeps its data: the path backups read and restores write."""
    return f"{cfg.baseline.app_dir}/data/mongo"


def tagged_images(app: AppSettings) -> dict[str, str]:
    """Image references from config: `repo:tag` (mongo carries its own tag, e.g. mongo:7.0)."""
    return {
        name: repo if ":" in repo.rsplit("/", 1)[-1] else f"{repo}:{app.tag}"
        for name, repo in app.images.items()
    }


def guest_images(cfg: StackConfig, guest: Guest) -> dict[str, str]:
    """The tagged image references of the services a guest's release runs (an existing
    machine's kiosk: its own pinned reference)."""
    names = (
        ("mongo", "backend", "frontend") if guest.kind == "lxc" else ("deviceService", "smokerUi")
    )
    tagged = tagged_images(cfg.app)
    images = {name: tagged[name] for name in names}
    if isinstance(guest, HostSpec) and guest.device.kiosk.image and guest.device.kiosk.enabled:
        images["kiosk"] = guest.device.kiosk.image
    return images


def _healthcheck(app: AppSettings, test: list[str]) -> dict[str, object]:
    hc = app.healthcheck
    return {
        "test": test,
        "interval": f"{hc.interval_seconds}s",
        "timeout": f"{hc.timeout_seconds}s",
        "retries": hc.retries,
        "start_period": f"{hc.start_period_seconds}s",
    }


def _logging() -> dict[str, object]:
    return {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}


def http_probe(url: str) -> list[str]:
    """A health probe that works with node images (fetch) and busybox/curl ones alike."""
    script = (
        f"wget -q -O /dev/null {url} 2>/dev/null || curl -fsS -o /dev/null {url} 2>/dev/null || "
        f"node -e \"fetch('{url}').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))\""
    )
    return ["CMD-SHELL", script]


def _mongo_service(cfg: StackConfig, image: str, env_file: str) -> dict[str, object]:
    return {
        "image": image,
        "restart": "unless-stopped",
        "env_file": [env_file],
        "ports": [f"127.0.0.1:{MONGO_PORT}:27017"],
        "volumes": [f"{mongo_data_dir(cfg)}:/data/db"],
        "healthcheck": _healthcheck(
            cfg.app, ["CMD", "mongosh", "--quiet", "--eval", "db.adminCommand('ping').ok"]
        ),
        "logging": _logging(),
    }


def cloud_compose(cfg: StackConfig, images: Mapping[str, str]) -> dict[str, object]:
    """One release of a cloud guest. MongoDB (profile `data`) runs in the guest's project and
    outlives releases; `backend` and `frontend` run in the release's own project, next to the
    live release's, with no host ports: the proxy (rendering/proxy.py) reaches them."""
    app = cfg.app
    project = f"smart-smoker-{cfg.environment}"
    return {
        "name": project,
        "services": {
            "mongo": {
                "profiles": [DATA_PROFILE],
                **_mongo_service(cfg, images["mongo"], MONGO_ENV_FILE),
            },
            "backend": {
                "image": images["backend"],
                "restart": "unless-stopped",
                "env_file": [BACKEND_ENV_FILE],
                "networks": ["default", "release"],
                "healthcheck": _healthcheck(app, http_probe("http://127.0.0.1:3001/api/health")),
                "logging": _logging(),
            },
            "frontend": {
                "image": images["frontend"],
                "restart": "unless-stopped",
                "networks": ["release", "edge"],  # `backend` here is this release's only
                "depends_on": {"backend": {"condition": "service_healthy"}},
                "healthcheck": _healthcheck(app, http_probe("http://127.0.0.1:3000/")),
                "logging": _logging(),
            },
        },
        "networks": {
            "default": {"name": layout.data_network(project), "external": True},
            "release": {},
            "edge": {"name": layout.edge_network(project), "external": True},
        },
    }


def device_compose(cfg: StackConfig, images: Mapping[str, str], guest: Guest) -> dict[str, object]:
    """The device's project. On the device VM (`guest` a VM): arm/v7 images under emulation and
    the temperature emulator. On the physical smoker (`guest` a HostSpec): its platform, the
    Arduino's serial device passed through, production mode, and the kiosk when enabled."""
    app = cfg.app
    host = guest if isinstance(guest, HostSpec) else None
    platform = host.platform if host is not None else "linux/arm/v7"
    device_service: dict[str, object] = {
        "image": images["deviceService"],
        "platform": platform,
        "restart": "unless-stopped",
        "network_mode": "host",  # serves 3003 on the VM (or the Pi) itself
        "environment": {"NODE_ENV": "local"},  # the VM's temperature emulator
        "healthcheck": _healthcheck(
            app, http_probe(f"http://127.0.0.1:{DEVICE_SERVICE_PORT}/api/health")
        ),
        "logging": _logging(),
    }
    if host is not None:
        device_service.update(
            {
                "devices": [f"{host.device.serial_device}:{DEVICE_SERIAL}"],  # the Arduino
                "environment": {"NODE_ENV": "production"},
            }
        )
    services: dict[str, object] = {
        "device-service": device_service,
        "smoker-ui": {
            "image": images["smokerUi"],
            "platform": platform,
            "restart": "unless-stopped",
            "ports": [f"{SMOKER_UI_PORT}:8080"],
            "depends_on": {"device-service": {"condition": "service_healthy"}},
            "healthcheck": _healthcheck(app, http_probe("http://127.0.0.1:8080/")),
            "logging": _logging(),
        },
    }
    if host is not None and host.device.kiosk.enabled:
        services[KIOSK_SERVICE] = {
            "image": images["kiosk"],
            "platform": platform,
            "restart": "unless-stopped",
            "network_mode": "host",  # shows the smoker UI at 127.0.0.1:8080
            "environment": {"DISPLAY": ":0"},
            "volumes": ["/tmp/.X11-unix:/tmp/.X11-unix"],  # the machine's X display
            "depends_on": {"smoker-ui": {"condition": "service_healthy"}},
            # what it shows answers (wget, curl or node: check the image has one of them)
            "healthcheck": {
                **_healthcheck(app, http_probe(f"http://127.0.0.1:{SMOKER_UI_PORT}/")),
                "start_period": f"{KIOSK_START_PERIOD_SECONDS}s",
            },
            "logging": _logging(),
        }
    return {"name": project_name(cfg, guest), "services": services}


def compose_file(cfg: StackConfig, guest: Guest, images: Mapping[str, str] | None = None) -> str:
    """A release's compose file (env files relative: they sit next to it in the release)."""
    chosen = dict(images) if images is not None else guest_images(cfg, guest)
    project = (
        cloud_compose(cfg, chosen) if guest.kind == "lxc" else device_compose(cfg, chosen, guest)
    )
    header = (
        "# Managed by smoker-infra: the Compose project of this guest, one release of it.\n"
        "# Secrets are in the root-only env files next to this file, never here.\n"
    )
    return header + yaml.safe_dump(project, sort_keys=False, width=1000)


def bootstrap_compose_file(cfg: StackConfig, guest: Guest) -> str:
    """MongoDB alone, to create the users before the first release (a release takes it over)."""
    project = {
        "name": project_name(cfg, guest),
        "services": {"mongo": _mongo_service(cfg, tagged_images(cfg.app)["mongo"], MONGO_ENV)},
    }
    header = (
        "# Managed by smoker-infra: starts MongoDB on a fresh guest only. The live project is\n"
        f"# {release_dir(cfg, layout.CURRENT)}/{layout.COMPOSE_FILE} (see `python -m deploy status`).\n"
    )
    return header + yaml.safe_dump(project, sort_keys=False, width=1000)


def releases_dir(cfg: StackConfig) -> str:
    return layout.releases_dir(cfg.baseline.app_dir)


def release_dir(cfg: StackConfig, name: str) -> str:
    """A release's directory; `current` is the live one."""
    if name == layout.CURRENT:
        return layout.current_link(cfg.baseline.app_dir)
    return layout.release_dir(cfg.baseline.app_dir, name)


def release_env_files(cfg: StackConfig, guest: Guest, secrets: AppSecrets | None) -> dict[str, str]:
    """The env files a release carries (secret): the cloud services' credentials."""
    if guest.kind != "lxc":
        return {}
    assert secrets is not None, "a cloud guest needs its application secrets"
    return {
        BACKEND_ENV_FILE: backend_env(
            cfg.app, secrets.mongo_app_password, secrets.vapid_private_key
        ),
        MONGO_ENV_FILE: mongo_env(secrets.mongo_root_password),
    }


def release_inputs(cfg: StackConfig, guest: Guest, secrets: AppSecrets | None) -> dict[str, object]:
    """The Release resource's inputs, connection aside (`envFiles` is secret)."""
    deploy = cfg.app.deploy
    return {
        "stack": cfg.stack,
        "guest": guest.name,
        "project": project_name(cfg, guest),
        "appDir": cfg.baseline.app_dir,
        "compose": compose_file(cfg, guest),
        "envFiles": release_env_files(cfg, guest, secrets),
        "checks": release_checks(cfg, guest),
        "backup": guest.kind == "lxc",  # MongoDB lives on the cloud guests
        "restoreOnRollback": deploy.rollback_restores_backup,
        "keepReleases": deploy.keep_releases,
        "verifyTimeoutSeconds": deploy.verify_timeout_seconds,
        "lockLeaseSeconds": deploy.lock_lease_seconds,
        "failingWindowSeconds": deploy.failing_window_seconds,
        "drainSeconds": deploy.drain_seconds,
        "routes": proxy_routes(guest),
        "revision": deploy.revision,
    }


def proxy_routes(guest: Guest) -> list[dict[str, object]]:
    """The services the proxy sends traffic to (a cloud guest's; none: updated in place)."""
    if guest.kind != "lxc":
        return []
    return [{"service": name, "port": port} for name, port in PROXY_ROUTES.values()]


def release_checks(cfg: StackConfig, guest: Guest) -> dict[str, object]:
    """What verifies a release: the services' health endpoints (docs/application.md) on the guest, the app user, and
    (with `app.deploy.verifyFromOutside`) the Tailscale URLs from where the deploy runs."""
    checks: dict[str, object]
    if guest.kind == "lxc":
        checks = {
            # service names: the engine asks the release's own containers, before any traffic
            "http": [
                {"url": "http://backend:3001/api/health", "json": {"status": "ok"}},
                {"url": "http://backend:3001/api/ready"},
                {"url": "http://frontend:3000/"},
            ],
            "mongoUserEnv": BACKEND_ENV_FILE,  # DB_URL in it: the app user must authenticate
            "mongoPort": MONGO_PORT,
        }
    else:
        checks = {
            "http": [
                {"url": f"http://127.0.0.1:{DEVICE_SERVICE_PORT}/api/health"},
                {"url": f"http://127.0.0.1:{SMOKER_UI_PORT}/"},
            ],
        }
    if cfg.app.deploy.verify_from_outside and guest.tailscale is not None:
        urls = serve_urls(guest.tailscale, cfg.tailnet)
        checks["outside"] = [
            {"url": f"{urls[str(m.https_port)]}/api/health", "json": {"status": "ok"}}
            if m.target.endswith(f":{BACKEND_PORT}")
            else {"url": f"{urls[str(m.https_port)]}/"}
            for m in guest.tailscale.serve
        ]
    return checks


# ---------------------------------------------------------------------------------------------
# Secret files (rendered from secret values; they only ever travel as stdin)


def database_url(app_password: str) -> str:
    return (
        f"mongodb://{MONGO_APP_USER}:{quote(app_password, safe='')}@mongo:27017/"
        f"{MONGO_APP_DATABASE}?authSource=admin"
    )


def _env_value(value: str) -> str:
    value = value.strip()
    if "\n" in value:
        raise ValueError("env file values cannot contain newlines")
    return value


def backend_env(app: AppSettings, app_password: str, vapid_private_key: str) -> str:
    return (
        "NODE_ENV=production\n"
        f"DB_URL={_env_value(database_url(app_password))}\n"
        f"VAPID_PUBLIC_KEY={_env_value(app.vapid_public_key)}\n"
        f"VAPID_PRIVATE_KEY={_env_value(vapid_private_key)}\n"
    )


def mongo_env(root_password: str) -> str:
    return (
        f"MONGO_INITDB_ROOT_USERNAME={MONGO_ADMIN_USER}\n"
        f"MONGO_INITDB_ROOT_PASSWORD={_env_value(root_password)}\n"
    )


def mongo_tools_config(root_password: str) -> str:
    """`--config` file for mongodump/mongorestore: the password never goes on a command line."""
    return yaml.safe_dump({"password": root_password}, default_flow_style=False)


# ---------------------------------------------------------------------------------------------
# Apply plans: files and secrets first, MongoDB, then (after the users) the whole project


@dataclass(frozen=True)
class AppSecrets:
    mongo_root_password: str = field(repr=False)
    mongo_app_password: str = field(repr=False)
    vapid_private_key: str = field(repr=False)
    backup_webhook_url: str | None = field(default=None, repr=False)
    restic: ResticSecrets | None = field(default=None, repr=False)  # app.backups.offsite


def bootstrap_compose_path(cfg: StackConfig) -> str:
    return f"{cfg.baseline.app_dir}/{layout.BOOTSTRAP_COMPOSE}"


def secret_files_plan(cfg: StackConfig, secrets: AppSecrets) -> list[Step]:
    """Root-only secret files outside releases: MongoDB's bootstrap env, the tools' config."""
    files = {
        "mongo-env": (MONGO_ENV, mongo_env(secrets.mongo_root_password)),
        "mongo-tools-config": (MONGO_TOOLS_CONFIG, mongo_tools_config(secrets.mongo_root_password)),
    }
    return [
        file_step(name, path, content, secret=True, mode="0600")
        for name, (path, content) in files.items()
    ]


def mongo_bootstrap_plan(cfg: StackConfig, guest: Guest) -> list[Step]:
    """On a fresh cloud guest, start MongoDB alone; once a release runs it, never touch it."""
    path = bootstrap_compose_path(cfg)
    project = shlex.quote(project_name(cfg, guest))
    running = layout.running_service(project_name(cfg, guest))
    return [
        file_step(
            "mongo-bootstrap-file",
            path,
            bootstrap_compose_file(cfg, guest),
            mode="0640",
            validate='docker compose -f "$new" config -q',
        ),
        Step(
            "mongo-bootstrap",
            script(
                f'if [ -n "$({running})" ]; then echo "unchanged mongo (running)"; exit 0; fi',
                f"docker compose -p {project} -f {shlex.quote(path)} up -d --wait mongo",
                'echo "changed mongo (bootstrapped)"',
            ),
        ),
    ]


def arm_check_plan(cfg: StackConfig, guest: Guest) -> list[Step]:
    """On the device VM, prove arm/v7 emulation before the first release needs it."""
    if guest.kind != "vm":
        return []
    image = shlex.quote(tagged_images(cfg.app)["deviceService"])
    return [
        Step(
            "arm-check",
            script(
                f"arch=$(docker run --rm --platform linux/arm/v7 --entrypoint uname {image} -m)",
                '[ "$arch" = armv7l ] || { echo "arm/v7 emulation is broken: uname -m says $arch" >&2; exit 1; }',
                'echo "unchanged arm/v7 emulation ($arch)"',
            ),
        )
    ]
