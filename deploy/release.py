"""What a release is: its compose file, env files, checks, and where it lives on the host.

A release is a directory `<app_dir>/releases/<release-id>/` holding `compose.yaml` (every image
pinned by digest), the env files the services read (root-only), and `manifest.json` (the digests,
the checks that verify it, the pre-deploy backup). `<app_dir>/current` points at the live one.
The id is `<UTC time>-<content hash>`: sortable by age, and equal content has an equal hash.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

import layout


@dataclass(frozen=True)
class HttpCheck:
    url: str
    status: int = 200
    json: Mapping[str, Any] = field(default_factory=dict)  # fields the JSON body must have


@dataclass(frozen=True)
class Checks:
    """How a release is verified on the host (besides every container being healthy)."""

    http: tuple[HttpCheck, ...] = ()  # fetched on the host (curl over the transport)
    mongo_user_env: str | None = None  # env file whose DB_URL must authenticate
    mongo_port: int = 27017
    outside: tuple[HttpCheck, ...] = ()  # fetched from where the engine runs (Tailscale URLs)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Checks:
        def http(key: str) -> tuple[HttpCheck, ...]:
            return tuple(
                HttpCheck(c["url"], int(c.get("status", 200)), dict(c.get("json") or {}))
                for c in raw.get(key) or ()
            )

        return cls(
            http("http"), raw.get("mongoUserEnv"), int(raw.get("mongoPort", 27017)), http("outside")
        )

    def as_dict(self) -> dict[str, Any]:
        def http(checks: tuple[HttpCheck, ...]) -> list[dict[str, Any]]:
            return [{"url": c.url, "status": c.status, "json": dict(c.json)} for c in checks]

        out: dict[str, Any] = {"http": http(self.http)}
        if self.mongo_user_env:
            out["mongoUserEnv"] = self.mongo_user_env
            out["mongoPort"] = self.mongo_port
        if self.outside:
            out["outside"] = http(self.outside)
        return out


@dataclass(frozen=True)
class ReleaseSpec:
    """The desired release: compose with tag (or digest) references, env files, checks."""

    compose: str
    env_files: Mapping[str, str] = field(default_factory=dict, repr=False)  # secret
    checks: Checks = Checks()
    # behind the proxy: [{"service": "backend", "port": 3001}, ...] (empty: updated in place)
    routes: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Site:
    """Where a guest's Compose project lives."""

    project: str
    app_dir: str
    proxied: bool = False  # a cloud guest: releases cut over behind the proxy (deploy/cutover.py)

    @property
    def releases(self) -> str:
        return layout.releases_dir(self.app_dir)

    @property
    def current(self) -> str:
        return layout.current_link(self.app_dir)

    def release_dir(self, release_id: str) -> str:
        return layout.release_dir(self.app_dir, release_id)

    def compose(self, release_id: str, project: str | None = None) -> str:
        """`docker compose` for one release's file, in the guest's project (or `project`)."""
        path = f"{self.release_dir(release_id)}/{layout.COMPOSE_FILE}"
        return f"docker compose -p {shlex.quote(project or self.project)} -f {shlex.quote(path)}"

    def project_of(self, release_id: str, manifest: Mapping[str, Any]) -> str:
        """Where a release's app services run: its own project behind the proxy, or (device,
        and releases from before the proxy) the guest's project."""
        if self.proxied and manifest.get("routes"):
            return layout.release_project(self.project, release_id)
        return self.project


def service_images(compose: str) -> dict[str, str]:
    """service -> image reference, from a compose file."""
    services = (yaml.safe_load(compose) or {}).get("services") or {}
    return {name: str(svc["image"]) for name, svc in services.items()}


def repository(ref: str) -> str:
    """`host:5000/a/b:tag@sha256:..` -> `host:5000/a/b`."""
    return split_ref(ref)[0]


def split_ref(ref: str) -> tuple[str, str | None, str | None]:
    """`host:5000/a/b:tag@sha256:..` -> (`host:5000/a/b`, `tag`, `sha256:..`); the tag and
    the digest are None when the reference has none (a registry's port is not a tag)."""
    name, at, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    repo, tag = name.rsplit(":", 1) if ":" in last else (name, None)
    return repo, tag, digest if at else None


def service_platforms(compose: str) -> dict[str, str]:
    """image reference -> the `platform:` its service runs on (only services that name one)."""
    services = (yaml.safe_load(compose) or {}).get("services") or {}
    return {
        str(svc["image"]): str(svc["platform"]) for svc in services.values() if svc.get("platform")
    }


def pin(compose: str, pinned: Mapping[str, str]) -> str:
    """The compose file with every image reference replaced by its digest reference."""
    project = yaml.safe_load(compose)
    for svc in project["services"].values():
        svc["image"] = pinned[svc["image"]]
    return yaml.safe_dump(project, sort_keys=False, width=1000)


def content_hash(
    compose: str,
    env_files: Mapping[str, str],
    checks: Checks,
    routes: tuple[Mapping[str, Any], ...] = (),
) -> str:
    """Identity of a release's content (pinned compose, env, checks, routes); short, not
    reversible."""
    h = hashlib.sha256(compose.encode())
    for name in sorted(env_files):
        h.update(b"\0" + name.encode() + b"\0" + env_files[name].encode())
    h.update(json.dumps(checks.as_dict(), sort_keys=True).encode())
    if routes:
        h.update(json.dumps(list(routes), sort_keys=True).encode())
    return h.hexdigest()[:12]
