"""Deploying the application stack with STAND-IN images on a baselined test guest.

Shared by the tier-3 tests and `make bench`: the stand-ins are tagged with the production image
names so the real apply plan runs unchanged, and the MongoDB users are converged by the dynamic
provider class, called directly as Pulumi would call it.
"""

from __future__ import annotations

from typing import Any

from components.mongo_users import MongoUsersProvider
from rendering import app
from rendering.files import app_files_plan
from tests.harness import Engine
from tests.standins import build_standins
from tests.tier3.baseline_env import Baselined, apply_plan

SECRETS = app.AppSecrets(
    mongo_root_password="root-Pa55/word+with:specials",
    mongo_app_password="app-Pa55@word#0123456789",
    vapid_private_key="vapid-private-key-tier3",
)


def user_props(env: Baselined, secrets: app.AppSecrets) -> dict[str, Any]:
    host_key = next(
        " ".join(line.split()[1:3])
        for line in env.guest.known_hosts_path.read_text().splitlines()
        if " ssh-ed25519 " in line
    )
    return {
        "host": env.guest.host,
        "sshUser": "root",
        "sshPort": 22,
        "hostKey": host_key,
        "privateKey": env.guest.private_key(),
        "mongoPort": app.MONGO_PORT,
        "adminUser": app.MONGO_ADMIN_USER,
        "adminPassword": secrets.mongo_root_password,
        "users": [
            {
                "name": app.MONGO_APP_USER,
                "roles": [{"role": "readWrite", "db": app.MONGO_APP_DATABASE}],
                "password": secrets.mongo_app_password,
            }
        ],
    }


def deploy_app(env: Baselined, engine: Engine, version: str = "1.0.0") -> dict[str, Any]:
    """Load and tag the stand-ins, apply the app plan around the users; returns the users' state."""
    guest, cfg, spec = env.guest, env.cfg, env.spec
    standins = build_standins(engine, versions=(version,))
    for service, ref in standins.app_images(version).items():
        guest.load_image(ref)
        guest.run(f"docker tag {ref} {app.tagged_images(cfg.app)[service]}")
    apply_plan(guest, app_files_plan(cfg, spec, SECRETS))
    outs = MongoUsersProvider().create(user_props(env, SECRETS)).outs
    apply_plan(guest, app.app_up_plan(cfg, spec))
    return dict(outs or {})
