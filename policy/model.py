"""What the policies judge: a stack's resources as simple data, and what a policy reports."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LXC = "proxmoxve:index/containerLegacy:ContainerLegacy"
VM = "proxmoxve:index/vmLegacy:VmLegacy"
GUESTS = (LXC, VM)
COMMAND = "command:remote:Command"
VZDUMP = "proxmoxve:backup/job:Job"
# Dynamic resources: `pulumi-python:dynamic:Resource`, or a per-resource token such as
# `pulumi-python:dynamic/app:Release` (package pulumi-python, module dynamic[/...]).
DYNAMIC_PACKAGE = "pulumi-python"
# Packages exempt from explicit-provider: the engine's own (providers, the stack), the dynamic
# provider (only its default provider exists) and this program's components (no provider at all).
# Every other package is provider-backed and must name the stack's explicit provider.
NO_EXPLICIT_PROVIDER = ("pulumi", DYNAMIC_PACKAGE, "smoker")
SECRET = "[secret]"
UNKNOWN = "[unknown]"
PROD_STACKS = frozenset({"prod"})
# Input names (lower-cased, letters only) that hold a credential.
SENSITIVE_SUFFIXES = (
    "password",
    "passphrase",
    "secret",
    "token",
    "privatekey",
    "authkey",
    "apikey",
)
LOOPBACK = ("127.0.0.1", "::1", "[::1]")


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    protect: bool = False
    provider: str | None = None  # the provider's URN (a trailing "::<id>" is allowed)

    @property
    def stack(self) -> str:
        return self.urn.split("::", 1)[0].removeprefix("urn:pulumi:")

    @property
    def label(self) -> str:
        return f"{self.name} ({self.type})"


Finding = tuple[Resource, str]
Check = Callable[[Sequence[Resource]], Iterator[Finding]]


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    check: Check
    per_resource: bool  # True: judges each resource alone; False: needs the whole stack


@dataclass(frozen=True)
class Violation:
    policy: str
    urn: str
    message: str


def is_dynamic(type_: str) -> bool:
    package, _, rest = type_.partition(":")
    return package == DYNAMIC_PACKAGE and rest.split(":", 1)[0].split("/", 1)[0] == "dynamic"


def is_release(r: Resource) -> bool:
    """A safe-deploy Release (the dynamic resource that carries a Compose project), or a
    device's DesiredRelease (the same project, published for the device to pull)."""
    return is_dynamic(r.type) and "compose" in r.props and ("project" in r.props or is_published(r))


def is_published(r: Resource) -> bool:
    """A device's DesiredRelease: signed and published on a cloud guest (publisherHost)."""
    return is_dynamic(r.type) and "compose" in r.props and "publisherHost" in r.props


def items(value: Any) -> list[Any]:
    """A list input, or [] when it is absent, unknown or not a list."""
    return list(value) if isinstance(value, (list, tuple)) else []


_TARGET = re.compile(r"^target=(\S+)$", re.MULTILINE)


def writes(r: Resource) -> str | None:
    """The host file a command writes from stdin (guest_common's `target=...` scripts)."""
    match = _TARGET.search(str(r.props.get("create", ""))) if r.type == COMMAND else None
    return match.group(1) if match else None
