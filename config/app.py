"""The services (`app`): images and tag, health checks, backups and how releases roll out."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from config.backups import BackupSettings, VzdumpSettings
from config.errors import fail
from config.fields import Bool, Int, Model, Text, pattern, ranged, rule

APP_IMAGES = ("mongo", "backend", "frontend", "deviceService", "smokerUi")
# What `docker` accepts as a tag.
TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
# An image reference: [registry/]name[:tag][@sha256:<digest>] (groups `repo`, `tag`).
IMAGE_REFERENCE = re.compile(
    r"(?P<repo>([a-z0-9.-]+(:\d+)?/)?[a-z0-9]+([._/-][a-z0-9]+)*)"
    rf"(:(?P<tag>{TAG}))?(@sha256:[0-9a-f]{{64}})?"
)


def _tag(value: str) -> str:
    if not re.fullmatch(TAG, value):
        raise fail(
            "is not an image tag ([A-Za-z0-9_.-], not starting with '.' or '-', at most 128)",
            "use nightly or vX.Y.Z",
        )
    return value


def _image(value: str) -> str:
    if not IMAGE_REFERENCE.fullmatch(value):
        raise fail(
            "is not an image repository like benjr70/smart-smoker-backend",
            "write [registry/]name[:tag]",
        )
    return value


Image = Annotated[Text, rule(_image)]


class Images(Model):
    """The services' image repositories; `items()` and `[name]` read it like a mapping."""

    FIXES: ClassVar[dict[str, str]] = {name: f"set app.images.{name}" for name in APP_IMAGES}
    mongo: Image = Field(
        description="MongoDB, with its own tag (the stack's tag is the app's)",
        examples=["mongo:7.0"],
    )
    backend: Image = Field(
        description="the NestJS backend", examples=["benjr70/smart-smoker-backend"]
    )
    frontend: Image = Field(
        description="the React frontend", examples=["benjr70/smart-smoker-frontend"]
    )
    device_service: Image = Field(
        description="the device service", examples=["benjr70/smart-smoker-device-service"]
    )
    smoker_ui: Image = Field(description="the smoker UI", examples=["benjr70/smart-smoker-smoker"])

    @model_validator(mode="after")
    def _mongo_has_a_tag(self) -> Images:
        match = IMAGE_REFERENCE.fullmatch(self.mongo)
        if match is not None and match.group("tag") is None:
            raise fail(
                "has no tag: the stack's app tag (e.g. nightly) is not a MongoDB version",
                "pin MongoDB's own tag, e.g. mongo:7.0",
                at="mongo",
                value=self.mongo,
            )
        return self

    def keys(self) -> tuple[str, ...]:
        return APP_IMAGES

    def items(self) -> list[tuple[str, str]]:
        return [(name, self[name]) for name in APP_IMAGES]

    def __getitem__(self, name: str) -> str:
        if name not in APP_IMAGES:
            raise KeyError(name)
        value: str = getattr(self, re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower())
        return value


class HealthcheckSettings(Model):
    """Compose health checks of the services."""

    interval_seconds: Annotated[Int, ranged(1, 3600, "s")] = Field(30, description="between checks")
    timeout_seconds: Annotated[Int, ranged(1, 600, "s")] = Field(
        10, description="one check's limit"
    )
    retries: Annotated[Int, ranged(1, 100)] = Field(3, description="failures before unhealthy")
    start_period_seconds: Annotated[Int, ranged(0, 3600, "s")] = Field(
        60, description="grace period after start"
    )


class DeploySettings(Model):
    """How a release is rolled out (see deploy/engine.py)."""

    verify_timeout_seconds: Annotated[Int, ranged(10, 3600, fix="use e.g. 300")] = Field(
        300, description="deadline for a release to be verified healthy"
    )
    keep_releases: Annotated[Int, ranged(2, 50, fix="keep at least 2 so a rollback exists")] = (
        Field(5, description="committed releases (and their images) kept for rollback")
    )
    rollback_restores_backup: Bool = Field(
        False, description="restore the pre-deploy backup when rolling back"
    )
    lock_lease_seconds: Annotated[Int, ranged(2, 3600, fix="use e.g. 120")] = Field(
        120, description="a deploy lock not renewed for this long is stale"
    )
    revision: Text = Field(
        "", description="any change redeploys the same images (a forced redeploy)"
    )
    verify_from_outside: Bool = Field(
        False, description="also GET the Tailscale URLs from where the deploy runs"
    )
    failing_window_seconds: Annotated[Int, ranged(1, 600, "s", fix="use e.g. 20")] = Field(
        20,
        description="a release whose containers are up but whose checks keep answering errors "
        "for this long has failed (no waiting for verifyTimeoutSeconds)",
    )
    drain_seconds: Annotated[Int, ranged(0, 600, "s", fix="use e.g. 20")] = Field(
        20,
        description="after a cutover, the old release's in-flight requests get this long to "
        "finish before its containers are stopped (cloud guests)",
    )


# The proxy's production image: nginx 1.22.1 (the version Debian bookworm packages, which the
# tests run), the official image pinned by the digest of its multi-arch index.
PROXY_IMAGE = "nginx:1.22.1@sha256:fc5f5fb7574755c306aaf88456ebfbe0b006420a184d52b923d2f0197108f6b7"


def _pinned(value: str) -> str:
    _image(value)
    if "@sha256:" not in value:
        raise fail(
            "is not pinned by digest: the proxy outlives releases, so nothing re-pins it",
            f"write name:tag@sha256:<digest>, e.g. {PROXY_IMAGE}",
        )
    return value


class ProxySettings(Model):
    """The cloud guests' long-lived reverse proxy (docs/safe-deploy.md, "Cutover")."""

    image: Annotated[Text, rule(_pinned)] = Field(
        PROXY_IMAGE, description="nginx image, pinned by digest", examples=[PROXY_IMAGE]
    )


class DeviceUpdateSettings(Model):
    """The devices' update agent (docs/device-updates.md): how often a device that is on pulls
    its desired release (it also pulls at every boot)."""

    interval_seconds: Annotated[Int, ranged(300, 7 * 86400, "s", fix="use e.g. 3600 (an hour)")] = (
        Field(3600, description="between two pulls while the device is on")
    )


class RegistryAuth(Model):
    """Credentials for a private registry (the password is the secret registryPassword)."""

    FIXES: ClassVar[dict[str, str]] = {
        "address": "set app.registryAuth.address, e.g. registry-1.docker.io",
        "username": "set app.registryAuth.username",
    }
    address: Annotated[
        Text,
        pattern(
            r"[a-z0-9.-]+(:\d+)?",
            "is not a registry host",
            "use the registry's host[:port], e.g. registry-1.docker.io",
        ),
    ] = Field(description="the registry's host[:port]", examples=["registry-1.docker.io"])
    username: Text = Field(description="the registry user")


class AppSettings(Model):
    """The services: image repositories, the stack's tag, health checks and backups."""

    FIXES: ClassVar[dict[str, str]] = {
        "tag": "nightly for dev, vX.Y.Z for prod",
        "images": "set app.images",
    }
    tag: Annotated[Text, rule(_tag, pattern=f"^{TAG}$")] = Field(
        description="the tag of every image without its own", examples=["nightly", "v1.0.0"]
    )
    images: Images = Field(description="image repositories of the services")
    registry_auth: RegistryAuth | None = Field(
        None,
        description="credentials for private images (the digest lookups at preview and the "
        "pulls on the guests use the same registry); password: secret registryPassword",
    )
    vapid_public_key: Text = Field("", description="the backend's VAPID public key (web push)")
    healthcheck: HealthcheckSettings = Field(HealthcheckSettings(), description="health checks")
    backups: BackupSettings = Field(BackupSettings(), description="MongoDB dumps")
    vzdump: VzdumpSettings = Field(VzdumpSettings(), description="the Proxmox backup job")
    deploy: DeploySettings = Field(DeploySettings(), description="safe deploy")
    proxy: ProxySettings = Field(ProxySettings(), description="the cloud guests' reverse proxy")
    device_updates: DeviceUpdateSettings = Field(
        DeviceUpdateSettings(), description="the devices' update agent"
    )
