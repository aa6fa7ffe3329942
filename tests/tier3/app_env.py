"""Deploying the application stack with STAND-IN images on a baselined test guest.

Shared by the tier-3 tests and `make bench`: the stand-ins come from the registry stand-in (see
`release_env`), the real apply plan runs unchanged, and the MongoDB users and the release are
converged by the dynamic provider classes, called directly as Pulumi would call them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from components.mongo_users import MongoUsersProvider
from config import OffsiteSettings, StackConfig
from rendering import app
from rendering.files import app_files_plan
from rendering.restic import ResticSecrets
from tests.configs import evolve
from tests.tier3.baseline_env import Baselined, apply_plan
from tests.tier3.release_env import (
    N,
    Releases,
    connection_props,
    deploy,
    prepare_guest,
    release_config,
    release_props,
)

SECRETS = app.AppSecrets(
    mongo_root_password="root-Pa55/word+with:specials",
    mongo_app_password="app-Pa55@word#0123456789",
    vapid_private_key="vapid-private-key-tier3",
)


@dataclass
class Deployed:
    cfg: StackConfig  # the stack config the release was deployed from
    users: dict[str, Any]  # MongoUsers state
    release: dict[str, Any]  # Release state


def user_props(env: Baselined, secrets: app.AppSecrets) -> dict[str, Any]:
    return {
        **connection_props(env.guest),
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


def with_offsite(cfg: StackConfig) -> StackConfig:
    """`cfg` with `app.backups.offsite.enabled`."""
    backups = evolve(cfg.app.backups, offsite=OffsiteSettings(enabled=True))
    return evolve(cfg, app=evolve(cfg.app, backups=backups))


def deploy_app(
    env: Baselined, releases: Releases, version: str = N, restic: ResticSecrets | None = None
) -> Deployed:
    """Files and MongoDB first, then the users, then the first release (AppStack's order);
    with `restic`, off-guest backups to that repository."""
    prepare_guest(env, releases)
    cfg = release_config(env.cfg, releases, version)
    secrets = SECRETS
    if restic is not None:
        cfg, secrets = with_offsite(cfg), replace(SECRETS, restic=restic)
    apply_plan(env.guest, app_files_plan(cfg, env.spec, secrets))
    users = dict(MongoUsersProvider().create(user_props(env, secrets)).outs or {})
    release = deploy(release_props(env, cfg, secrets))
    return Deployed(cfg, users, release)
