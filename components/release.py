"""Release: a dynamic resource that deploys a guest's Compose project safely.

The provider converts Pulumi's property dicts to the engine's types (`deploy.engine`) and back.
`diff` is pure and explicit: only the compose file, the env files, the checks, the project's
place or the revision deploy; a change of anything else (connection, policy) updates the state
without touching the host, and unchanged inputs make no connection at all. `update` raises when
the engine rolled back, so Pulumi keeps the previous state and the next `up` retries.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from deploy.engine import Engine, Policy, deployer, over_ssh
from deploy.release import Checks, ReleaseSpec, Site
from deploy.transport import SshTarget

DEPLOY_KEYS = ("project", "appDir", "compose", "envFiles", "checks", "routes", "revision")
REQUIRED = ("host", "sshUser", "privateKey", "hostKey", "project", "appDir", "compose")
SECRET_OUTPUTS = ["privateKey", "envFiles"]
OUTPUTS = ("releaseId", "digests", "deployedAt", "backupId")
# Before each dynamic resource had its own type token, both were `pulumi-python:dynamic:Resource`:
# the alias carries existing state over to the new token instead of a create and a delete.
UNTYPED_DYNAMIC_ALIAS = pulumi.Alias(type_="pulumi-python:dynamic:Resource")


def target_of(props: dict[str, Any]) -> SshTarget:
    return SshTarget(
        host=props["host"],
        user=props["sshUser"],
        private_key=props["privateKey"],
        port=int(props.get("sshPort", 22)),
        host_key=props.get("hostKey") or "",
    )


def _policy(props: dict[str, Any]) -> Policy:
    return Policy(
        backup=bool(props.get("backup", True)),
        restore_on_rollback=bool(props.get("restoreOnRollback", False)),
        keep_releases=int(props.get("keepReleases", 5)),
        verify_timeout=float(props.get("verifyTimeoutSeconds", 300)),
        lock_lease=float(props.get("lockLeaseSeconds", 120)),
        failing_window=float(props.get("failingWindowSeconds", 20)),
        drain_seconds=float(props.get("drainSeconds", 20)),
    )


def release_spec(props: dict[str, Any]) -> ReleaseSpec:
    return ReleaseSpec(
        compose=props["compose"],
        env_files=dict(props.get("envFiles") or {}),
        checks=Checks.from_dict(props.get("checks") or {}),
        routes=tuple(dict(r) for r in props.get("routes") or ()),
    )


def release_engine(props: dict[str, Any], who: str) -> AbstractContextManager[Engine]:
    """The deploy engine for the release's guest (the engine owns the SSH connection)."""
    cli = f"python -m deploy --stack {props.get('stack')} --guest {props.get('guest')}"
    redeploy = f"pulumi up --stack {props.get('stack')}"
    site = Site(props["project"], props["appDir"], proxied=bool(props.get("routes")))
    return over_ssh(target_of(props), site, who, _policy(props), cli=cli, redeploy=redeploy)


def _deploy(props: dict[str, Any]) -> dict[str, Any]:
    with release_engine(props, deployer("pulumi")) as engine:
        outcome = engine.deploy(release_spec(props))
    return {
        **props,
        "releaseId": outcome.release,
        "digests": outcome.digests,
        "deployedAt": outcome.deployed_at,
        "backupId": (outcome.backup or {}).get("id", ""),
    }


class ReleaseProvider(ResourceProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = [
            CheckFailure(key, f"{key} is required") for key in REQUIRED if not news.get(key)
        ]
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        inputs = (set(olds) | set(news)) - set(OUTPUTS)  # an input the program dropped counts too
        changed = [key for key in inputs if olds.get(key) != news.get(key)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = _deploy(props)
        return CreateResult(f"release-{props['host']}-{props['project']}", outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        if all(olds.get(key) == news.get(key) for key in DEPLOY_KEYS):
            # connection or policy only: new state, nothing to do on the host
            return UpdateResult({**news, **{key: olds.get(key) for key in OUTPUTS}})
        return UpdateResult(_deploy(news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Refresh keeps the recorded release (`python -m deploy status` shows the host's)."""
        return ReadResult(id_, props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Removing the resource leaves the services running (the guest's removal stops them)."""


class Release(Resource, module="app", name="Release"):
    """The live, verified release of one guest's Compose project."""

    # output names as the provider returns them (Pulumi does not translate dynamic outputs)
    releaseId: pulumi.Output[str]  # noqa: N815
    digests: pulumi.Output[dict[str, str]]
    deployedAt: pulumi.Output[str]  # noqa: N815
    backupId: pulumi.Output[str]  # noqa: N815

    def __init__(
        self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        opts = pulumi.ResourceOptions.merge(
            opts,
            pulumi.ResourceOptions(
                additional_secret_outputs=SECRET_OUTPUTS, aliases=[UNTYPED_DYNAMIC_ALIAS]
            ),
        )
        outputs = {key: None for key in OUTPUTS}
        super().__init__(ReleaseProvider(), name, {**outputs, **props}, opts)
