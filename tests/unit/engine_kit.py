"""The deploy engine's unit-test world, shared by the engine, diagnosis, CLI and provider tests
(and `cli_site/sitecustomize.py`): releases of three versions in a fake registry, a fake clock,
and an engine over the fake host with every seam injected. The `host` and `clock` fixtures are
in `conftest.py`."""

from __future__ import annotations

import json
from typing import Any

from deploy.engine import Engine, Policy
from deploy.release import Checks, HttpCheck, ReleaseSpec, Site
from deploy.transport import Transport
from tests.unit.fake_host import APP_DIR, PROJECT, FakeHost

REG = "registry.test:5000"
APP_PASSWORD = "app-Pa55@word#secret"
VERSIONS = ("1.0.0", "1.1.0", "1.2.0")


def digest(name: str, version: str) -> str:
    return f"{REG}/{name}@sha256:{(name + version).encode().hex().ljust(64, '0')[:64]}"


def compose(version: str, planned: bool = False) -> str:
    """The release of `version` by tag, or (`planned`) by tag and the digest the preview
    planned for it, `repo:tag@sha256:...`, as the Pulumi program hands it over."""

    def image(name: str, tag: str) -> str:
        return f"{REG}/{name}:{tag}" + (f"@{planned_digest(name, tag)}" if planned else "")

    services = {
        "mongo": {"image": image("mongo", "7.0"), "env_file": ["mongo.env"]},
        "backend": {"image": image("backend", version), "env_file": ["backend.env"]},
        "frontend": {"image": image("frontend", version)},
    }
    return json.dumps({"name": PROJECT, "services": services})


def planned_digest(name: str, version: str) -> str:
    """`sha256:...` of the image the registry serves for `name:version` (at preview time)."""
    return digest(name, version).partition("@")[2]


CHECKS = Checks(
    (HttpCheck("http://127.0.0.1:3001/api/health", json={"status": "ok"}),),
    mongo_user_env="backend.env",
)


def spec(version: str, password: str = APP_PASSWORD, planned: bool = False) -> ReleaseSpec:
    env = {
        "backend.env": f"DB_URL=mongodb://smartsmoker:{password}@mongo:27017/smartsmoker\n",
        "mongo.env": "MONGO_INITDB_ROOT_PASSWORD=root-secret\n",
    }
    return ReleaseSpec(compose(version, planned), env, CHECKS)


# Behind the proxy (a cloud guest): MongoDB in the guest's project, the app in the release's.
ROUTES = ({"service": "backend", "port": 3001}, {"service": "frontend", "port": 3000})
PROXIED_CHECKS = Checks(
    (
        HttpCheck("http://backend:3001/api/health", json={"status": "ok"}),
        HttpCheck("http://frontend:3000/"),
    ),
    mongo_user_env="backend.env",
)


def proxied_spec(version: str, password: str = APP_PASSWORD) -> ReleaseSpec:
    base = spec(version, password)
    project = json.loads(base.compose)
    project["services"]["mongo"]["profiles"] = ["data"]
    return ReleaseSpec(json.dumps(project), base.env_files, PROXIED_CHECKS, ROUTES)


class Clock:
    epoch = 1_800_000_000  # wall() at t = 0

    def __init__(self) -> None:
        self.t = 0.0

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.epoch + self.t


def fake_host() -> FakeHost:
    """A host whose registry has every version; 1.2.0's backend never becomes healthy."""
    registry = {f"{REG}/mongo:7.0": digest("mongo", "7.0")}
    for v in VERSIONS:
        registry.update({f"{REG}/{n}:{v}": digest(n, v) for n in ("backend", "frontend")})
    return FakeHost(registry=registry, broken={digest("backend", "1.2.0")})


def make_engine(
    host: FakeHost, clock: Clock, auth_ok: bool = True, proxied: bool = False, **policy: Any
) -> Engine:
    def auth(_t: Transport, _port: int, url: str) -> None:
        assert url.startswith("mongodb://smartsmoker:")
        if not auth_ok:
            raise PermissionError("Authentication failed")

    return Engine(
        host,
        Site(PROJECT, APP_DIR, proxied=proxied),
        "tester@ci via test",
        Policy(verify_timeout=30, **policy),
        auth=auth,
        count=lambda _t, _port, _url: host.documents,
        clock=clock.wall,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    )


def deployed(host: FakeHost, clock: Clock, *versions: str) -> list[str]:
    ids = []
    for v in versions:
        clock.t += 60  # distinct, ordered release ids
        ids.append(make_engine(host, clock).deploy(spec(v)).release)
    host.steps.clear()
    host.commands.clear()
    return ids
