"""STAND-IN releases in the STAND-IN registry, and deploying them through the Release provider.

Three releases of the application, as the safe-deploy tests need them: N (1.0.0, healthy),
N+1 (1.1.0, healthy) and N+2 (1.2.0, whose backend never becomes healthy). Every image is
pushed to the registry stand-in on the harness bridge, so guests pull them by tag and by digest
exactly as production pulls from Docker Hub. Shared by the tier-3 tests and `make bench`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from components.release import ReleaseProvider
from config import DeploySettings, HealthcheckSettings, StackConfig
from deploy.release import split_ref
from rendering import app
from testbed.harness import Engine, Guest
from testbed.proxy import build_proxy
from testbed.registry import Registry
from testbed.registry.push import publish, trust_registry
from testbed.standins import BACKEND_REPO, FRONTEND_REPO, build_standins
from tests.configs import evolve
from tests.tier3.baseline_env import Baselined

N, N1, N2 = "1.0.0", "1.1.0", "1.2.0"
BROKEN = N2
MONGO = "smart-smoker/mongo"
PROXY = "smoker-test/nginx"  # the cloud guests' reverse proxy (testbed.proxy: real nginx 1.22.1)
PROXY_TAG = "1.22.1-bookworm"
BACKEND = "smart-smoker/backend"
FRONTEND = "smart-smoker/frontend"
DEVICE_SERVICE = "smart-smoker/device-service"
SMOKER_UI = "smart-smoker/smoker-ui"


@dataclass(frozen=True)
class Releases:
    registry: Registry

    def ref(self, repo: str, tag: str = "") -> str:
        return f"{self.registry.address}/{repo}" + (f":{tag}" if tag else "")

    def digests(self, version: str) -> dict[str, str]:
        """What a release of `version` must run: `repo@sha256:...` per service."""
        return {
            "mongo": f"{self.ref(MONGO)}@{self.registry.resolve(MONGO, '7.0')}",
            "backend": f"{self.ref(BACKEND)}@{self.registry.resolve(BACKEND, version)}",
            "frontend": f"{self.ref(FRONTEND)}@{self.registry.resolve(FRONTEND, version)}",
        }

    def proxy_image(self) -> str:
        """`app.proxy.image` for the test guests: pinned by digest, as production pins it."""
        return f"{self.ref(PROXY, PROXY_TAG)}@{self.registry.resolve(PROXY, PROXY_TAG)}"

    def point(self, tag: str, version: str) -> None:
        """Point the app images' `tag` at release `version` (a tag like `nightly` moving
        upstream: the same as pushing that release again under the tag)."""
        for repo in (BACKEND, FRONTEND):
            self.registry.move_tag(repo, tag, self.registry.resolve(repo, version))

    def plan(self, props: dict[str, Any]) -> dict[str, Any]:
        """The Release inputs as the Pulumi program plans them at preview time: every image
        `repo:tag@sha256:...` with the digest the registry serves for the tag now."""
        project = yaml.safe_load(props["compose"])
        for svc in project["services"].values():
            repo, tag, _ = split_ref(svc["image"])
            name = repo.removeprefix(f"{self.registry.address}/")
            svc["image"] = f"{repo}:{tag}@{self.registry.resolve(name, tag or 'latest')}"
        return {**props, "compose": yaml.safe_dump(project, sort_keys=False, width=1000)}


def publish_releases(engine: Engine, registry: Registry) -> Releases:
    standins = build_standins(engine, versions=(N, N1, N2), broken_versions=(BROKEN,))
    images = {standins.mongo: f"{MONGO}:7.0", build_proxy(engine): f"{PROXY}:{PROXY_TAG}"}
    for version in (N, N1, N2):
        refs = standins.app_images(version, broken=version == BROKEN)
        images[refs["backend"]] = f"{BACKEND}:{version}"
        images[refs["frontend"]] = f"{FRONTEND}:{version}"
    publish(engine, None, registry, images)
    return Releases(registry)


def release_config(cfg: StackConfig, releases: Releases, version: str) -> StackConfig:
    """The stack config deploying `version` from the registry stand-in, with quick health checks
    (the production values, 30 s intervals and a 60 s start period, make every wait minutes),
    and the test image of the guests' reverse proxy, pulled by digest from the registry."""
    images = {
        **cfg.app.images,
        "mongo": releases.ref(MONGO, "7.0"),
        "backend": releases.ref(BACKEND),
        "frontend": releases.ref(FRONTEND),
    }
    health = HealthcheckSettings(
        interval_seconds=1, timeout_seconds=5, retries=3, start_period_seconds=15
    )
    deploy = DeploySettings(verify_timeout_seconds=90, keep_releases=3, lock_lease_seconds=30)
    proxy = evolve(cfg.app.proxy, image=releases.proxy_image())
    return evolve(
        cfg,
        app=evolve(
            cfg.app, tag=version, images=images, healthcheck=health, deploy=deploy, proxy=proxy
        ),
    )


def derived_image(engine: Engine, base: str, ref: str, port: int) -> str:
    """`base` (a stand-in) listening on `port`: the port the device's compose file and checks
    name (the stand-ins read `PORT`)."""
    dockerfile = (
        f"FROM {base}\nENV PORT={port}\n"
        'LABEL org.opencontainers.image.description="smoker-infra tier-3 STAND-IN"\n'
    )
    engine.docker("build", "-q", "-t", ref, "-", input=dockerfile.encode(), timeout=300)
    return ref


def publish_device_images(
    engine: Engine, registry: Registry, versions: tuple[str, ...], broken: tuple[str, ...] = ()
) -> None:
    """The device's images in the registry stand-in: the device service (the backend STAND-IN
    on 3003) at each of `versions` and `broken` (never healthy), the smoker UI (the frontend
    STAND-IN on 8080) at the first version."""
    build_standins(engine, versions=versions, broken_versions=broken)
    local = {}
    for version in (*versions, *broken):
        base = f"{BACKEND_REPO}:{version}" + ("-broken" if version in broken else "")
        image = derived_image(engine, base, f"smoker-test/device-standin:{version}", 3003)
        local[image] = f"{DEVICE_SERVICE}:{version}"
    ui = versions[0]
    image = derived_image(engine, f"{FRONTEND_REPO}:{ui}", f"smoker-test/ui-standin:{ui}", 8080)
    local[image] = f"{SMOKER_UI}:{ui}"
    publish(engine, None, registry, local)


def host_key(guest: Guest) -> str:
    return next(
        " ".join(line.split()[1:3])
        for line in guest.known_hosts_path.read_text().splitlines()
        if " ssh-ed25519 " in line
    )


def connection_props(guest: Guest) -> dict[str, Any]:
    """How the dynamic providers reach the test guest (root, its pinned host key)."""
    return {
        "host": guest.host,
        "sshUser": "root",
        "sshPort": 22,
        "hostKey": host_key(guest),
        "privateKey": guest.private_key(),
    }


def release_props(
    env: Baselined, cfg: StackConfig, secrets: app.AppSecrets, **overrides: Any
) -> dict[str, Any]:
    """The Release's inputs as AppStack gives them, for the test guest."""
    return {
        **app.release_inputs(cfg, env.spec, secrets),
        **connection_props(env.guest),
        **overrides,
    }


def prepare_guest(env: Baselined, releases: Releases) -> None:
    trust_registry(env.guest, releases.registry.address)


def deploy(props: dict[str, Any], olds: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create or update the Release as Pulumi would; returns the new state."""
    provider = ReleaseProvider()
    if olds is None:
        return dict(provider.create(props).outs or {})
    assert provider.diff("release", olds, props).changes
    return dict(provider.update("release", olds, props).outs or {})


def live_containers(guest: Any, project: str) -> dict[str, tuple[str, str]]:
    """service -> (health, image) of the live release: MongoDB in the guest's project, backend
    and frontend in the release's own project (behind the proxy, which is left out)."""
    out = guest.run(
        "docker ps -q --filter label=com.docker.compose.project | xargs -r docker inspect -f "
        '\'{{index .Config.Labels "com.docker.compose.project"}} '
        '{{index .Config.Labels "com.docker.compose.service"}} '
        "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.Config.Image}}'"
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return {
        r[1]: (r[2], r[3])
        for r in rows
        if (r[0] == project or r[0].startswith(project + "-")) and r[1] != "proxy"
    }
