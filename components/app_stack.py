"""AppStack: a guest's Compose project, its secrets, MongoDB users, backups and its Release."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from components.guest_common import GuestAccess, step_commands
from components.images import planned_images
from components.mongo_users import MongoUsers
from components.release import Release
from config import Guest, StackConfig
from config.secrets import Secret
from rendering import app
from rendering.files import app_files_plan
from rendering.restic import ResticSecrets


@dataclass(frozen=True)
class AppStackArgs:
    config: StackConfig
    spec: Guest
    access: GuestAccess
    # the guest baseline (Docker, users, directories) and, on a tailnet guest, Tailscale: its
    # `up` may rewrite resolv.conf (accept-dns), so no image pull runs beside it, and the
    # serve mappings exist before a release is verified through them (verifyFromOutside)
    after: pulumi.Resource
    docker_provider: docker.Provider  # the registry lookups that pin the images to digests


def app_secrets(cfg: StackConfig) -> app.AppSecrets:
    s = cfg.secrets
    assert s.mongo_root_password and s.mongo_app_password and s.vapid_private_key
    return app.AppSecrets(
        mongo_root_password=s.mongo_root_password.reveal(),
        mongo_app_password=s.mongo_app_password.reveal(),
        vapid_private_key=s.vapid_private_key.reveal(),
        backup_webhook_url=s.backup_webhook_url.reveal() if s.backup_webhook_url else None,
        restic=restic_secrets(cfg),
    )


def restic_secrets(cfg: StackConfig) -> ResticSecrets | None:
    """The off-guest repository's secrets (checked when the config loaded), when it is enabled."""
    if not cfg.app.backups.offsite.enabled:
        return None
    s = cfg.secrets
    assert s.restic_repository and s.restic_password

    def text(secret: Secret | None) -> str | None:
        return secret.reveal() if secret else None

    return ResticSecrets(
        repository=s.restic_repository.reveal(),
        password=s.restic_password.reveal(),
        ssh_private_key=text(s.restic_ssh_private_key),
        ssh_known_hosts=text(s.restic_ssh_known_hosts),
        aws_access_key_id=text(s.restic_aws_access_key_id),
        aws_secret_access_key=text(s.restic_aws_secret_access_key),
    )


class AppStack(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: AppStackArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("smoker:app:AppStack", name, None, opts)
        cfg, spec = args.config, args.spec
        secrets = app_secrets(cfg) if spec.kind == "lxc" else None
        access = args.access
        files = step_commands(
            spec.name, app_files_plan(cfg, spec, secrets), spec.ssh_user, access, args.after, self
        )
        # an existing machine has no app files before its first release (the baseline checked
        # its serial device): the release follows the baseline (and Tailscale) directly
        ready_for_app: pulumi.Resource = files[-1] if files else args.after
        if secrets is not None:
            ready_for_app = self._users(cfg, spec, secrets, access, ready_for_app)
        images = planned_images(app.guest_images(cfg, spec), args.docker_provider, self)
        self.release = self._release(cfg, spec, secrets, access, ready_for_app, images)
        self.register_outputs(
            {"project": app.project_name(cfg, spec), "release": self.release.releaseId}
        )

    def _release(
        self,
        cfg: StackConfig,
        spec: Guest,
        secrets: app.AppSecrets | None,
        access: GuestAccess,
        after: pulumi.Resource,
        images: pulumi.Output[dict[str, str]],
    ) -> Release:
        """The safe deploy of the project: backup, stage, pull by digest, up, verify, commit;
        its images are the planned `repo:tag@sha256:...` (a moved tag is a diff by itself)."""
        inputs = app.release_inputs(cfg, spec, secrets)
        return Release(
            f"{spec.name}-release",
            {
                **inputs,
                "images": images,
                "compose": images.apply(lambda planned: app.compose_file(cfg, spec, planned)),
                "host": spec.ssh_host,
                "sshUser": spec.ssh_user,
                "sshPort": 22,
                "hostKey": access.host_key,
                "privateKey": pulumi.Output.secret(cfg.secrets.guest_ssh_private_key.reveal()),
                "envFiles": pulumi.Output.secret(inputs["envFiles"]),
            },
            access.configures(parent=self, depends_on=[after]),
        )

    def _users(
        self,
        cfg: StackConfig,
        spec: Guest,
        secrets: app.AppSecrets,
        access: GuestAccess,
        after: pulumi.Resource,
    ) -> MongoUsers:
        """Admin and application users, converged after MongoDB is up and before the backend."""
        return MongoUsers(
            f"{spec.name}-mongo-users",
            {
                "host": spec.ssh_host,
                "sshUser": spec.ssh_user,
                "sshPort": 22,
                "hostKey": access.host_key,
                "privateKey": pulumi.Output.secret(cfg.secrets.guest_ssh_private_key.reveal()),
                "mongoPort": app.MONGO_PORT,
                "adminUser": app.MONGO_ADMIN_USER,
                "adminPassword": pulumi.Output.secret(secrets.mongo_root_password),
                "users": pulumi.Output.secret(
                    [
                        {
                            "name": app.MONGO_APP_USER,
                            "roles": [{"role": "readWrite", "db": app.MONGO_APP_DATABASE}],
                            "password": secrets.mongo_app_password,
                        }
                    ]
                ),
            },
            access.configures(parent=self, depends_on=[after]),
        )
