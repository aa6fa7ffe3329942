"""Mutations of the synthesized stacks, each breaking one policy: what the policy tests (unit,
and the pack through the SDK's analyzer in `tests/sdk`) feed the checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import yaml

from policy.smoker_policies import LXC, VZDUMP, Resource

Stack = list[Resource]
PROVIDER = "pulumi:providers:proxmoxve"


def find(stack: Stack, name: str, type_: str | None = None) -> Resource:
    (found,) = [r for r in stack if r.name == name and type_ in (None, r.type)]
    return found


def replace(stack: Stack, old: Resource, **changes: Any) -> Stack:
    """A copy of the stack with one resource changed; `props` changes merge into its inputs."""
    props = {**old.props, **changes.pop("props", {})}
    new = dataclasses.replace(old, props=props, **changes)
    return [new if r is old else r for r in stack]


def without(stack: Stack, *names: str) -> Stack:
    return [r for r in stack if r.name not in names]


def privileged(s: dict[str, Stack]) -> Stack:
    return replace(s["dev"], find(s["dev"], "dev-cloud", LXC), props={"unprivileged": False})


def unprotected(s: dict[str, Stack]) -> Stack:
    return replace(s["prod"], find(s["prod"], "prod-cloud", LXC), protect=False)


def no_proxmox_protection(s: dict[str, Stack]) -> Stack:
    return replace(s["prod"], find(s["prod"], "prod-cloud", LXC), props={"protection": False})


def default_provider(s: dict[str, Stack]) -> Stack:
    default = "urn:pulumi:prod::smoker-infra::pulumi:providers:proxmoxve::default_8_6_0"
    return replace(s["prod"], find(s["prod"], "vzdump-prod", VZDUMP), provider=default)


def no_provider(s: dict[str, Stack]) -> Stack:
    return replace(s["dev"], find(s["dev"], "dev-cloud-sshd-config"), provider=None)


def docker_default_provider(s: dict[str, Stack]) -> Stack:
    # A package missing from pulumi:disable-default-providers gets a default provider silently.
    name, type_ = "prod-cloud-backend-image", "docker:index/remoteImage:RemoteImage"
    image = Resource(
        type_,
        name,
        f"urn:pulumi:prod::smoker-infra::{type_}::{name}",
        {"name": "ghcr.io/example/backend:1"},
        provider="urn:pulumi:prod::smoker-infra::pulumi:providers:docker::default",
    )
    return [*s["prod"], image]


def plain_password(s: dict[str, Stack]) -> Stack:
    provider = find(s["prod"], "proxmox-provider", PROVIDER)
    return replace(s["prod"], provider, props={"password": "plain-root-password"})


def plain_auth_key_stdin(s: dict[str, Stack]) -> Stack:
    step = find(s["prod"], "prod-cloud-tailscale-up")
    return replace(s["prod"], step, props={"stdin": "tskey-auth-plain"})


def plain_env_files(s: dict[str, Stack]) -> Stack:
    release = find(s["prod"], "prod-cloud-release")
    plain = {"mongo.env": "MONGO_INITDB_ROOT_PASSWORD=plain-mongo-password\n"}
    return replace(s["prod"], release, props={"envFiles": plain})


def password_authentication(s: dict[str, Stack]) -> Stack:
    step = find(s["prod"], "prod-cloud-sshd-config")
    text = step.props["stdin"].replace("PasswordAuthentication no", "PasswordAuthentication yes")
    return replace(s["prod"], step, props={"stdin": text})


def root_password_login(s: dict[str, Stack]) -> Stack:
    step = find(s["dev"], "virtual-smoker-device-sshd-config")
    text = step.props["stdin"].replace("PermitRootLogin prohibit-password", "PermitRootLogin yes")
    return replace(s["dev"], step, props={"stdin": text})


def match_block_password(s: dict[str, Stack]) -> Stack:
    step = find(s["prod"], "prod-cloud-sshd-config")
    text = step.props["stdin"] + "Match User smoker\n  PasswordAuthentication yes\n"
    return replace(s["prod"], step, props={"stdin": text})


def mongo_on_all_interfaces(s: dict[str, Stack]) -> Stack:
    step = find(s["prod"], "prod-cloud-mongo-bootstrap-file")
    text = step.props["stdin"].replace("127.0.0.1:27017:27017", "27017:27017")
    return replace(s["prod"], step, props={"stdin": text})


def release_mongo_on_all_interfaces(s: dict[str, Stack]) -> Stack:
    release = find(s["dev"], "dev-cloud-release")
    text = release.props["compose"].replace("127.0.0.1:27017:27017", "0.0.0.0:27017:27017")
    assert text != release.props["compose"]
    return replace(s["dev"], release, props={"compose": text})


def proxy_on_all_interfaces(s: dict[str, Stack]) -> Stack:
    """The proxy's port published on every interface: the backend beside Tailscale's serve."""
    step = find(s["dev"], "dev-cloud-proxy-compose")
    text = step.props["stdin"].replace('"127.0.0.1:3001:3001"', '"3001:3001"')
    assert text != step.props["stdin"]
    return replace(s["dev"], step, props={"stdin": text})


def smoker_mongo_on_all_interfaces(s: dict[str, Stack]) -> Stack:
    """The physical smoker's UI may sit on the LAN (a device), MongoDB never: the device
    exemption of an existing machine (no Proxmox resource, its project) stops at MongoDB."""
    release = find(s["prod"], "smoker-desired-release")
    compose = yaml.safe_load(release.props["compose"])
    compose["services"]["mongo"] = {
        "image": "mongo:7.0@sha256:" + "0" * 64,
        "ports": ["27017:27017"],
    }
    return replace(s["prod"], release, props={"compose": yaml.safe_dump(compose)})


def release_by_tag(s: dict[str, Stack]) -> Stack:
    """The digest dropped from prod's backend: the approved preview would not be what deploys."""
    release = find(s["prod"], "prod-cloud-release")
    pinned = release.props["images"]["backend"]
    tag = pinned.split("@", 1)[0]
    compose = release.props["compose"].replace(pinned, tag)
    return replace(s["prod"], release, props={"compose": compose})


def device_image_by_tag(s: dict[str, Stack]) -> Stack:
    """The device VM's published release runs its smoker UI by tag."""
    release = find(s["dev"], "virtual-smoker-device-desired-release")
    compose = yaml.safe_load(release.props["compose"])
    ui = compose["services"]["smoker-ui"]
    ui["image"] = ui["image"].split("@", 1)[0]
    return replace(s["dev"], release, props={"compose": yaml.safe_dump(compose)})


def no_vzdump(s: dict[str, Stack]) -> Stack:
    return without(s["prod"], "vzdump-prod")


def vzdump_disabled(s: dict[str, Stack]) -> Stack:
    return replace(s["prod"], find(s["prod"], "vzdump-prod", VZDUMP), props={"enabled": False})


def no_backup_timers(s: dict[str, Stack]) -> Stack:
    return without(s["prod"], "prod-cloud-backup-timers")


def funnel_on_dev(s: dict[str, Stack]) -> Stack:
    step = find(s["dev"], "dev-cloud-tailscale-serve")
    script = step.props["create"].replace("tailscale serve --bg", "tailscale funnel --bg")
    assert script != step.props["create"]
    return replace(s["dev"], step, props={"create": script})


MUTATIONS: list[tuple[Callable[[dict[str, Stack]], Stack], str, str, str]] = [
    # (mutation, policy, resource named in the message, fix named in the message)
    (privileged, "lxc-unprivileged", "dev-cloud", "unprivileged=True"),
    (unprotected, "prod-guests-protected", "prod-cloud", "protect: true"),
    (no_proxmox_protection, "prod-guests-protected", "prod-cloud", "protection=True"),
    (default_provider, "explicit-provider", "vzdump-prod", "provider="),
    (no_provider, "explicit-provider", "dev-cloud-sshd-config", "provider="),
    (docker_default_provider, "explicit-provider", "prod-cloud-backend-image", "list docker in"),
    (plain_password, "secret-inputs", "proxmox-provider", "pulumi.Output.secret"),
    (plain_auth_key_stdin, "secret-inputs", "prod-cloud-tailscale-up", "wrap stdin"),
    (plain_env_files, "secret-inputs", "prod-cloud-release", "wrap envFiles"),
    (password_authentication, "sshd-no-passwords", "prod-cloud-sshd-config", "passwordauth"),
    (
        root_password_login,
        "sshd-no-passwords",
        "virtual-smoker-device-sshd-config",
        "permitrootlogin no",
    ),
    (match_block_password, "sshd-no-passwords", "prod-cloud-sshd-config", "remove it"),
    (mongo_on_all_interfaces, "loopback-ports", "prod-cloud-mongo-bootstrap-file", "127.0.0.1:"),
    (release_mongo_on_all_interfaces, "loopback-ports", "dev-cloud-release", "127.0.0.1:"),
    (smoker_mongo_on_all_interfaces, "loopback-ports", "smoker-desired-release", "127.0.0.1:"),
    (proxy_on_all_interfaces, "loopback-ports", "dev-cloud-proxy-compose", "127.0.0.1:"),
    (release_by_tag, "release-images-pinned", "prod-cloud-release", "pin it to the registry"),
    (
        device_image_by_tag,
        "release-images-pinned",
        "virtual-smoker-device-desired-release",
        "digest",
    ),
    (no_vzdump, "prod-backups", "prod-cloud", "app.vzdump"),
    (vzdump_disabled, "prod-backups", "prod-cloud", "app.vzdump"),
    (no_backup_timers, "prod-backups", "prod-cloud", "app.backups"),
    (funnel_on_dev, "funnel-prod-only", "dev-cloud-tailscale-serve", "funnel: false"),
]
